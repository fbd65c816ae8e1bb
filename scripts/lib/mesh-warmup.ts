/**
 * Helpers for benchmarks on an in-process mesh: let kad-dht fill the routing tables with bounded
 * random walks, read routing-table sizes, run async jobs with a concurrency cap, percentiles.
 */
import { randomBytes } from 'node:crypto'
import type { MeshNode } from '../../node/libp2p.ts'

export function routingTableSize (node: MeshNode): number {
  return (node.libp2p.services.dht as unknown as { routingTable: { size: number } }).routingTable.size
}

export function pct (xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))]
}

/** Run `count` jobs, at most `concurrency` at a time, stopping early (no new jobs) after `deadline`. */
export async function pool (count: number, concurrency: number, deadline: number, job: (i: number) => Promise<void>): Promise<number> {
  let next = 0
  let done = 0
  const worker = async (): Promise<void> => {
    while (next < count && Date.now() < deadline) {
      const i = next++
      await job(i)
      done++
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, count)) }, worker))
  return done
}

export interface WarmupResult {
  /** median routing-table size after spawn and after each round */
  medians: number[]
  minSize: number
  maxSize: number
  rounds: number
  ms: number
}

/**
 * Let kad-dht populate the routing tables: rounds of walks (`getClosestPeers`) from every node,
 * round 0 towards the node's own id (a self-query), later rounds towards random keys; a walk dials
 * the peers it learns of, and identify puts them in the routing table. At most `concurrency` walks
 * at a time, each bounded by `walkTimeoutMs`; stops after `maxRounds`, when a round no longer
 * grows the median, or after `budgetMs`.
 */
export async function warmUp (nodes: MeshNode[], options: { maxRounds: number, concurrency: number, walkTimeoutMs: number, budgetMs: number }): Promise<WarmupResult> {
  const start = Date.now()
  const deadline = start + options.budgetMs
  const medians = [pct(nodes.map(routingTableSize), 50)]
  let rounds = 0
  while (rounds < options.maxRounds && Date.now() < deadline) {
    const self = rounds === 0
    await pool(nodes.length, options.concurrency, deadline, async (i) => {
      const node = nodes[i]
      const key = self ? node.peerId.toMultihash().bytes : randomBytes(32)
      const signal = AbortSignal.timeout(Math.max(1, Math.min(options.walkTimeoutMs, deadline - Date.now())))
      try {
        for await (const _ev of node.libp2p.services.dht.getClosestPeers(key, { signal })) {
          // drain: the walk itself dials (and so adds) the peers
        }
      } catch {
        // a timed-out walk still added what it met
      }
    })
    rounds++
    // identify (and so the routing-table add) runs just after the dial
    await new Promise(resolve => setTimeout(resolve, 300))
    const median = pct(nodes.map(routingTableSize), 50)
    const grew = median > medians[medians.length - 1]
    medians.push(median)
    if (!grew && rounds >= 2) break
  }
  const sizes = nodes.map(routingTableSize)
  return { medians, minSize: Math.min(...sizes), maxSize: Math.max(...sizes), rounds, ms: Date.now() - start }
}
