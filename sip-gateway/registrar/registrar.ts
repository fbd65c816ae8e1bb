/**
 * Registrar (RFC 3261 section 10.3) for the domains this node serves, tied to the claim
 * registry: a REGISTER that leaves at least one binding claims the AoR in the mesh and is
 * answered 200 only once the claim is stored; the claim is released when the last binding ends.
 *
 * Conflict policy (SPEC "claim registry"): with `latest-takes-over` (default) a registration
 * claims the AoR even when another node holds it, and the newer claim wins everywhere; the node
 * that lost it (`registry.onDisplaced`) drops its bindings and answers the displaced device's
 * next refresh with 302 to the new owner instead of claiming back, so two devices on two nodes
 * cannot make the claim ping-pong. With `first-keeps`, a new registration for an AoR that another
 * node holds live is redirected there (302) and never claimed here.
 */
import type { SipRequest } from '../codec/message.ts'
import { parseNameAddr } from '../codec/name-addr.ts'
import { parseUri, aorOf } from '../codec/uri.ts'
import { parseCSeq } from '../codec/cseq.ts'
import { SipStatusError } from '../errors.ts'
import { INVALID_AOR_ERROR, type ClaimResult, type DurableStore, type Logger, type Registry, type Route, type Unwatch } from '../ports.ts'
import { contactKey, decodeRegistration, encodeRegistration } from './bindings.ts'
import type { Binding } from './bindings.ts'

export type { Binding } from './bindings.ts'

/** A response the gateway turns into a SIP response to the request. */
export interface Reply {
  status: number
  reason?: string
  headers?: Array<[string, string]>
}

export const ConflictPolicy = {
  /** the newest registration claims the AoR; the displaced node redirects its device (default) */
  LatestTakesOver: 'latest-takes-over',
  /** an AoR held live by another node is not claimed: the REGISTER is redirected there */
  FirstKeeps: 'first-keeps'
} as const
export type ConflictPolicy = typeof ConflictPolicy[keyof typeof ConflictPolicy]

export interface RegistrarInit {
  /** domains this node is registrar for (lower-case) */
  domains: Iterable<string>
  /** shortest accepted non-zero expiry, seconds (423 below). @default 60 */
  minExpires?: number
  /** longest granted expiry, seconds (longer requests are shortened). @default 3600 */
  maxExpires?: number
  /** expiry when the REGISTER names none, seconds. @default 3600 */
  defaultExpires?: number
  /** most contacts one AoR may bind (more: 403). @default 10 */
  maxContactsPerAor?: number
  /** @default 'latest-takes-over' */
  conflictPolicy?: ConflictPolicy
  /** clock, for tests. @default Date.now */
  now?: () => number
}

export interface RegistrarComponents {
  registry: Registry
  store: DurableStore
  logger: Logger
}

/** Durable store key prefix of registrations. */
export const STORE_PREFIX = 'sip-gateway/registrar/'

interface Displaced {
  by: Route
  callIds: Set<string>
  contacts: Set<string>
  until: number
}

interface Change<Flow> {
  remove: Set<string>
  upsert: Map<string, Binding<Flow>>
}

export class Registrar<Flow = unknown> {
  readonly #registry: Registry
  readonly #store: DurableStore
  readonly #log: Logger
  readonly #domains: Set<string>
  readonly #min: number
  readonly #max: number
  readonly #default: number
  readonly #maxContacts: number
  readonly #policy: ConflictPolicy
  readonly #now: () => number
  readonly #bindings = new Map<string, Map<string, Binding<Flow>>>()
  readonly #timers = new Map<string, ReturnType<typeof setTimeout>>()
  readonly #displaced = new Map<string, Displaced>()
  readonly #locks = new Map<string, Promise<unknown>>()
  readonly #known = new Set<string>()
  /** contact key → AoR, to find the binding of a contact (mid-dialog requests) */
  readonly #byContact = new Map<string, string>()
  readonly #listeners: Array<(aor: string, bindings: Binding<Flow>[]) => void> = []
  readonly #claimListeners: Array<(aor: string, result: ClaimResult) => void> = []
  #unDisplaced: Unwatch | undefined

