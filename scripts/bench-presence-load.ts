// Presence under SIPp load on loopback (issue 11), Kamailio's presence in the same run:
//
//   alone     one `sipmesh start` node: the presentities are registered on it, SIPp's watchers
//             subscribe to it
//   cross     a 2-node mesh of real processes: the presentities are registered on node 2, SIPp's
//             watchers subscribe at node 1 (node 1 holds one back-end subscription per presentity
//             to node 2, shared by its watchers)
//   kamailio  Kamailio with presence + presence_xml, subscriptions and presentities in memory
//             (scripts/kamailio/presence.cfg, 2 UDP workers by default); it has no registrar here,
//             so its presentities are not registered (its NOTIFYs carry no PIDF body)
//
// For each target, on a fresh target after a warm-up:
//
//   SUBSCRIBE  a ladder of rates; each call is a new watcher (distinct AoRs across the run)
//              subscribing to one of `--presentities` presentities in turn: SUBSCRIBE, 200, the
//              first NOTIFY answered 200 (test/interop/scenarios/uac-subscribe-bench.xml). The
//              highest clean rate is the highest step with no failed call, retransmissions < 1% of
//              the calls and at least 90% of the offered rate achieved; the ladder stops at the
//              first step that is not clean.
//   PUBLISH    (alone and kamailio) a ladder of calls of initial, modify and remove PUBLISH (three
//              requests per call, uac-publish-bench.xml), a new publication per call, of a second
//              set of registered presentities that nobody watches (a sipmesh node serves PUBLISH
//              for its registered users only).
//   cold       (`--cold`) a ladder of first SUBSCRIBEs: each call subscribes to a presentity nobody
//              watched before (registered just before the step, on node 2 for `cross`), so every
//              call pays the cold start of a presentity (for `cross`: the owner found in the
//              registry, the interest registered, the back-end subscription to node 2 set up).
//   memory     on a fresh target, `--subs` (10,000) subscriptions at `--mem-rate`/s, then settled
//              (no server transaction left and the node's memory trimmed), the RSS growth per
//              subscription; Kamailio: the growth of its shared memory (kamcmd core.shmmem).
//
// CPU per call is the CPU time of the target's processes (both nodes for `cross`; Kamailio with
// its workers) less what they spend idle, at the highest clean step. Bounded: each step lasts
// `--step` seconds (default 3), the whole run at most ~15 minutes; every process started is
// stopped, on error too. Loopback only.
//
//   node scripts/bench-presence-load.ts [--only alone|cross|kamailio] [--step 3] [--max 20000]
//        [--presentities 100] [--subs 10000] [--mem-rate 300] [--no-kamailio] [--no-publish] [--no-memory]
//        [--cold] [--no-subscribe]
//   (BENCH_KAMAILIO_WORKERS=n UDP workers, default 2; BENCH_CPU_PROF=<dir> writes a V8 CPU profile
//   of each sipmesh node into <dir>/<target>-<phase>[-node<i>]/; `node scripts/cpu-profile-top.ts`)
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { sippAvailable } from '../test/interop/sipp.ts'
import { kamailioAvailable, kamailioShmUsed, startKamailio } from './lib/kamailio.ts'
import { rssBytes } from './lib/proc-stats.ts'
import { fmt, highestClean, idleCpu, ratio, registerRun, sippStep, stepLine, stepsJson, type Step } from './lib/register-load.ts'
import { meshConnected, nodeMetrics, settleSipmesh, startSipmesh, type SipmeshProcess } from './lib/sipmesh-process.ts'

const { values } = parseArgs({
  allowNegative: true,
  options: {
    only: { type: 'string' },
    step: { type: 'string', default: '3' },
    max: { type: 'string', default: '20000' },
    presentities: { type: 'string', default: '100' },
    subs: { type: 'string', default: '10000' },
    'mem-rate': { type: 'string', default: '300' },
    kamailio: { type: 'boolean', default: true },
    publish: { type: 'boolean', default: true },
    memory: { type: 'boolean', default: true },
    subscribe: { type: 'boolean', default: true },
    cold: { type: 'boolean', default: false }
  }
})

