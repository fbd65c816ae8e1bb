/**
 * How the claim registry scales: DHT messages per claim and per resolve, and memory per claim, for
 * N = 10, 25, 50, 100 in-process nodes over the memory transport (one process, one event loop).
 *
 *   node scripts/bench-scale.ts [--sizes 10,25,50,100] [--claims 60] [--resolves 60] [--stored 400]
 *
 * Messages are counted at the sender: every kad-dht request (GET_VALUE, PUT_VALUE, FIND_NODE, ...)
 * plus every stream of ours (claim reads, notices, interest). The background rate of an idle mesh
 * (kad-dht self-queries, routing-table refresh) is measured first and subtracted. Memory: heap
 * growth after GC while the mesh stores `stored` more claims, per claim for the whole mesh and per
 * node, measured 8 s after the last claim (libp2p's per-request timeout signals hold their
 * listeners for at least 5 s), and the bytes the datastores hold for them. Bounded: fixed counts,
 * sizes capped at 150 nodes.
 */
import { parseArgs } from 'node:util'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { Mesh } from '../test/fixtures/mesh.ts'
import type { MeshNode } from '../node/libp2p.ts'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

const { values: args } = parseArgs({
  options: {
    sizes: { type: 'string', default: '10,25,50,100' },
    claims: { type: 'string', default: '30' },
    resolves: { type: 'string', default: '30' },
    stored: { type: 'string', default: '200' }
  }
})
const SIZES = args.sizes.split(',').map(Number).filter(n => n >= 2 && n <= 150)
const CLAIMS = Math.min(Number(args.claims), 1_000)
const RESOLVES = Math.min(Number(args.resolves), 1_000)
const STORED = Math.min(Number(args.stored), 5_000)

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
const snapshot = (): { total: number, kad: number, ours: number, byType: Record<string, number> } => ({ total: counts.kad + counts.ours, kad: counts.kad, ours: counts.ours, byType: { ...counts.byType } })

function pct (xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))]
}

const rows: Array<Record<string, number | string>> = []
for (const n of SIZES) {
  const t0 = Date.now()
  const mesh = await Mesh.spawn(n, { memory: true, degree: n <= 20 ? 'full' : 6, settleTimeoutMs: 60_000 })
  try {
    mesh.nodes.forEach(instrument)
    // let self-queries fill the routing tables, then measure the idle background
    await sleep(3_000)
    let before = snapshot()
    await sleep(2_000)
    const idlePerMs = (snapshot().total - before.total) / 2_000
    const rt = mesh.nodes.map(x => (x.libp2p.services.dht as unknown as { routingTable: { size: number } }).routingTable.size)

    // claims of new AoRs, one after another, from random nodes
    before = snapshot()
    let t = Date.now()
    const claimMs: number[] = []
    for (let i = 0; i < CLAIMS; i++) {
      const node = mesh.nodes[Math.floor(Math.random() * n)]
      const s = performance.now()
      await node.registry.claim(`sip:s${n}x${i}@example.com`, { expiresAt: hour() })
      claimMs.push(performance.now() - s)
    }
    let after = snapshot()
    const claimMsgs = (after.total - before.total - idlePerMs * (Date.now() - t)) / CLAIMS
    const claimTypes = Object.fromEntries(Object.entries(after.byType).map(([k, v]) => [k, +((v - (before.byType[k] ?? 0)) / CLAIMS).toFixed(1)]).filter(([, v]) => Number(v) > 0))

    // cold resolves of those AoRs from nodes that never saw them
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

    // memory per stored claim: heap growth after GC, claims in parallel batches
    const settledHeap = async (): Promise<number> => { gc(); await sleep(300); gc(); await sleep(300); gc(); return process.memoryUsage().heapUsed }
    const storedBytes = async (): Promise<number> => {
      let bytes = 0
      for (const node of mesh.nodes) {
        for await (const { key, value } of node.datastore.inner.query({ prefix: '/dht/record' })) bytes += key.toString().length + value.byteLength
        for await (const { key, value } of node.datastore.inner.query({ prefix: '/sipmesh/own' })) bytes += key.toString().length + value.byteLength
      }
      return bytes
    }
    const heap0 = await settledHeap()
    const bytes0 = await storedBytes()
    const rss0 = process.memoryUsage().rss
    const par = n >= 50 ? 16 : 8
    for (let i = 0; i < STORED; i += par) {
      await Promise.all(Array.from({ length: Math.min(par, STORED - i) }, async (_, j) =>
        mesh.nodes[(i + j) % n].registry.claim(`sip:m${n}x${i + j}@example.com`, { expiresAt: hour() })))
    }
    // libp2p keeps per-request timeout signals (and what their listeners hold) alive for >= 5 s
    await sleep(8_000)
    const heapPerClaim = (await settledHeap() - heap0) / STORED
    const storedPerClaim = (await storedBytes() - bytes0) / STORED
    const row = {
      nodes: n,
      mode: rt.every(x => x < 20) ? 'direct' : 'walk',
      routingTableMedian: pct(rt, 50),
      msgsPerClaim: +claimMsgs.toFixed(1),
      msgsPerResolve: +resolveMsgs.toFixed(1),
      claimP50ms: +pct(claimMs, 50).toFixed(1),
      resolveP50ms: +pct(resolveMs, 50).toFixed(1),
      resolvedFound: `${found}/${RESOLVES}`,
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
  } finally {
    await mesh.stop()
    gc()
  }
}

console.log('\nnodes  log2(N)  msgs/claim  msgs/resolve  claim p50  resolve p50  heap B/claim (per node)  stored B/claim (per node)')
for (const r of rows) {
  console.log(`${String(r.nodes).padStart(5)}  ${Math.log2(Number(r.nodes)).toFixed(2).padStart(7)}  ${String(r.msgsPerClaim).padStart(10)}  ${String(r.msgsPerResolve).padStart(12)}  ${String(r.claimP50ms).padStart(7)} ms  ${String(r.resolveP50ms).padStart(8)} ms  ${String(r.heapBytesPerClaim).padStart(8)} (${r.heapBytesPerClaimPerNode})  ${String(r.storedBytesPerClaim).padStart(8)} (${r.storedBytesPerClaimPerNode})`)
}
console.log(JSON.stringify({ bench: 'scale', rows }))
