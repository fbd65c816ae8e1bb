/**
 * An in-memory `Registry` for tests of the gateway. Several `MemoryRegistry` instances share one
 * `MemoryMesh` and behave like nodes of one mesh: claims with hybrid-logical-clock versions, races
 * settled by the same order as the DHT selector (version, issuedAt, owner id), move notices to the
 * displaced owner, watchers told of every change (claim, move, release, expiry), tombstones on
 * release, refreshes that keep the version, records kept for the known-user retention, and the
 * liveness rule (a stopped member is a dead node: its AoRs resolve to nothing). It passes the same compliance suite as the DHT registry (test/dht/registry-compliance.ts).
 */
import { normalizeAor } from './record/claim.ts'
import type { AbortOptions, Aor, ClaimResult, LocalBinding, Route, Unwatch } from '../sip-gateway/ports.ts'
import type { ClaimRegistry } from './index.ts'

interface MemClaim {
  kind: 'claim' | 'release'
  aor: Aor
  node: string
  sip: string
  version: bigint
  issuedAt: number
  expiresAt: number
  knownUntil: number
}

function compare (a: MemClaim, b: MemClaim): number {
  if (a.version !== b.version) return a.version > b.version ? 1 : -1
  if (a.issuedAt !== b.issuedAt) return a.issuedAt > b.issuedAt ? 1 : -1
  if (a.node !== b.node) return a.node > b.node ? 1 : -1
  return 0
}

function routeOf (c: MemClaim | undefined, now = Date.now(), alive: (node: string) => boolean = () => true): Route | undefined {
  if (c == null || c.kind !== 'claim' || c.expiresAt <= now || !alive(c.node)) return undefined
  return { aor: c.aor, node: c.node, sip: c.sip, version: c.version, expiresAt: c.expiresAt }
}

/** Watchers are told when the owner or its address changes, not on every renewal. */
function sameRoute (a: Route | undefined, b: Route | undefined): boolean {
  if (a == null || b == null) return a === b
  return a.node === b.node && a.sip === b.sip
}

const tick = async (): Promise<void> => { await new Promise<void>(resolve => setImmediate(resolve)) }

/** The shared "DHT" of a set of memory registries. */
export class MemoryMesh {
  readonly records = new Map<Aor, MemClaim>()
  readonly members = new Set<MemoryRegistry>()

  /** store if newer; returns the stored (best) claim */
  store (c: MemClaim): MemClaim {
    const cur = this.records.get(c.aor)
    if (cur == null || cur.knownUntil <= Date.now() || compare(c, cur) > 0) {
      this.records.set(c.aor, c)
      return c
    }
    return cur
  }

  /** whether a node is a running member (a stopped one is a dead node: P5) */
  alive (node: string): boolean {
    for (const m of this.members) if (m.nodeId === node) return true
    return false
  }

  /** a member stopped: the others' watchers of its AoRs are told (peer liveness) */
  left (node: string): void {
    const aors = [...this.records.values()].filter(c => c.node === node).map(c => c.aor)
    setImmediate(() => {
      for (const m of this.members) for (const aor of aors) m._changed(aor)
    })
  }

  /** tell every member that an AoR changed (async, like a notice) */
  changed (aor: Aor, displaced?: { node: string, by: Route }): void {
    setImmediate(() => {
      for (const m of this.members) m._changed(aor, displaced)
    })
  }
}

export interface MemoryRegistryInit {
  /** this node's id (`Route.node`) */
  nodeId: string
  /**
   * this node's SIP address
   *
   * @default '127.0.0.1:5060'
   */
  sip?: string
  /**
   * added to a registration's expiry (P5)
   *
   * @default 30_000
   */
  expiryGraceMs?: number
  /**
   * how long a record is kept after the last registration (known users)
   *
   * @default 30 days
   */
  knownRetentionMs?: number
}

export class MemoryRegistry implements ClaimRegistry {
  readonly nodeId: string
  sip: string
  private readonly mesh: MemoryMesh
  private readonly grace: number
  private readonly retention: number
  private readonly seen = new Map<Aor, MemClaim>()
  private readonly watchers = new Map<Aor, { fns: Set<(r: Route | undefined) => void>, last: Route | undefined, timer?: ReturnType<typeof setTimeout> }>()
  private readonly displacedHandlers = new Set<(aor: Aor, by: Route) => void>()
  private readonly owned = new Set<Aor>()
  private running = false

  constructor (mesh: MemoryMesh, init: MemoryRegistryInit) {
    this.mesh = mesh
    this.nodeId = init.nodeId
    this.sip = init.sip ?? '127.0.0.1:5060'
    this.grace = init.expiryGraceMs ?? 30_000
    this.retention = init.knownRetentionMs ?? 30 * 24 * 3_600_000
    void this.start()
  }

  async start (_options?: AbortOptions): Promise<void> {
    this.running = true
    this.mesh.members.add(this)
  }

  async stop (): Promise<void> {
    this.running = false
    this.mesh.members.delete(this)
    this.mesh.left(this.nodeId)
    for (const w of this.watchers.values()) clearTimeout(w.timer)
    this.watchers.clear()
  }

  /** remember the newest claim seen for an AoR (an expired one blocks nothing); returns it */
  private see (aor: Aor, c: MemClaim | undefined): MemClaim | undefined {
    const s = this.seen.get(aor)
    if (c == null) return s
    if (s == null || s.knownUntil <= Date.now() || compare(c, s) > 0) {
      this.seen.set(c.aor, c)
      return c
    }
    return s
  }

