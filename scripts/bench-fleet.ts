// A fleet of real `sipmesh start` processes on loopback (N = 5, 10, 20 by default), AoRs spread
// over all of them by SIPp (one SIPp per node, distinct users): for each N,
//
//   idle       background traffic per node with nothing to do, from the nodes' /metrics: libp2p
//              packets sent (Noise-encrypted frames) and kad-dht requests sent, per second; and
//              the CPU it costs (left out of the CPU per registration of the claim steps). Measured
//              `--settle` seconds after the fleet connected (default 90: past the nodes' 60 s
//              --mesh-idle, when the connections of the start-up walks have closed), with the mesh
//              connections each node holds then. `--idle-only` stops there.
//   claims     a ladder of fleet rates of new AoRs (the same rate on every node); the highest clean
//              one (no failed REGISTER, retransmissions < 1%, >= 90% of the offered rate achieved),
//              with the kad-dht requests and libp2p packets the whole fleet sent per new AoR (a
//              REGISTER of a new AoR makes more than one claim today), beside log2 N
//   memory     `--users` AoRs in all (default 100,000; at most `--bulk-seconds` of sending) at half
//              the highest clean rate, then, settled (server transactions finished), the growth
//              of each node's RSS divided by the AoRs of the whole fleet (every node of a mesh this
//              small holds a replica of every claim) and by the AoRs it is the registrar of
//
// Not measured here (yet): republish CPU and messages per minute, the restart storm.
// Bounded: each step lasts `--step` seconds (default 5: at a few REGISTERs per second per node, a
// 3 s step's calls are so few that the last answers' latency alone puts the achieved rate under
// 90%), each N at most 200 s once its nodes are up and connected, the whole run at most
// `--budget` seconds (default 900); every process it starts is stopped, on error too.
//
//   node scripts/bench-fleet.ts [--sizes 5,10,20] [--users 100000] [--step 5] [--idle 10]
//        [--settle 90] [--idle-only] [--node-args="--mesh-idle 0"] [--bulk-seconds 45] [--budget 900]
import { mkdtempSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { sippAvailable } from '../test/interop/sipp.ts'
import { httpGet, waitFor } from '../test/e2e/fixtures/processes.ts'
import { rssBytes } from './lib/proc-stats.ts'
import { highestClean, idleCpu, registerRun, stepLine, stepsJson, type Step } from './lib/register-load.ts'
import { nodeMetrics, startSipmesh, type SipmeshProcess } from './lib/sipmesh-process.ts'

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '5,10,20' },
    users: { type: 'string', default: '100000' },
    step: { type: 'string', default: '5' },
    idle: { type: 'string', default: '10' },
    settle: { type: 'string', default: '90' },
    'idle-only': { type: 'boolean', default: false },
    'node-args': { type: 'string', default: '' },
    'bulk-seconds': { type: 'string', default: '45' },
    budget: { type: 'string', default: '900' }
  }
})
const SIZES = values.sizes.split(',').map(Number).filter(n => Number.isInteger(n) && n >= 2 && n <= 40)
const USERS = Math.min(Math.max(Math.round(Number(values.users)), 100), 1_000_000)
const STEP_S = Math.min(Math.max(Number(values.step), 1), 10)
const IDLE_S = Math.min(Math.max(Number(values.idle), 2), 60)
const SETTLE_S = Math.min(Math.max(Number(values.settle), 0), 600)
/** more `sipmesh start` flags for every node (e.g. `--mesh-idle 0` for the behaviour before idle connections closed) */
const NODE_ARGS = values['node-args'].split(/\s+/).filter(a => a.length > 0)
const BULK_S = Math.min(Math.max(Number(values['bulk-seconds']), 5), 300)
const STARTED = Date.now()
const DEADLINE = STARTED + Math.min(Math.max(Number(values.budget), 60), 1800) * 1000
/** REGISTERs per second offered to each node */
const PER_NODE = [0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 4000]
const timeLeft = (): number => DEADLINE - Date.now()
const load = (): string => loadavg().map(l => l.toFixed(2)).join(' ')

if (!sippAvailable()) {
  console.error('sipp is not installed (apt-get install sip-tester)')
  process.exit(1)
}

const work = mkdtempSync(join(tmpdir(), 'sipmesh-bench-fleet-'))
let nodes: SipmeshProcess[] = []

