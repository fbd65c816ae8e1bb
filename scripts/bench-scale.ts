/**
 * How the claim registry scales: DHT messages per claim and per resolve, and memory per claim, for
 * N = 10, 25, 50, 100 in-process nodes over the memory transport (one process, one event loop).
 *
 *   node --expose-gc scripts/bench-scale.ts [--sizes 10,25,50,100] [--claims 30] [--resolves 30]
 *        [--stored 2000] [--bulk-seconds 30] [--concurrency 4] [--warmup-seconds 75]
 *
 * 1. Spawn the mesh (full mesh up to 20 nodes, else each node dials 6 random earlier nodes), then
 *    let kad-dht form it: rounds of walks from every node (a self-query, then random keys; at most
 *    8 at a time, bounded in time) until the median routing-table size stops growing. The median
 *    after spawn and after warm-up are reported.
 *    Then every node runs two resolves, so the registry's small-mesh check (a walk, cached 30 s,
 *    deciding direct mode) is done before measuring: the figures are the steady state.
 * 2. Messages are counted at the sender: every kad-dht request (FIND_NODE, GET_VALUE, PUT_VALUE,
 *    ...) plus every stream of ours (claim reads, notices, interest). The background rate of the
 *    idle mesh is measured first and subtracted. Claims of new AoRs run one after another from
 *    random nodes, then cold resolves of them (`fresh: true`) from other nodes.
 * 3. Memory: a bulk phase of `stored` claims (at most `concurrency` at a time, so the single event
 *    loop does not time out the claims; stops early after `bulk-seconds`), heap measured after GC
 *    before and 8 s after it (libp2p's per-request timeout signals hold their listeners >= 5 s),
 *    plus the bytes the datastores hold for them; both per claim and per claim per node.
 * Bounded: fixed counts, time budgets per phase, sizes capped at 150 nodes.
 */
import { parseArgs } from 'node:util'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { Mesh } from '../test/fixtures/mesh.ts'
import { pct, pool, routingTableSize, warmUp } from './lib/mesh-warmup.ts'
import type { MeshNode } from '../node/libp2p.ts'

const gc: () => void = (globalThis as { gc?: () => void }).gc ?? (() => {
  setFlagsFromString('--expose-gc')
  return runInNewContext('gc') as () => void
})()

const { values: args } = parseArgs({
  options: {
    sizes: { type: 'string', default: '10,25,50,100' },
    claims: { type: 'string', default: '30' },
    resolves: { type: 'string', default: '30' },
    stored: { type: 'string', default: '2000' },
    'bulk-seconds': { type: 'string', default: '30' },
    concurrency: { type: 'string', default: '4' },
    'warmup-seconds': { type: 'string', default: '75' }
  }
})
const SIZES = args.sizes.split(',').map(Number).filter(n => n >= 2 && n <= 150)
const CLAIMS = Math.max(1, Math.min(Number(args.claims), 1_000))
const RESOLVES = Math.max(1, Math.min(Number(args.resolves), 1_000))
const STORED = Math.max(1, Math.min(Number(args.stored), 10_000))
const BULK_MS = Math.min(Number(args['bulk-seconds']), 300) * 1000
const CONCURRENCY = Math.max(1, Math.min(Number(args.concurrency), 32))
const WARMUP_MS = Math.min(Number(args['warmup-seconds']), 120) * 1000

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const hour = (): number => Date.now() + 3_600_000

const counts = { kad: 0, ours: 0, byType: {} as Record<string, number> }
function instrument (node: MeshNode): void {
  const net = (node.libp2p.services.dht as unknown as { network: { sendRequest: (...a: unknown[]) => unknown } }).network
  const send = net.sendRequest.bind(net)
  net.sendRequest = (to: unknown, msg: unknown, opts: unknown) => {
    const type = String((msg as { type: unknown }).type)
    counts.kad++
    counts.byType[type] = (counts.byType[type] ?? 0) + 1
    return send(to, msg, opts)
  }
  const dial = node.libp2p.dialProtocol.bind(node.libp2p)
  node.libp2p.dialProtocol = (async (peer: Parameters<typeof dial>[0], protocols: Parameters<typeof dial>[1], options?: Parameters<typeof dial>[2]) => {
    const p = Array.isArray(protocols) ? protocols[0] : protocols
    if (p.startsWith('/sipmesh/claim')) {
      counts.ours++
      counts.byType[p] = (counts.byType[p] ?? 0) + 1
    }
    return dial(peer, protocols, options)
  }) as typeof dial
}
type Snapshot = { total: number, byType: Record<string, number> }
const snapshot = (): Snapshot => ({ total: counts.kad + counts.ours, byType: { ...counts.byType } })
/** messages per operation since `before`, by type, idle background not subtracted */
const perOpByType = (before: Snapshot, after: Snapshot, ops: number): Record<string, number> =>
  Object.fromEntries(Object.entries(after.byType).map(([k, v]) => [k, +((v - (before.byType[k] ?? 0)) / ops).toFixed(1)]).filter(([, v]) => Number(v) > 0))

