/**
 * The claim registry alone, at operator scale (issue 9): no SIP, one process.
 *
 *   npm exec -- node --expose-gc scripts/bench-registry.ts [--aors 100000] [--nodes 1] [--concurrency 2000] [--first-replica]
 *     [--rate N]   claims issued at N a second (each phase), however many are in flight, instead
 *                  of `--concurrency` at a time: the small batches of a node that keeps up (at
 *                  saturation every batch is full), for the CPU per claim at a given rate
 *
 * On one node (LevelDB in a temporary data dir) or an in-process loopback TCP mesh of `--nodes`
 * (each with its own LevelDB), claims `--aors` new AoRs from node 0 with `--concurrency` claims in
 * flight, then refreshes every one (a REGISTER refresh: nothing to write), then forces one lease
 * renewal of every own claim through the sweep (what the republish costs per lease period), and
 * reports for each: claims/s, CPU per claim, and the writer's batching (batches, largest, claims
 * per request to each peer); then heap and RSS per registration after GC. The other nodes of a
 * mesh are in this process too, so the CPU figures include the replicas' work.
 *
 * Bounded: a fixed count, each phase at most 120 s.
 *
 * BENCH_PROF=<dir>: a V8 CPU profile of the new-claims phase alone, <dir>/new-claims.cpuprofile
 * (read it with scripts/cpu-profile-top.ts); with BENCH_PROF_ALLOC=1 also a sampling allocation
 * profile, collected objects included, <dir>/new-claims.heapprofile (scripts/heap-profile-top.ts;
 * it slows the run, so the CPU figures are not comparable then).
 */
import { parseArgs } from 'node:util'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { cpuUsage, memoryUsage } from 'node:process'
import { Session } from 'node:inspector/promises'
import { writeFile } from 'node:fs/promises'
import { openDatastore } from '../node/persistence.ts'
import { Mesh } from '../test/fixtures/mesh.ts'
import { signingThread } from '../dht/record/sign-batch.ts'
import { threadTicks } from './lib/proc-stats.ts'
import type { LevelDatastore } from 'datastore-level'

const { values: args } = parseArgs({
  options: {
    aors: { type: 'string', default: '100000' },
    nodes: { type: 'string', default: '1' },
    concurrency: { type: 'string', default: '2000' },
    'first-replica': { type: 'boolean', default: false },
    rate: { type: 'string', default: '0' }
  }
})
const AORS = Math.min(Math.max(Number(args.aors), 1), 1_000_000)
const NODES = Math.min(Math.max(Number(args.nodes), 1), 10)
const CONCURRENCY = Math.min(Math.max(Number(args.concurrency), 1), 20_000)
/** new claims as a REGISTER makes them (`--first-replica`: answered once one replica stores it) or as direct callers do */
const CLAIM_OPTIONS = args['first-replica'] ? { firstReplica: true } : undefined
const PHASE_MS = 120_000
const RATE = Math.min(Math.max(Number(args.rate) || 0, 0), 100_000)

const gc = (globalThis as { gc?: () => void }).gc
const dir = await mkdtemp(join(tmpdir(), 'sipmesh-bench-registry-'))
const stores: LevelDatastore[] = []
for (let i = 0; i < NODES; i++) stores.push(await openDatastore(join(dir, `node-${i}`)))
const mesh = await Mesh.spawn(NODES, { perNode: (i) => ({ datastore: stores[i] }) })
const node = mesh.nodes[0]
const registry = node.registry
const aor = (i: number): string => `sip:user${i}@example.com`
const hour = Date.now() + 3_600_000

function settle (): { heap: number, rss: number, external: number } {
  gc?.(); gc?.()
  const m = memoryUsage()
  return { heap: m.heapUsed, rss: m.rss, external: m.external }
}

/** Profile `fn` into BENCH_PROF (CPU and allocations), or just run it. */
async function profiled (name: string, fn: () => Promise<void>): Promise<void> {
  const dir = process.env.BENCH_PROF
  if (dir === undefined || dir === '') return await fn()
  const session = new Session()
  session.connect()
  await session.post('Profiler.enable')
  await session.post('Profiler.start')
  const alloc = process.env.BENCH_PROF_ALLOC === '1'
  if (alloc) await session.post('HeapProfiler.startSampling', { samplingInterval: 8192, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true })
  try {
    await fn()
  } finally {
    if (alloc) await writeFile(join(dir, `${name}.heapprofile`), JSON.stringify((await session.post('HeapProfiler.stopSampling')).profile))
    await writeFile(join(dir, `${name}.cpuprofile`), JSON.stringify((await session.post('Profiler.stop')).profile))
    session.disconnect()
  }
}