async function stopFleet (): Promise<void> {
  const all = nodes
  nodes = []
  await Promise.all(all.map(async n => { await n.stop() }))
}

/** the sum over the fleet of some counters of /metrics (missing ones read 0) */
async function fleetCounters (names: string[]): Promise<Array<Record<string, number>>> {
  return await Promise.all(nodes.map(async n => {
    const m = await nodeMetrics(n).catch(() => new Map<string, number>())
    return Object.fromEntries(names.map(k => [k, m.get(k) ?? 0]))
  }))
}

const PACKETS = 'libp2p_noise_encrypted_packets_total'
const DHT_OUT = 'libp2p_kad_dht_outbound_rpc_requests_total'
const CONNECTED = 'sipmesh_connected_peers'
const COUNTERS = [PACKETS, DHT_OUT, CONNECTED]
const sum = (xs: Array<Record<string, number>>, k: string): number => xs.reduce((s, x) => s + x[k], 0)

interface SizeResult {
  n: number
  startSeconds: number
  idlePacketsPerNode?: { mean: number, max: number }
  idleDhtPerNode?: { mean: number, max: number }
  idleCpuMsPerSPerNode?: number
  /** mesh peers each node is connected to while idle */
  idleConnectedPerNode?: { mean: number, max: number }
  claimRate?: number
  steps: Step[]
  dhtPerClaim?: number
  packetsPerClaim?: number
  /** the step the per-AoR figures come from */
  perClaimAt?: { rate: number, clean: boolean }
  registrations?: number
  bulkRate?: number
  bulkClean?: boolean
  settled?: boolean
  rssPerRegPerNode?: { mean: number, max: number }
  rssPerOwnReg?: { mean: number, max: number }
  load: string
}

