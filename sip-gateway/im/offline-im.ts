/**
 * Pager IM that loses nothing (SPEC: MESSAGE row, "Nothing lost"; issue 5 item 1): the offline
 * store wired into the gateway.
 *
 * - A MESSAGE for an AoR of a served domain with no live registration anywhere reaches
 *   `onUnavailable` (the proxy core's seam). A user known to the mesh gets the MESSAGE stored
 *   durably (the OfflineStore resolves once the DurableStore `put` did) and then 202 Accepted;
 *   anybody else 404.
 * - A MESSAGE that timed out (408) at a device's contact reaches `onTimeout` and is stored the
 *   same way (202 instead of a lost 408).
 * - Delivery: the node that stores a user's backlog watches the user's claim
 *   (`registry.watch`: the registry registers interest in the mesh, so the node that claims the
 *   AoR later tells this one directly). When the user registers here the backlog goes to the
 *   local contacts (`deliverLocal`); when she registers on another node each stored MESSAGE is
 *   sent as SIP over the PeerChannel to that node (`deliverToNode`), which relays it to her
 *   devices like any MESSAGE from the mesh. Either way in order, one at a time, each removed
 *   only after a 2xx came back from a device (the other node answers 2xx only when its device
 *   did, or when it stored the message itself after a device timeout). A transient failure
 *   (timeout, 408, 480, 486, 5xx, 600, no contact) stops the run and keeps the rest, in order,
 *   for the next try; a refusal of that one message for good (400, 403, 413, 415, 488, 513, 603:
 *   `offline/delivery.ts`) drops it, logged at warn, and the run goes on. With several devices
 *   and no 2xx, a transient failure of one outweighs a refusal by another (`decidingResponse`).
 *   A MESSAGE over 1300 bytes for a device registered over UDP goes to it over TCP when the
 *   device accepts a connection at its contact address (the proxy core), else it is refused
 *   513. The original From, To, Date and P-Asserted-Identity travel with it; the message id
 *   travels in `Sipmesh-Message-Id` (trusted from the mesh only), so a copy stored again on the
 *   way keeps its id and is never stored or delivered twice.
 *
 * "Known to the mesh" across nodes. A MESSAGE may arrive at any node after her claim has been
 * released or has expired, and every node must answer alike. The claim registry keeps every AoR's record
 * (the claim, or the release of it) for the known-user retention after the last registration,
 * on the replicas of its key, and the node that made it re-puts it: `Registry.known` asks for it.
 * So a user costs no record of her own besides her claim. Users of the credentials file are known
 * on every node from configuration alone (KnownUsers, which also still answers from records of
 * registrations that nodes of earlier versions wrote, until they age out).
 */
import { SipRequest, type SipResponse } from '../codec/message.ts'
import { Headers } from '../codec/headers.ts'
import { parseNameAddr } from '../codec/name-addr.ts'
import { parseCSeq } from '../codec/cseq.ts'
import { SipStatusError } from '../errors.ts'
import type { DurableStore, Logger, Registry, Route, Unwatch } from '../ports.ts'
import { OfflineStore, type OfflineStoreInit } from '../offline/store.ts'
import { KnownUsers, type KnownUsersInit } from '../offline/known-users.ts'
import { messageIdOf, isAor } from '../offline/record.ts'
import { decidingResponse } from '../offline/delivery.ts'
import type { OfflineMessage, OfflineRecord } from '../offline/record.ts'
import type { Reply } from '../registrar/registrar.ts'

/** the header that carries a stored message's id between nodes */
export const MESSAGE_ID_HEADER = 'Sipmesh-Message-Id'

/** Headers kept with a stored message and sent again on delivery. */
const KEPT_HEADERS = ['P-Asserted-Identity', 'Subject', 'Priority', 'In-Reply-To', 'Content-Language', 'Content-Encoding']

export interface OfflineImComponents {
  registry: Registry
  store: DurableStore
  logger: Logger
  /**
   * relay a request to the live local contacts of an AoR (the gateway's `deliver`); `pick`
   * chooses the response when no device answered 2xx
   */
  deliverLocal: (aor: string, request: SipRequest, pick?: (finals: SipResponse[]) => SipResponse | undefined) => Promise<SipResponse | undefined>
  /** send a request this node originates to another node over the mesh; resolves with its final response */
  deliverToNode: (node: string, request: SipRequest) => Promise<SipResponse>
  /** the AoRs with live bindings here */
  hasLocalBindings: (aor: string) => boolean
}

export interface OfflineImInit {
  store?: OfflineStoreInit
  known?: KnownUsersInit
  /**
   * how often backlogs whose user is registered somewhere are tried again (a delivery stops at the
   * first transient failure, e.g. a busy or unreachable device, and nothing else may wake it),
   * ms. @default 60000
   */
  retryIntervalMs?: number
}

