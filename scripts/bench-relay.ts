// Cross-node MESSAGE relay under SIPp load on loopback: SIPp UAC → gateway A → mesh → gateway B
// → SIPp UAS, and the same through one gateway relaying locally, and (when `kamailio` is
// installed) Kamailio relaying the same scenario (scripts/kamailio/relay.cfg), reported as ratios. Finds the highest rate with
// < 0.1% failures (stepping up), then measures p50/p99 round-trip latency at half that rate.
//
// `--nodes real` (default): two real sipmesh nodes (node/'s SipmeshNode with this gateway, the
// libp2p PeerChannel, the DHT registry), each in its own process. `--nodes memory`: both
// gateways in this one process over the in-memory registry and PeerChannel. Bounded: each step
// lasts `--step` seconds (default 3), at most ~5 minutes in all.
//
//   node scripts/bench-relay.ts [--nodes real|memory] [--step 3] [--max 14000] [--only cross|local|kamailio]
//                               [--latency-rate R]   (skip the step-up; latency at R/s only)
//                               [--no-kamailio]      (Kamailio runs the same scenario when installed;
//                                BENCH_KAMAILIO_WORKERS=n UDP workers, default 2 = the cores here)
//   (BENCH_TRACE_GC=1 prints the real nodes' mark-compact pauses; BENCH_CPU_PROF=<dir> writes a
//   V8 CPU profile of each real node process into <dir>, for `node --cpu-prof` analysis)
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Gateway } from '../sip-gateway/gateway.ts'
import { MemoryStore } from '../sip-gateway/memory-store.ts'
import { MemoryChannelHub } from '../sip-gateway/memory-channel.ts'
import { MemoryMesh, MemoryRegistry } from '../dht/memory-registry.ts'
import type { Logger } from '../sip-gateway/ports.ts'
import { freePort, runSipp, sippAvailable, sippCounter } from '../test/interop/sipp.ts'
import { kamailioAvailable, startKamailio as startKamailioProcess } from './lib/kamailio.ts'
import { cpuMs } from './lib/proc-stats.ts'

const { values, positionals } = parseArgs({
  allowPositionals: true,
  allowNegative: true,
  options: { step: { type: 'string', default: '3' }, max: { type: 'string', default: '14000' }, only: { type: 'string' }, 'latency-rate': { type: 'string' }, kamailio: { type: 'boolean', default: true }, nodes: { type: 'string', default: 'real' }, serve: { type: 'boolean', default: false } }
})

if (values.serve) {
  // child mode: one real node with this gateway; prints its addresses, runs until stdin closes
  const { loadConfig } = await import('../node/config.ts')
  const { SipmeshNode } = await import('../node/sipmesh-node.ts')
  const { sipGateway } = await import('../sip-gateway/index.ts')
  const { config } = await loadConfig(positionals, {})
  const node = new SipmeshNode({ config, gateway: sipGateway, libp2pMetrics: false })
  await node.start()
  console.log('BENCH-READY ' + JSON.stringify({ peerId: node.peerId, multiaddrs: node.mesh.libp2p.getMultiaddrs().map(String), sip: node.sip }))
  process.stdin.resume()
  process.stdin.on('end', () => { void node.stop().then(() => process.exit(0)) })
  await new Promise(() => {})
}
const STEP_S = Math.min(Math.max(Number(values.step), 1), 10)
const MAX_RATE = Math.min(Math.max(Number(values.max), 500), 50_000)
const DEADLINE = Date.now() + 300_000

if (!sippAvailable()) {
  console.error('sipp is not installed (apt-get install sip-tester)')
  process.exit(1)
}

const quiet: Logger = { debug () {}, info () {}, warn () {}, error (msg, f) { console.error(msg, f) }, child () { return quiet } }
const work = mkdtempSync(join(tmpdir(), 'sipmesh-bench-'))
let sipAddrs: string[] = []
let stops: Array<() => Promise<void>> = []
const REAL = values.nodes !== 'memory'
let generation = 0

