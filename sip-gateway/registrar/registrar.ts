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
import { parseNameAddr, parseNameAddrShared } from '../codec/name-addr.ts'
import { parseUri, aorOf, type SipUri } from '../codec/uri.ts'
import { SipStatusError } from '../errors.ts'
import { INVALID_AOR_ERROR, type ClaimResult, type DurableStore, type Logger, type Registry, type Route, type Unwatch } from '../ports.ts'
import { contactKey, encodeRegistration, ownString, EMPTY_PARAMS, STORE_PREFIX } from './bindings.ts'
import type { Binding, StoredBinding } from './bindings.ts'
import { ExpiryWheel } from './expiry-wheel.ts'
import { StoredRegistrations, type ReclaimProgress } from './restart.ts'
import { OverloadGuard, type OverloadInit, type ShedReason } from './overload.ts'
import { RegistrationLog } from './change-log.ts'
import { coveredByRecord, horizonOf } from './durable-horizon.ts'
import { contactsOf, hasStar, plainAor, registerSeq } from './register-fields.ts'

export type { Binding } from './bindings.ts'
export type { OverloadInit, ShedReason } from './overload.ts'
export type { ReclaimProgress } from './restart.ts'

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
  /** width of the expiry wheel's slots: a binding's expiry is acted on at most this late, ms. @default 1000 */
  expiryGranularityMs?: number
  /** overload: REGISTERs in progress and event-loop lag beyond which a REGISTER gets 503 + Retry-After */
  overload?: OverloadInit
  /** stored registrations claimed again at once after a restart (in the background). @default 256 */
  reclaimConcurrency?: number
  /** a progress line of the restart's re-claim at most this often, ms. @default 5000 */
  reclaimLogIntervalMs?: number
  /**
   * how much later than granted a binding may expire after a kill -9 and restart, seconds (at
   * most its granted interval): a refresh within that slack of the stored record needs no disk
   * write (durable-horizon.ts); 0 writes every refresh. @default 300
   */
  refreshWriteSlack?: number
}

export interface RegistrarComponents {
  registry: Registry
  store: DurableStore
  logger: Logger
}

export { STORE_PREFIX } from './bindings.ts'

interface Displaced {
  by: Route
  callIds: Set<string>
  contacts: Set<string>
  until: number
}

/**
 * What one REGISTER changes: keys removed, bindings added or refreshed. Arrays searched by key,
 * not a Set and a Map: an AoR has a few contacts, and a refresh then costs no hash tables.
 */
interface Change<Flow> {
  remove: string[]
  upsert: Array<StoredBinding<Flow>>
}

/** what a REGISTER asks of its AoR: the bindings it finds (`restoring`: stored before a restart) and the change */
interface Plan<Flow> {
  current: Array<StoredBinding<Flow>>
  change: Change<Flow>
  restoring: boolean
}

/** a REGISTER's claim answers at the first replica's answer (ports.ts, ClaimOptions) */
const FIRST_REPLICA = Object.freeze({ firstReplica: true })

/** the claim is won and the bindings installed; the answer waits for their write */
const WRITE = Symbol('write')

/** the key of the binding in `list` whose URI is written exactly `uri` (the key is a function of it) */
function keyOfUri (list: ReadonlyArray<{ key: string, uri: string }>, uri: string): string | undefined {
  for (let i = 0; i < list.length; i++) if (list[i].uri === uri) return list[i].key
  return undefined
}

/**
 * The index of the binding in `list` that `raw` (a Contact value) names exactly as it was bound:
 * `<uri>` with its URI written the same, no display name and no parameter but an `expires` of 1 to
 * 10 digits, for a binding with no parameters; -1 otherwise (then the Contact is parsed). What
 * parseNameAddr gives for such a value is that URI and no other parameter, so the refresh is the
 * same with or without the parse.
 */
function sameContact (list: ReadonlyArray<{ uri: string, params: Record<string, string | null> }>, raw: string): number {
  if (raw.charCodeAt(0) !== 60 /* < */) return -1
  for (let i = 0; i < list.length; i++) {
    const uri = list[i].uri
    if (raw.charCodeAt(uri.length + 1) !== 62 /* > */ || !raw.startsWith(uri, 1)) continue
    for (const _ in list[i].params) return -1
    const end = uri.length + 2
    return end === raw.length || expiresParamOf(raw, end) !== -1 ? i : -1
  }
  return -1
}

/** the value of `;expires=<1 to 10 digits>` when it is all of `raw` from `at` (capped as parseExpires), else -1 */
function expiresParamOf (raw: string, at: number): number {
  if (at === raw.length || !raw.startsWith(';expires=', at)) return -1
  const from = at + 9
  if (raw.length - from < 1 || raw.length - from > 10) return -1
  let v = 0
  for (let j = from; j < raw.length; j++) {
    const c = raw.charCodeAt(j) - 48
    if (c < 0 || c > 9) return -1
    v = v * 10 + c
  }
  return Math.min(v, 0xffffffff)
}

/** index of the binding with `key` in `list`, -1 when none */
function indexOfKey (list: ReadonlyArray<{ key: string }>, key: string): number {
  for (let i = 0; i < list.length; i++) if (list[i].key === key) return i
  return -1
}

