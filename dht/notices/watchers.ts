/**
 * Watchers of AoRs and the handlers told when another owner displaces this node: each watched AoR
 * is polled (`watchIntervalMs`), registers interest with its replicas (`witness.ts`) unless this
 * node holds it, and its watchers are told when its owner or address changes.
 */
import { errorMessage } from '../errors.ts'
import type { Witness } from './witness.ts'
import type { ReplicaFinder } from '../replication/replicas.ts'
import type { Apply, RouteCache } from '../routes/route-cache.ts'
import type { OwnRecords } from '../own/own-records.ts'
import type { RunState } from '../signal.ts'
import type { Aor, Route, Unwatch } from '../../sip-gateway/ports.ts'
import type { AbortOptions, Logger, PeerId } from '@libp2p/interface'

interface WatchEntry {
  fns: Set<(route: Route | undefined) => void>
  last: Route | undefined
  poll?: ReturnType<typeof setInterval>
  expiry?: ReturnType<typeof setTimeout>
}

/** Watchers are told when the owner or its address changes, not on every renewal. */
function sameRoute (a: Route | undefined, b: Route | undefined): boolean {
  if (a == null || b == null) return a === b
  return a.node === b.node && a.sip === b.sip
}

export interface WatchersComponents {
  peerId: PeerId
  routes: RouteCache
  own: Pick<OwnRecords, 'get'>
  replicas: Pick<ReplicaFinder, 'closestKnown'>
  witness: Pick<Witness, 'register'>
  run: RunState
  log: Logger
  apply: Apply
  /** the registry's resolve (a watch reports the current route, and polls it) */
  resolve: (aor: Aor, options?: AbortOptions & { fresh?: boolean }) => Promise<Route | undefined>
}

export interface WatchersInit {
  /** @default 30_000 */
  watchIntervalMs?: number
}

export class Watchers {
  private readonly c: WatchersComponents
  private readonly watchInterval: number
  private readonly watchers = new Map<Aor, WatchEntry>()
  private readonly displacedHandlers = new Set<(aor: Aor, by: Route) => void>()

  constructor (components: WatchersComponents, init: WatchersInit = {}) {
    this.c = components
    this.watchInterval = init.watchIntervalMs ?? 30_000
  }

  /** whether an AoR is watched */
  has (aor: Aor): boolean {
    return this.watchers.has(aor)
  }

  stop (): void {
    for (const w of this.watchers.values()) {
      clearInterval(w.poll)
      clearTimeout(w.expiry)
    }
    this.watchers.clear()
  }

  /** Watch a (normalized) AoR. */
  watch (aor: Aor, onChange: (route: Route | undefined) => void): Unwatch {
    let w = this.watchers.get(aor)
    if (w == null) {
      const entry: WatchEntry = { fns: new Set(), last: undefined }
      w = entry
      this.watchers.set(aor, entry)
      entry.poll = setInterval(() => {
        if (!this.c.run.running) return
        this.c.resolve(aor, { fresh: true }).then(() => { this.fire(aor) }, () => {})
        this.registerInterest(aor)
      }, this.watchInterval)
      entry.poll.unref?.()
      this.registerInterest(aor)
    }
    const entry = w
    entry.fns.add(onChange)
    // report the current route, if any, like any other change
    queueMicrotask(() => {
      if (!this.c.run.running) return
      this.c.resolve(aor).then(() => { this.fire(aor) }, () => {})
    })
    return () => {
      entry.fns.delete(onChange)
      if (entry.fns.size === 0 && this.watchers.get(aor) === entry) {
        clearInterval(entry.poll)
        clearTimeout(entry.expiry)
        this.watchers.delete(aor)
      }
    }
  }

  /** Tell an AoR's watchers of its route, when it changed (and time its expiry). */
  fire (aor: Aor): void {
    const w = this.watchers.get(aor)
    if (w == null) return
    const route = this.c.routes.routeOf(this.c.routes.claimOf(aor))
    clearTimeout(w.expiry)
    if (route != null) {
      w.expiry = setTimeout(() => { this.c.apply(aor, undefined, false) }, Math.max(0, route.expiresAt - Date.now()) + 5)
      w.expiry.unref?.()
    }
    if (sameRoute(route, w.last)) return
    w.last = route
    for (const fn of [...w.fns]) {
      try { fn(route) } catch (err) { this.c.log.error('watch callback threw: %s', errorMessage(err)) }
    }
  }

  /**
   * Ask the replicas of a watched AoR to tell this node of changes (interest), unless this node
   * holds the AoR's live claim: a new owner tells the owner it displaces itself (P3), so the
   * owner's interest was a request per presentity it serves for nothing (issue 11: a node serving
   * presentities watched from another node registered interest in each with that node). When the
   * claim ends here (released, displaced, lost, lapsed) a watched AoR registers it at once.
   */
  private registerInterest (aor: Aor): void {
    const mine = this.c.own.get(aor)?.claim
    if (mine != null && mine.kind === 'claim' && mine.expiresAt > Date.now()) return
    void this.c.witness.register(aor)
  }

  /** This node's claim of an AoR ended: a watched AoR's interest is registered now. */
  ownEnded (aor: Aor): void {
    if (this.watchers.has(aor) && this.c.run.running) this.registerInterest(aor)
  }

  onDisplaced (handler: (aor: Aor, by: Route) => void): Unwatch {
    this.displacedHandlers.add(handler)
    return () => { this.displacedHandlers.delete(handler) }
  }

  /** Another owner took an AoR from this node: the displaced handlers are told. */
  displaced (aor: Aor, by: Route): void {
    for (const h of [...this.displacedHandlers]) {
      try { h(aor, by) } catch (err) { this.c.log.error('onDisplaced handler threw: %s', errorMessage(err)) }
    }
  }

  /**
   * The peers whose connections this node keeps however idle (node/idle-connections.ts): the
   * owners of the routes it watches (liveness, P5) and its `neighbours` closest peers in the
   * routing table.
   */
  keptPeers (neighbours: number): PeerId[] {
    const kept = this.c.replicas.closestKnown(this.c.peerId.toMultihash().bytes, neighbours)
    for (const aor of this.watchers.keys()) {
      const owner = this.c.routes.claimOf(aor)?.owner
      if (owner !== undefined && !owner.equals(this.c.peerId)) kept.push(owner)
    }
    return kept
  }

  /** Whether a peer holds the route of an AoR this node watches. */
  holdsWatched (peer: PeerId): boolean {
    for (const aor of this.watchers.keys()) {
      if (this.c.routes.claimOf(aor)?.owner.equals(peer) === true) return true
    }
    return false
  }

  /** A peer went down or came back: the watchers of the AoRs it holds are told. */
  peerChanged (peer: string): void {
    for (const aor of this.watchers.keys()) {
      if (this.c.routes.claimOf(aor)?.owner.toString() === peer) this.fire(aor)
    }
  }
}