async function serveNode (i: number, bootstrap?: string): Promise<{ peerId: string, multiaddrs: string[], sip: string }> {
  const port = await freePort()
  const args = ['--serve', '--', '--domain', 'example.com', '--sip', `127.0.0.1:${port}`, '--p2p', '/ip4/127.0.0.1/tcp/0',
    '--data-dir', join(work, `node-${generation}-${i}`), '--admin', '127.0.0.1:0', '--log-level', 'error', ...(bootstrap === undefined ? [] : ['--bootstrap', bootstrap])]
  const child: ChildProcess = spawn(process.execPath, [...(process.env.BENCH_TRACE_GC === '1' ? ['--trace-gc'] : []), ...(process.env.BENCH_CPU_PROF !== undefined ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_CPU_PROF] : []), fileURLToPath(import.meta.url), ...args], { stdio: ['pipe', 'pipe', 'inherit'] })
  if (child.pid !== undefined) relayPids.push(child.pid)
  stops.push(async () => {
    child.stdin?.end()
    const t = setTimeout(() => child.kill('SIGKILL'), 5000)
    if (child.exitCode === null) await new Promise(resolve => child.once('exit', resolve))
    clearTimeout(t)
  })
  const lines = createInterface({ input: child.stdout! })
  return await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('node did not start in 20 s')), 20_000)
    lines.on('line', (line) => {
      if (line.includes('Mark-Compact') && process.env.BENCH_TRACE_GC === '1') console.log(`  [node ${i}] ${line.slice(0, 160)}`)
      if (line.startsWith('BENCH-READY ')) { clearTimeout(t); resolve(JSON.parse(line.slice(12))) }
    })
    child.once('exit', (code) => reject(new Error(`node exited with ${code}`)))
  })
}

/** start two fresh nodes (each phase gets its own, so one phase's lingering transactions do not weigh on the next) */
async function startNodes (): Promise<void> {
  generation++
  sipAddrs = []
  stops = []
  if (REAL) {
    const a = await serveNode(0)
    const b = await serveNode(1, a.multiaddrs.find(m => m.includes('127.0.0.1')) ?? a.multiaddrs[0])
    sipAddrs.push(a.sip, b.sip)
    await new Promise(resolve => setTimeout(resolve, 4000)) // let the two DHTs find each other and settle (start-up work: routing table, identify)
    return
  }
  const mesh = new MemoryMesh()
  const hub = new MemoryChannelHub()
  for (const id of ['node-a', 'node-b']) {
    const registry = new MemoryRegistry(mesh, { nodeId: id })
    const gateway = new Gateway({ registry, peerChannel: hub.channel(id), store: new MemoryStore(), logger: quiet, announceSip: (hp) => { registry.sip = hp } }, {
      domains: ['example.com'], sip: { host: '127.0.0.1', port: 0 }, limits: { maxServerTransactions: 500_000 }
    })
    await gateway.start()
    sipAddrs.push(`127.0.0.1:${gateway.addresses.udp.port}`)
    stops.push(async () => { await gateway.stop(); await registry.stop() })
  }
}

async function stopNodes (): Promise<void> {
  for (const stop of stops.reverse()) await stop()
  stops = []
  relayPids = []
}

/** pids of the relay processes (sipmesh nodes, Kamailio's main process) */
let relayPids: number[] = []

/** CPU time (user + system, ms) of the relay processes and their children (Kamailio's workers) */
function relayCpuMs (): number | undefined {
  return cpuMs(relayPids)
}

const addr = (i: number): string => sipAddrs[i]

interface Step { rate: number, sent: number, ok: number, failed: number, seconds: number, achieved: number, cpuUsPerMsg?: number }