type TargetName = 'alone' | 'cross' | 'kamailio'
const ONLY = values.only as TargetName | undefined
if (ONLY !== undefined && !['alone', 'cross', 'kamailio'].includes(ONLY)) {
  console.error('--only takes alone, cross or kamailio')
  process.exit(2)
}
const STEP_S = Math.min(Math.max(Number(values.step), 1), 10)
const MAX_RATE = Math.min(Math.max(Number(values.max), 50), 50_000)
const PRESENTITIES = Math.min(Math.max(Math.round(Number(values.presentities)), 1), 10_000)
const SUBS = Math.min(Math.max(Math.round(Number(values.subs)), 100), 100_000)
const MEM_RATE = Math.min(Math.max(Number(values['mem-rate']), 10), 10_000)
const LADDER = [50, 100, 250, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000, 6000, 8000, 10_000, 12_000, 16_000, 20_000, 30_000, 50_000].filter(r => r <= MAX_RATE)
const STARTED = Date.now()
const DEADLINE = STARTED + 900_000
const SETTLE_MS = 80_000 // timer J (32 s), then the memory trim (40 s of quiet)
const KAMAILIO_CFG = fileURLToPath(new URL('./kamailio/presence.cfg', import.meta.url))
const KAMAILIO_WORKERS = Math.min(Math.max(Number(process.env.BENCH_KAMAILIO_WORKERS ?? '2'), 1), 16)
const CPU_PROF = process.env.BENCH_CPU_PROF
const EXPIRES = 3600

if (!sippAvailable()) {
  console.error('sipp is not installed (apt-get install sip-tester)')
  process.exit(1)
}

const work = mkdtempSync(join(tmpdir(), 'sipmesh-bench-presence-'))
const timeLeft = (): number => DEADLINE - Date.now()
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

/** SIPp injection files naming the presentities, one per call in turn: watched ones, and published ones nobody watches */
function injection (prefix: string, count = PRESENTITIES): string {
  const file = join(work, `${prefix}.csv`)
  writeFileSync(file, ['SEQUENTIAL', ...Array.from({ length: count }, (_, i) => `${prefix}${i + 1}`)].join('\n') + '\n')
  return file
}
const presentityFile = injection('pres')
const publisherFile = injection('pub')

interface Target {
  name: TargetName
  /** where SIPp's watchers and publishers send */
  entry: string
  /** where the presentities register (undefined: not registered) */
  registrar?: string
  pids: number[]
  memory: () => number | undefined
  memoryKind: string
  /** resolves once the target is settled (sipmesh: no server transaction left, then told to trim its memory, waiting at most `trimWaitMs` for that) */
  settle: (ms: number, trimWaitMs?: number) => Promise<boolean>
  /** the V8 heap in use, bytes (sipmesh: nodejs_heap_size_used_bytes of the watchers' node, just after its trim) */
  heap?: () => Promise<number | undefined>
  /** memory trims the nodes ran so far (node/memory-trim.ts: a full GC, which stalls the node) */
  trims?: () => Promise<number>
  stop: () => Promise<void>
  spawnedAt: number
  idleCpuMsPerS?: number
}

const running = new Set<Target>()
let generation = 0

function profDir (name: string, phase: string): string | undefined {
  if (CPU_PROF === undefined) return undefined
  const dir = join(CPU_PROF, `${name}-${phase}`)
  mkdirSync(dir, { recursive: true })
  return dir
}

/** a db_text directory for Kamailio's start-up (a copy of the package's empty tables) */
function kamailioDb (): string {
  const dir = mkdtempSync(join(work, 'kamdb-'))
  cpSync('/usr/share/kamailio/dbtext/kamailio', dir, { recursive: true })
  return dir
}

