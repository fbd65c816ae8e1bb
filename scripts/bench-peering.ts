// MESSAGE relay across two peered meshes over TLS, SIPp load on loopback:
//   SIPp UAC → example.com node (UDP) → TLS → example.net node → SIPp UAS (UDP)
// and, for comparison in the same run, the example.com node relaying locally (SIPp UAC → node →
// SIPp UAS registered there). As scripts/bench-relay.ts: finds the highest rate with < 0.1%
// failures stepping up, then p50/p99 round trip at half that rate. Each mesh is one `sipmesh start`
// process; the CA and certificates are made with openssl (node/cert.ts) in a temporary directory.
// Bounded: each step lasts `--step` seconds (default 3), at most ~5 minutes in all.
//
//   node scripts/bench-peering.ts [--step 3] [--max 10000] [--only peer|local] [--latency-rate R]
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { freePort, runSipp, sippAvailable, sippCounter } from '../test/interop/sipp.ts'
import { ensureAuthority, issueCertificate } from '../node/cert.ts'
import { cpuMs } from './lib/proc-stats.ts'

const { values } = parseArgs({
  options: { step: { type: 'string', default: '3' }, max: { type: 'string', default: '10000' }, only: { type: 'string' }, 'latency-rate': { type: 'string' } }
})
const STEP_S = Math.min(Math.max(Number(values.step), 1), 10)
const MAX_RATE = Math.min(Math.max(Number(values.max), 500), 50_000)
const DEADLINE = Date.now() + 300_000
const BIN = fileURLToPath(new URL('../node/bin/sipmesh.js', import.meta.url))

if (!sippAvailable()) {
  console.error('sipp is not installed (apt-get install sip-tester)')
  process.exit(1)
}

const work = mkdtempSync(join(tmpdir(), 'sipmesh-bench-peering-'))
const certs = join(work, 'certs')
const ca = await ensureAuthority(certs)
const pem = {
  'example.com': await issueCertificate(certs, ca, { domains: ['example.com'] }),
  'example.net': await issueCertificate(certs, ca, { domains: ['example.net'] })
}

interface Mesh { domain: 'example.com' | 'example.net', sip: string, tls: number, child?: ChildProcess }
let meshes: Mesh[] = []
let generation = 0

