// REGISTER under SIPp load on loopback, distinct users: (a) one real `sipmesh start` node alone,
// (b) one node of a 3-node mesh of real processes (SIPp sends to node 0; `--spread` also measures
// the users spread over all three), (c) Kamailio with in-memory usrloc (scripts/kamailio/register.cfg,
// 2 UDP workers by default) in the same run when installed, with the sipmesh/Kamailio ratio of each
// figure. For each target:
//
//   new AoRs   a ladder of rates, each step REGISTERs users nobody registered before (one REGISTER
//              per user, Expires 3600); the highest clean rate is the highest step with no failed
//              call, retransmissions < 1% of the REGISTERs sent and at least 90% of the offered
//              rate achieved; the ladder stops at the first step that is not clean.
//   memory     on a fresh target, `--users` new users (default 100,000; at most `--bulk-seconds`
//              of sending) at half the highest clean new rate; then, settled (the node's server
//              transactions finished), the growth of the node's RSS (/proc/<pid>/status) per
//              registration; for Kamailio the growth of its shared memory (`kamcmd core.shmmem`
//              used, which holds usrloc), or of its processes' RSS without kamcmd.
//   refresh    a ladder over those same users: each step REGISTERs the first users again with the
//              same Call-ID and Contact and a higher CSeq (RFC 3261 10.3: a refresh of a binding).
//
// Bounded: each step lasts `--step` seconds (default 3), the whole run at most ~9 minutes; every
// process it starts (nodes, SIPp, Kamailio) is stopped, on error too. `--smoke` runs a tiny version
// on the lone node only (one step of 50/s for 2 s, 200 users at 50/s, one refresh step, no
// settling; ~15 s) that fails when a REGISTER fails: for CI. CPU per registration is the CPU time
// of the target's processes less what they spend idle (measured after a warm-up). For a memory
// figure nearer 100,000 registrations on a slow build: `--only alone --bulk-seconds 300`.
//
//   node scripts/bench-register.ts [--only alone|mesh|kamailio] [--users 100000] [--step 3]
//        [--max 100000] [--bulk-seconds 90] [--bulk-rate N] [--spread] [--no-kamailio] [--smoke]
//        [--new-only]
//   (--new-only: the ladder of new AoRs alone, no memory or refresh phase: ~1 minute a target)
//   (--bulk-rate: register the --users at N/s instead of half the highest clean new rate, and skip
//   the ladder of new AoRs: a memory figure at a chosen rate)
//   (BENCH_KAMAILIO_WORKERS=n UDP workers, default 2 = the cores here; BENCH_CPU_PROF=<dir> writes
//   a V8 CPU profile of each sipmesh node process into <dir>/<target>-<phase>/, e.g.
//   alone-new/ for the lone node under new-REGISTER load; summarize with
//   `node scripts/cpu-profile-top.ts <file>`)
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { sippAvailable } from '../test/interop/sipp.ts'
import { kamailioAvailable, kamailioShmUsed, startKamailio } from './lib/kamailio.ts'
import { pssBytes, rssBytes, threadTicks, withChildren } from './lib/proc-stats.ts'
import { fmt, highestClean, idleCpu, ratio, registerRun as loadRun, stepLine, stepsJson, type Step } from './lib/register-load.ts'
import { meshConnected, nodeMetrics, settleSipmesh, startSipmesh, type SipmeshProcess } from './lib/sipmesh-process.ts'

const { values } = parseArgs({
  allowNegative: true,
  options: {
    only: { type: 'string' },
    users: { type: 'string', default: '100000' },
    step: { type: 'string', default: '3' },
    max: { type: 'string', default: '100000' },
    'bulk-seconds': { type: 'string', default: '90' },
    'bulk-rate': { type: 'string' },
    spread: { type: 'boolean', default: false },
    kamailio: { type: 'boolean', default: true },
    smoke: { type: 'boolean', default: false },
    'new-only': { type: 'boolean', default: false }
  }
})