const round = (x: number, d = 1): number => +x.toFixed(d)
const rows: Array<Record<string, number | string>> = []
for (const n of SIZES) {
  const t0 = Date.now()
  const mesh = await Mesh.spawn(n, { memory: true, degree: n <= 20 ? 'full' : 6, settleTimeoutMs: 60_000 })
  try {
    mesh.nodes.forEach(instrument)
    const spawnS = (Date.now() - t0) / 1000

    // 1. let kad-dht form the mesh
    const warm = await warmUp(mesh.nodes, { maxRounds: 5, concurrency: 8, walkTimeoutMs: 10_000, budgetMs: WARMUP_MS })
    console.log(`N=${n}: spawned in ${spawnS.toFixed(1)} s; routing-table median by warm-up round ${warm.medians.join(' -> ')} (min ${warm.minSize}, max ${warm.maxSize}), ${warm.rounds} rounds in ${(warm.ms / 1000).toFixed(1)} s`)
    // every node's first registry operation checks (by a walk, cached 30 s) whether the mesh is
    // smaller than k (direct mode): do that now, so the figures below are the steady state
    await pool(n, 8, Date.now() + 20_000, async (i) => { await mesh.nodes[i].registry.resolve(`sip:prime${n}x${i}@example.com`, { fresh: true }).catch(() => {}) })
    await sleep(1_500)
    await pool(n, 8, Date.now() + 20_000, async (i) => { await mesh.nodes[i].registry.resolve(`sip:prime${n}y${i}@example.com`, { fresh: true }).catch(() => {}) })
    await sleep(1_000)
    let before = snapshot()
    await sleep(3_000)
    const idlePerMs = (snapshot().total - before.total) / 3_000
    const rt = mesh.nodes.map(routingTableSize)

    // 2a. claims of new AoRs, one after another, from random nodes
    before = snapshot()
    let t = Date.now()
    const claimMs: number[] = []
    const claimReplicas: number[] = []
    for (let i = 0; i < CLAIMS; i++) {
      const node = mesh.nodes[Math.floor(Math.random() * n)]
      const s = performance.now()
      const r = await node.registry.claim(`sip:s${n}x${i}@example.com`, { expiresAt: hour() })
      claimMs.push(performance.now() - s)
      claimReplicas.push(r.replicas)
    }
    let after = snapshot()
    const claimMsgs = (after.total - before.total - idlePerMs * (Date.now() - t)) / CLAIMS
    const claimTypes = perOpByType(before, after, CLAIMS)

    // 2b. cold resolves of those AoRs from nodes that never saw them
    before = snapshot()
    t = Date.now()
    const resolveMs: number[] = []
    let found = 0
    for (let i = 0; i < RESOLVES; i++) {
      const node = mesh.nodes[(i * 7 + 3) % n]
      const s = performance.now()
      const r = await node.registry.resolve(`sip:s${n}x${i % CLAIMS}@example.com`, { fresh: true })
      resolveMs.push(performance.now() - s)
      if (r != null) found++
    }
    after = snapshot()
    const resolveMsgs = (after.total - before.total - idlePerMs * (Date.now() - t)) / RESOLVES
    const resolveTypes = perOpByType(before, after, RESOLVES)

    // 3. memory per stored claim: heap growth after GC over a bulk phase at low concurrency
    const settledHeap = async (): Promise<number> => { gc(); await sleep(300); gc(); await sleep(300); gc(); return process.memoryUsage().heapUsed }
    const storedBytes = async (): Promise<number> => {
      let bytes = 0
      for (const node of mesh.nodes) {
        for await (const { key, value } of node.datastore.inner.query({ prefix: '/dht/record' })) bytes += key.toString().length + value.byteLength
      }
      return bytes
    }
    // the requests above hold their timeout signals (and what those reference) for >= 5 s
    await sleep(8_000)
    const heap0 = await settledHeap()
    const bytes0 = await storedBytes()
    const rss0 = process.memoryUsage().rss
    const bulkReplicas: number[] = []
    let bulkErrors = 0
    const tb = Date.now()
    const stored = await pool(STORED, CONCURRENCY, tb + BULK_MS, async (i) => {
      try {
        const r = await mesh.nodes[i % n].registry.claim(`sip:m${n}x${i}@example.com`, { expiresAt: hour() })
        bulkReplicas.push(r.replicas)
      } catch {
        bulkErrors++
      }
    })
    const bulkS = (Date.now() - tb) / 1000
    await sleep(8_000)
    const heapPerClaim = (await settledHeap() - heap0) / stored
    const storedPerClaim = (await storedBytes() - bytes0) / stored
    const log2n = Math.log2(n)
    const walk = claimTypes.FIND_NODE ?? 0
    const row = {
      nodes: n,
      log2N: round(log2n, 2),
      mode: rt.every(x => x < 20) ? 'direct' : 'walk',
      routingTableMedianAfterSpawn: warm.medians[0],
      routingTableMedian: pct(rt, 50),
      routingTableMin: Math.min(...rt),
      msgsPerClaim: round(claimMsgs),
      msgsPerClaimOverLog2N: round(claimMsgs / log2n, 2),
      walkMsgsPerClaim: walk,
      walkMsgsPerClaimOverLog2N: round(walk / log2n, 2),
      msgsPerResolve: round(resolveMsgs),
      msgsPerResolveOverLog2N: round(resolveMsgs / log2n, 2),
      claimReplicasMedian: pct(claimReplicas, 50),
      claimP50ms: round(pct(claimMs, 50)),
      resolveP50ms: round(pct(resolveMs, 50)),
      resolvedFound: `${found}/${RESOLVES}`,
      bulkClaims: stored,
      bulkErrors,
      bulkSeconds: round(bulkS),
      bulkReplicasMedian: pct(bulkReplicas, 50),
      bulkReplicasMin: Math.min(...bulkReplicas),
      heapBytesPerClaim: Math.round(heapPerClaim),
      heapBytesPerClaimPerNode: Math.round(heapPerClaim / n),
      storedBytesPerClaim: Math.round(storedPerClaim),
      storedBytesPerClaimPerNode: Math.round(storedPerClaim / n),
      rssMB: Math.round(process.memoryUsage().rss / 1e6),
      rssGrowthMB: Math.round((process.memoryUsage().rss - rss0) / 1e6),
      seconds: Math.round((Date.now() - t0) / 1000)
    }
    rows.push(row)
    console.log(JSON.stringify(row))
    console.log('  messages per claim by type:', JSON.stringify(claimTypes))
    console.log('  messages per resolve by type:', JSON.stringify(resolveTypes))
  } finally {
    await mesh.stop()
    gc()
  }
}

