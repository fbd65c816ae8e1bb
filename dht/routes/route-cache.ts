/**
 * What this node knows of each AoR: the newest claim it has seen (P2: never go back), when the DHT
 * or a notice last confirmed it, and the AoRs a lookup found nothing for (the negative cache). The
 * registry merges every claim it learns in here; the other parts read it through these methods.
 */
import { compareClaims, isLive } from '../record/claim.ts'
import type { PeerLiveness } from '../liveness.ts'
import type { SignedClaim } from '../record/claim.ts'
import type { Aor, Route } from '../../sip-gateway/ports.ts'
import type { PeerId } from '@libp2p/interface'

/** most routes kept in the cache (the oldest go first) */
const MAX_CACHED = 500_000

/**
 * What the registry does with a claim it learned (`DhtRegistry.apply`): merged here, then the
 * watchers and a displaced own claim are told. Returns the newest claim known.
 */
export type Apply = (aor: Aor, c: SignedClaim | undefined, confirmed: boolean) => SignedClaim | undefined

export interface CacheEntry {
  /** the newest claim this node has seen for the AoR (P2) */
  claim: SignedClaim
  /** when the DHT or a notice last confirmed it */
  fetchedAt: number
}

export interface RouteCacheComponents {
  peerId: PeerId
  liveness: PeerLiveness
  /** whether an AoR's record is kept however old (an own record, a watched AoR) */
  keeps: (aor: Aor) => boolean
}

export interface RouteCacheInit {
  /**
   * How long a lookup that found nothing is remembered (0: not at all).
   *
   * @default 0
   */
  negativeCacheTtlMs?: number
}

export class RouteCache {
  readonly negativeTtl: number
  private readonly peerId: PeerId
  private readonly liveness: PeerLiveness
  private readonly keeps: (aor: Aor) => boolean
  private readonly entries = new Map<Aor, CacheEntry>()
  private readonly negative = new Map<Aor, number>()
  private passes = 0

  constructor (components: RouteCacheComponents, init: RouteCacheInit = {}) {
    this.peerId = components.peerId
    this.liveness = components.liveness
    this.keeps = components.keeps
    this.negativeTtl = init.negativeCacheTtlMs ?? 0
  }

  entry (aor: Aor): CacheEntry | undefined {
    return this.entries.get(aor)
  }

  /** the newest claim known for an AoR */
  claimOf (aor: Aor): SignedClaim | undefined {
    return this.entries.get(aor)?.claim
  }

  /** when a lookup last found nothing for an AoR */
  negativeSince (aor: Aor): number | undefined {
    return this.negative.get(aor)
  }

  /** The route of a claim as this node sees it: none when void, released or its owner is down. */
  routeOf (c: SignedClaim | undefined, now = Date.now()): Route | undefined {
    if (c == null || !isLive(c, now)) return undefined
    if (!c.owner.equals(this.peerId) && this.liveness.isDown(c.owner)) return undefined
    return { aor: c.aor, node: c.owner.toString(), sip: c.sip, version: c.version, expiresAt: c.expiresAt }
  }

  /** Merge a claim into what this node knows (P2: never go back). Returns the newest claim. */
  merge (aor: Aor, c: SignedClaim | undefined, confirmed: boolean): SignedClaim | undefined {
    const now = Date.now()
    const cur = this.entries.get(aor)
    let best = cur != null && cur.claim.knownUntil > now ? cur.claim : undefined
    if (c != null && c.knownUntil > now && (best == null || compareClaims(c, best) > 0)) best = c
    if (best == null || !this.worthKeeping(aor, best, now)) {
      this.entries.delete(aor)
      if (best == null && this.negativeTtl > 0) this.negative.set(aor, now)
    } else {
      this.negative.delete(aor)
      if (cur == null || cur.claim !== best || confirmed) {
        if (cur == null && this.entries.size >= MAX_CACHED) this.entries.delete(this.entries.keys().next().value!)
        this.entries.set(aor, { claim: best, fetchedAt: confirmed || cur == null ? now : cur.fetchedAt })
      }
    }
    return best
  }

  /**
   * What the cache keeps: this node's own records, and other owners' claims while their lease
   * runs (P2 holds for as long as a claim can route; a record kept only to say "known" is asked
   * for again when needed, so the cache does not grow with every AoR resolved in 30 days).
   */
  private worthKeeping (aor: Aor, c: SignedClaim, now: number): boolean {
    return c.expiresAt > now || this.keeps(aor)
  }

  /** One lease sweep's pass: the cache holds the own claims too, so it is looked through every sixth pass only. */
  sweep (now: number): void {
    if (++this.passes % 6 !== 0) return
    for (const [aor, e] of this.entries) {
      if (!this.worthKeeping(aor, e.claim, now)) this.entries.delete(aor)
    }
  }
}