type TargetName = 'alone' | 'mesh' | 'kamailio'
const SMOKE = values.smoke
const NEW_ONLY = values['new-only'] && !SMOKE
const BULK_RATE = values['bulk-rate'] === undefined ? undefined : Number(values['bulk-rate'])
const ONLY = values.only as TargetName | undefined
if (ONLY !== undefined && !['alone', 'mesh', 'kamailio'].includes(ONLY)) {
  console.error('--only takes alone, mesh or kamailio')
  process.exit(2)
}
const STEP_S = SMOKE ? 2 : Math.min(Math.max(Number(values.step), 1), 10)
const MAX_RATE = Math.min(Math.max(Number(values.max), 100), 100_000)
const USERS = SMOKE ? 200 : Math.min(Math.max(Math.round(Number(values.users)), 100), 1_000_000)
const BULK_S = SMOKE ? 5 : Math.min(Math.max(Number(values['bulk-seconds']), 5), 300)
const LADDER = SMOKE ? [50] : [10, 25, 50, 100, 250, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000, 6000, 8000, 10_000, 12_000, 14_000, 16_000, 20_000, 24_000, 28_000, 32_000, 40_000, 50_000, 64_000, 80_000, 100_000].filter(r => r <= MAX_RATE)
const STARTED = Date.now()
const DEADLINE = STARTED + (SMOKE ? 90_000 : 540_000)
const SETTLE_MS = SMOKE ? 0 : 80_000 // Timer J (64*T1 = 32 s), then the memory trim (40 s of quiet)
const KAMAILIO_CFG = fileURLToPath(new URL('./kamailio/register.cfg', import.meta.url))
const KAMAILIO_WORKERS = Math.min(Math.max(Number(process.env.BENCH_KAMAILIO_WORKERS ?? '2'), 1), 16)
const CPU_PROF = process.env.BENCH_CPU_PROF

if (!sippAvailable()) {
  console.error('sipp is not installed (apt-get install sip-tester)')
  process.exit(1)
}

const work = mkdtempSync(join(tmpdir(), 'sipmesh-bench-register-'))
const load = (): string => loadavg()[0].toFixed(2)

/** what is benchmarked: where SIPp sends, how its memory is read, how it is stopped */
interface Target {
  name: TargetName
  /** SIP host:port SIPp sends to (the node measured first; `spread` uses them all) */
  entries: string[]
  /** processes whose CPU time is counted (with their children) */
  pids: number[]
  /** bytes: the measured node's RSS, or Kamailio's shared memory in use */
  memory: () => number | undefined
  memoryKind: string
  /** bytes: a second reading where the first is not the process's own (Kamailio: PSS of its processes) */
  memory2?: () => number | undefined
  memory2Kind?: string
  /** resolves once the measured node's server transactions are finished (false: not within `ms`) */
  settle: (ms: number) => Promise<boolean>
  stop: () => Promise<void>
  /** performance.now() when its processes were spawned (a CPU profile's time 0, near enough) */
  spawnedAt: number
  /** CPU its processes spend with nothing to do, ms/s (measured after the warm-up) */
  idleCpuMsPerS?: number
  /** what its nodes logged at warn or error since the last call (slow claims, overload, failed claims) */
  warnings?: () => string[]
  /** sipmesh: CPU ticks of its processes' threads by name, and node 0's counters (see `stepFigures`) */
  figures?: () => Promise<Figures>
}

interface Figures { threads: Map<string, number>, counters: Map<string, number> }

/** node 0's counters read around each step of the new-AoR ladder, per REGISTER answered */
const STEP_COUNTERS: Array<[string, string]> = [
  ['sipmesh_registry_signing_batches_total', 'signing batches'],
  ['sipmesh_registry_write_batches_total', 'claim batches (LevelDB)'],
  ['sipmesh_store_batches_total', 'registration batches (LevelDB)'],
  ['sipmesh_registry_peer_requests_total', 'claim-put requests'],
  ['sipmesh_registry_claims_received_total', 'claims received']
]

/** the CPU ticks of every thread of `pids`, summed by thread name (the main thread as `main`) */
function threadsOf (pids: number[]): Map<string, number> {
  const out = new Map<string, number>()
  for (const pid of pids) {
    for (const [name, ticks] of threadTicks(pid) ?? []) out.set(name, (out.get(name) ?? 0) + ticks)
  }
  return out
}