/** remove `x` from `list` (in place) when there */
function without<T> (list: T[], x: T): void {
  const i = list.indexOf(x)
  if (i !== -1) list.splice(i, 1)
}

/** a Change's lists while nothing is in them (never written to: replaced when something goes in) */
const NO_KEYS: string[] = Object.freeze([]) as unknown as string[]
const NO_BINDINGS: Array<StoredBinding<never>> = Object.freeze([]) as unknown as Array<StoredBinding<never>>

/**
 * the live ones of a registration's bindings (unique by key: as #install keeps them): its own
 * array when all are live (the usual case; read, never written), else a copy of the live ones
 */
function liveOf<Flow> (bindings: Array<StoredBinding<Flow>> | undefined, now: number): Array<StoredBinding<Flow>> {
  if (bindings === undefined) return []
  let live = 0
  for (let i = 0; i < bindings.length; i++) if (bindings[i].expiresAt > now) live++
  return live === bindings.length ? bindings : bindings.filter(b => b.expiresAt > now)
}

/** the live ones of stored bindings, keyed as a Map would keep them: a later binding of a key takes the place of the first */
function keyedLive<Flow> (bindings: Array<StoredBinding<Flow>>, now: number): Array<StoredBinding<Flow>> {
  const current: Array<StoredBinding<Flow>> = []
  for (const b of bindings) {
    if (b.expiresAt <= now) continue
    const i = indexOfKey(current, b.key)
    if (i === -1) current.push(b)
    else current[i] = b
  }
  return current
}


/**
 * One AoR registered here: its bindings in a small array (an AoR rarely has more than a few; a
 * Map per AoR costs more than the bindings), and the expiry wheel slot it is in (0: none).
 */
interface Registration<Flow> {
  readonly aor: string
  bindings: Array<StoredBinding<Flow>>
  slot: number
}

export class Registrar<Flow = unknown> {
  readonly #registry: Registry
  readonly #store: DurableStore
  readonly #log: Logger
  readonly #changes: RegistrationLog
  readonly #domains: Set<string>
  readonly #min: number
  readonly #max: number
  readonly #default: number
  readonly #maxContacts: number
  readonly #policy: ConflictPolicy
  readonly #now: () => number
  readonly #slackMs: number
  readonly #regs = new Map<string, Registration<Flow>>()
  readonly #wheel: ExpiryWheel
  readonly #displaced = new Map<string, Displaced>()
  /** AoRs with work in progress → who waits for them (FIFO); absent: free */
  /** AoRs with a REGISTER (or expiry) in progress, and who waits for each (NOBODY: none yet) */
  readonly #busy = new Map<string, Array<() => void>>()
  /**
   * AoRs registered here since start that have no binding now: isKnown is this or #regs (one
   * entry per user, not a set of every registered user beside the map of them)
   */
  readonly #known = new Set<string>()
  /** contact key → its registration, to find the binding of a contact (mid-dialog requests) */
  readonly #byContact = new Map<string, Registration<Flow>>()
  /** contacts an AoR took over from another AoR's registration (in #byContact), since start */
  #contactsTaken = 0
  /** the registrations stored before a restart, until each is claimed again */
  readonly #stored: StoredRegistrations
  readonly #overload: OverloadGuard
  #shutdown = new AbortController()
  /** claims that failed (503 answered) */
  claimFailures = 0
  readonly #listeners: Array<(aor: string, bindings: ReadonlyArray<Binding<Flow>>) => void> = []
  readonly #claimListeners: Array<(aor: string, result: ClaimResult) => void> = []
  #unDisplaced: Unwatch | undefined

