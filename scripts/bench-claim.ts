/**
 * Claim and resolve latency on loopback TCP meshes of in-process nodes (all nodes share this one
 * process and its event loop, so every figure includes the other nodes' work).
 *
 *   npm exec -- node scripts/bench-claim.ts [--claims 200] [--resolves 200]
 *
 * - claim latency p50/p99 on a 10-node mesh: new AoRs claimed from random nodes one after another,
 *   and renewals of an owned AoR (target p50 <= 25 ms, p99 <= 100 ms)
 * - resolve on a 20-node mesh: cold (nothing cached) and cached p50/p99 (targets p99 100 ms / 1 ms)
 *
 * Bounded: fixed counts, and every operation has the registry's own timeout.
 */
import { parseArgs } from 'node:util'
import { Mesh } from '../test/fixtures/mesh.ts'

const { values: args } = parseArgs({
  options: {
    claims: { type: 'string', default: '200' },
    resolves: { type: 'string', default: '200' },
    gap: { type: 'string', default: '5' }
  }
})
const CLAIMS = Math.min(Number(args.claims), 5_000)
const RESOLVES = Math.min(Number(args.resolves), 5_000)
const GAP_MS = Number(args.gap)

function pct (xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))]
}
function line (name: string, xs: number[], unit = 'ms', digits = 1): { p50: number, p99: number } {
  const p50 = pct(xs, 50); const p99 = pct(xs, 99)
  console.log(`${name.padEnd(34)} n=${String(xs.length).padStart(4)}  p50 ${p50.toFixed(digits).padStart(7)} ${unit}  p99 ${p99.toFixed(digits).padStart(7)} ${unit}  max ${Math.max(...xs).toFixed(digits)} ${unit}`)
  return { p50, p99 }
}
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const hour = (): number => Date.now() + 3_600_000

const summary: Record<string, unknown> = {}

// ---------------------------------------------------------------- claim, 10 nodes
{
  const mesh = await Mesh.spawn(10)
  try {
    const n = mesh.nodes
    for (let i = 0; i < 20; i++) await n[i % 10].registry.claim(`sip:warm${i}@example.com`, { expiresAt: hour() })
    await sleep(500)
    const fresh: number[] = []
    const replicas: number[] = []
    for (let i = 0; i < CLAIMS; i++) {
      const node = n[Math.floor(Math.random() * n.length)]
      const t = performance.now()
      const r = await node.registry.claim(`sip:user${i}@example.com`, { expiresAt: hour() })
      fresh.push(performance.now() - t)
      replicas.push(r.replicas)
      if (!r.won) throw new Error('an uncontended claim was lost')
      await sleep(GAP_MS)
    }
    // resolves everywhere at once after the 200 OK would be sent
    let visible = 0
    for (let i = 0; i < 20; i++) {
      const aor = `sip:vis${i}@example.com`
      const owner = n[i % 10]
      await owner.registry.claim(aor, { expiresAt: hour() })
      const seen = await Promise.all(n.map(async x => (await x.registry.resolve(aor, { fresh: true }))?.node === owner.peerId.toString()))
      visible += seen.filter(Boolean).length
    }
    const renew: number[] = []
    for (let i = 0; i < CLAIMS; i++) {
      const node = n[i % 10]
      const t = performance.now()
      await node.registry.claim(`sip:user-renew${i % 10}@example.com`, { expiresAt: hour() })
      renew.push(performance.now() - t)
      await sleep(GAP_MS)
    }
    const moves: number[] = []
    for (let i = 0; i < Math.min(CLAIMS, 100); i++) {
      const node = n[(i + 1) % 10]
      const t = performance.now()
      await node.registry.claim(`sip:user-renew${i % 10}@example.com`, { expiresAt: hour() })
      moves.push(performance.now() - t)
      await sleep(GAP_MS)
    }
    console.log(`claim on a 10-node loopback TCP mesh (in-process), ${GAP_MS} ms between claims`)
    summary.claimNew = line('claim (new AoR)', fresh)
    summary.claimRenew = line('claim (renewal, owner unchanged)', renew)
    summary.claimMove = line('claim (move from another node)', moves)
    console.log(`replicas per claim: median ${pct(replicas, 50)}; resolvable on every node right after the claim: ${visible}/${20 * n.length}`)
    summary.visible = `${visible}/${20 * n.length}`
  } finally {
    await mesh.stop()
  }
}

// ---------------------------------------------------------------- resolve, 20 nodes
{
  const mesh = await Mesh.spawn(20)
  try {
    const n = mesh.nodes
    const aors: string[] = []
    for (let i = 0; i < RESOLVES; i++) {
      const aor = `sip:r${i}@example.com`
      await n[i % 20].registry.claim(aor, { expiresAt: hour() })
      aors.push(aor)
    }
    await sleep(1_000)
    const cold: number[] = []
    const cached: number[] = []
    for (let i = 0; i < RESOLVES; i++) {
      // a node that never saw the AoR: its first resolve is a DHT lookup
      const node = n[(i + 7) % 20]
      let t = performance.now()
      const r = await node.registry.resolve(aors[i])
      cold.push(performance.now() - t)
      if (r == null) throw new Error(`cold resolve of ${aors[i]} found nothing`)
      t = performance.now()
      await node.registry.resolve(aors[i])
      cached.push((performance.now() - t) * 1000)
      await sleep(GAP_MS)
    }
    console.log('resolve on a 20-node loopback TCP mesh (in-process)')
    summary.resolveCold = line('resolve (cold: DHT lookup)', cold)
    summary.resolveCachedUs = line('resolve (cached)', cached, 'µs', 1)
  } finally {
    await mesh.stop()
  }
}

console.log(JSON.stringify({ bench: 'claim', ...summary }))