/**
 * what a step cost per REGISTER answered: CPU by thread (µs; the main threads are what a node's
 * rate is bound by) and node 0's batches (how many claims share a LevelDB batch, a signing batch)
 */
function stepFigures (before: Figures, after: Figures, ok: number): string {
  if (ok === 0) return ''
  const threads = [...after.threads].map(([name, t]) => [name, (t - (before.threads.get(name) ?? 0)) * 10_000 / ok] as const)
    .filter(([, us]) => us >= 1).sort((a, b) => b[1] - a[1]).map(([name, us]) => `${name} ${us.toFixed(0)}`).join(', ')
  const counters = STEP_COUNTERS.map(([metric, label]) => {
    const n = (after.counters.get(metric) ?? 0) - (before.counters.get(metric) ?? 0)
    return `${label} ${(n / ok).toFixed(3)}`
  }).join(', ')
  return `      per REGISTER: CPU µs by thread ${threads}; node 0: ${counters}`
}

const running = new Set<Target>()
let generation = 0

function profDir (name: string, phase: string): string | undefined {
  if (CPU_PROF === undefined) return undefined
  const dir = join(CPU_PROF, `${name}-${phase}`)
  mkdirSync(dir, { recursive: true })
  return dir
}

async function startTarget (name: TargetName, phase: string): Promise<Target> {
  generation++
  const spawnedAt = performance.now()
  let target: Target
  if (name === 'kamailio') {
    const k = await startKamailio({ cfg: KAMAILIO_CFG, workers: KAMAILIO_WORKERS, dir: work, shmMb: 2048 })
    const shm = kamailioShmUsed(k) !== undefined
    target = {
      name,
      entries: [k.sip],
      pids: [k.pid],
      memory: () => shm ? kamailioShmUsed(k) : withChildren([k.pid]).reduce((sum, pid) => sum + (rssBytes(pid) ?? 0), 0),
      memoryKind: shm ? 'shared memory used (kamcmd core.shmmem)' : 'RSS of its processes',
      memory2: () => withChildren([k.pid]).reduce((sum, pid) => sum + (pssBytes(pid) ?? 0), 0),
      memory2Kind: 'PSS of its processes (/proc/<pid>/smaps_rollup)',
      settle: async () => true, // a stateless registrar: nothing lingers
      stop: k.stop,
      spawnedAt
    }
  } else {
    const nodes: SipmeshProcess[] = []
    const stopAll = async (): Promise<void> => { await Promise.all(nodes.map(async n => { await n.stop() })) }
    try {
      const count = name === 'mesh' ? 3 : 1
      for (let i = 0; i < count; i++) {
        nodes.push(await startSipmesh({
          dataDir: join(work, `${name}-${generation}-${i}`),
          bootstrap: i === 0 ? [] : [nodes[0].multiaddrs.find(m => m.includes('127.0.0.1')) ?? nodes[0].multiaddrs[0]],
          cpuProfDir: profDir(name, count === 1 ? phase : `${phase}-node${i}`)
        }))
      }
      if (count > 1) {
        // every node connected to the other two, then the first seconds' start-up work (routing table, identify)
        await meshConnected(nodes)
      } else {
        await new Promise(resolve => setTimeout(resolve, 1000))
      }
    } catch (err) {
      await stopAll()
      throw err
    }
    target = {
      name,
      entries: nodes.map(n => n.sip),
      pids: name === 'mesh' ? nodes.map(n => n.pid) : [nodes[0].pid],
      memory: () => rssBytes(nodes[0].pid),
      memoryKind: name === 'mesh' ? 'RSS of node 0 (/proc/<pid>/status VmRSS), the node SIPp registers with' : 'RSS of the node (/proc/<pid>/status VmRSS)',
      settle: async (ms) => await settleSipmesh(nodes[0], ms),
      stop: stopAll,
      spawnedAt,
      warnings: warnLines(nodes),
      figures: async () => ({ threads: threadsOf(name === 'mesh' ? nodes.map(n => n.pid) : [nodes[0].pid]), counters: await nodeMetrics(nodes[0]) })
    }
  }
  running.add(target)
  return target
}