  async claim (aorIn: Aor, binding: LocalBinding, options?: AbortOptions): Promise<ClaimResult> {
    const aor = normalizeAor(aorIn)
    options?.signal?.throwIfAborted()
    await tick()
    const cur = this.see(aor, this.mesh.records.get(aor))
    const now = Date.now()
    if (cur != null && cur.node === this.nodeId && cur.kind === 'claim' && cur.expiresAt > now && this.owned.has(aor)) {
      // a refresh of an AoR this node holds: same version, the lease follows the registration
      const renewed: MemClaim = { ...cur, issuedAt: Math.max(now, cur.issuedAt + 1), expiresAt: Math.max(cur.expiresAt, binding.expiresAt + this.grace), knownUntil: Math.max(cur.knownUntil, now + this.retention, binding.expiresAt + this.grace) }
      this.see(aor, this.mesh.store(renewed))
      const route = routeOf(renewed)!
      return { won: true, route, previous: route, replicas: this.mesh.members.size }
    }
    let version = BigInt(now)
    if (cur != null && cur.version >= version) version = cur.version + 1n
    const expiresAt = binding.expiresAt + this.grace
    const mine: MemClaim = { kind: 'claim', aor, node: this.nodeId, sip: this.sip, version, issuedAt: now, expiresAt, knownUntil: Math.max(expiresAt, now + this.retention, cur?.knownUntil ?? 0) }
    const previous = routeOf(cur, now, (n) => this.mesh.alive(n))
    await tick()
    const best = this.see(aor, this.mesh.store(mine))!
    await tick()
    const won = best === mine
    const route = routeOf(best) ?? routeOf(mine)!
    if (won) {
      this.owned.add(aor)
      this.mesh.changed(aor, previous != null && previous.node !== this.nodeId ? { node: previous.node, by: route } : undefined)
    } else {
      this.owned.delete(aor)
    }
    return { won, route, previous, replicas: won ? this.mesh.members.size : 0 }
  }

  async release (aorIn: Aor, options?: AbortOptions): Promise<void> {
    const aor = normalizeAor(aorIn)
    options?.signal?.throwIfAborted()
    await tick()
    this.owned.delete(aor)
    const cur = this.see(aor, this.mesh.records.get(aor))
    if (cur == null || cur.node !== this.nodeId || cur.kind !== 'claim') return
    const now = Date.now()
    const version = cur.version >= BigInt(now) ? cur.version + 1n : BigInt(now)
    const expiresAt = Math.max(cur.expiresAt, now + 1)
    const tomb: MemClaim = { kind: 'release', aor, node: this.nodeId, sip: '', version, issuedAt: now, expiresAt, knownUntil: Math.max(cur.knownUntil, expiresAt) }
    this.see(aor, this.mesh.store(tomb))
    this.mesh.changed(aor)
  }

  async resolve (aorIn: Aor, options?: AbortOptions & { fresh?: boolean }): Promise<Route | undefined> {
    const aor = normalizeAor(aorIn)
    options?.signal?.throwIfAborted()
    return routeOf(this.see(aor, this.mesh.records.get(aor)), Date.now(), (n) => this.mesh.alive(n))
  }

  routeNow (aorIn: Aor): Route | undefined {
    let aor: Aor
    try { aor = normalizeAor(aorIn) } catch { return undefined }
    return routeOf(this.see(aor, this.mesh.records.get(aor)), Date.now(), (n) => this.mesh.alive(n))
  }

  async known (aorIn: Aor, options?: AbortOptions): Promise<boolean> {
    const aor = normalizeAor(aorIn)
    options?.signal?.throwIfAborted()
    const c = this.see(aor, this.mesh.records.get(aor))
    return c != null && c.knownUntil > Date.now()
  }

  watch (aorIn: Aor, onChange: (route: Route | undefined) => void): Unwatch {
    const aor = normalizeAor(aorIn)
    let w = this.watchers.get(aor)
    if (w == null) {
      w = { fns: new Set(), last: undefined }
      this.watchers.set(aor, w)
    }
    const entry = w
    entry.fns.add(onChange)
    // report the current route (if any) like any other change, asynchronously
    setImmediate(() => { this._changed(aor) })
    return () => {
      entry.fns.delete(onChange)
      if (entry.fns.size === 0) {
        clearTimeout(entry.timer)
        this.watchers.delete(aor)
      }
    }
  }

  onDisplaced (handler: (aor: Aor, by: Route) => void): Unwatch {
    this.displacedHandlers.add(handler)
    return () => { this.displacedHandlers.delete(handler) }
  }

  /** @internal called by the mesh */
  _changed (aor: Aor, displaced?: { node: string, by: Route }): void {
    if (!this.running) return
    const cur = this.see(aor, this.mesh.records.get(aor))
    if (displaced != null && displaced.node === this.nodeId && this.owned.has(aor) && cur?.node !== this.nodeId) {
      this.owned.delete(aor)
      for (const h of this.displacedHandlers) h(aor, displaced.by)
    }
    const w = this.watchers.get(aor)
    if (w == null) return
    const route = routeOf(cur, Date.now(), (n) => this.mesh.alive(n))
    clearTimeout(w.timer)
    if (route != null) {
      // be told of the expiry too
      w.timer = setTimeout(() => { this._changed(aor) }, Math.max(0, route.expiresAt - Date.now()) + 5)
      w.timer.unref?.()
    }
    if (sameRoute(route, w.last)) return
    w.last = route
    for (const fn of [...w.fns]) fn(route)
  }
}