  constructor (components: RegistrarComponents, init: RegistrarInit) {
    this.#registry = components.registry
    this.#store = components.store
    this.#log = components.logger
    this.#domains = new Set([...init.domains].map(d => d.toLowerCase()))
    this.#min = init.minExpires ?? 60
    this.#max = init.maxExpires ?? 3600
    this.#default = Math.min(init.defaultExpires ?? 3600, this.#max)
    this.#maxContacts = init.maxContactsPerAor ?? 10
    this.#policy = init.conflictPolicy ?? ConflictPolicy.LatestTakesOver
    this.#now = init.now ?? Date.now
    if (!Object.values(ConflictPolicy).includes(this.#policy)) throw new RangeError(`unknown conflict policy ${String(this.#policy)}`)
    if (this.#min > this.#max) throw new RangeError('minExpires exceeds maxExpires')
  }

  /** Listen to displacement and re-claim still-valid stored registrations (restart). */
  async start (): Promise<void> {
    this.#unDisplaced = this.#registry.onDisplaced((aor, by) => { this.#onDisplaced(aor, by) })
    const now = this.#now()
    const entries: Array<[string, Uint8Array]> = []
    for await (const entry of this.#store.list(STORE_PREFIX)) entries.push(entry)
    for (const [key, value] of entries) {
      const rec = decodeRegistration(value)
      const live = rec?.bindings.filter(b => b.expiresAt > now) ?? []
      if (rec === undefined || live.length === 0) {
        await this.#store.delete(key)
        continue
      }
      const aor = rec.aor
      try {
        const result = await this.#registry.claim(aor, { expiresAt: Math.max(...live.map(b => b.expiresAt)) })
        if (!result.won) {
          this.#log.info('stored registration taken over while down', { aor, owner: result.route.node })
          await this.#store.delete(key)
          continue
        }
        const map = new Map<string, Binding<Flow>>()
        for (const b of live) map.set(contactKey(b.uri), { ...b, aor })
        this.#setBindings(aor, map)
        this.#known.add(aor)
        this.#schedule(aor)
        this.#log.info('re-claimed stored registration', { aor, contacts: map.size })
      } catch (err) {
        this.#log.warn('could not re-claim stored registration', { aor, err: String(err) })
      }
    }
  }

  stop (): void {
    this.#unDisplaced?.()
    for (const t of this.#timers.values()) clearTimeout(t)
    this.#timers.clear()
  }

  /** live bindings of an AoR (expired ones are never returned) */
  lookup (aor: string): Binding<Flow>[] {
    const map = this.#bindings.get(aor)
    if (map === undefined) return []
    const now = this.#now()
    return [...map.values()].filter(b => b.expiresAt > now)
  }

  /** the live binding whose Contact URI is `uri`, on any AoR */
  findByContact (uri: string): Binding<Flow> | undefined {
    let key
    try { key = contactKey(uri) } catch { return undefined }
    const aor = this.#byContact.get(key)
    const b = aor === undefined ? undefined : this.#bindings.get(aor)?.get(key)
    return b !== undefined && b.expiresAt > this.#now() ? b : undefined
  }

  #setBindings (aor: string, map: Map<string, Binding<Flow>> | undefined): void {
    const old = this.#bindings.get(aor)
    for (const k of old?.keys() ?? []) if (this.#byContact.get(k) === aor) this.#byContact.delete(k)
    if (map === undefined || map.size === 0) {
      this.#bindings.delete(aor)
      return
    }
    this.#bindings.set(aor, map)
    for (const k of map.keys()) this.#byContact.set(k, aor)
  }

  /**
   * Resolves once no REGISTER of `aor` is being handled here (its claim settled and its bindings,
   * if any, are in place): a request that raced a registration can then see its outcome.
   */
  async settled (aor: string): Promise<void> {
    await this.#locks.get(aor)
  }

  /** AoRs registered here since start (seam for 480 vs 404 and for issue 5's offline store) */
  isKnown (aor: string): boolean { return this.#known.has(aor) }

  /** number of AoRs with at least one binding */
  get registrations (): number { return this.#bindings.size }

  /** number of bindings over all AoRs */
  get bindingCount (): number {
    let n = 0
    for (const m of this.#bindings.values()) n += m.size
    return n
  }

  /** told after every committed change of an AoR's bindings (presence, offline delivery) */
  onChange (listener: (aor: string, bindings: Binding<Flow>[]) => void): void {
    this.#listeners.push(listener)
  }

  /**
   * told of every claim this node won for a REGISTER, at once (before the 200 OK): `previous` names
   * the owner it took the AoR from, if any (presence rules follow the user from there)
   */
  onClaim (listener: (aor: string, result: ClaimResult) => void): void {
    this.#claimListeners.push(listener)
  }

  /**
   * Handle one REGISTER (RFC 3261 10.3). Throws SipStatusError for refusals; resolves with the
   * 200 (or 302) to send.
   */
  async handle (request: SipRequest, flow?: Flow): Promise<Reply> {
    // 10.3 step 1: the Request-URI names the registrar's domain
    const target = parseUri(request.uri)
    if (target.scheme !== 'sip' && target.scheme !== 'sips') throw new SipStatusError(416, 'Unsupported URI Scheme')
    if (!this.#domains.has(target.host.toLowerCase())) throw new SipStatusError(403, 'Domain Not Served')
    // step 2: no extension we support is required of a registrar
    const require = request.headers.getAll('Require')
    if (require.length > 0) throw new SipStatusError(420, 'Bad Extension', { cause: require })
    // step 5: the AoR comes from To
    const to = request.headers.get('To')
    const callId = request.headers.get('Call-ID')
    const cseqValue = request.headers.get('CSeq')
    if (to === undefined || callId === undefined || cseqValue === undefined) throw new SipStatusError(400, 'Missing To, Call-ID or CSeq')
    let aor: string
    try {
      aor = aorOf(parseNameAddr(to).uri)
    } catch {
      throw new SipStatusError(400, 'Malformed To')
    }
    if (!aor.includes('@') || !this.#domains.has(aor.slice(aor.indexOf('@') + 1))) throw new SipStatusError(404, 'Not Found')
    const cseq = parseCSeq(cseqValue).seq
    return await this.#serialized(aor, async () => await this.#register(request, aor, callId, cseq, flow))
  }

  async #serialized<T> (aor: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(aor) ?? Promise.resolve()
    const run = prev.then(fn, fn)
    const tail = run.then(() => {}, () => {})
    this.#locks.set(aor, tail)
    void tail.then(() => { if (this.#locks.get(aor) === tail) this.#locks.delete(aor) })
    return await run
  }

  async #register (request: SipRequest, aor: string, callId: string, cseq: number, flow: Flow | undefined): Promise<Reply> {
    const now = this.#now()
    const contacts = request.headers.getAll('Contact')
    const expiresHeader = request.headers.get('Expires')
    const headerExpires = expiresHeader === undefined ? undefined : parseExpires(expiresHeader)
    const current = this.#bindings.get(aor) ?? new Map<string, Binding<Flow>>()
    // drop what has expired but whose timer has not run yet
    for (const [k, b] of current) if (b.expiresAt <= now) current.delete(k)

    // no Contact: a query, answered with the current bindings (10.3 step 6)
    if (contacts.length === 0) return this.#ok(aor, [...current.values()], now)

    const displaced = this.#displaced.get(aor)
    if (displaced !== undefined && displaced.until <= now) this.#displaced.delete(aor)

    // Contact: * (10.3 step 6): only with Expires: 0 and alone
    if (contacts.some(c => c.trim() === '*')) {
      if (contacts.length !== 1 || headerExpires !== 0) throw new SipStatusError(400, 'Contact * needs Expires: 0 and no other Contact')
      const change: Change<Flow> = { remove: new Set(), upsert: new Map() }
      for (const [k, b] of current) {
        if (b.callId === callId && cseq <= b.cseq) throw new SipStatusError(500, 'Out of order CSeq')
        change.remove.add(k)
      }
      return await this.#commit(aor, current, change, now)
    }

    // step 7: every contact, all or nothing
    const change: Change<Flow> = { remove: new Set(), upsert: new Map() }
    for (const raw of contacts) {
      let na
      let key
      try {
        na = parseNameAddr(raw)
        key = contactKey(na.uri)
      } catch {
        throw new SipStatusError(400, 'Malformed Contact')
      }
      const pe = na.params.expires
      let expires = pe !== undefined && pe !== null ? parseExpires(pe) : headerExpires ?? this.#default
      if (expires > 0 && expires < this.#min) {
        return { status: 423, reason: 'Interval Too Brief', headers: [['Min-Expires', String(this.#min)]] }
      }
      expires = Math.min(expires, this.#max)
      const existing = current.get(key)
      if (existing !== undefined && existing.callId === callId && cseq <= existing.cseq) {
        throw new SipStatusError(500, 'Out of order CSeq')
      }
      if (expires === 0) {
        change.upsert.delete(key)
        if (existing !== undefined) change.remove.add(key)
        continue
      }
      const params: Record<string, string | null> = {}
      for (const [n, v] of Object.entries(na.params)) if (n !== 'expires') params[n] = v
      change.remove.delete(key)
      change.upsert.set(key, { aor, uri: na.uri, params, expiresAt: now + expires * 1000, callId, cseq, flow })
    }

    // the displaced device refreshing: redirect to the new owner instead of claiming back
    if (displaced !== undefined && change.upsert.size > 0 && this.#fromDisplacedDevice(displaced, callId, change)) {
      return this.#redirect(aor, displaced.by)
    }
    if (this.#policy === ConflictPolicy.FirstKeeps && current.size === 0 && change.upsert.size > 0) {
      const route = await this.#registry.resolve(aor)
      if (route !== undefined && route.node !== this.#registry.nodeId && route.expiresAt > now) return this.#redirect(aor, route)
    }
    return await this.#commit(aor, current, change, now)
  }

  #fromDisplacedDevice (d: Displaced, callId: string, change: Change<Flow>): boolean {
    if (d.callIds.has(callId)) return true
    for (const k of change.upsert.keys()) if (d.contacts.has(k)) return true
    return false
  }

  #redirect (aor: string, by: Route): Reply {
    const user = aor.startsWith('sip:') && aor.includes('@') ? aor.slice(4, aor.indexOf('@')) + '@' : ''
    return { status: 302, reason: 'Moved Temporarily', headers: [['Contact', `<sip:${user}${by.sip}>`]] }
  }

  async #commit (aor: string, current: Map<string, Binding<Flow>>, change: Change<Flow>, now: number): Promise<Reply> {
    const next = new Map(current)
    for (const k of change.remove) next.delete(k)
    for (const [k, b] of change.upsert) next.set(k, b)
    if (next.size > this.#maxContacts) throw new SipStatusError(403, 'Too Many Contacts')

    if (next.size > 0) {
      const expiresAt = Math.max(...[...next.values()].map(b => b.expiresAt))
      let result
      try {
        result = await this.#registry.claim(aor, { expiresAt })
      } catch (err) {
        // an AoR the registry cannot hold is the user agent's fault (400 at the error boundary)
        if ((err as Error)?.name === INVALID_AOR_ERROR) throw err
        throw new SipStatusError(503, 'Registry Unavailable', { cause: err })
      }
      if (!result.won) {
        // a concurrent newer claim of another node won: that registration is the latest, ours is not bound
        this.#log.info('claim lost to a newer registration', { aor, owner: result.route.node })
        this.#dropLocal(aor)
        return this.#redirect(aor, result.route)
      }
      this.#displaced.delete(aor)
      for (const l of this.#claimListeners) {
        try { l(aor, result) } catch (err) { this.#log.error('registrar claim listener threw', { err: String(err) }) }
      }
      this.#setBindings(aor, next)
      this.#known.add(aor)
      this.#schedule(aor)
      await this.#persist(aor, next)
      this.#log.debug('registered', { aor, contacts: next.size })
    } else {
      const had = this.#bindings.has(aor)
      this.#setBindings(aor, undefined)
      this.#unschedule(aor)
      await this.#persist(aor, next)
      if (had) await this.#release(aor)
    }
    this.#emit(aor)
    return this.#ok(aor, [...next.values()], now)
  }

  #ok (_aor: string, bindings: Binding<Flow>[], now: number): Reply {
    const headers: Array<[string, string]> = []
    for (const b of bindings) {
      const secs = Math.max(0, Math.round((b.expiresAt - now) / 1000))
      let params = ''
      for (const [n, v] of Object.entries(b.params)) params += v === null ? `;${n}` : `;${n}=${v}`
      headers.push(['Contact', `<${b.uri}>${params};expires=${secs}`])
    }
    headers.push(['Date', new Date(now).toUTCString()])
    return { status: 200, reason: 'OK', headers }
  }

  #schedule (aor: string): void {
    this.#unschedule(aor)
    const map = this.#bindings.get(aor)
    if (map === undefined || map.size === 0) return
    const next = Math.min(...[...map.values()].map(b => b.expiresAt))
    const t = setTimeout(() => { void this.#expire(aor) }, Math.max(0, next - this.#now()) + 5)
    t.unref?.()
    this.#timers.set(aor, t)
  }

  #unschedule (aor: string): void {
    const t = this.#timers.get(aor)
    if (t !== undefined) clearTimeout(t)
    this.#timers.delete(aor)
  }

  async #expire (aor: string): Promise<void> {
    this.#timers.delete(aor)
    await this.#serialized(aor, async () => {
      const map = this.#bindings.get(aor)
      if (map === undefined) return
      const now = this.#now()
      for (const [k, b] of map) if (b.expiresAt <= now) map.delete(k)
      await this.#persist(aor, map)
      this.#setBindings(aor, map.size === 0 ? undefined : map)
      if (map.size === 0) {
        this.#log.debug('last binding expired', { aor })
        await this.#release(aor)
      } else {
        this.#schedule(aor)
      }
      this.#emit(aor)
    })
  }

  async #release (aor: string): Promise<void> {
    try {
      await this.#registry.release(aor)
    } catch (err) {
      this.#log.warn('release failed', { aor, err: String(err) })
    }
  }

  async #persist (aor: string, map: Map<string, Binding<Flow>>): Promise<void> {
    try {
      if (map.size === 0) await this.#store.delete(STORE_PREFIX + aor)
      else await this.#store.put(STORE_PREFIX + aor, encodeRegistration(aor, map.values()))
    } catch (err) {
      this.#log.error('could not persist registration', { aor, err: String(err) })
    }
  }

  #dropLocal (aor: string): Map<string, Binding<Flow>> | undefined {
    const map = this.#bindings.get(aor)
    this.#setBindings(aor, undefined)
    this.#unschedule(aor)
    void this.#persist(aor, new Map())
    return map
  }

  #onDisplaced (aor: string, by: Route): void {
    if (by.node === this.#registry.nodeId) return
    const map = this.#dropLocal(aor)
    const d: Displaced = this.#displaced.get(aor) ?? { by, callIds: new Set(), contacts: new Set(), until: 0 }
    d.by = by
    for (const [k, b] of map ?? []) {
      d.callIds.add(b.callId)
      d.contacts.add(k)
      d.until = Math.max(d.until, b.expiresAt)
    }
    // remember the displaced devices for at least the longest expiry we grant
    d.until = Math.max(d.until, this.#now() + this.#max * 1000)
    this.#displaced.set(aor, d)
    this.#log.info('displaced by a newer registration', { aor, owner: by.node })
    this.#emit(aor)
  }

  #emit (aor: string): void {
    const list = this.lookup(aor)
    for (const l of this.#listeners) {
      try { l(aor, list) } catch (err) { this.#log.error('registrar listener threw', { err: String(err) }) }
    }
  }
}

function parseExpires (value: string): number {
  const v = value.trim()
  if (!/^\d{1,10}$/.test(v)) throw new SipStatusError(400, 'Malformed Expires')
  return Math.min(Number(v), 0xffffffff)
}