/**
 * the nodes' warn and error lines logged since the last call (their `msg` and fields, prefixed
 * with the node's index): slow claims (dht/slow-claims.ts), REGISTERs shed for overload, claims
 * that failed: what a step's failures and retransmissions were
 */
function warnLines (nodes: SipmeshProcess[]): () => string[] {
  const read = nodes.map(() => 0)
  return () => {
    const out: string[] = []
    nodes.forEach((n, i) => {
      const lines = n.proc.lines
      for (; read[i] < lines.length; read[i]++) {
        const line = lines[read[i]]
        if (!line.includes('"level":"warn"') && !line.includes('"level":"error"')) continue
        try {
          const fields = JSON.parse(line) as Record<string, unknown>
          const head = `node ${i} ${String(fields.level)}: ${String(fields.msg)}`
          for (const k of ['msg', 'level', 'time', 'pid', 'hostname']) Reflect.deleteProperty(fields, k)
          out.push(`${head} ${JSON.stringify(fields).slice(0, 300)}`)
        } catch {
          out.push(`node ${i}: ${line.slice(0, 300)}`)
        }
      }
    })
    return out
  }
}

async function stopTarget (t: Target): Promise<void> {
  running.delete(t)
  await t.stop()
}

/** one step of SIPp load on the target */
async function registerRun (t: Target, entries: string[], prefix: string, rate: number, calls: number, cseq: number): Promise<Step> {
  return await loadRun({ entries, prefix, rate, calls, cseq, pids: t.pids, dir: work, spawnedAt: t.spawnedAt, idleCpuMsPerS: t.idleCpuMsPerS })
}

function printStep (kind: string, s: Step): void {
  console.log(stepLine(kind, s, CPU_PROF !== undefined))
}

/** the first of what the target's nodes logged at warn or error during the step */
function printWarnings (t: Target): void {
  const lines = t.warnings?.() ?? []
  for (const line of lines.slice(0, 3)) console.log(`      ${line}`)
  if (lines.length > 3) console.log(`      (${lines.length - 3} more warn/error lines)`)
}

const timeLeft = (): number => DEADLINE - Date.now()

/** new AoRs: step up the ladder until a step is not clean; returns every step run */
async function newLadder (t: Target, entries: string[], tag: string): Promise<Step[]> {
  const steps: Step[] = []
  for (const rate of LADDER) {
    if (timeLeft() < STEP_S * 1000 + 25_000) { console.log('  (out of time: ladder stopped)'); break }
    const before = await t.figures?.()
    const s = await registerRun(t, entries, `n${generation}${tag}r${rate}-`, rate, Math.round(rate * STEP_S), 1)
    const after = await t.figures?.()
    steps.push(s)
    printStep('new    ', s)
    if (before !== undefined && after !== undefined) console.log(stepFigures(before, after, s.ok))
    printWarnings(t)
    if (!s.clean) break
    await new Promise(resolve => setTimeout(resolve, 500))
  }
  return steps
}

/**
 * refresh of the `population` users of `prefix` (registered with CSeq 1): starts at the rung just
 * below `from`, steps up while clean; if that first step is not clean, steps down until one is
 */
async function refreshLadder (t: Target, prefix: string, population: number, from: number): Promise<Step[]> {
  const steps: Step[] = []
  let cseq = 2
  let i = Math.max(0, LADDER.findIndex(r => r >= from) - 1)
  let down = false
  while (i >= 0 && i < LADDER.length) {
    if (timeLeft() < STEP_S * 1000 + 25_000) { console.log('  (out of time: ladder stopped)'); break }
    const rate = LADDER[i]
    const s = await registerRun(t, [t.entries[0]], prefix, rate, Math.min(population, Math.round(rate * STEP_S)), cseq++)
    steps.push(s)
    printStep('refresh', s)
    printWarnings(t)
    if (steps.length === 1 && !s.clean) down = true
    if (down ? s.clean : !s.clean) break
    i += down ? -1 : 1
    await new Promise(resolve => setTimeout(resolve, 500))
  }
  return steps
}

