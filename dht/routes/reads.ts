/**
 * The read side of the registry: an AoR's route from the cache (`route-cache.ts`) when it holds
 * one, else from a quorum lookup of the replicas (`replication/lookup.ts`), one per AoR at a time;
 * an old entry is revalidated in the background (stale-while-revalidate).
 */
import { compareClaims, isLive, normalizeAor } from '../record/claim.ts'
import { NotStartedError, errorMessage } from '../errors.ts'
import { withSignal } from '../signal.ts'
import type { Apply, RouteCache } from './route-cache.ts'
import type { ClaimReader, LookupOptions } from '../replication/lookup.ts'
import type { ClaimWriter } from '../replication/writer.ts'
import type { PeerLiveness } from '../liveness.ts'
import type { OwnRecords } from '../own/own-records.ts'
import type { RunState } from '../signal.ts'
import type { SignedClaim } from '../record/claim.ts'
import type { Aor, Route } from '../../sip-gateway/ports.ts'
import type { AbortOptions, Logger, PeerId } from '@libp2p/interface'

export interface RouteReadsComponents {
  peerId: PeerId
  routes: RouteCache
  reader: ClaimReader
  writer: Pick<ClaimWriter, 'write'>
  liveness: PeerLiveness
  own: Pick<OwnRecords, 'has'>
  run: RunState
  log: Logger
  apply: Apply
}

export interface RouteReadsInit {
  cacheTtlMs: number
  queryTimeoutMs: number
  resolveQuorum: number
}

export class RouteReads {
  private readonly c: RouteReadsComponents
  private readonly cacheTtl: number
  private readonly queryTimeout: number
  private readonly resolveQuorum: number
  /** the quorum lookup running for an AoR (resolves of a cold AoR share it) */
  private readonly resolving = new Map<Aor, Promise<SignedClaim | undefined>>()

  constructor (components: RouteReadsComponents, init: RouteReadsInit) {
    this.c = components
    this.cacheTtl = init.cacheTtlMs
    this.queryTimeout = init.queryTimeoutMs
    this.resolveQuorum = init.resolveQuorum
  }

  /** Every valid claim the DHT (and this node's store) holds for an AoR, newest first. */
  async lookupAll (aor: Aor, options?: LookupOptions): Promise<SignedClaim[]> {
    return await this.op(options, async (signal) => await this.c.reader.lookupAll(normalizeAor(aor), signal, options))
  }

  /** The newest valid claim the DHT holds for an AoR. */
  async lookup (aor: Aor, options?: LookupOptions): Promise<SignedClaim | undefined> {
    return (await this.lookupAll(aor, options))[0]
  }

  /** Run one bounded operation: aborted by stop(), the caller's signal or the query timeout. */
  private async op<T> (options: AbortOptions | undefined, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const shutdown = this.c.run.signal
    if (shutdown == null) throw new NotStartedError()
    return withSignal(this.queryTimeout, [shutdown, options?.signal], fn)
  }

  async resolve (aorIn: Aor, options?: AbortOptions & { fresh?: boolean }): Promise<Route | undefined> {
    const aor = normalizeAor(aorIn)
    const now = Date.now()
    let best: SignedClaim | undefined
    const e = this.c.routes.entry(aor)
    if (options?.fresh !== true && e != null && e.claim.expiresAt > now) {
      // served from the cache, which notices keep current; past cacheTtl it is checked again in
      // the background (stale-while-revalidate) so that no message waits for a DHT round trip
      best = e.claim
      if (now - e.fetchedAt >= this.cacheTtl && !this.c.own.has(aor)) this.revalidate(aor)
    } else {
      const neg = this.c.routes.negativeSince(aor)
      if (options?.fresh !== true && e == null && neg != null && now - neg < this.c.routes.negativeTtl) return undefined
      best = await this.lookupShared(aor, options)
    }
    if (best == null || !isLive(best)) return undefined
    // P5: a route to a node that is down is no route; a node we are not connected to is asked
    if (!best.owner.equals(this.c.peerId) && !await this.c.liveness.check(best.owner)) return undefined
    return this.c.routes.routeOf(best)
  }

  /**
   * `resolve`'s answer from the cache, when it needs no wait: the same checks (a live claim, its
   * owner up) and the same background revalidation of an old entry. The cache is keyed by
   * normalized AoRs, so an AoR it holds needs no normalizing; any other is left to `resolve`.
   */
  routeNow (aor: Aor): Route | undefined {
    const e = this.c.routes.entry(aor)
    if (e == null) return undefined
    const now = Date.now()
    const c = e.claim
    if (!isLive(c, now) || (!c.owner.equals(this.c.peerId) && this.c.liveness.checkNow(c.owner) !== true)) return undefined
    if (now - e.fetchedAt >= this.cacheTtl && !this.c.own.has(aor)) this.revalidate(aor)
    return this.c.routes.routeOf(c, now)
  }

  /**
   * Look an AoR up in the DHT and take in what it holds: the newest claim known. One lookup per AoR
   * at a time: a resolve without its own signal joins the one running, unless it wants a `fresh`
   * answer (the running lookup may have asked the replicas before the caller began). A presentity
   * watched for the first time is resolved twice at once (its watch reports the current route and
   * the agent resolves it); each was a quorum read of the replicas (issue 11, the cold start).
   */
  private async lookupShared (aor: Aor, options?: AbortOptions & { fresh?: boolean }): Promise<SignedClaim | undefined> {
    const running = this.resolving.get(aor)
    if (running != null && options?.fresh !== true && options?.signal == null) return await running
    const lookup = this.lookup(aor, { signal: options?.signal, quorum: this.resolveQuorum, onLate: this.lateRead(aor) }).then(found => {
      const best = this.c.apply(aor, found, true)
      // we know a newer claim than the DHT served: put it back (heals a stale put, P2)
      if (best != null && (found == null || compareClaims(best, found) > 0)) void this.c.writer.write(best)
      return best
    })
    if (options?.signal != null) return await lookup
    const shared = lookup.finally(() => { if (this.resolving.get(aor) === shared) this.resolving.delete(aor) })
    this.resolving.set(aor, shared)
    return await shared
  }

  /**
   * A read answered without its silent replica (lookup.ts): the newer claim that replica's late
   * answer brought is taken in as a notice's would be (the cache, watchers, a displaced own claim).
   */
  private lateRead (aor: Aor): (claims: SignedClaim[]) => void {
    return (claims) => {
      if (!this.c.run.running) return
      this.c.log('a late replica answer for %s brought v%s of %p', aor, claims[0].version, claims[0].owner)
      this.c.apply(aor, claims[0], true)
    }
  }

  /** Look an AoR up again in the background (one at a time per AoR). */
  private revalidate (aor: Aor): void {
    if (this.resolving.has(aor) || !this.c.run.running) return
    this.lookupShared(aor).catch((err: unknown) => { this.c.log('revalidating %s failed: %s', aor, errorMessage(err)) })
  }

  /**
   * Whether the mesh knows this user: some node holds a record for the AoR (a claim, or the
   * release of one) within its retention (`knownRetentionMs` after the last registration).
   */
  async known (aorIn: Aor, options?: AbortOptions): Promise<boolean> {
    const aor = normalizeAor(aorIn)
    const now = Date.now()
    const e = this.c.routes.entry(aor)
    if (e != null && e.claim.knownUntil > now) return true
    const found = this.c.apply(aor, await this.lookup(aor, { ...options, quorum: this.resolveQuorum, onLate: this.lateRead(aor) }), true)
    return found != null && found.knownUntil > now
  }
}