  constructor (components: RegistrarComponents, init: RegistrarInit) {
    this.#registry = components.registry
    this.#store = components.store
    this.#log = components.logger
    this.#changes = new RegistrationLog(this.#log)
    this.#domains = new Set([...init.domains].map(d => d.toLowerCase()))
    this.#min = init.minExpires ?? 60
    this.#max = init.maxExpires ?? 3600
    this.#default = Math.min(init.defaultExpires ?? 3600, this.#max)
    this.#maxContacts = init.maxContactsPerAor ?? 10
    this.#policy = init.conflictPolicy ?? ConflictPolicy.LatestTakesOver
    this.#now = init.now ?? Date.now
    this.#slackMs = (init.refreshWriteSlack ?? 300) * 1000
    if (!(this.#slackMs >= 0)) throw new RangeError('refreshWriteSlack must be 0 or more')
    if (!Object.values(ConflictPolicy).includes(this.#policy)) throw new RangeError(`unknown conflict policy ${String(this.#policy)}`)
    if (this.#min > this.#max) throw new RangeError('minExpires exceeds maxExpires')
    this.#wheel = new ExpiryWheel((aors, slot) => { this.#due(aors, slot) }, { granularityMs: init.expiryGranularityMs, now: this.#now })
    this.#overload = new OverloadGuard(this.#log, init.overload)
    this.#stored = new StoredRegistrations({
      store: this.#store,
      logger: this.#log,
      now: this.#now,
      serialized: async (aor, fn) => { await this.#serialized(aor, fn) },
      reclaim: async (aor, bindings, signal) => await this.#reclaim(aor, bindings, signal),
      forget: async (aor) => { await this.#persist(aor, []) }
    }, { concurrency: init.reclaimConcurrency, logIntervalMs: init.reclaimLogIntervalMs })
  }

  /** the restart's re-claim of stored registrations, as it goes */
  get reclaim (): Readonly<ReclaimProgress> { return this.#stored.progress }

  /** REGISTERs refused with 503 because of overload, by reason */
  get shed (): Readonly<Record<ShedReason, number>> { return this.#overload.shed }

  /** REGISTERs in progress now */
  get pending (): number { return this.#overload.pending }

  /**
   * Listen to displacement, start the expiry wheel, and re-claim the still-valid stored
   * registrations (a restart) in the background: resolves at once, while the node already
   * answers SIP. Stored registrations are read first (a REGISTER waits for that, so that it
   * takes the AoR's stored bindings over), then claimed `reclaimConcurrency` at a time (the
   * registry coalesces concurrent claims), each under the AoR's lock, with a progress line every
   * `reclaimLogIntervalMs`; `reclaim` has the figures.
   */
  async start (): Promise<void> {
    this.#shutdown = new AbortController()
    this.#unDisplaced = this.#registry.onDisplaced((aor, by) => { this.#onDisplaced(aor, by) })
    this.#wheel.start()
    this.#overload.start()
    this.#stored.start(this.#shutdown.signal)
  }

  /** resolves once the restart's re-claim has handled every stored registration */
  async reclaimed (): Promise<void> {
    await this.#stored.done(this.#shutdown.signal)
  }

  /** claim one stored registration again (the restart; under the AoR's lock) and bind it when won */
  async #reclaim (aor: string, live: Array<StoredBinding<never>>, signal: AbortSignal): Promise<ClaimResult> {
    const result = await this.#registry.claim(aor, { expiresAt: maxExpiry(live) }, { signal })
    if (result.won) {
      this.#install(aor, live as Array<StoredBinding<Flow>>)
    }
    return result
  }

  stop (): void {
    this.#shutdown.abort()
    this.#unDisplaced?.()
    this.#wheel.stop()
    this.#overload.stop()
  }

  /**
   * live bindings of an AoR (expired ones are never returned); read-only: when every binding is
   * live (the usual case) it is the registration's own array, not a copy per call
   */
  lookup (aor: string): ReadonlyArray<Binding<Flow>> {
    const reg = this.#regs.get(aor)
    if (reg === undefined) return NONE
    const now = this.#now()
    const bindings = reg.bindings
    let live = 0
    for (let i = 0; i < bindings.length; i++) if (bindings[i].expiresAt > now) live++
    return live === bindings.length ? bindings : bindings.filter(b => b.expiresAt > now)
  }

  /**
   * A page of the AoRs registered here, in code-unit order (the admin API's listing): those after
   * `after` that start with `prefix`, at most `limit`, with `total` matching. One walk of the map
   * and a sort of the matches: for an operator's request, not for the SIP path.
   */
  page (query: { prefix?: string, after?: string, limit: number }): { aors: string[], total: number, more: boolean } {
    const prefix = query.prefix ?? ''
    const after = query.after
    const matches: string[] = []
    let total = 0
    for (const aor of this.#regs.keys()) {
      if (!aor.startsWith(prefix)) continue
      total++
      if (after === undefined || aor > after) matches.push(aor)
    }
    matches.sort()
    return { aors: matches.slice(0, query.limit), total, more: matches.length > query.limit }
  }

  /** the live binding whose Contact URI is `uri`, on any AoR */
  findByContact (uri: string): Binding<Flow> | undefined {
    let key
    try { key = contactKey(uri) } catch { return undefined }
    const b = this.#byContact.get(key)?.bindings.find(x => x.key === key)
    return b !== undefined && b.expiresAt > this.#now() ? b : undefined
  }

  /**
   * make `bindings` the AoR's (none: it is no longer registered here), keeping the indexes;
   * `exact`: the array is the caller's to give, of exactly its length (else a copy is kept)
   */
  #install (aor: string, bindings: Array<StoredBinding<Flow>>, exact = false): void {
    let reg = this.#regs.get(aor)
    // the contact index: a key the AoR keeps is left as it is (a refresh writes nothing there: a
    // delete and a set per refresh leave holes that make the Map rebuild its table now and then)
    if (reg !== undefined) {
      for (const b of reg.bindings) if (indexOfKey(bindings, b.key) === -1 && this.#byContact.get(b.key) === reg) this.#byContact.delete(b.key)
    }
    if (bindings.length === 0) {
      // what leaves #regs stays known (isKnown)
      if (reg !== undefined) { this.#regs.delete(aor); this.#known.add(aor) }
      return
    }
    // a copy of exactly its length: an array grown by push holds room for 17 elements (152 bytes
    // for one binding, 100,000s of registrations), one of slice() for what it holds
    if (!exact) bindings = bindings.slice()
    const before = reg?.bindings
    if (reg === undefined) {
      // (an AoR in #regs is not in #known)
      this.#known.delete(aor)
      reg = { aor, bindings, slot: 0 }
      this.#regs.set(aor, reg)
    } else {
      reg.bindings = bindings
    }
    for (const b of bindings) {
      // a contact the registration had already: its index entry points here, unless another AoR
      // ever took a contact over (then every key is looked up): a refresh reads nothing in the
      // index (at 100,000 contacts, a lookup that misses the CPU's caches)
      if (this.#contactsTaken === 0 && before !== undefined && indexOfKey(before, b.key) !== -1) continue
      const holder = this.#byContact.get(b.key)
      if (holder === reg) continue
      if (holder !== undefined) this.#contactsTaken++
      this.#byContact.set(b.key, reg)
    }
    // the wheel: a registration waits in the slot of its earliest expiry; one refreshed to a later
    // expiry stays where it is (that slot finds nothing due and moves it on)
    const slot = this.#wheel.slotOf(minExpiry(bindings))
    if (reg.slot === 0 || slot < reg.slot) reg.slot = this.#wheel.add(aor, minExpiry(bindings))
  }

  /**
   * Resolves once no REGISTER of `aor` is being handled here (its claim settled and its bindings,
   * if any, are in place): a request that raced a registration can then see its outcome.
   */
  async settled (aor: string): Promise<void> {
    if (this.#busy.has(aor)) await this.#serialized(aor, async () => {})
  }

  /** AoRs registered here since start (seam for 480 vs 404 and for issue 5's offline store) */
  isKnown (aor: string): boolean { return this.#regs.has(aor) || this.#known.has(aor) }

  /** number of AoRs with at least one binding */
  get registrations (): number { return this.#regs.size }

  /** number of bindings over all AoRs */
  get bindingCount (): number {
    let n = 0
    for (const r of this.#regs.values()) n += r.bindings.length
    return n
  }

  /** told after every committed change of an AoR's bindings (presence, offline delivery) */
  onChange (listener: (aor: string, bindings: ReadonlyArray<Binding<Flow>>) => void): void {
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
   * Handle one REGISTER (RFC 3261 10.3). Rejects with SipStatusError for refusals; resolves with
   * the 200 (or 302, or 503 with Retry-After when the node is overloaded) to send.
   */
  handle (request: SipRequest, flow?: Flow, requestUri?: SipUri): Promise<Reply> {
    try {
      const reply = this.handleNow(request, flow, requestUri)
      return reply instanceof Promise ? reply : Promise.resolve(reply)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /**
   * `handle`, with the answer at once where nothing is waited for: the refresh of an AoR whose
   * claim the registry answers at once (`Registry.claimNow`) and whose stored record covers it
   * (no promise, closure or microtask per REGISTER then, issue 9); else a promise of it. Throws
   * SipStatusError for refusals.
   */
  handleNow (request: SipRequest, flow?: Flow, requestUri?: SipUri): Reply | Promise<Reply> {
    const checked = this.#check(request, requestUri)
    if (checked === undefined) return this.#unavailable('Overloaded')
    const [aor, callId, cseq] = checked
    this.#overload.pending++
    // under the AoR's lock (as #serialized), the answer handed on without an async function's
    // frame saved across the claim per REGISTER. When the AoR is free the REGISTER runs at once,
    // and takes the lock only if it has something to wait for: nothing else runs before it
    // returns, so a REGISTER answered in this turn (a refresh) holds it without an entry in the
    // map of locks (a set and a delete per REGISTER, each resizing the map's table now and then)
    let reply: Reply | Promise<Reply>
    if (!this.#busy.has(aor)) {
      try {
        reply = this.#register(request, aor, callId, cseq, flow)
      } catch (err) {
        this.#overload.pending--
        throw err
      }
      if (!(reply instanceof Promise)) {
        this.#overload.pending--
        return reply
      }
      this.#busy.set(aor, NOBODY)
    } else {
      reply = (this.#acquire(aor) as Promise<void>).then(() => this.#register(request, aor, callId, cseq, flow))
    }
    return reply.then(r => { this.#finished(aor); return r }, (err: unknown) => { this.#finished(aor); throw err })
  }

  /** the REGISTER's turn is over: the AoR's lock to the next in line, one fewer pending */
  #finished (aor: string): void {
    this.#releaseLock(aor)
    this.#overload.pending--
  }

  /**
   * 10.3 steps 1, 2 and 5: the AoR (the registrar's own copy of its string), Call-ID and CSeq of a
   * REGISTER it serves; throws SipStatusError for refusals; undefined when the node is overloaded
   */
  #check (request: SipRequest, requestUri?: SipUri): [aor: string, callId: string, cseq: number] | undefined {
    // 10.3 step 1: the Request-URI names the registrar's domain (`requestUri`: parsed already)
    const target = requestUri ?? parseUri(request.uri)
    if (target.scheme !== 'sip' && target.scheme !== 'sips') throw new SipStatusError(416, 'Unsupported URI Scheme')
    if (!this.#domains.has(target.host.toLowerCase())) throw new SipStatusError(403, 'Domain Not Served')
    // step 2: no extension we support is required of a registrar
    if (request.headers.has('Require')) throw new SipStatusError(420, 'Bad Extension', { cause: request.headers.getAll('Require') })
    // step 5: the AoR comes from To
    const to = request.headers.get('To')
    const callId = request.headers.get('Call-ID')
    const cseqValue = request.headers.get('CSeq')
    if (to === undefined || callId === undefined || cseqValue === undefined) throw new SipStatusError(400, 'Missing To, Call-ID or CSeq')
    // the AoR of a user registered here, written as its AoR (the usual refresh): the registration's
    // own string, with no parse of To and its URI (plainAor: what the parse would give is that AoR)
    const plain = plainAor(to)
    let aor = plain === '' ? undefined : this.#regs.get(plain)?.aor
    // a new AoR written plain, of a domain served here: that string, owned (the parse gives it)
    if (aor === undefined && plain !== '' && this.#domains.has(plain.slice(plain.indexOf('@') + 1))) aor = ownString(plain)
    if (aor === undefined) {
      try {
        aor = aorOf(parseNameAddrShared(to).uri)
      } catch {
        throw new SipStatusError(400, 'Malformed To')
      }
      if (!aor.includes('@') || !this.#domains.has(aor.slice(aor.indexOf('@') + 1))) throw new SipStatusError(404, 'Not Found')
      // the registrar keeps one copy of the AoR (the request's strings hold the whole message)
      aor = this.#regs.get(aor)?.aor ?? ownString(aor)
    }
    const cseq = registerSeq(cseqValue)
    // RFC 3261 21.5.4: beyond capacity, answer now rather than queue
    if (this.#overload.check() !== undefined) return undefined
    return [aor, callId, cseq]
  }

  #unavailable (reason: string): Reply {
    return { status: 503, reason: `Service Unavailable (${reason})`, headers: [['Retry-After', String(this.#overload.retryAfter())]] }
  }

  /** run `fn` once every earlier call for the same AoR has finished */
  async #serialized<T> (aor: string, fn: () => Promise<T>): Promise<T> {
    const turn = this.#acquire(aor)
    if (turn !== undefined) await turn
    try {
      return await fn()
    } finally {
      this.#releaseLock(aor)
    }
  }

  /** take the AoR's lock: at once (undefined) when free, else a promise of the turn */
  #acquire (aor: string): Promise<void> | undefined {
    const waiting = this.#busy.get(aor)
    if (waiting === undefined) {
      this.#busy.set(aor, NOBODY)
      return undefined
    }
    return new Promise<void>(resolve => {
      if (waiting === NOBODY) this.#busy.set(aor, [resolve])
      else waiting.push(resolve)
    })
  }

  /** hand the AoR's lock to the next in line, or free it */
  #releaseLock (aor: string): void {
    const waiting = this.#busy.get(aor)
    const next = waiting === undefined || waiting === NOBODY ? undefined : waiting.shift()
    if (next !== undefined) next()
    else this.#busy.delete(aor)
  }

  /**
   * 10.3 steps 6-8 under the AoR's lock. The work is in synchronous functions and the waits in
   * small ones: an async function saves its whole register file on the heap per call, which for
   * the planning (many locals) was the largest allocation of a refresh.
   */
  #register (request: SipRequest, aor: string, callId: string, cseq: number, flow: Flow | undefined): Reply | Promise<Reply> {
    // after a restart: this AoR's stored bindings are read before it is registered again
    if (!this.#stored.isLoaded) return this.#stored.loaded.then(() => this.#register(request, aor, callId, cseq, flow))
    const now = this.#now()
    const plan = this.#plan(request, aor, callId, cseq, flow, now)
    if ('status' in plan) return plan
    if (this.#policy === ConflictPolicy.FirstKeeps && plan.current.length === 0 && plan.change.upsert.length > 0) return this.#firstKeeps(aor, plan, now)
    return this.#commit(aor, plan, now)
  }

  /** with `first-keeps`: a new registration of an AoR another node holds live is redirected there */
  async #firstKeeps (aor: string, plan: Plan<Flow>, now: number): Promise<Reply> {
    const route = await this.#registry.resolve(aor)
    if (route !== undefined && route.node !== this.#registry.nodeId && route.expiresAt > now) return this.#redirect(aor, route)
    return await this.#commit(aor, plan, now)
  }

  /** what the REGISTER asks (the bindings now and the change), or the answer when nothing is to commit */
  #plan (request: SipRequest, aor: string, callId: string, cseq: number, flow: Flow | undefined, now: number): Reply | Plan<Flow> {
    const contacts = contactsOf(request.headers)
    const expiresHeader = request.headers.get('Expires')
    const headerExpires = expiresHeader === undefined ? undefined : parseExpires(expiresHeader)
    // the AoR's bindings (those stored before a restart and not claimed again yet included),
    // what has expired but not been swept yet left out
    const restoring = this.#stored.pending(aor)
    const current = restoring === undefined ? liveOf(this.#regs.get(aor)?.bindings, now) : keyedLive(restoring as Array<StoredBinding<Flow>>, now)

    // no Contact: a query, answered with the current bindings (10.3 step 6)
    if (contacts.length === 0) return this.#ok(aor, current, now)

    const displaced = this.#displaced.get(aor)
    if (displaced !== undefined && displaced.until <= now) this.#displaced.delete(aor)

    // Contact: * (10.3 step 6): only with Expires: 0 and alone
    if (hasStar(contacts)) {
      if (contacts.length !== 1 || headerExpires !== 0) throw new SipStatusError(400, 'Contact * needs Expires: 0 and no other Contact')
      const change: Change<Flow> = { remove: [], upsert: [] }
      for (const b of current) {
        if (b.callId === callId && cseq <= b.cseq) throw new SipStatusError(500, 'Out of order CSeq')
        change.remove.push(b.key)
      }
      return { current, change, restoring: restoring !== undefined }
    }

    // step 7: every contact, all or nothing (the arrays made when something goes in: one of
    // exactly one binding for the usual refresh, not one grown by push with room for 17)
    const change: Change<Flow> = { remove: NO_KEYS, upsert: NO_BINDINGS as Array<StoredBinding<Flow>> }
    for (const raw of contacts) {
      // a contact written exactly as the binding it refreshes was (the usual refresh): that binding,
      // with no parse of the Contact
      const same = sameContact(current, raw)
      let na
      let key
      if (same !== -1) {
        na = { uri: current[same].uri, params: EMPTY_PARAMS }
        key = current[same].key
      } else {
        try {
          na = parseNameAddr(raw)
          // a contact refreshed as it was written: its key is the one it has (no parse of its URI)
          key = keyOfUri(current, na.uri) ?? contactKey(na.uri)
        } catch {
          throw new SipStatusError(400, 'Malformed Contact')
        }
      }
      const pe = same !== -1 ? undefined : na.params.expires
      const pn = same !== -1 ? expiresParamOf(raw, current[same].uri.length + 2) : -1
      let expires = pn !== -1 ? pn : pe !== undefined && pe !== null ? parseExpires(pe) : headerExpires ?? this.#default
      if (expires > 0 && expires < this.#min) {
        return { status: 423, reason: 'Interval Too Brief', headers: [['Min-Expires', String(this.#min)]] }
      }
      expires = Math.min(expires, this.#max)
      const at = indexOfKey(current, key)
      const existing = at === -1 ? undefined : current[at]
      if (existing !== undefined && existing.callId === callId && cseq <= existing.cseq) {
        throw new SipStatusError(500, 'Out of order CSeq')
      }
      const pending = indexOfKey(change.upsert, key)
      if (expires === 0) {
        if (pending !== -1) change.upsert.splice(pending, 1)
        if (existing !== undefined && !change.remove.includes(key)) {
          if (change.remove === NO_KEYS) change.remove = [key]
          else change.remove.push(key)
        }
        continue
      }
      let params: Record<string, string | null> = EMPTY_PARAMS
      for (const n in na.params) {
        if (n === 'expires') continue
        const v = na.params[n]
        if (params === EMPTY_PARAMS) params = {}
        params[ownString(n)] = v === null ? null : ownString(v)
      }
      if (existing !== undefined && sameParams(existing.params, params)) params = existing.params
      without(change.remove, key)
      // the binding keeps copies of what it needs, never slices of the request (they would keep
      // the whole message alive), and reuses the strings of the binding it refreshes
      const sameUri = existing !== undefined && existing.uri === na.uri
      const sameCall = existing !== undefined && existing.callId === callId
      const binding: StoredBinding<Flow> = {
        aor,
        key: existing?.key ?? ownString(key),
        uri: sameUri ? existing.uri : ownString(na.uri),
        params,
        expiresAt: now + expires * 1000,
        callId: sameCall ? existing.callId : ownString(callId),
        cseq,
        flow,
        // the stored record still holds this binding when only its expiry and CSeq move
        durableUntil: sameUri && sameCall && params === existing.params ? existing.durableUntil : 0
      }
      if (pending === -1) {
        if (change.upsert === NO_BINDINGS) change.upsert = [binding]
        else change.upsert.push(binding)
      }
      else change.upsert[pending] = binding
    }

    // the displaced device refreshing: redirect to the new owner instead of claiming back
    if (displaced !== undefined && change.upsert.length > 0 && this.#fromDisplacedDevice(displaced, callId, change)) {
      return this.#redirect(aor, displaced.by)
    }
    return { current, change, restoring: restoring !== undefined }
  }

  #fromDisplacedDevice (d: Displaced, callId: string, change: Change<Flow>): boolean {
    if (d.callIds.has(callId)) return true
    for (const b of change.upsert) if (d.contacts.has(b.key)) return true
    return false
  }

  #redirect (aor: string, by: Route): Reply {
    const user = aor.startsWith('sip:') && aor.includes('@') ? aor.slice(4, aor.indexOf('@')) + '@' : ''
    return { status: 302, reason: 'Moved Temporarily', headers: [['Contact', `<sip:${user}${by.sip}>`]] }
  }

  #commit (aor: string, plan: Plan<Flow>, now: number): Reply | Promise<Reply> {
    const { current, change, restoring } = plan
    // the bindings after the change, in the order a Map keyed by contact would keep them
    let bindings = current.slice()
    for (const k of change.remove) {
      const i = indexOfKey(bindings, k)
      if (i !== -1) bindings.splice(i, 1)
    }
    let grown = false
    for (const b of change.upsert) {
      const i = indexOfKey(bindings, b.key)
      if (i === -1) { bindings.push(b); grown = true } else bindings[i] = b
    }
    // the array the registration keeps: one of exactly its length (see #install)
    if (grown) bindings = bindings.slice()
    if (bindings.length > this.#maxContacts) throw new SipStatusError(403, 'Too Many Contacts')
    // this REGISTER takes the stored bindings over: the restart's re-claim skips the AoR
    if (restoring) this.#stored.take(aor)
    return bindings.length > 0 ? this.#bind(aor, bindings, plan, now) : this.#unbind(aor, restoring, now)
  }

  /**
   * claim the AoR for `bindings`, then bind them and answer (200 only once claimed and durable):
   * at once when the registry answers the claim at once (a refresh of a claim it holds) and the
   * stored record covers the change
   */
  #bind (aor: string, bindings: Array<StoredBinding<Flow>>, plan: Plan<Flow>, now: number): Reply | Promise<Reply> {
    const binding = { expiresAt: maxExpiry(bindings) }
    // reactions on the claim, not an async function's frame saved across it per REGISTER
    let held: ClaimResult | undefined
    let claim: Promise<ClaimResult> | undefined
    try {
      // a refresh of a claim this node holds is answered at once; a new claim once this node and
      // the first replica store it: one frozen replica does not hold the REGISTER for the put
      // timeout (a later loss displaces it, P3)
      held = this.#registry.claimNow?.(aor, binding)
      if (held === undefined) claim = this.#registry.claim(aor, binding, FIRST_REPLICA)
    } catch (err) {
      return Promise.resolve().then(() => this.#claimFailed(aor, plan, err))
    }
    if (held !== undefined) {
      const outcome = this.#claimed(aor, bindings, plan, now, held)
      return outcome !== WRITE ? outcome : this.#written(aor, bindings, plan, now, held)
    }
    return (claim as Promise<ClaimResult>).then(result => {
      const outcome = this.#claimed(aor, bindings, plan, now, result)
      return outcome !== WRITE ? outcome : this.#written(aor, bindings, plan, now, result)
    }, (err: unknown) => this.#claimFailed(aor, plan, err))
  }

  /**
   * the claim is won and the record must be written first: 200 once it is durable (a reaction on
   * the write, not an async function's frame saved across it per new registration)
   */
  #written (aor: string, bindings: Array<StoredBinding<Flow>>, plan: Plan<Flow>, now: number, result: ClaimResult): Promise<Reply> {
    return this.#persist(aor, bindings).then(stored => {
      if (stored) return this.#bound(aor, bindings, plan, now, result)
      this.#emit(aor)
      return this.#unavailable('Storage Unavailable')
    })
  }

  #claimFailed (aor: string, plan: Plan<Flow>, err: unknown): Reply {
    if (plan.restoring && plan.current.length > 0) this.#stored.putBack(aor, plan.current as Array<StoredBinding<never>>)
    // an AoR the registry cannot hold is the user agent's fault (400 at the error boundary)
    if ((err as Error)?.name === INVALID_AOR_ERROR) throw err
    // never 200 without a stored claim
    this.claimFailures++
    if (this.claimFailures <= 10 || this.claimFailures % 1000 === 0) this.#log.warn('claim failed: REGISTER answered 503', { aor, err: String(err), failures: this.claimFailures })
    return this.#unavailable('Registry Unavailable')
  }

  /** the claim settled: bind, and answer now (lost, or a refresh the record covers) or after the write (WRITE) */
  #claimed (aor: string, bindings: Array<StoredBinding<Flow>>, plan: Plan<Flow>, now: number, result: ClaimResult): Reply | typeof WRITE {
    if (!result.won) {
      // a concurrent newer claim of another node won: that registration is the latest, ours is not bound
      this.#changes.lost(aor, result.route)
      this.#dropLocal(aor)
      return this.#redirect(aor, result.route)
    }
    this.#displaced.delete(aor)
    for (const l of this.#claimListeners) {
      try { l(aor, result) } catch (err) { this.#log.error('registrar claim listener threw', { err: String(err) }) }
    }
    // answered 200 only once durable (a restart claims it again): a refresh the stored record
    // covers already is, by the rule of durable-horizon.ts
    const covered = !plan.restoring && coveredByRecord(bindings, this.#regs.get(aor)?.bindings, now, this.#slackMs)
    // #commit's array, made for this registration alone
    this.#install(aor, bindings, true)
    return covered ? this.#bound(aor, bindings, plan, now, result) : WRITE
  }

  #bound (aor: string, bindings: Array<StoredBinding<Flow>>, plan: Plan<Flow>, now: number, result: ClaimResult): Reply {
    if (plan.current.length === 0) this.#changes.added(aor, bindings.length, result, this.#registry.nodeId)
    this.#emit(aor)
    return this.#ok(aor, bindings, now)
  }

  /** the REGISTER leaves no binding: forget the AoR here and release its claim */
  async #unbind (aor: string, restoring: boolean, now: number): Promise<Reply> {
    const had = this.#regs.has(aor) || restoring
    this.#install(aor, [])
    await this.#persist(aor, [])
    if (had) {
      await this.#release(aor)
      this.#changes.removed(aor, 'unregistered')
    }
    this.#emit(aor)
    return this.#ok(aor, [], now)
  }

  #ok (_aor: string, bindings: Binding<Flow>[], now: number): Reply {
    // an array of exactly its length (one grown by push holds room for 17)
    const headers = new Array<[string, string]>(bindings.length + 1)
    for (let i = 0; i < bindings.length; i++) {
      const b = bindings[i]
      const secs = Math.max(0, Math.round((b.expiresAt - now) / 1000))
      let params = ''
      for (const n in b.params) {
        const v = b.params[n]
        params += v === null ? `;${n}` : `;${n}=${v}`
      }
      headers[i] = ['Contact', `<${b.uri}>${params};expires=${secs}`]
    }
    headers[bindings.length] = ['Date', httpDate(now)]
    return { status: 200, reason: 'OK', headers }
  }

  /** the expiry wheel reached `slot`: expire what is due, move the rest on */
  #due (aors: string[], slot: number): void {
    const now = this.#now()
    for (const aor of aors) {
      const reg = this.#regs.get(aor)
      // gone, or moved to an earlier slot since (this entry is stale)
      if (reg === undefined || reg.slot !== slot) continue
      reg.slot = 0
      const earliest = minExpiry(reg.bindings)
      if (earliest > now) {
        reg.slot = this.#wheel.add(aor, earliest)
        continue
      }
      this.#expire(aor).catch((err: unknown) => { this.#log.error('expiry failed', { aor, err: String(err) }) })
    }
  }

  async #expire (aor: string): Promise<void> {
    await this.#serialized(aor, async () => {
      const reg = this.#regs.get(aor)
      if (reg === undefined) return
      const now = this.#now()
      const live = reg.bindings.filter(b => b.expiresAt > now)
      if (live.length === reg.bindings.length) {
        // refreshed meanwhile: make sure it waits in the wheel
        if (reg.slot === 0) reg.slot = this.#wheel.add(aor, minExpiry(live))
        return
      }
      reg.slot = 0
      this.#install(aor, live)
      await this.#persist(aor, live)
      if (live.length === 0) {
        await this.#release(aor)
        this.#changes.removed(aor, 'expired')
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

  /**
   * write the AoR's bindings (none: delete), each with its durable horizon (durable-horizon.ts);
   * false when the store failed (logged): the record then holds none of them as they are
   */
  #persist (aor: string, bindings: Array<StoredBinding<Flow>>): Promise<boolean> {
    const now = this.#now()
    for (const b of bindings) b.durableUntil = horizonOf(b.expiresAt, now, this.#slackMs)
    // (not async: no frame saved across the write per registration)
    let write: Promise<void>
    try {
      write = bindings.length === 0 ? this.#store.delete(STORE_PREFIX + aor) : this.#store.put(STORE_PREFIX + aor, encodeRegistration(aor, bindings))
    } catch (err) {
      return Promise.resolve(this.#notPersisted(aor, bindings, err))
    }
    return write.then(PERSISTED, (err: unknown) => this.#notPersisted(aor, bindings, err))
  }

  /** the store failed: the record holds none of the bindings as they are (logged); false */
  #notPersisted (aor: string, bindings: Array<StoredBinding<Flow>>, err: unknown): boolean {
    for (const b of bindings) b.durableUntil = 0
    this.#log.error('could not persist registration', { aor, err: String(err) })
    return false
  }

  #dropLocal (aor: string): Array<StoredBinding<Flow>> | undefined {
    const bindings = this.#regs.get(aor)?.bindings
    this.#install(aor, [])
    void this.#persist(aor, [])
    return bindings
  }

  #onDisplaced (aor: string, by: Route): void {
    if (by.node === this.#registry.nodeId) return
    const bindings = this.#dropLocal(aor)
    const d: Displaced = this.#displaced.get(aor) ?? { by, callIds: new Set(), contacts: new Set(), until: 0 }
    d.by = by
    for (const b of bindings ?? []) {
      d.callIds.add(b.callId)
      d.contacts.add(b.key)
      d.until = Math.max(d.until, b.expiresAt)
    }
    // remember the displaced devices for at least the longest expiry we grant
    d.until = Math.max(d.until, this.#now() + this.#max * 1000)
    this.#displaced.set(aor, d)
    this.#changes.movedAway(aor, by)
    this.#emit(aor)
  }

  #emit (aor: string): void {
    if (this.#listeners.length === 0) return
    const list = this.lookup(aor)
    for (const l of this.#listeners) {
      try { l(aor, list) } catch (err) { this.#log.error('registrar listener threw', { err: String(err) }) }
    }
  }
}

/** the Date header's value (RFC 3261 20.17) for `now`, made once per second */
let dateSecond = -1
let dateText = ''
function httpDate (now: number): string {
  const second = Math.floor(now / 1000)
  if (second !== dateSecond) {
    dateSecond = second
    dateText = new Date(second * 1000).toUTCString()
  }
  return dateText
}

const NONE: ReadonlyArray<Binding<never>> = Object.freeze([])
/** the reaction of a write that succeeded (one function for all) */
const PERSISTED = (): boolean => true
/** the wait list of an AoR's lock while nobody waits (never pushed to) */
const NOBODY: Array<() => void> = Object.freeze([]) as unknown as Array<() => void>

function minExpiry (bindings: ReadonlyArray<Binding<unknown>>): number {
  let m = Infinity
  for (const b of bindings) if (b.expiresAt < m) m = b.expiresAt
  return m
}

function maxExpiry (bindings: ReadonlyArray<Binding<unknown>>): number {
  let m = -Infinity
  for (const b of bindings) if (b.expiresAt > m) m = b.expiresAt
  return m
}

function sameParams (a: Record<string, string | null>, b: Record<string, string | null>): boolean {
  if (a === b) return true
  const ka = Object.keys(a)
  if (ka.length !== Object.keys(b).length) return false
  for (const k of ka) if (a[k] !== b[k]) return false
  return true
}

function parseExpires (value: string): number {
  const v = value.trim()
  if (!/^\d{1,10}$/.test(v)) throw new SipStatusError(400, 'Malformed Expires')
  return Math.min(Number(v), 0xffffffff)
}