interface Result {
  target: TargetName
  newRate?: number
  newSteps: Step[]
  spreadRate?: number
  spreadSteps?: Step[]
  refreshRate?: number
  refreshSteps: Step[]
  registrations?: number
  bulkRate?: number
  bulkFailed?: number
  bulkRetrans?: number
  settled?: boolean
  memoryBefore?: number
  memoryAfter?: number
  bytesPerReg?: number
  memoryKind?: string
  bytesPerReg2?: number
  memory2Kind?: string
  cpuUsPerNewReg?: number
  cpuUsPerRefresh?: number
  load: string
}

/** CPU per registration (µs, above idle) at the highest clean step */
function cpuOf (steps: Step[]): number | undefined {
  const s = highestClean(steps)
  return s?.cpuUsPerReg === undefined ? undefined : Math.round(s.cpuUsPerReg)
}

/**
 * a few registrations first (JIT, caches), gently: the baseline mesh does not take 50/s; then the
 * target's idle CPU, which the steps' CPU per registration leaves out
 */
async function warmUp (t: Target): Promise<void> {
  await registerRun(t, [t.entries[0]], `w${generation}-`, t.name === 'mesh' ? 10 : 50, t.name === 'mesh' ? 30 : 100, 1)
  await new Promise(resolve => setTimeout(resolve, 1000))
  t.idleCpuMsPerS = await idleCpu(t.pids, SMOKE ? 1000 : 3000)
  console.log(`  idle CPU after the warm-up: ${t.idleCpuMsPerS?.toFixed(0) ?? '—'} ms/s (left out of the CPU per registration)`)
}

