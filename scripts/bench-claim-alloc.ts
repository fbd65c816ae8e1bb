// Bytes allocated on the main isolate's heap per claim, DhtRegistry alone (no SIP): new claims
// (`firstReplica`, as a REGISTER asks, `--window` in flight) and refreshes of held claims
// (`claim()` of an AoR held, answered from memory, and `claimNow` itself), for before/after
// comparisons of the claim path. The heap's used size is read before and after every GC
// (v8.GCProfiler): what grew between GCs was allocated. The machine's load moves it little.
//
// `--nodes 2` adds a second node in this process, the first one's replica (its put handling is
// counted too); `--nodes 1` is the node alone (its claims reach no replica).
// Bounded: `--rounds` rounds of `--claims` claims each (at most 10 × 100,000).
//
//   node scripts/bench-claim-alloc.ts [--nodes 1] [--claims 20000] [--rounds 3] [--window 20]
import { loadavg } from 'node:os'
import { parseArgs } from 'node:util'
import { Mesh } from '../test/fixtures/mesh.ts'
import { allocated } from './lib/heap-allocated.ts'

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '1' },
    claims: { type: 'string', default: '20000' },
    rounds: { type: 'string', default: '3' },
    window: { type: 'string', default: '20' }
  }
})
const NODES = values.nodes === '2' ? 2 : 1
const CLAIMS = Math.min(Math.max(Math.round(Number(values.claims)), 100), 100_000)
const ROUNDS = Math.min(Math.max(Math.round(Number(values.rounds)), 1), 10)
const WINDOW = Math.min(Math.max(Math.round(Number(values.window)), 1), 1_000)

const mesh = await Mesh.spawn(NODES)
const registry = mesh.nodes[0].registry
const hour = Date.now() + 3_600_000
// claimNow's binding made once, as the registrar passes its own: a literal per call is scalar-
// replaced or not as V8 happens to inline claimNow into this loop (±47 B per call)
const binding = { expiresAt: hour }
let counter = 0
const figures: Record<string, number[]> = { newClaim: [], refreshClaim: [], claimNow: [] }
try {
  for (let round = 0; round <= ROUNDS; round++) {
    const aors: string[] = []
    for (let i = 0; i < CLAIMS; i++) aors.push(`sip:u${counter++}@example.com`)
    let next = 0
    const lane = async (): Promise<void> => {
      while (next < aors.length) await registry.claim(aors[next++], { expiresAt: hour }, { firstReplica: true })
    }
    const created = await allocated(async () => { await Promise.all(Array.from({ length: WINDOW }, lane)) })
    const refreshed = await allocated(async () => {
      for (let i = 0; i < aors.length; i += WINDOW) {
        const batch: Array<Promise<unknown>> = []
        for (let j = i; j < Math.min(i + WINDOW, aors.length); j++) batch.push(registry.claim(aors[j], { expiresAt: hour }))
        await Promise.all(batch)
      }
    })
    let misses = 0
    const now = await allocated(async () => {
      for (const aor of aors) if (registry.claimNow(aor, binding) === undefined) misses++
    })
    if (misses > 0) throw new Error(`${misses} refreshes not answered from memory`)
    // round 0 warms up
    if (round === 0) continue
    figures.newClaim.push(created.bytes / CLAIMS)
    figures.refreshClaim.push(refreshed.bytes / CLAIMS)
    figures.claimNow.push(now.bytes / CLAIMS)
    console.log(`round ${round}: new claim ${(created.bytes / CLAIMS).toFixed(0)} B (${created.gcs} GCs), refresh via claim() ${(refreshed.bytes / CLAIMS).toFixed(0)} B, claimNow ${(now.bytes / CLAIMS).toFixed(0)} B; load ${loadavg()[0].toFixed(2)}`)
  }
} finally {
  await mesh.stop()
}
const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
console.log(JSON.stringify({ bench: 'claim-alloc', nodes: NODES, claims: CLAIMS, window: WINDOW, newClaimB: Math.round(med(figures.newClaim)), refreshClaimB: Math.round(med(figures.refreshClaim)), claimNowB: Math.round(med(figures.claimNow)) }))