async function runUac (user: string, entry: string, rate: number, seconds: number, rtt: boolean): Promise<Step & { latencies: number[] }> {
  const calls = Math.round(rate * seconds)
  const args = ['-t', 'u1', '-s', user, '-r', String(rate), '-m', String(calls), '-l', '30000', '-recv_timeout', '4000', '-max_recv_loops', '5000', '-max_sched_loops', '5000']
  if (rtt) args.push('-trace_rtt', '-rtt_freq', '200')
  const dir = mkdtempSync(join(work, 'uac-'))
  const cpu0 = relayCpuMs()
  const started = performance.now()
  const r = await runSipp('uac-message.xml', entry, args, seconds + 15, dir).done
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
        if (process.env.BENCH_RTT_DUMP !== undefined && line.length > 0) appendFileSync(process.env.BENCH_RTT_DUMP, line + "\n")
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

/** the UAS and its registration on `owner`; returns a stop function */
async function device (owner: number, user: string): Promise<() => Promise<void>> {
  const uasPort = await freePort()
  const uas = runSipp('uas-message.xml', addr(owner), ['-t', 'u1', '-p', String(uasPort), '-m', '100000000', '-max_recv_loops', '5000'], 400, work)
  await new Promise(resolve => setTimeout(resolve, 300))
  const reg = await runSipp('uac-register.xml', addr(owner), ['-t', 'u1', '-m', '1', '-key', 'user', user, '-key', 'contact_host', '127.0.0.1', '-key', 'contact_port', String(uasPort)], 10, work).done
  const stop = async (): Promise<void> => { uas.child.kill(); await uas.done }
  if (reg.code !== 0) { await stop(); throw new Error(`REGISTER failed: ${reg.stdout.slice(-1500)}`) }
  return stop
}

const KAMAILIO_CFG = fileURLToPath(new URL('./kamailio/relay.cfg', import.meta.url))
const KAMAILIO_WORKERS = Math.min(Math.max(Number(process.env.BENCH_KAMAILIO_WORKERS ?? '2'), 1), 16)

/** one Kamailio (registrar + stateful relay, scripts/kamailio/relay.cfg) on a free UDP port */
async function startKamailio (): Promise<void> {
  generation++
  sipAddrs = []
  stops = []
  const k = await startKamailioProcess({ cfg: KAMAILIO_CFG, workers: KAMAILIO_WORKERS, dir: work })
  relayPids.push(k.pid)
  stops.push(k.stop)
  sipAddrs.push(k.sip)
}

type Relay = 'sipmesh' | 'kamailio'

/** the relay's CPU per message: the median over the passing steps of 3,000/s and more (steadier than one step) */
function cpuAt (steps: Step[]): number | undefined {
  const xs = steps.filter(s => s.rate >= 3000 && s.cpuUsPerMsg !== undefined && s.failed === 0).map(s => s.cpuUsPerMsg!)
  return xs.length === 0 ? undefined : Math.round(pct(xs, 0.5))
}

async function start (relay: Relay): Promise<void> {
  if (relay === 'kamailio') await startKamailio()
  else await startNodes()
}

async function scenario (name: string, owner: number, entry: number, user: string, relay: Relay = 'sipmesh'): Promise<Record<string, unknown>> {
  const path = relay === 'kamailio' ? 'Kamailio (registrar + t_relay)' : entry === owner ? 'A (local delivery)' : 'A → mesh → B'
  console.log(`\n== ${name}: SIPp UAC → ${path} → SIPp UAS, ${STEP_S} s per step; load average ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
  let best: Step | undefined
  const steps: Step[] = []
  const fixed = values['latency-rate'] !== undefined ? Math.max(100, Number(values['latency-rate'])) : undefined
  let stopDevice: (() => Promise<void>) | undefined
  if (fixed !== undefined) {
    best = { rate: fixed * 2, sent: 0, ok: 0, failed: 0, seconds: 0, achieved: 0 }
  } else {
    // phase 1: the highest rate with < 0.1% failures, stepping up
    await start(relay)
    try {
      stopDevice = await device(owner, user)
      await runUac(user, addr(entry), 1000, 3, false) // warm-up (JIT, caches)
      for (let rate = 1000; rate <= MAX_RATE && Date.now() < DEADLINE - 30_000; rate += rate < 10000 ? 1000 : 2000) {
        const s = await runUac(user, addr(entry), rate, STEP_S, false)
        steps.push(s)
        const failRatio = s.failed / Math.max(s.sent, 1)
        const pass = failRatio < 0.001 && s.achieved >= rate * 0.9
        const heap = REAL && relay === 'sipmesh' ? '' : `, heap ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MB`
        console.log(`  rate ${String(rate).padStart(6)}/s: ok ${s.ok}/${s.sent}, failed ${s.failed} (${(failRatio * 100).toFixed(3)}%), achieved ${s.achieved.toFixed(0)}/s${relay === 'sipmesh' ? heap : ''}${s.cpuUsPerMsg === undefined ? '' : `, relay CPU ${s.cpuUsPerMsg.toFixed(0)} µs/msg`}, load ${loadavg()[0].toFixed(2)} ${pass ? 'PASS' : 'FAIL'}`)
        if (!pass) break
        best = s
      }
    } finally {
      await stopDevice?.()
      await stopNodes()
    }
  }
  // phase 2: latency at half that rate, on fresh nodes
  await start(relay)
  try {
    stopDevice = await device(owner, user)
    const half = Math.max(250, Math.round((best?.rate ?? 1000) / 2))
    await runUac(user, addr(entry), half, 3, false) // warm-up at the measured rate
    const lat = await runUac(user, addr(entry), half, STEP_S, true)
    const p50 = pct(lat.latencies, 0.5)
    const p99 = pct(lat.latencies, 0.99)
    const load = loadavg()[0]
    if (fixed === undefined) console.log(`  highest rate with < 0.1% failures: ${best?.rate ?? 'none'}/s${relay === 'sipmesh' ? ' (target >= 5000/s)' : ''}`)
    console.log(`  latency at ${half}/s: p50 ${p50.toFixed(0)} ms, p99 ${p99.toFixed(0)} ms (SIPp resolution 1 ms) over ${lat.latencies.length} samples${relay === 'sipmesh' ? ' (target p99 < 10 ms)' : ''}, failed ${lat.failed}, load ${load.toFixed(2)}`)
    return { scenario: name, relay, maxRate: fixed === undefined ? best?.rate ?? 0 : undefined, halfRate: half, p50Ms: p50, p99Ms: p99, samples: lat.latencies.length, failedAtHalf: lat.failed, load1: Number(load.toFixed(2)), cpuUsPerMsg: cpuAt(steps), steps: steps.map(s => ({ rate: s.rate, ok: s.ok, failed: s.failed, achieved: Math.round(s.achieved), cpuUsPerMsg: s.cpuUsPerMsg === undefined ? undefined : Math.round(s.cpuUsPerMsg) })) }
  } finally {
    await stopDevice?.()
    await stopNodes()
  }
}

const results: Array<Record<string, unknown>> = []
const withKamailio = values.kamailio && kamailioAvailable()
try {
  if (values.only !== 'local' && values.only !== 'kamailio') results.push(await scenario('cross-node', 1, 0, 'bob'))
  if (values.only !== 'cross' && values.only !== 'kamailio') results.push(await scenario('local', 0, 0, 'carol'))
  if (withKamailio && values.only !== 'cross' && values.only !== 'local') results.push(await scenario('kamailio', 0, 0, 'dave', 'kamailio'))
} finally {
  await stopNodes()
  rmSync(work, { recursive: true, force: true })
}
const channel = REAL ? 'libp2p (two sipmesh node processes, DHT registry)' : 'in-memory PeerChannel and registry, both gateways in one process'
const kam = results.find(r => r.relay === 'kamailio')
let comparison: Record<string, number> | undefined
if (kam !== undefined) {
  comparison = {}
  console.log(`\nnodes: ${channel}; Kamailio ${KAMAILIO_WORKERS} UDP worker(s), scripts/kamailio/relay.cfg, same SIPp scenario, same run:`)
  for (const r of results.filter(r => r.relay !== 'kamailio')) {
    if (typeof r.maxRate === 'number' && typeof kam.maxRate === 'number' && kam.maxRate > 0) {
      comparison[`${String(r.scenario)}MaxRateRatio`] = Number((r.maxRate / kam.maxRate).toFixed(2))
      const cpu = typeof r.cpuUsPerMsg === 'number' && typeof kam.cpuUsPerMsg === 'number' ? r.cpuUsPerMsg / kam.cpuUsPerMsg : undefined
      if (cpu !== undefined) comparison[`${String(r.scenario)}CpuPerMsgRatio`] = Number(cpu.toFixed(2))
      console.log(`  ${String(r.scenario)}: highest rate ${r.maxRate}/s vs Kamailio ${kam.maxRate}/s = ${(r.maxRate / kam.maxRate).toFixed(2)}x; relay CPU per message ${String(r.cpuUsPerMsg)} µs vs ${String(kam.cpuUsPerMsg)} µs${cpu === undefined ? '' : ` = ${cpu.toFixed(1)}x`}; p99 at half rate ${String(r.p99Ms)} ms vs ${String(kam.p99Ms)} ms`)
    }
  }
} else {
  console.log(`\nnodes: ${channel}; Kamailio: ${!values.kamailio ? 'not compared (--no-kamailio)' : 'not compared (kamailio is not installed; apt-get install kamailio)'}`)
}
console.log(JSON.stringify({ bench: 'relay', nodes: REAL ? 'real' : 'memory', kamailioWorkers: withKamailio ? KAMAILIO_WORKERS : undefined, results, comparison }))
