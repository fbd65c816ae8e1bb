/**
 * Resources: one presentity in one event package while anybody subscribes to it here, with its
 * mode (local, remote, held: see agent.ts), per-package state and what each subscription is told.
 *
 * - Modes and moves: every resource is watched in the registry; a new route (a move) ends the
 *   back-end subscription and starts one at the new owner; a node that stops serving a resource
 *   ends the back-end subscriptions it served with `deactivated` (draft 6.1.4).
 * - State: a local resource's canonical document comes from its package (`compose`), cached until
 *   the package reports a change; a remote one's from the owner's back-end NOTIFY.
 * - `view`: what one subscription is told now, from the package's decision for the watcher, the
 *   owner's decision (draft 7.1.2.2: a denied back-end decision denies the watcher here too) and
 *   the mode.
 */
import type { Aor, Logger, Registry, Route } from '../ports.ts'
import type { Registrar } from '../registrar/registrar.ts'
import type { Flow } from '../proxy/flow.ts'
import type { Decision } from './authorization.ts'
import { MAX_WATCHERS_PER_REQUEST } from './event.ts'
import type { EventPackage } from './package.ts'
import type { Notifier, View } from './notifier.ts'
import type { BackendSubscriptions } from './backend.ts'
import { peerOwner } from './peering.ts'
import { resourceKey, type Mode, type Resource, type Sub } from './resource.ts'

export interface ResourcesComponents {
  registry: Registry
  registrar: Registrar<Flow>
  notifier: Notifier
  backends: BackendSubscriptions
  logger: Logger
  /** the agent runs */
  running: () => boolean
  /** rules of this presentity are being fetched from its previous owner (rules-exchange.ts) */
  gated: (aor: Aor) => boolean
  /** the peer network of an AoR of a peered domain (peering.ts): its presentities are served from there */
  peerOf: (aor: Aor) => string | undefined
  /** a resource was created or dropped (winfo and lists follow them) */
  onWatchersChanged?: (p: Resource) => void
}

export class Resources {
  readonly #registry: Registry
  readonly #registrar: Registrar<Flow>
  readonly #notifier: Notifier
  readonly #backends: BackendSubscriptions
  readonly #log: Logger
  readonly #running: () => boolean
  readonly #gated: (aor: Aor) => boolean
  readonly #peerOf: (aor: Aor) => string | undefined
  readonly #table = new Map<string, Resource>()
  /** aor → the resources of it, one per package */
  readonly #byAor = new Map<Aor, Set<Resource>>()

  constructor (components: ResourcesComponents) {
    this.#registry = components.registry
    this.#registrar = components.registrar
    this.#notifier = components.notifier
    this.#backends = components.backends
    this.#log = components.logger
    this.#running = components.running
    this.#gated = components.gated
    this.#peerOf = components.peerOf
  }

