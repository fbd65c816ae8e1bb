// issue 11: a node past its capacity still serves its operator. A `sipmesh start` process relays
// MESSAGEs from SIPp at a rate far beyond what it can do (a UAC offering 40,000/s to a registered
// SIPp device); meanwhile GET /metrics must answer within 5 s, and SIGTERM must stop the process
// cleanly (exit 0) within 10 s, with the flood still going. Skips without sipp, unless
// SIPMESH_REQUIRE_SIPP=1.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, runSipp, requireSipp, sippSkip } from '../interop/sipp.ts'
import { httpGet, run, stop } from './fixtures/processes.ts'

test('an overloaded node answers /metrics within 5 s and stops on SIGTERM within 10 s', { skip: sippSkip, timeout: 90_000 }, async (t) => {
  requireSipp()
  const dir = mkdtempSync(join(tmpdir(), 'sipmesh-overload-'))
  const proc = run(['start', '--domain', 'example.com', '--sip', '127.0.0.1:0', '--p2p', '/ip4/127.0.0.1/tcp/0', '--admin', '127.0.0.1:0',
    '--data-dir', join(dir, 'n'), '--log-level', 'info'])
  const sipps: Array<ReturnType<typeof runSipp>> = []
  try {
    const started = JSON.parse(await proc.waitForLine(l => l.includes('"sipmesh node started"'), 30_000)) as { sip: string, admin: string }
    const uasPort = await freePort()
    const uas = runSipp('uas-message.xml', started.sip, ['-t', 'u1', '-p', String(uasPort), '-m', '10000000'], 60)
    sipps.push(uas)
    await new Promise(resolve => setTimeout(resolve, 300))
    const reg = await runSipp('uac-register.xml', started.sip, ['-t', 'u1', '-m', '1', '-key', 'user', 'bob', '-key', 'contact_host', '127.0.0.1', '-key', 'contact_port', String(uasPort)], 10).done
    assert.equal(reg.code, 0, `REGISTER failed: ${reg.stdout.slice(-1500)}`)

    // the flood: 40,000/s offered for up to 20 s, far past one node's capacity on this machine
    const flood = runSipp('uac-message.xml', started.sip, ['-t', 'u1', '-s', 'bob', '-r', '40000', '-m', '800000', '-l', '200000', '-recv_timeout', '4000'], 25)
    sipps.push(flood)
    await new Promise(resolve => setTimeout(resolve, 3000))
    assert.equal(flood.child.exitCode, null, 'the flood is still going')

    const t0 = performance.now()
    const metrics = await httpGet(started.admin, '/metrics', 5000)
    const metricsMs = performance.now() - t0
    assert.equal(metrics.status, 200)
    assert.match(metrics.body, /sipmesh_sip_requests_total/)
    const relayed = /^sipmesh_sip_requests_total(?:\{[^}]*\})? (\d+)/m.exec(metrics.body)
    assert.ok(relayed !== null && Number(relayed[1]) > 100, `the node was relaying (${relayed?.[1] ?? 'no counter'} requests)`)

    const t1 = performance.now()
    const ended = await stop(proc, 'SIGTERM', 10_000)
    const stopMs = performance.now() - t1
    assert.deepEqual(ended, { code: 0, signal: null }, `stopped cleanly within 10 s under the flood (took ${stopMs.toFixed(0)} ms, /metrics ${metricsMs.toFixed(0)} ms); stderr: ${proc.stderr.slice(-5).join('\n')}`)
    assert.ok(proc.lines.some(l => l.includes('"sipmesh node stopped"')), 'it logged its stop')
    t.diagnostic(`/metrics answered in ${metricsMs.toFixed(0)} ms, stopped in ${stopMs.toFixed(0)} ms; ${relayed[1]} requests when asked`)
  } finally {
    for (const s of sipps) if (s.child.exitCode === null) s.child.kill('SIGKILL')
    await stop(proc, 'SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
})