async function bench (name: TargetName): Promise<Result> {
  const label = name === 'alone' ? 'one sipmesh node alone' : name === 'mesh' ? 'node 0 of a 3-node sipmesh mesh (separate processes)' : `Kamailio (usrloc in memory, ${KAMAILIO_WORKERS} UDP workers)`
  console.log(`\n== ${name}: SIPp REGISTER → ${label}, ${STEP_S} s per step; load average ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
  const result: Result = { target: name, newSteps: [], refreshSteps: [], load: load() }
  // 1. new AoRs on a fresh target (after a small warm-up: JIT, caches)
  let t = await startTarget(name, 'new')
  try {
    await warmUp(t)
    // --bulk-rate: a memory figure at a given rate, no ladder of new AoRs
    result.newSteps = BULK_RATE !== undefined ? [] : await newLadder(t, [t.entries[0]], '')
    result.newRate = highestClean(result.newSteps)?.rate
    result.cpuUsPerNewReg = cpuOf(result.newSteps)
  } finally {
    if (!SMOKE) await stopTarget(t)
  }
  if (values.spread && name === 'mesh' && !SMOKE) {
    // on a fresh mesh: the first ladder's last (not clean) step leaves DHT work behind
    console.log('  -- new AoRs spread over the 3 nodes of a fresh mesh (one SIPp per node, the rate is the total)')
    t = await startTarget(name, 'spread')
    try {
      await warmUp(t)
      result.spreadSteps = await newLadder(t, t.entries, 's')
      result.spreadRate = highestClean(result.spreadSteps)?.rate
    } finally {
      await stopTarget(t)
    }
  }
  if (NEW_ONLY) {
    console.log(`  highest clean rate: new ${result.newRate ?? 'none'}/s${result.spreadRate === undefined && result.spreadSteps === undefined ? '' : `, new spread over 3 nodes ${result.spreadRate ?? 'none'}/s`} (--new-only: no memory or refresh phase)`)
    return result
  }
  // 2. `--users` registrations on a fresh target (the same one in a smoke run), memory before and
  // after; 3. refresh of them
  try {
    if (!SMOKE) {
      t = await startTarget(name, 'bulk-refresh')
      await warmUp(t)
      await new Promise(resolve => setTimeout(resolve, 1000))
    }
    result.memoryKind = t.memoryKind
    result.memoryBefore = t.memory()
    const before2 = t.memory2?.()
    // half the highest clean new rate: a rate held for 3 s is not one held for a minute and more
    // (the first runs sent this at the full rate: the lone node's 500/s turned into a storm of
    // retransmissions after ~30 s)
    const firstRung = result.newSteps[0]
    const rate = SMOKE ? LADDER[0] : BULK_RATE ?? Math.max(25, Math.round((result.newRate ?? (firstRung?.achieved ?? 100) * 0.8) / 2))
    // the mesh's population is mainly for its refresh ladder: half the sending time
    const seconds = Math.max(5, Math.min(name === 'mesh' ? BULK_S / 2 : BULK_S, (timeLeft() - 150_000) / 1000))
    const users = Math.max(1, Math.min(USERS, Math.round(rate * seconds)))
    console.log(`  registering ${users} users at ${rate}/s${users < USERS ? ` (fewer than --users ${USERS}: at most ${seconds.toFixed(0)} s of sending)` : ''}`)
    const bulk = await registerRun(t, [t.entries[0]], `p${generation}-`, rate, users, 1)
    printStep('bulk   ', bulk)
    result.bulkRate = rate
    result.bulkFailed = bulk.failed
    result.bulkRetrans = bulk.retrans
    result.settled = await t.settle(Math.min(SETTLE_MS, Math.max(0, timeLeft() - 60_000)))
    result.memoryAfter = t.memory()
    result.registrations = bulk.ok
    if (result.memoryBefore !== undefined && result.memoryAfter !== undefined && bulk.ok > 0) {
      result.bytesPerReg = Math.round((result.memoryAfter - result.memoryBefore) / bulk.ok)
      console.log(`  memory (${t.memoryKind}): ${(result.memoryBefore / 2 ** 20).toFixed(1)} MB → ${(result.memoryAfter / 2 ** 20).toFixed(1)} MB after ${bulk.ok} registrations${result.settled ? ', settled' : ' (NOT settled: transactions still live)'}: ${result.bytesPerReg} B per registration`)
    }
    const after2 = t.memory2?.()
    if (before2 !== undefined && after2 !== undefined && bulk.ok > 0) {
      result.bytesPerReg2 = Math.round((after2 - before2) / bulk.ok)
      result.memory2Kind = t.memory2Kind
      console.log(`  memory (${t.memory2Kind ?? ''}): ${(before2 / 2 ** 20).toFixed(1)} MB → ${(after2 / 2 ** 20).toFixed(1)} MB: ${result.bytesPerReg2} B per registration`)
    }
    result.refreshSteps = await refreshLadder(t, `p${generation}-`, bulk.ok, result.newRate ?? LADDER[0])
    result.refreshRate = highestClean(result.refreshSteps)?.rate
    result.cpuUsPerRefresh = cpuOf(result.refreshSteps)
  } finally {
    await stopTarget(t)
  }
  console.log(`  highest clean rate: new ${result.newRate ?? 'none'}/s, refresh ${result.refreshRate ?? 'none'}/s${result.spreadRate === undefined && result.spreadSteps === undefined ? '' : `, new spread over 3 nodes ${result.spreadRate ?? 'none'}/s`}`)
  return result
}

const stopAll = async (): Promise<void> => { for (const t of [...running]) await stopTarget(t).catch(() => {}) }
const onSignal = (): void => { void stopAll().finally(() => { rmSync(work, { recursive: true, force: true }); process.exit(130) }) }
process.once('SIGINT', onSignal)
process.once('SIGTERM', onSignal)

const withKamailio = values.kamailio && kamailioAvailable()
const results: Result[] = []
let exitCode = 0
try {
  // Kamailio second: the comparison matters most; the mesh is the one cut short when time runs out
  for (const name of (SMOKE && ONLY === undefined ? ['alone'] : ['alone', 'kamailio', 'mesh']) as TargetName[]) {
    if (ONLY !== undefined && ONLY !== name) continue
    if (name === 'kamailio' && !withKamailio) {
      console.log(`\n== kamailio: ${values.kamailio ? 'not installed (apt-get install kamailio): not compared' : 'not compared (--no-kamailio)'}`)
      continue
    }
    if (timeLeft() < (SMOKE ? 30_000 : 60_000)) { console.log(`\n== ${name}: skipped, out of time`); continue }
    try {
      results.push(await bench(name))
    } catch (err) {
      // the other targets still run (every process of this one is stopped by now)
      console.error(`bench-register: ${name}: ${(err as Error).stack ?? String(err)}`)
      exitCode = 1
    }
  }
} finally {
  await stopAll()
  rmSync(work, { recursive: true, force: true })
}

// the summary and the ratios to Kamailio
const kam = results.find(r => r.target === 'kamailio')
console.log(`\nsummary (${((Date.now() - STARTED) / 1000).toFixed(0)} s; load average at the end ${loadavg().map(l => l.toFixed(2)).join(' ')}):`)
console.log('| target | new AoRs, highest clean rate | refresh, highest clean rate | memory per registration | CPU per registration above idle (the target\'s processes), new / refresh, at the highest clean rate |')
console.log('|---|---|---|---|---|')
for (const r of results) {
  const mem = r.bytesPerReg === undefined ? '—' : `${fmt(r.bytesPerReg, ' B')} at ${fmt(r.registrations)}${r.settled === true ? '' : ' (unsettled)'}${r.bytesPerReg2 === undefined ? '' : ` (PSS: ${fmt(r.bytesPerReg2, ' B')})`}`
  const cpu = `${fmt(r.cpuUsPerNewReg, ' µs')} at ${fmt(r.newRate, '/s')} / ${fmt(r.cpuUsPerRefresh, ' µs')} at ${fmt(r.refreshRate, '/s')}`
  console.log(`| ${r.target} | ${fmt(r.newRate, '/s')}${r.spreadRate !== undefined || r.spreadSteps !== undefined ? ` (spread over 3: ${fmt(r.spreadRate, '/s')})` : ''} | ${fmt(r.refreshRate, '/s')} | ${mem} | ${cpu} |`)
}
const comparison: Record<string, Record<string, number | undefined>> = {}
if (kam !== undefined) {
  for (const r of results.filter(r => r !== kam)) {
    const q = (a?: number, b?: number): number | undefined => a === undefined || b === undefined || b === 0 ? undefined : Number((a / b).toFixed(2))
    // CPU per registration above idle, each at its own highest clean rate (where the per-message cost shows best)
    const cpuNew = q(r.cpuUsPerNewReg, kam.cpuUsPerNewReg)
    const cpuRefresh = q(r.cpuUsPerRefresh, kam.cpuUsPerRefresh)
    comparison[r.target] = { newRate: q(r.newRate, kam.newRate), refreshRate: q(r.refreshRate, kam.refreshRate), bytesPerReg: q(r.bytesPerReg, kam.bytesPerReg), bytesPerRegVsPss: q(r.bytesPerReg, kam.bytesPerReg2), cpuPerNew: cpuNew, cpuPerRefresh: cpuRefresh }
    const x = (v?: number): string => v === undefined ? '—' : `${v.toFixed(2)}x`
    console.log(`${r.target}/Kamailio: new ${ratio(r.newRate, kam.newRate)}, refresh ${ratio(r.refreshRate, kam.refreshRate)}, memory per registration ${ratio(r.bytesPerReg, kam.bytesPerReg)} (RSS vs Kamailio's shared memory; ${ratio(r.bytesPerReg, kam.bytesPerReg2)} vs its PSS), CPU per registration above idle (each at its highest clean rate) new ${x(cpuNew)}, refresh ${x(cpuRefresh)}`)
  }
}
console.log('targets: new ≥ 10,000/s alone, ≥ 5,000/s per node in a 3-node mesh; refresh ≥ 20,000/s and ≥ Kamailio; ≤ 2 KB per registration at 100,000')
const strip = stepsJson
console.log(JSON.stringify({ bench: 'register', smoke: SMOKE, stepSeconds: STEP_S, kamailioWorkers: withKamailio ? KAMAILIO_WORKERS : undefined, results: results.map(r => ({ ...r, newSteps: strip(r.newSteps), refreshSteps: strip(r.refreshSteps), spreadSteps: strip(r.spreadSteps) })), comparison }))

if (SMOKE) {
  const alone = results.find(r => r.target === 'alone')
  const bad = alone === undefined ? ONLY === undefined || ONLY === 'alone' : alone.newSteps.some(s => s.ok !== s.sent) || alone.refreshSteps.some(s => s.ok !== s.sent) || (alone.bulkFailed ?? 0) > 0
  if (bad) { console.error('smoke: REGISTERs of the lone sipmesh node failed'); exitCode = 1 }
}
process.exit(exitCode)