async function startTarget (name: TargetName, phase: string): Promise<Target> {
  generation++
  const spawnedAt = performance.now()
  let target: Target
  if (name === 'kamailio') {
    // the cfg names its database by a define (DBURL): a copy with it defined, for kamailio.ts
    const cfg = join(work, `presence-${generation}.cfg`)
    writeFileSync(cfg, readFileSync(KAMAILIO_CFG, 'utf8').replace(/^#!KAMAILIO\n/, `#!KAMAILIO\n#!define DBURL "text://${kamailioDb()}"\n`))
    const k = await startKamailio({ cfg, workers: KAMAILIO_WORKERS, dir: work, shmMb: 2048 })
    target = {
      name,
      entry: k.sip,
      pids: [k.pid],
      memory: () => kamailioShmUsed(k),
      memoryKind: 'shared memory used (kamcmd core.shmmem)',
      settle: async (ms) => { await sleep(Math.min(ms, 5000)); return true },
      stop: k.stop,
      spawnedAt
    }
  } else {
    const nodes: SipmeshProcess[] = []
    const stopAll = async (): Promise<void> => { await Promise.all(nodes.map(async n => { await n.stop() })) }
    const count = name === 'cross' ? 2 : 1
    try {
      for (let i = 0; i < count; i++) {
        nodes.push(await startSipmesh({
          dataDir: join(work, `${name}-${generation}-${i}`),
          bootstrap: i === 0 ? [] : [nodes[0].multiaddrs.find(m => m.includes('127.0.0.1')) ?? nodes[0].multiaddrs[0]],
          cpuProfDir: profDir(name, count === 1 ? phase : `${phase}-node${i + 1}`)
        }))
      }
      if (count > 1) await meshConnected(nodes)
      else await sleep(1000)
    } catch (err) {
      await stopAll()
      throw err
    }
    target = {
      name,
      entry: nodes[0].sip,
      registrar: nodes[count - 1].sip,
      pids: nodes.map(n => n.pid),
      memory: () => rssBytes(nodes[0].pid),
      memoryKind: name === 'cross' ? 'RSS of node 1, the watchers\' node (/proc/<pid>/status VmRSS)' : 'RSS of the node (/proc/<pid>/status VmRSS)',
      settle: async (ms, trimWaitMs) => await settleSipmesh(nodes[0], ms, trimWaitMs, true),
      heap: async () => (await nodeMetrics(nodes[0])).get('nodejs_heap_size_used_bytes'),
      trims: async () => (await Promise.all(nodes.map(async n => (await nodeMetrics(n)).get('sipmesh_memory_trims_total') ?? 0))).reduce((a, b) => a + b, 0),
      stop: stopAll,
      spawnedAt
    }
  }
  running.add(target)
  return target
}

async function stopTarget (t: Target): Promise<void> {
  running.delete(t)
  await t.stop()
}

/** `calls` new watchers subscribing at `rate`/s (to the presentities of `inf` in turn) */
async function subscribeRun (t: Target, prefix: string, rate: number, calls: number, inf = presentityFile): Promise<Step> {
  return await sippStep({
    scenario: 'uac-subscribe-bench.xml',
    entries: [t.entry],
    prefix,
    rate,
    calls,
    args: (p) => ['-key', 'prefix', p, '-key', 'expires', String(EXPIRES), '-inf', inf],
    pids: t.pids,
    dir: work,
    spawnedAt: t.spawnedAt,
    idleCpuMsPerS: t.idleCpuMsPerS
  })
}

/** `calls` new publications (of the `pub` presentities in turn), each published, modified and removed, at `rate` calls/s */
async function publishRun (t: Target, prefix: string, rate: number, calls: number): Promise<Step> {
  return await sippStep({ scenario: 'uac-publish-bench.xml', entries: [t.entry], prefix, rate, calls, args: (p) => ['-key', 'prefix', p, '-inf', publisherFile], pids: t.pids, dir: work, spawnedAt: t.spawnedAt, idleCpuMsPerS: t.idleCpuMsPerS })
}

/** `calls` first watchers of as many new presentities (registered first, not timed), at `rate`/s */
async function coldRun (t: Target, rate: number): Promise<Step> {
  const calls = Math.round(rate * STEP_S)
  const prefix = `c${generation}r${rate}-`
  if (t.registrar !== undefined) {
    const r = await registerRun({ entries: [t.registrar], prefix, rate: Math.min(2000, Math.max(200, rate)), calls, cseq: 1, pids: [], dir: work })
    if (r.ok !== calls) throw new Error(`${t.name}: only ${r.ok} of ${calls} cold presentities registered`)
    await sleep(500)
  }
  return await subscribeRun(t, `w${prefix}`, rate, calls, injection(prefix, calls))
}

/** the presentities registered (sipmesh), a few subscriptions and publications (JIT), idle CPU */
async function prepare (t: Target): Promise<void> {
  for (const prefix of t.registrar === undefined ? [] : ['pres', 'pub']) {
    const r = await registerRun({ entries: [t.registrar ?? ''], prefix, rate: 200, calls: PRESENTITIES, cseq: 1, pids: [], dir: work })
    if (r.ok !== PRESENTITIES) throw new Error(`${t.name}: only ${r.ok} of ${PRESENTITIES} presentities (${prefix}) registered`)
  }
  // one watcher per presentity (each presentity's first subscription at node 1 of `cross` sets up
  // its back-end subscription: a DHT resolve, a registry watch, the SUBSCRIBE to node 2): the
  // ladder then measures SUBSCRIBEs to presentities already watched there; this step is the
  // cold start, reported on its own
  const w = await subscribeRun(t, `w${generation}-`, 25, PRESENTITIES)
  console.log(stepLine('first watcher of each presentity', w, CPU_PROF !== undefined).replace(' µs/reg', ' µs/call'))
  if (values.publish && t.name !== 'cross') await publishRun(t, `wp${generation}-`, 25, 25)
  await sleep(1000)
  t.idleCpuMsPerS = await idleCpu(t.pids, 3000)
  console.log(`  idle CPU after the warm-up: ${t.idleCpuMsPerS?.toFixed(0) ?? '—'} ms/s (left out of the CPU per call)`)
}

async function ladder (kind: string, run: (rate: number) => Promise<Step>, t?: Target): Promise<Step[]> {
  const steps: Step[] = []
  for (const rate of LADDER) {
    if (timeLeft() < STEP_S * 1000 + 30_000) { console.log('  (out of time: ladder stopped)'); break }
    const trims = await t?.trims?.().catch(() => undefined)
    const s = await run(rate)
    steps.push(s)
    const trimmed = trims === undefined ? 0 : ((await t?.trims?.().catch(() => undefined)) ?? trims) - trims
    console.log(stepLine(kind, s, CPU_PROF !== undefined).replace(' µs/reg', ' µs/call') + (trimmed > 0 ? ' (a memory trim ran in this step)' : ''))
    if (!s.clean) break
    await sleep(1000)
  }
  return steps
}

interface Result {
  target: TargetName
  subscribeRate?: number
  subscribeSteps: Step[]
  cpuUsPerSubscribe?: number
  coldRate?: number
  coldSteps: Step[]
  cpuUsPerCold?: number
  publishRate?: number
  publishSteps: Step[]
  cpuUsPerPublishCall?: number
  subscriptions?: number
  memRetrans?: number
  settled?: boolean
  memoryBefore?: number
  memoryAfter?: number
  bytesPerSub?: number
  heapBefore?: number
  heapAfter?: number
  heapBytesPerSub?: number
  memoryKind?: string
  load: string
}

const cpuOf = (steps: Step[]): number | undefined => {
  const s = highestClean(steps)
  return s?.cpuUsPerReg === undefined ? undefined : Math.round(s.cpuUsPerReg)
}

async function bench (name: TargetName): Promise<Result> {
  const label = name === 'alone' ? 'one sipmesh node' : name === 'cross' ? 'node 1 of a 2-node mesh, presentities on node 2' : `Kamailio (presence in memory, ${KAMAILIO_WORKERS} UDP workers)`
  console.log(`\n== ${name}: SIPp → ${label}, ${STEP_S} s per step; load average ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
  const result: Result = { target: name, subscribeSteps: [], coldSteps: [], publishSteps: [], load: loadavg()[0].toFixed(2) }
  let t = await startTarget(name, 'load')
  try {
    await prepare(t)
    if (values.subscribe) {
      result.subscribeSteps = await ladder('SUBSCRIBE', async rate => await subscribeRun(t, `s${generation}r${rate}-`, rate, Math.round(rate * STEP_S)), t)
      result.subscribeRate = highestClean(result.subscribeSteps)?.rate
      result.cpuUsPerSubscribe = cpuOf(result.subscribeSteps)
    }
    if (values.cold) {
      await sleep(2000)
      result.coldSteps = await ladder('cold SUB ', async rate => await coldRun(t, rate), t)
      result.coldRate = highestClean(result.coldSteps)?.rate
      result.cpuUsPerCold = cpuOf(result.coldSteps)
    }
    if (values.publish && name !== 'cross') {
      await sleep(2000)
      result.publishSteps = await ladder('PUBLISH×3', async rate => await publishRun(t, `p${generation}r${rate}-`, rate, Math.round(rate * STEP_S)), t)
      result.publishRate = highestClean(result.publishSteps)?.rate
      result.cpuUsPerPublishCall = cpuOf(result.publishSteps)
    }
  } finally {
    await stopTarget(t)
  }
  if (!values.memory) return result
  if (timeLeft() < SUBS / MEM_RATE * 1000 + 40_000) {
    console.log('  (out of time: no memory figure)')
    return result
  }
  t = await startTarget(name, 'memory')
  try {
    await prepare(t)
    // both readings are of a trimmed node (told to trim once its transactions are gone): a trim
    // of its own between them made the figure meaningless (negative once: issue 11)
    const trimmed = await t.settle(SETTLE_MS, 60_000)
    console.log(`  before the subscriptions: ${trimmed ? 'settled' : 'NOT settled'}`)
    result.memoryKind = t.memoryKind
    result.memoryBefore = t.memory()
    result.heapBefore = await t.heap?.()
    const s = await subscribeRun(t, `m${generation}-`, MEM_RATE, SUBS)
    console.log(stepLine('memory   ', s))
    result.memRetrans = s.retrans
    result.settled = await t.settle(Math.min(SETTLE_MS, Math.max(0, timeLeft() - 20_000)))
    result.memoryAfter = t.memory()
    result.heapAfter = await t.heap?.()
    result.subscriptions = s.ok
    if (result.memoryBefore !== undefined && result.memoryAfter !== undefined && s.ok > 0) {
      result.bytesPerSub = Math.round((result.memoryAfter - result.memoryBefore) / s.ok)
      console.log(`  memory (${t.memoryKind}): ${(result.memoryBefore / 2 ** 20).toFixed(1)} MB → ${(result.memoryAfter / 2 ** 20).toFixed(1)} MB after ${s.ok} subscriptions${result.settled ? ', settled' : ' (NOT settled)'}: ${result.bytesPerSub} B per subscription`)
    }
    if (result.heapBefore !== undefined && result.heapAfter !== undefined && s.ok > 0) {
      result.heapBytesPerSub = Math.round((result.heapAfter - result.heapBefore) / s.ok)
      console.log(`  V8 heap in use: ${(result.heapBefore / 2 ** 20).toFixed(1)} MB → ${(result.heapAfter / 2 ** 20).toFixed(1)} MB: ${result.heapBytesPerSub} B per subscription`)
    }
  } finally {
    await stopTarget(t)
  }
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
  for (const name of ['alone', 'kamailio', 'cross'] as TargetName[]) {
    if (ONLY !== undefined && ONLY !== name) continue
    if (name === 'kamailio' && !withKamailio) {
      console.log(`\n== kamailio: ${values.kamailio ? 'not installed (apt-get install kamailio kamailio-presence-modules): not compared' : 'not compared (--no-kamailio)'}`)
      continue
    }
    if (timeLeft() < 60_000) { console.log(`\n== ${name}: skipped, out of time`); continue }
    try {
      results.push(await bench(name))
    } catch (err) {
      console.error(`bench-presence-load: ${name}: ${(err as Error).stack ?? String(err)}`)
      exitCode = 1
    }
  }
} finally {
  await stopAll()
  rmSync(work, { recursive: true, force: true })
}

const kam = results.find(r => r.target === 'kamailio')
console.log(`\nsummary (${((Date.now() - STARTED) / 1000).toFixed(0)} s; load average at the end ${loadavg().map(l => l.toFixed(2)).join(' ')}):`)
console.log('| target | SUBSCRIBE + first NOTIFY, highest clean rate | CPU per SUBSCRIBE above idle | first SUBSCRIBE of a new presentity (--cold), highest clean rate | CPU per cold SUBSCRIBE | PUBLISH calls (initial, modify, remove), highest clean rate | CPU per PUBLISH call | memory per subscription |')
console.log('|---|---|---|---|---|---|---|---|')
for (const r of results) {
  const mem = r.bytesPerSub === undefined ? '—' : `${fmt(r.bytesPerSub, ' B')}${r.heapBytesPerSub === undefined ? '' : ` (heap ${fmt(r.heapBytesPerSub, ' B')})`} at ${fmt(r.subscriptions)}${r.settled === true ? '' : ' (unsettled)'}`
  console.log(`| ${r.target} | ${fmt(r.subscribeRate, '/s')} | ${fmt(r.cpuUsPerSubscribe, ' µs')} | ${fmt(r.coldRate, '/s')} | ${fmt(r.cpuUsPerCold, ' µs')} | ${r.target === 'cross' ? '—' : fmt(r.publishRate, '/s')} | ${r.target === 'cross' ? '—' : fmt(r.cpuUsPerPublishCall, ' µs')} | ${mem} |`)
}
const comparison: Record<string, Record<string, number | undefined>> = {}
if (kam !== undefined) {
  const q = (a?: number, b?: number): number | undefined => a === undefined || b === undefined || b === 0 ? undefined : Number((a / b).toFixed(2))
  for (const r of results.filter(r => r !== kam)) {
    comparison[r.target] = { subscribeRate: q(r.subscribeRate, kam.subscribeRate), cpuPerSubscribe: q(r.cpuUsPerSubscribe, kam.cpuUsPerSubscribe), coldRate: q(r.coldRate, kam.coldRate), cpuPerCold: q(r.cpuUsPerCold, kam.cpuUsPerCold), publishRate: q(r.publishRate, kam.publishRate), cpuPerPublish: q(r.cpuUsPerPublishCall, kam.cpuUsPerPublishCall), bytesPerSub: q(r.bytesPerSub, kam.bytesPerSub) }
    console.log(`${r.target}/Kamailio: SUBSCRIBE ${ratio(r.subscribeRate, kam.subscribeRate)}, CPU per SUBSCRIBE ${ratio(r.cpuUsPerSubscribe, kam.cpuUsPerSubscribe)}${values.cold ? `, cold SUBSCRIBE ${ratio(r.coldRate, kam.coldRate)}, CPU per cold SUBSCRIBE ${ratio(r.cpuUsPerCold, kam.cpuUsPerCold)}` : ''}${r.target === 'cross' ? '' : `, PUBLISH ${ratio(r.publishRate, kam.publishRate)}, CPU per PUBLISH call ${ratio(r.cpuUsPerPublishCall, kam.cpuUsPerPublishCall)}`}, memory per subscription ${ratio(r.bytesPerSub, kam.bytesPerSub)} (RSS vs Kamailio's shared memory)`)
  }
}
console.log('targets: SUBSCRIBE local ≥ 1x Kamailio, cross-node ≥ 0.5x Kamailio; PUBLISH ≥ 1x Kamailio; ≤ 2 KB RSS per subscription at 10,000')
console.log(JSON.stringify({ bench: 'presence-load', stepSeconds: STEP_S, presentities: PRESENTITIES, kamailioWorkers: withKamailio ? KAMAILIO_WORKERS : undefined, results: results.map(r => ({ ...r, subscribeSteps: stepsJson(r.subscribeSteps), coldSteps: stepsJson(r.coldSteps), publishSteps: stepsJson(r.publishSteps) })), comparison }))
process.exit(exitCode)