async function startMesh (m: Mesh, peer: Mesh): Promise<void> {
  const args = ['start', '--domain', m.domain, '--sip', m.sip, '--tls', `127.0.0.1:${m.tls}`, '--p2p', '/ip4/127.0.0.1/tcp/0', '--admin', '127.0.0.1:0',
    '--data-dir', join(work, `${m.domain}-${generation}`), '--log-level', 'info', '--tls-cert', pem[m.domain].cert, '--tls-key', pem[m.domain].key,
    '--tls-ca', ca.cert, '--peer', `${peer.domain}=127.0.0.1:${peer.tls}`]
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'inherit'] })
  m.child = child
  const lines = createInterface({ input: child.stdout! })
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${m.domain} did not start in 30 s`)), 30_000)
    lines.on('line', (line) => {
      if (line.includes('"sipmesh node started"')) { clearTimeout(t); resolve() }
      if (line.includes('"level":"error"')) console.error(`  [${m.domain}] ${line.slice(0, 200)}`)
    })
    child.once('exit', (code) => { clearTimeout(t); reject(new Error(`${m.domain} exited with ${code}`)) })
  })
}

async function startMeshes (): Promise<void> {
  generation++
  // distinct ports: freePort releases its port, so two calls may hand out the same one
  const ports = new Set<number>()
  while (ports.size < 4) ports.add(await freePort())
  const [comSip, netSip, comTls, netTls] = [...ports]
  meshes = [
    { domain: 'example.com', sip: `127.0.0.1:${comSip}`, tls: comTls },
    { domain: 'example.net', sip: `127.0.0.1:${netSip}`, tls: netTls }
  ]
  await Promise.all([startMesh(meshes[0], meshes[1]), startMesh(meshes[1], meshes[0])])
}

async function stopMeshes (): Promise<void> {
  await Promise.all(meshes.map(async m => {
    const c = m.child
    if (c === undefined || c.exitCode !== null) return
    c.kill('SIGTERM')
    const t = setTimeout(() => c.kill('SIGKILL'), 10_000)
    await new Promise(resolve => c.once('exit', resolve))
    clearTimeout(t)
  }))
  meshes = []
}

const relayCpuMs = (): number | undefined => cpuMs(meshes.map(m => m.child?.pid).filter((p): p is number => p !== undefined))

interface Step { rate: number, sent: number, ok: number, failed: number, seconds: number, achieved: number, cpuUsPerMsg?: number, latencies: number[] }

async function runUac (user: string, toDomain: string, entry: string, rate: number, seconds: number, rtt: boolean): Promise<Step> {
  const calls = Math.round(rate * seconds)
  const args = ['-t', 'u1', '-s', user, '-key', 'from_domain', 'example.com', '-key', 'to_domain', toDomain, '-r', String(rate), '-m', String(calls), '-l', '30000',
    '-recv_timeout', '4000', '-max_recv_loops', '5000', '-max_sched_loops', '5000']
  if (rtt) args.push('-trace_rtt', '-rtt_freq', '200')
  const dir = mkdtempSync(join(work, 'uac-'))
  const cpu0 = relayCpuMs()
  const started = performance.now()
  const r = await runSipp('uac-message-domain.xml', entry, args, seconds + 15, dir).done
  const elapsed = (performance.now() - started) / 1000
  const cpu1 = relayCpuMs()
  const ok = sippCounter(r.stdout, 'Successful call')
  const failed = sippCounter(r.stdout, 'Failed call')
  const latencies: number[] = []
  if (rtt) {
    for (const f of readdirSync(dir).filter(n => n.endsWith('_rtt.csv'))) {
      for (const line of readFileSync(join(dir, f), 'utf8').split('\n').slice(1)) {
        const v = Number(line.split(';')[1])
        if (Number.isFinite(v) && line.length > 0) latencies.push(v)
      }
    }
  }
  const cpuUsPerMsg = cpu0 === undefined || cpu1 === undefined || ok === 0 ? undefined : (cpu1 - cpu0) * 1000 / ok
  return { rate, sent: calls, ok, failed: failed + Math.max(0, calls - ok - failed), seconds: elapsed, achieved: ok / Math.max(elapsed - 0.2, 0.1), cpuUsPerMsg, latencies }
}

const pct = (xs: number[], p: number): number => {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]
}

/** the SIPp UAS and its registration as user@domain at `registrar` */
async function device (registrar: string, user: string, domain: string): Promise<() => Promise<void>> {
  const uasPort = await freePort()
  const uas = runSipp('uas-message.xml', registrar, ['-t', 'u1', '-p', String(uasPort), '-m', '100000000', '-max_recv_loops', '5000'], 400, work)
  await new Promise(resolve => setTimeout(resolve, 300))
  const reg = await runSipp('uac-register-domain.xml', registrar, ['-t', 'u1', '-m', '1', '-key', 'user', user, '-key', 'domain', domain, '-key', 'contact_host', '127.0.0.1', '-key', 'contact_port', String(uasPort)], 10, work).done
  const stop = async (): Promise<void> => { uas.child.kill(); await uas.done }
  if (reg.code !== 0) { await stop(); throw new Error(`REGISTER failed: ${reg.stdout.slice(-1500)}`) }
  return stop
}

async function scenario (name: 'peer' | 'local'): Promise<Record<string, unknown>> {
  const toDomain = name === 'peer' ? 'example.net' : 'example.com'
  const path = name === 'peer' ? 'example.com node → TLS → example.net node' : 'example.com node (local delivery)'
  console.log(`\n== ${name}: SIPp UAC → ${path} → SIPp UAS, ${STEP_S} s per step; load average ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
  const user = name === 'peer' ? 'bob' : 'carol'
  const fixed = values['latency-rate'] !== undefined ? Math.max(100, Number(values['latency-rate'])) : undefined
  const steps: Step[] = []
  let best: Step | undefined
  let stopDevice: (() => Promise<void>) | undefined
  const setUp = async (): Promise<void> => {
    await startMeshes()
    stopDevice = await device(name === 'peer' ? meshes[1].sip : meshes[0].sip, user, toDomain)
    // the first MESSAGE opens the TLS connection; warm-up also covers JIT and caches
    await runUac(user, toDomain, meshes[0].sip, 500, 2, false)
  }
  const tearDown = async (): Promise<void> => { await stopDevice?.(); stopDevice = undefined; await stopMeshes() }
  if (fixed === undefined) {
    await setUp()
    try {
      for (let rate = 1000; rate <= MAX_RATE && Date.now() < DEADLINE - 30_000; rate += 1000) {
        const s = await runUac(user, toDomain, meshes[0].sip, rate, STEP_S, false)
        steps.push(s)
        const failRatio = s.failed / Math.max(s.sent, 1)
        const pass = failRatio < 0.001 && s.achieved >= rate * 0.9
        console.log(`  rate ${String(rate).padStart(6)}/s: ok ${s.ok}/${s.sent}, failed ${s.failed} (${(failRatio * 100).toFixed(3)}%), achieved ${s.achieved.toFixed(0)}/s${s.cpuUsPerMsg === undefined ? '' : `, CPU of both nodes ${s.cpuUsPerMsg.toFixed(0)} µs/msg`}, load ${loadavg()[0].toFixed(2)} ${pass ? 'PASS' : 'FAIL'}`)
        if (!pass) break
        best = s
      }
    } finally {
      await tearDown()
    }
  }
  await setUp()
  try {
    const half = fixed ?? Math.max(250, Math.round((best?.rate ?? 1000) / 2))
    const lat = await runUac(user, toDomain, meshes[0].sip, half, STEP_S, true)
    const p50 = pct(lat.latencies, 0.5)
    const p99 = pct(lat.latencies, 0.99)
    if (fixed === undefined) console.log(`  highest rate with < 0.1% failures: ${best?.rate ?? 'none'}/s`)
    console.log(`  latency at ${half}/s: p50 ${p50.toFixed(0)} ms, p99 ${p99.toFixed(0)} ms (SIPp resolution 1 ms) over ${lat.latencies.length} samples, failed ${lat.failed}, load ${loadavg()[0].toFixed(2)}`)
    const cpu = steps.filter(s => s.failed === 0 && s.cpuUsPerMsg !== undefined).map(s => s.cpuUsPerMsg as number)
    return { scenario: name, maxRate: fixed === undefined ? best?.rate ?? 0 : undefined, halfRate: half, p50Ms: p50, p99Ms: p99, samples: lat.latencies.length, failedAtHalf: lat.failed, cpuUsPerMsg: cpu.length === 0 ? undefined : Math.round(pct(cpu, 0.5)) }
  } finally {
    await tearDown()
  }
}

const results: Array<Record<string, unknown>> = []
try {
  if (values.only !== 'local') results.push(await scenario('peer'))
  if (values.only !== 'peer') results.push(await scenario('local'))
} finally {
  await stopMeshes()
  rmSync(work, { recursive: true, force: true })
}
console.log(JSON.stringify({ bench: 'peering', results }))