async function phase (name: string, op: (i: number) => Promise<unknown>): Promise<void> {
  const before = { ...registry.writeStats() }
  const signed = { ...signingThread.stats }
  const threads0 = threadTicks()
  const cpu0 = cpuUsage()
  const t0 = performance.now()
  const deadline = Date.now() + PHASE_MS
  let next = 0
  let failed = 0
  if (RATE > 0) {
    // every ms, the claims due by then
    const pending: Array<Promise<void>> = []
    while (next < AORS && Date.now() < deadline) {
      const due = Math.min(AORS, Math.floor((performance.now() - t0) * RATE / 1000))
      while (next < due) pending.push(op(next++).then(() => {}, () => { failed++ }))
      await new Promise(resolve => setTimeout(resolve, 1))
    }
    await Promise.all(pending)
  } else {
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next < AORS && Date.now() < deadline) {
        const i = next++
        try { await op(i) } catch { failed++ }
      }
    }))
  }
  const ms = performance.now() - t0
  const cpu = cpuUsage(cpu0)
  const after = registry.writeStats()
  const batches = after.batches - before.batches
  const peerBatches = after.peerBatches - before.peerBatches
  const peerClaims = after.peerClaims - before.peerClaims
  console.log(`${name.padEnd(28)} ${next} in ${(ms / 1000).toFixed(1)} s = ${Math.round(next / ms * 1000).toLocaleString('en')}/s` +
    `  CPU ${Math.round((cpu.user + cpu.system) / next)} µs each` +
    `  local batches ${batches} (largest ${after.largestBatch})` +
    (signingThread.stats.signatures > signed.signatures ? `  signing batches ${signingThread.stats.batches - signed.batches}` : '') +
    (peerBatches > 0 ? `  peer requests ${peerBatches} (${(peerClaims / peerBatches).toFixed(0)} claims each)` : '') +
    (failed > 0 ? `  FAILED ${failed}` : ''))
  const threads = threadTicks()
  if (threads0 !== undefined && threads !== undefined && next > 0) {
    // 100 ticks a second: µs per claim = ticks * 10,000 / claims
    const by = [...threads].map(([name, t]) => [name, (t - (threads0.get(name) ?? 0)) * 10_000 / next] as const).filter(([, us]) => us >= 1)
    console.log(`${''.padEnd(28)} CPU by thread: ${by.map(([name, us]) => `${name} ${Math.round(us)} µs`).join(', ')}`)
  }
}

try {
  const base = settle()
  console.log(`registry alone: ${NODES} node(s), ${AORS.toLocaleString('en')} AoRs, ${RATE > 0 ? `${RATE}/s` : `${CONCURRENCY} in flight`}${args['first-replica'] ? ', answered at the first replica (a REGISTER\'s claim)' : ''}`)
  await profiled('new-claims', async () => {
    await phase('new claims', async (i) => {
      const r = await registry.claim(aor(i), { expiresAt: hour }, CLAIM_OPTIONS)
      if (!r.won) throw new Error('lost')
    })
  })
  await phase('refreshes (no write)', async (i) => { await registry.claim(aor(i), { expiresAt: hour + 60_000 }) })
  const mem = settle()
  console.log(`memory after ${AORS.toLocaleString('en')} claims: heap +${Math.round((mem.heap - base.heap) / AORS)} B, external (buffers, LevelDB) +${Math.round((mem.external - base.external) / AORS)} B, RSS +${Math.round((mem.rss - base.rss) / AORS)} B per claim (node 0${NODES > 1 ? ` and ${NODES - 1} replica(s) in this process` : ''})`)
  // a lease period's renewals: every own claim renewed once, by the sweep, in passes
  const r = registry as unknown as { renew: (aor: string) => Promise<boolean> }
  await phase('lease renewals (sweep)', async (i) => { await r.renew(aor(i)) })
  const leaseS = 600
  const cpu0 = cpuUsage()
  await registry.sweep()
  const sweepCpu = cpuUsage(cpu0)
  console.log(`a sweep pass with nothing due over ${registry.ownRecords.toLocaleString('en')} own records: ${((sweepCpu.user + sweepCpu.system) / 1000).toFixed(1)} ms CPU`)
  console.log(`(renewing ${AORS.toLocaleString('en')} claims once per half lease, ${leaseS / 2} s, is the renewal rate above spread over that time; see README)`)
  // restart storm: node 0 stops and starts again on the same data directory and key; its own
  // records are loaded and re-put (the registrar's re-claims of the same AoRs are refreshes)
  if (NODES === 1) {
    const { createMeshNode } = await import('../node/libp2p.ts')
    await mesh.stop()
    await stores[0].close()
    stores[0] = await openDatastore(join(dir, 'node-0'))
    const t0 = performance.now()
    const again = await createMeshNode({ privateKey: node.privateKey, datastore: stores[0] })
    await again.start()
    const loaded = performance.now() - t0
    const r2 = again.registry
    await Promise.all(Array.from({ length: 200 }, async (_, w) => {
      for (let i = w; i < AORS; i += 200) await r2.claim(aor(i), { expiresAt: hour })
    }))
    const reclaimed = performance.now() - t0
    await r2.republishAll()
    console.log(`restart: ${r2.ownRecords.toLocaleString('en')} own records loaded in ${(loaded / 1000).toFixed(1)} s, all ${AORS.toLocaleString('en')} re-claimed (refreshes) by ${(reclaimed / 1000).toFixed(1)} s, re-put by ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    await again.stop()
  }
} finally {
  await mesh.stop()
  for (const s of stores) await s.close()
  await rm(dir, { recursive: true, force: true })
}