const col = (x: unknown, w: number): string => String(x).padStart(w)
console.log('\nmessages (idle background subtracted; walk = kad-dht FIND_NODE of the put):')
console.log('nodes  log2(N)  RT median (spawn->formed)  msgs/claim  /log2N  walk/claim  /log2N  msgs/resolve  /log2N  replicas  claim p50  resolve p50')
for (const r of rows) {
  console.log(`${col(r.nodes, 5)}  ${col(Number(r.log2N).toFixed(2), 7)}  ${col(`${r.routingTableMedianAfterSpawn} -> ${r.routingTableMedian}`, 24)}  ${col(r.msgsPerClaim, 10)}  ${col(r.msgsPerClaimOverLog2N, 6)}  ${col(r.walkMsgsPerClaim, 10)}  ${col(r.walkMsgsPerClaimOverLog2N, 6)}  ${col(r.msgsPerResolve, 12)}  ${col(r.msgsPerResolveOverLog2N, 6)}  ${col(r.claimReplicasMedian, 8)}  ${col(r.claimP50ms, 6)} ms  ${col(r.resolveP50ms, 8)} ms`)
}
console.log('\nmemory (bulk phase, at most ' + CONCURRENCY + ' claims at a time):')
console.log('nodes  bulk claims  errors  replicas med/min  heap B/claim  per node  stored B/claim  per node  RSS MB')
for (const r of rows) {
  console.log(`${col(r.nodes, 5)}  ${col(`${r.bulkClaims} in ${r.bulkSeconds} s`, 11)}  ${col(r.bulkErrors, 6)}  ${col(`${r.bulkReplicasMedian}/${r.bulkReplicasMin}`, 16)}  ${col(r.heapBytesPerClaim, 12)}  ${col(r.heapBytesPerClaimPerNode, 8)}  ${col(r.storedBytesPerClaim, 14)}  ${col(r.storedBytesPerClaimPerNode, 8)}  ${col(r.rssMB, 6)}`)
}
console.log(JSON.stringify({ bench: 'scale', rows }))