async function size (n: number): Promise<SizeResult> {
  console.log(`\n== ${n} nodes (separate \`sipmesh start\` processes on loopback); load average ${load()}`)
  const result: SizeResult = { n, startSeconds: 0, steps: [], load: load() }
  const t0 = Date.now()
  const spawnedAt = performance.now()
  // node 0, then the others in batches of 5, each bootstrapping from node 0
  nodes.push(await startSipmesh({ dataDir: join(work, `n${n}-0`), args: NODE_ARGS, timeoutMs: 180_000 }))
  const boot = nodes[0].multiaddrs.find(m => m.includes('127.0.0.1')) ?? nodes[0].multiaddrs[0]
  for (let i = 1; i < n; i += 5) {
    const batch = await Promise.all(Array.from({ length: Math.min(5, n - i) }, async (_, j) => await startSipmesh({ dataDir: join(work, `n${n}-${i + j}`), bootstrap: [boot], args: NODE_ARGS, timeoutMs: 180_000 })))
    nodes.push(...batch)
  }
  // connected (each node to at least min(n - 1, 3) others), then the start-up walks settle
  const want = Math.min(n - 1, 3)
  await waitFor(async () => {
    for (const node of nodes) if ((JSON.parse((await httpGet(node.admin, '/status')).body) as { peers: string[] }).peers.length < want) return false
    return true
  }, 60_000, 'the fleet to connect')
  result.startSeconds = (Date.now() - t0) / 1000
  // after the start (206 s for 20 nodes under load average 20), at most 200 s for the rest and the settling
  const budgetEnd = Math.min(DEADLINE, Date.now() + 200_000 + SETTLE_S * 1000)
  console.log(`  started and connected in ${result.startSeconds.toFixed(1)} s; settling ${SETTLE_S} s`)
  await new Promise(resolve => setTimeout(resolve, SETTLE_S * 1000))
  // idle background traffic
  const pids = nodes.map(x => x.pid)
  const i0 = await fleetCounters(COUNTERS)
  const it0 = performance.now()
  const idleCpuMsPerS = await idleCpu(pids, IDLE_S * 1000)
  const i1 = await fleetCounters(COUNTERS)
  const idleS = (performance.now() - it0) / 1000
  const per = (k: string): { mean: number, max: number } => {
    const xs = i1.map((x, i) => (x[k] - i0[i][k]) / idleS)
    return { mean: Number((xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(1)), max: Number(Math.max(...xs).toFixed(1)) }
  }
  result.idlePacketsPerNode = per(PACKETS)
  result.idleDhtPerNode = per(DHT_OUT)
  result.idleCpuMsPerSPerNode = idleCpuMsPerS === undefined ? undefined : Number((idleCpuMsPerS / n).toFixed(1))
  const conns = i1.map(x => x[CONNECTED])
  result.idleConnectedPerNode = { mean: Number((conns.reduce((a, b) => a + b, 0) / n).toFixed(1)), max: Math.max(...conns) }
  console.log(`  idle, per node: ${result.idlePacketsPerNode.mean} libp2p packets/s sent (max ${result.idlePacketsPerNode.max}), ${result.idleDhtPerNode.mean} kad-dht requests/s (max ${result.idleDhtPerNode.max}), CPU ${result.idleCpuMsPerSPerNode ?? '—'} ms/s, connected to ${result.idleConnectedPerNode.mean} peers (max ${result.idleConnectedPerNode.max}), over ${idleS.toFixed(0)} s`)
  if (values['idle-only']) return result
  // claims: the same rate on every node; CPU per registration is the fleet's, less its idle CPU
  const entries = nodes.map(x => x.sip)
  await registerRun({ entries, prefix: `w${n}-`, rate: n, calls: n * 2, cseq: 1, pids, dir: work, spawnedAt, idleCpuMsPerS }) // warm-up
  for (const perNode of PER_NODE) {
    if (Math.min(budgetEnd, DEADLINE) - Date.now() < STEP_S * 1000 + 90_000) { console.log('  (out of time: ladder stopped)'); break }
    const c0 = await fleetCounters(COUNTERS)
    const s = await registerRun({ entries, prefix: `c${n}r${perNode}-`, rate: perNode * n, calls: Math.max(n, Math.round(perNode * n * STEP_S)), cseq: 1, pids, dir: work, spawnedAt, idleCpuMsPerS })
    const c1 = await fleetCounters(COUNTERS)
    result.steps.push(s)
    const dht = s.ok > 0 ? (sum(c1, DHT_OUT) - sum(c0, DHT_OUT)) / s.ok : undefined
    const packets = s.ok > 0 ? (sum(c1, PACKETS) - sum(c0, PACKETS)) / s.ok : undefined
    console.log(`${stepLine('claims ', s)}; fleet per new AoR: ${dht?.toFixed(1) ?? '—'} kad-dht requests, ${packets?.toFixed(1) ?? '—'} libp2p packets`)
    // per new AoR: from the highest clean step, else from the first step (marked not clean)
    if (s.clean || result.steps.length === 1) {
      result.dhtPerClaim = dht === undefined ? undefined : Number(dht.toFixed(1))
      result.packetsPerClaim = packets === undefined ? undefined : Number(packets.toFixed(1))
      result.perClaimAt = { rate: s.rate, clean: s.clean }
    }
    if (!s.clean) break
    await new Promise(resolve => setTimeout(resolve, 500))
  }
  result.claimRate = highestClean(result.steps)?.rate
  // memory: the fleet's AoRs, then the settled RSS of every node
  // half the highest clean rate (or half what the first step achieved), at least 0.1/s per node
  const rate = Number(Math.max(0.1 * n, (result.claimRate ?? (result.steps[0]?.achieved ?? n)) / 2).toFixed(1))
  const seconds = Math.max(5, Math.min(BULK_S, (Math.min(budgetEnd, DEADLINE) - Date.now() - 75_000) / 1000))
  const users = Math.max(n, Math.min(USERS, Math.round(rate * seconds)))
  await new Promise(resolve => setTimeout(resolve, 2000))
  const before = nodes.map(x => rssBytes(x.pid) ?? 0)
  console.log(`  registering ${users} AoRs at ${rate}/s over the ${n} nodes${users < USERS ? ` (fewer than --users ${USERS}: at most ${seconds.toFixed(0)} s of sending)` : ''}`)
  const bulk = await registerRun({ entries, prefix: `b${n}-`, rate, calls: users, cseq: 1, pids, dir: work, spawnedAt, idleCpuMsPerS })
  console.log(stepLine('bulk   ', bulk))
  result.registrations = bulk.ok
  result.bulkRate = rate
  result.bulkClean = bulk.clean
  // Timer J: a UDP non-INVITE server transaction lingers 32 s after its response
  result.settled = await waitFor(async () => {
    for (const node of nodes) if ((await nodeMetrics(node)).get('sipmesh_sip_server_transactions') !== 0) return false
    return true
  }, Math.max(0, Math.min(40_000, DEADLINE - Date.now() - 20_000)), 'server transactions to finish').then(() => true, () => false)
  const after = nodes.map(x => rssBytes(x.pid) ?? 0)
  if (bulk.ok > 0) {
    const growth = after.map((a, i) => a - before[i])
    const perReg = growth.map(g => g / bulk.ok)
    const perOwn = growth.map(g => g / (bulk.ok / n))
    const stat = (xs: number[]): { mean: number, max: number } => ({ mean: Math.round(xs.reduce((a, b) => a + b, 0) / xs.length), max: Math.round(Math.max(...xs)) })
    result.rssPerRegPerNode = stat(perReg)
    result.rssPerOwnReg = stat(perOwn)
    console.log(`  RSS growth per node after ${bulk.ok} AoRs${result.settled ? ', settled' : ' (NOT settled: transactions still live)'}: ${(stat(growth).mean / 2 ** 20).toFixed(1)} MB mean, ${(stat(growth).max / 2 ** 20).toFixed(1)} MB max; per AoR of the fleet ${result.rssPerRegPerNode.mean} B (max ${result.rssPerRegPerNode.max} B), per AoR the node registered ${result.rssPerOwnReg.mean} B`)
  }
  return result
}

const onSignal = (): void => { void stopFleet().finally(() => { rmSync(work, { recursive: true, force: true }); process.exit(130) }) }
process.once('SIGINT', onSignal)
process.once('SIGTERM', onSignal)

const results: SizeResult[] = []
let exitCode = 0
try {
  for (const n of SIZES) {
    if (timeLeft() < 120_000) { console.log(`\n== ${n} nodes: skipped, out of time`); continue }
    try {
      results.push(await size(n))
    } catch (err) {
      // the next size still runs
      console.error(`bench-fleet: ${n} nodes: ${(err as Error).stack ?? String(err)}`)
      exitCode = 1
    } finally {
      await stopFleet()
    }
  }
} catch (err) {
  console.error(`bench-fleet: ${(err as Error).stack ?? String(err)}`)
  exitCode = 1
} finally {
  await stopFleet()
  rmSync(work, { recursive: true, force: true })
}

console.log(`\nsummary (${((Date.now() - STARTED) / 1000).toFixed(0)} s; load average at the end ${load()}):`)
console.log('| N | log2 N | idle packets/s per node (max) | idle kad-dht requests/s per node | idle CPU per node | idle connections per node (max) | fleet new AoRs/s, clean | kad-dht requests per new AoR (fleet) | libp2p packets per new AoR (fleet) | RSS per AoR per node (per own AoR) |')
console.log('|---|---|---|---|---|---|---|---|---|---|')
for (const r of results) {
  const at = r.perClaimAt === undefined ? '' : ` (at ${r.perClaimAt.rate}/s${r.perClaimAt.clean ? '' : ', not clean'})`
  // below 1,000 AoRs the growth drowns in the heap's own ups and downs
  const rss = r.rssPerRegPerNode === undefined ? '—' : (r.registrations ?? 0) < 1000 ? `noise: only ${r.registrations ?? 0} AoRs` : `${r.rssPerRegPerNode.mean.toLocaleString('en-US')} B (${r.rssPerOwnReg?.mean.toLocaleString('en-US')} B) at ${r.registrations?.toLocaleString('en-US')}${r.settled === true ? '' : ', unsettled'}`
  console.log(`| ${r.n} | ${Math.log2(r.n).toFixed(1)} | ${r.idlePacketsPerNode?.mean ?? '—'} (${r.idlePacketsPerNode?.max ?? '—'}) | ${r.idleDhtPerNode?.mean ?? '—'} | ${r.idleCpuMsPerSPerNode ?? '—'} ms/s | ${r.idleConnectedPerNode?.mean ?? '—'} (${r.idleConnectedPerNode?.max ?? '—'}) | ${r.claimRate ?? `none ≥ ${r.steps[0]?.rate ?? '—'}`} | ${r.dhtPerClaim ?? '—'}${at} | ${r.packetsPerClaim ?? '—'}${at} | ${rss} |`)
}
console.log('targets: idle traffic per node grows at most like log N; ≤ 2 KB per registration per node')
console.log(JSON.stringify({ bench: 'fleet', stepSeconds: STEP_S, results: results.map(r => ({ ...r, steps: stepsJson(r.steps) })) }))
process.exit(exitCode)