  get size (): number { return this.#table.size }

  values (): IterableIterator<Resource> { return this.#table.values() }

  /** (an AoR nobody watches, as for most PUBLISHes: no key made) */
  get (pkg: string, aor: Aor): Resource | undefined { return this.#byAor.has(aor) ? this.#table.get(resourceKey(pkg, aor)) : undefined }

  has (pkg: string, aor: Aor): boolean { return this.#table.has(resourceKey(pkg, aor)) }

  /** every resource of an AoR (one per package) */
  ofAor (aor: Aor): Resource[] { return [...(this.#byAor.get(aor) ?? [])] }

  current (p: Resource): boolean { return this.#running() && this.#table.get(p.key) === p }

  stop (): void {
    for (const p of this.#table.values()) {
      p.unwatch?.()
      clearTimeout(p.closedTimer)
      clearTimeout(p.retryTimer)
      if (p.backend !== undefined) this.#backends.clear(p.backend)
    }
    this.#table.clear()
    this.#byAor.clear()
  }

  /** the resource of (package, AoR), created (and watched in the registry) when new */
  open (pkg: EventPackage, aor: Aor): Resource {
    const key = resourceKey(pkg.name, aor)
    const existing = this.#table.get(key)
    if (existing !== undefined) return existing
    const created: Resource = {
      key,
      pkg,
      aor,
      mode: 'held',
      subs: new Set(),
      backendState: 'none',
      ownerDecisions: new Map(),
      waiters: new Map(),
      wanted: new Map(),
      ready: Promise.resolve(),
      lastStart: 0
    }
    this.#table.set(key, created)
    let set = this.#byAor.get(aor)
    if (set === undefined) { set = new Set(); this.#byAor.set(aor, set) }
    set.add(created)
    if (this.#peerOf(aor) !== undefined) {
      // a presentity of a peer network: no claim in our registry; served by the peer (peering.ts),
      // subscribed once the SUBSCRIBE that opened it is counted (`wanted`)
      created.ready = Promise.resolve().then(() => { if (this.current(created)) this.reroute(created, undefined) })
      return created
    }
    created.unwatch = this.#registry.watch(aor, (route) => { if (this.#running() && this.#table.get(key) === created) this.reroute(created, route) })
    if (this.#registrar.lookup(aor).length > 0) {
      created.mode = 'local'
    } else {
      created.ready = this.#registry.resolve(aor).then(
        (route) => { if (this.#table.get(key) === created) this.reroute(created, route) },
        (err: unknown) => { this.#log.debug('presentity resolve failed', { aor, err: String(err) }) })
    }
    return created
  }

  /** drop a resource nobody subscribes to any more */
  forget (p: Resource): void {
    if (p.subs.size > 0 || p.wanted.size > 0 || this.#table.get(p.key) !== p) return
    this.#table.delete(p.key)
    const set = this.#byAor.get(p.aor)
    set?.delete(p)
    if (set?.size === 0) this.#byAor.delete(p.aor)
    p.unwatch?.()
    clearTimeout(p.closedTimer)
    clearTimeout(p.retryTimer)
    if (p.backend !== undefined) this.#backends.end(p, p.backend)
    for (const ws of p.waiters.values()) for (const w of ws) w()
    p.waiters.clear()
  }

  #modeFor (aor: Aor, route: Route | undefined): { mode: Mode, owner?: string } {
    const peer = this.#peerOf(aor)
    if (peer !== undefined) return { mode: 'remote', owner: peerOwner(peer) }
    if (this.#registrar.lookup(aor).length > 0) return { mode: 'local' }
    if (route === undefined) return { mode: 'held' }
    if (route.node === this.#registry.nodeId) return { mode: 'local' }
    return { mode: 'remote', owner: route.node }
  }

  /** the owner of the resource is (now) the route's node: local, remote or held */
  reroute (p: Resource, route: Route | undefined): void {
    const next = this.#modeFor(p.aor, route)
    if (next.mode === p.mode && next.owner === p.owner && (next.mode !== 'remote' || (p.backend !== undefined && !p.backend.ended))) return
    const wasLocal = p.mode === 'local'
    this.#log.debug('presentity rerouted', { aor: p.aor, event: p.pkg.name, from: p.mode, to: next.mode, owner: next.owner })
    if (p.backend !== undefined) this.#backends.end(p, p.backend)
    if (next.mode === 'remote' && p.mode === 'remote') {
      // owner to owner (a move): watchers keep what they were shown until the new owner answers
    } else if (next.mode === 'remote' && wasLocal) {
      // we served it: what our watchers saw stands until the new owner answers
      const doc = this.localDoc(p)
      p.ownerDecisions.clear()
      for (const s of p.subs) if (s.kind === 'ua') p.ownerDecisions.set(s.watcher, p.pkg.decide(p.aor, s.watcher))
      p.remoteDoc = doc
    } else {
      p.ownerDecisions.clear()
      p.remoteDoc = undefined
    }
    p.mode = next.mode
    p.owner = next.owner
    p.doc = undefined
    p.backendState = 'none'
    if (wasLocal && next.mode !== 'local') {
      // we no longer serve it: the back-end subscriptions we served move with the user (6.1.4)
      for (const s of [...p.subs]) if (s.kind === 'backend') this.#notifier.end(s, { state: 'terminated', reason: 'deactivated' })
    }
    if (next.mode === 'remote') {
      this.#backends.start(p)
      return
    }
    for (const ws of p.waiters.values()) for (const w of ws) w()
    p.waiters.clear()
    this.#notifier.notifyAll(p)
  }

  /** the registrar's bindings of an AoR changed (`live`: how many now) */
  onBindings (aor: Aor, live: number): void {
    for (const p of this.ofAor(aor)) {
      clearTimeout(p.closedTimer)
      if (live > 0) {
        if (p.mode !== 'local') { this.reroute(p, undefined); continue }
        this.changed(p)
        continue
      }
      // the last binding went: tell watchers a little later, unless the user moved meanwhile
      p.closedTimer = setTimeout(() => { if (p.mode === 'local') this.changed(p) }, 200)
      p.closedTimer.unref?.()
    }
  }

  /** the user registered elsewhere (`by`): our resources of it follow */
  onDisplaced (aor: Aor, by: Route): void {
    for (const p of this.ofAor(aor)) {
      clearTimeout(p.closedTimer)
      this.reroute(p, by)
    }
  }

  /** the package reported a change of a local resource's state */
  changed (p: Resource | undefined): void {
    if (p === undefined || p.mode !== 'local') return
    p.doc = undefined
    this.#notifier.notifyAll(p)
  }

  /**
   * The owner decided for some watchers of a remote resource: a back-end subscription this node
   * serves a peer network (peering.ts) for those watchers is told the owner's decisions (this node
   * only relays them: the owner applies the presentity's rules).
   */
  ownerDecided (p: Resource, watchers: ReadonlySet<string>): void {
    if (p.mode !== 'remote') return
    for (const s of p.subs) {
      if (s.kind !== 'backend' || s.identities === undefined) continue
      let changed: Map<string, Decision> | undefined
      for (const w of watchers) {
        const d = p.ownerDecisions.get(w)
        if (d === undefined || !s.identities.has(w) || (s.identities.get(w) === d && s.undecided?.has(w) !== true)) continue
        s.identities.set(w, d)
        s.undecided?.delete(w)
        changed ??= s.pushDecisions ?? new Map()
        changed.set(w, d)
      }
      if (changed !== undefined) { s.pushDecisions = changed; this.#notifier.notify(s) }
    }
  }

  /** the authorization of a presentity changed: decisions of served back-ends, then every watcher */
  decisionsChanged (p: Resource): void {
    for (const s of [...p.subs]) {
      if (s.kind === 'backend' && s.identities !== undefined && p.mode === 'local') {
        const changed = new Map<string, Decision>()
        for (const [w, old] of s.identities) {
          const d = p.pkg.decide(p.aor, w)
          if (d !== old) { s.identities.set(w, d); changed.set(w, d) }
        }
        if (changed.size > MAX_WATCHERS_PER_REQUEST * 5) {
          this.#notifier.end(s, { state: 'terminated', reason: 'deactivated' })
          continue
        }
        if (changed.size > 0) s.pushDecisions = changed
      }
      this.#notifier.notify(s)
    }
  }

  // ---- documents -----------------------------------------------------------------------------

  localDoc (p: Resource): Uint8Array {
    p.doc ??= p.pkg.compose(p.aor)
    return p.doc
  }

  #neutral (p: Resource): Uint8Array {
    p.neutral ??= p.pkg.neutral(p.aor)
    return p.neutral
  }

  /** what a subscription is told now: a state and a canonical body, or 'block' (end it, rejected) */
  view (s: Sub): View {
    const p = s.p
    if (s.kind === 'backend') {
      const ids = s.identities ?? new Map<string, Decision>()
      let anyAllowed = false
      for (const d of ids.values()) if (d === 'allow') { anyAllowed = true; break }
      // the presentity's document: ours, or (serving a peer network's back-end, peering.ts) the owner's
      const doc = !anyAllowed ? undefined : p.mode === 'local' ? this.localDoc(p) : p.mode === 'remote' ? p.remoteDoc : undefined
      return { state: 'active', body: doc ?? this.#neutral(p), full: doc !== undefined }
    }
    const local = p.pkg.decide(p.aor, s.watcher)
    if (local === 'block') return 'block'
    if (p.mode === 'held') return { state: 'active', body: this.#neutral(p) }
    if (p.mode === 'local') {
      // just taken over from another node whose rules are still on their way: what the watcher saw stands
      if (this.#gated(p.aor)) return s.told === undefined ? { state: 'pending', body: this.#neutral(p) } : { state: s.told.state === 'pending' ? 'pending' : 'active', body: s.told.body }
      return { state: 'active', body: local === 'allow' ? this.localDoc(p) : this.#neutral(p) }
    }
    const owner = p.ownerDecisions.get(s.watcher)
    if (owner === 'block') return 'block'
    if (p.backendState === 'loop') return { state: 'active', body: this.#neutral(p) }
    if (owner === undefined || (owner === 'allow' && p.remoteDoc === undefined)) return { state: 'pending', body: this.#neutral(p) }
    if (local === 'polite-block' || owner === 'polite-block') return { state: 'active', body: this.#neutral(p) }
    return { state: 'active', body: p.remoteDoc ?? this.#neutral(p) }
  }
}