export class OfflineIm {
  readonly #registry: Registry
  readonly #log: Logger
  readonly #deliverLocal: OfflineImComponents['deliverLocal']
  readonly #deliverToNode: OfflineImComponents['deliverToNode']
  readonly #hasLocal: OfflineImComponents['hasLocalBindings']
  readonly offline: OfflineStore
  readonly known: KnownUsers
  readonly #watches = new Map<string, Unwatch>()
  /** users whose delivery run is in progress or asked for again */
  readonly #kicks = new Map<string, { again: boolean }>()
  #running = false
  readonly #timers = new Set<ReturnType<typeof setTimeout>>()
  readonly #retryIntervalMs: number
  #retry: ReturnType<typeof setInterval> | undefined

  constructor (components: OfflineImComponents, init: OfflineImInit = {}) {
    this.#registry = components.registry
    this.#log = components.logger.child({ component: 'offline-im' })
    this.#deliverLocal = components.deliverLocal
    this.#deliverToNode = components.deliverToNode
    this.#hasLocal = components.hasLocalBindings
    this.offline = new OfflineStore({ store: components.store, logger: components.logger }, init.store)
    this.known = new KnownUsers({ store: components.store, logger: components.logger }, init.known)
    this.#retryIntervalMs = init.retryIntervalMs ?? 60_000
    if (!(this.#retryIntervalMs > 0)) throw new RangeError('retryIntervalMs must be positive')
  }


  async start (): Promise<void> {
    if (this.#running) return
    await this.known.start()
    await this.offline.start()
    this.#running = true
    // restart safety: every backlog kept here is watched again and tried at once
    for (const aor of this.offline.users()) this.#watch(aor)
    // a node that just (re)started may register its interest before it has found any peer:
    // once it settled in, register again (a watch polls every 30 s besides)
    for (const ms of [3_000, 10_000]) {
      const t = setTimeout(() => { this.#timers.delete(t); this.#rewatch() }, ms)
      t.unref?.()
      this.#timers.add(t)
    }
    this.#retry = setInterval(() => { this.#retryAll() }, this.#retryIntervalMs)
    this.#retry.unref?.()
  }

  /** kick every backlog whose user has a live route (a resolve served from cache mostly) */
  #retryAll (): void {
    if (!this.#running) return
    for (const aor of this.offline.users()) {
      if (this.#kicks.has(aor)) continue
      if (this.#hasLocal(aor)) { this.kick(aor); continue }
      this.#registry.resolve(aor).then(route => { if (route !== undefined) this.kick(aor) }, () => {})
    }
  }

  #rewatch (): void {
    if (!this.#running) return
    for (const aor of this.offline.users()) {
      this.#watches.get(aor)?.()
      this.#watches.delete(aor)
      this.#watch(aor)
    }
  }

  async stop (): Promise<void> {
    if (!this.#running) return
    this.#running = false
    clearInterval(this.#retry)
    this.#retry = undefined
    for (const t of this.#timers) clearTimeout(t)
    this.#timers.clear()
    for (const u of this.#watches.values()) u()
    this.#watches.clear()
    await this.offline.stop()
    await this.known.stop()
  }

  /**
   * The registrar's change listener: a user registered here (or her bindings changed). That she is
   * known is the registry's to say (her claim record is retained, mesh-wide, for the retention
   * window): no second record of it here, which was one more durable write per new registration.
   */
  onBindings (aor: string, count: number): void {
    if (!this.#running || count === 0) return
    if (this.offline.count(aor) > 0) this.kick(aor)
  }

  /** The proxy's seam: a request for a served AoR with no live binding anywhere. */
  async onUnavailable (request: SipRequest, aor: string): Promise<Reply | undefined> {
    if (request.method !== 'MESSAGE') return undefined
    if (!(await this.isKnown(aor))) return { status: 404, reason: 'Not Found' }
    return await this.#store(request, aor)
  }

  /**
   * The proxy's backlog seam (issue 10 item 3): while this node holds stored messages for a user,
   * a new MESSAGE for her is stored behind them (`append`: 202) and her backlog is tried at once,
   * so it is delivered after them and never overtakes them.
   */
  holds (aor: string): boolean {
    return this.#running && this.offline.count(aor) > 0
  }

  async append (request: SipRequest, aor: string): Promise<Reply> {
    const reply = await this.#store(request, aor)
    this.kick(aor)
    return reply
  }

  /** The proxy's seam: a MESSAGE timed out at a device's contact (408): keep it instead. */
  async onTimeout (request: SipRequest, aor: string): Promise<Reply | undefined> {
    if (request.method !== 'MESSAGE' || !this.#running) return undefined
    try {
      return await this.#store(request, aor)
    } catch (err) {
      this.#log.warn('timed-out MESSAGE not stored', { aor, err: String(err) })
      return undefined
    }
  }

  /** known here (registered within the window, credentials) or, mesh-wide, by the AoR's retained record */
  async isKnown (aor: string): Promise<boolean> {
    if (this.known.isKnown(aor)) return true
    if (!isAor(aor)) return false
    try {
      return await this.#registry.known(aor)
    } catch (err) {
      this.#log.warn('known-user lookup failed', { aor, err: String(err) })
      return false
    }
  }

  async #store (request: SipRequest, aor: string): Promise<Reply> {
    const message = offlineMessageOf(request)
    const result = await this.offline.store(aor, message)
    this.#log.info('MESSAGE stored for an offline user', { aor, id: result.id, stored: result.stored })
    this.#watch(aor)
    return { status: 202, reason: 'Accepted' }
  }

  #watch (aor: string): void {
    if (!this.#watches.has(aor)) {
      this.#watches.set(aor, this.#registry.watch(aor, (route) => { if (route !== undefined) this.kick(aor) }))
    }
    // the user may have registered between the lookup that found nobody and this watch
    this.#registry.resolve(aor).then(route => { if (route !== undefined) this.kick(aor) }, () => {})
  }

  /** try to deliver the user's backlog now (wherever she is registered); coalesces concurrent asks */
  kick (aor: string): void {
    if (!this.#running) return
    const k = this.#kicks.get(aor)
    if (k !== undefined) { k.again = true; return }
    const state = { again: false }
    this.#kicks.set(aor, state)
    const run = async (): Promise<void> => {
      do {
        state.again = false
        await this.#deliver(aor)
      } while (state.again && this.#running && this.offline.count(aor) > 0)
    }
    run().catch(err => { this.#log.warn('offline delivery failed', { aor, err: String(err) }) })
      .finally(() => {
        this.#kicks.delete(aor)
        if (this.offline.count(aor) === 0) { this.#watches.get(aor)?.(); this.#watches.delete(aor) }
      })
  }

  async #deliver (aor: string): Promise<void> {
    if (this.offline.count(aor) === 0) return
    let route: Route | undefined
    if (!this.#hasLocal(aor)) {
      route = await this.#registry.resolve(aor)
      if (route === undefined) return
    }
    const remote = route !== undefined && route.node !== this.#registry.nodeId ? route.node : undefined
    const result = await this.offline.deliverBacklog(aor, async (rec) => {
      const request = requestOf(rec)
      // the store decides by the status what a failure means (offline/delivery.ts)
      return remote === undefined ? await this.#deliverLocal(aor, request, decidingResponse) : await this.#deliverToNode(remote, request)
    })
    this.#log.info('offline backlog run', { aor, to: remote ?? 'local', ...result })
  }
}

/** What the store keeps of a MESSAGE: original sender, recipient, Date, type, body, kept headers. */
export function offlineMessageOf (request: SipRequest, fromMesh = true): OfflineMessage {
  const h = request.headers
  const from = h.get('From')
  const to = h.get('To')
  const callId = h.get('Call-ID')
  const cseq = h.get('CSeq')
  if (from === undefined || to === undefined || callId === undefined || cseq === undefined) throw new SipStatusError(400, 'Missing Mandatory Header')
  // RFC 3261 7.4.1: a body needs its type (the proxy core refuses such a MESSAGE first); an
  // empty MESSAGE is kept as an empty text/plain one
  const contentType = h.get('Content-Type') ?? (request.body.byteLength === 0 ? 'text/plain' : undefined)
  if (contentType === undefined) throw new SipStatusError(400, 'Missing Content-Type')
  let tag: string
  try { tag = String(parseNameAddr(from).params.tag ?? '') } catch { throw new SipStatusError(400, 'Malformed From') }
  const given = fromMesh ? h.get(MESSAGE_ID_HEADER) : undefined
  const id = given !== undefined && /^[0-9a-f]{32}$/.test(given.trim()) ? given.trim() : messageIdOf(callId, parseCSeq(cseq).seq, tag)
  const headers: Array<[string, string]> = []
  for (const name of KEPT_HEADERS) for (const v of h.getAll(name)) headers.push([name, v])
  return { id, from, to, date: h.get('Date'), contentType, body: request.body, headers }
}

/** The MESSAGE sent for a stored record: a new transaction, the original sender and Date. */
export function requestOf (rec: OfflineRecord): SipRequest {
  const h = new Headers()
  h.set('From', rec.from)
  h.set('To', rec.to)
  // one Call-ID per message id: a re-delivery after a crash is recognisably the same request
  h.set('Call-ID', `${rec.id}@offline.sipmesh`)
  h.set('CSeq', '1 MESSAGE')
  h.set('Max-Forwards', '70')
  h.set('Date', rec.date)
  h.set(MESSAGE_ID_HEADER, rec.id)
  for (const [name, value] of rec.headers) h.append(name, value)
  h.set('Content-Type', rec.contentType)
  h.set('Content-Length', String(rec.body.byteLength))
  return new SipRequest('MESSAGE', rec.aor, h, rec.body)
}
