// Cross-node MESSAGE relay under SIPp load on loopback: SIPp UAC → gateway A → mesh → gateway B
// → SIPp UAS, and the same through one gateway relaying locally. Finds the highest rate with
// < 0.1% failures (stepping up), then measures p50/p99 round-trip latency at half that rate.
//
// The two gateways run in this one process over the in-memory registry and PeerChannel (the
// libp2p channel of node/ is not used here): both share one core, so the cross-node figure is a
// lower bound of what two separate nodes do. Bounded: each step lasts `--step` seconds (default
// 3), at most ~3 minutes in all.
//
//   node scripts/bench-relay.ts [--step 3] [--max 14000] [--only cross|local]
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Gateway } from '../sip-gateway/gateway.ts'
import { MemoryStore } from '../sip-gateway/memory-store.ts'
import { MemoryChannelHub } from '../sip-gateway/memory-channel.ts'
import { MemoryMesh, MemoryRegistry } from '../dht/memory-registry.ts'
import type { Logger } from '../sip-gateway/ports.ts'
import { freePort, runSipp, sippAvailable, sippCounter } from '../test/interop/sipp.ts'

const { values } = parseArgs({ options: { step: { type: 'string', default: '3' }, max: { type: 'string', default: '14000' }, only: { type: 'string' } } })
const STEP_S = Math.min(Math.max(Number(values.step), 1), 10)
const MAX_RATE = Math.min(Math.max(Number(values.max), 500), 50_000)
const DEADLINE = Date.now() + 200_000

if (!sippAvailable()) {
  console.error('sipp is not installed (apt-get install sip-tester)')
  process.exit(1)
}

const quiet: Logger = { debug () {}, info () {}, warn () {}, error (msg, f) { console.error(msg, f) }, child () { return quiet } }
const mesh = new MemoryMesh()
const hub = new MemoryChannelHub()
const nodes: Array<{ gateway: Gateway, registry: MemoryRegistry }> = []
for (const id of ['node-a', 'node-b']) {
  const registry = new MemoryRegistry(mesh, { nodeId: id })
  const gateway = new Gateway({ registry, peerChannel: hub.channel(id), store: new MemoryStore(), logger: quiet, announceSip: (hp) => { registry.sip = hp } }, {
    domains: ['example.com'], sip: { host: '127.0.0.1', port: 0 }, limits: { maxServerTransactions: 200_000 }
  })
  await gateway.start()
  nodes.push({ gateway, registry })
}
const addr = (i: number): string => `127.0.0.1:${nodes[i].gateway.addresses.udp.port}`
const work = mkdtempSync(join(tmpdir(), 'sipmesh-bench-'))

interface Step { rate: number, sent: number, ok: number, failed: number, seconds: number, achieved: number }

async function runUac (user: string, entry: string, rate: number, seconds: number, rtt: boolean): Promise<Step & { latencies: number[] }> {
  const calls = Math.round(rate * seconds)
  const args = ['-t', 'u1', '-s', user, '-r', String(rate), '-m', String(calls), '-l', '30000', '-recv_timeout', '4000', '-max_recv_loops', '5000', '-max_sched_loops', '5000']
  if (rtt) args.push('-trace_rtt', '-rtt_freq', '200')
  const dir = mkdtempSync(join(work, 'uac-'))
  const started = performance.now()
  const r = await runSipp('uac-message.xml', entry, args, seconds + 15, dir).done
  const elapsed = (performance.now() - started) / 1000
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
  return { rate, sent: calls, ok, failed: failed + Math.max(0, calls - ok - failed), seconds: elapsed, achieved: ok / Math.max(elapsed - 0.2, 0.1), latencies }
}

const pct = (xs: number[], p: number): number => {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]
}

async function scenario (name: string, owner: number, entry: number, user: string): Promise<Record<string, unknown>> {
  const uasPort = await freePort()
  const uas = runSipp('uas-message.xml', addr(owner), ['-t', 'u1', '-p', String(uasPort), '-m', '100000000', '-max_recv_loops', '5000'], 400, work)
  try {
    await new Promise(resolve => setTimeout(resolve, 300))
    const reg = await runSipp('uac-register.xml', addr(owner), ['-t', 'u1', '-m', '1', '-key', 'user', user, '-key', 'contact_host', '127.0.0.1', '-key', 'contact_port', String(uasPort)], 10, work).done
    if (reg.code !== 0) throw new Error(`REGISTER failed: ${reg.stdout.slice(-1500)}`)
    console.log(`\n== ${name}: SIPp UAC → ${entry === owner ? 'A (local delivery)' : 'A → mesh → B'} → SIPp UAS, ${STEP_S} s per step`)
    // warm-up
    await runUac(user, addr(entry), 500, 1, false)
    let best: Step | undefined
    const steps: Step[] = []
    for (let rate = 1000; rate <= MAX_RATE && Date.now() < DEADLINE - 30_000; rate += rate < 4000 ? 1000 : rate < 10000 ? 1000 : 2000) {
      const s = await runUac(user, addr(entry), rate, STEP_S, false)
      steps.push(s)
      const failRatio = s.failed / Math.max(s.sent, 1)
      const pass = failRatio < 0.001 && s.achieved >= rate * 0.95
      console.log(`  rate ${String(rate).padStart(6)}/s: ok ${s.ok}/${s.sent}, failed ${s.failed} (${(failRatio * 100).toFixed(3)}%), achieved ${s.achieved.toFixed(0)}/s ${pass ? 'PASS' : 'FAIL'}`)
      if (!pass) break
      best = s
    }
    const half = Math.max(250, Math.round((best?.rate ?? 1000) / 2))
    const lat = await runUac(user, addr(entry), half, STEP_S, true)
    const p50 = pct(lat.latencies, 0.5)
    const p99 = pct(lat.latencies, 0.99)
    console.log(`  highest rate with < 0.1% failures: ${best?.rate ?? 'none'}/s (target >= 5000/s)`)
    console.log(`  latency at ${half}/s: p50 ${p50.toFixed(2)} ms, p99 ${p99.toFixed(2)} ms over ${lat.latencies.length} samples (target p99 < 10 ms), failed ${lat.failed}`)
    return { scenario: name, maxRate: best?.rate ?? 0, halfRate: half, p50Ms: p50, p99Ms: p99, samples: lat.latencies.length, steps: steps.map(s => ({ rate: s.rate, ok: s.ok, failed: s.failed })) }
  } finally {
    uas.child.kill()
    await uas.done
  }
}

const results: Array<Record<string, unknown>> = []
try {
  if (values.only !== 'local') results.push(await scenario('cross-node', 1, 0, 'bob'))
  if (values.only !== 'cross') results.push(await scenario('local', 0, 0, 'carol'))
} finally {
  for (const n of nodes) { await n.gateway.stop(); await n.registry.stop() }
  rmSync(work, { recursive: true, force: true })
}
console.log('\nchannel: in-memory PeerChannel, both gateways in one Node process (one core); kamailio: ' + (sippAvailable() ? 'not compared here' : 'n/a'))
console.log(JSON.stringify({ bench: 'relay', channel: 'memory', results }))
