/**
 * The presence agent of a sipmesh node: RFC 6665 notifier and subscriber, the RFC 3856 presence
 * package, the RFC 3903 PUBLISH server, held subscriptions and moves (draft 6.1.1, 6.1.4).
 *
 * Roles, per presentity (`Presentity.mode`):
 * - `local`: this node owns the AoR (live bindings here, or the registry names us). It serves the
 *   composed document (publications, else registration state) to its own user agents and to the
 *   back-end subscriptions of other nodes, applying its authorization rules per watcher.
 * - `remote`: another node owns it. This node stays the notifier towards its user agents and holds
 *   ONE back-end subscription to the owner, shared by every local watcher of that presentity. The
 *   back-end SUBSCRIBE (and in-dialog refreshes) carry the watcher identities in
 *   `Sipmesh-Watchers` (batches of up to 200); the owner answers with a decision per watcher in
 *   `Sipmesh-Authorization` (on the 2xx, and on a NOTIFY when its rules change). The back-end
 *   NOTIFY carries the owner's composed document once; this node hands each watcher what the
 *   owner decided for it: the document (allow), the neutral offline document (polite-block), or
 *   the end of its subscription (block: draft 7.1.2.2, a denied back-end decision denies the
 *   watcher whatever this node's own rules say). No real state reaches a watcher before the owner
 *   has decided for it (the watcher's SUBSCRIBE waits up to `decisionWaitMs` for that decision,
 *   then is accepted as `pending` with the neutral document).
 * - `held`: nobody owns it. The subscription is accepted, the watcher gets the offline document,
 *   and `registry.watch()` tells us when the AoR is claimed; the back-end subscription is then
 *   created at once.
 *
 * Every presentity with a subscription here is watched in the registry: a new route (a move) makes
 * the watcher node end its back-end subscription and subscribe at the new owner; the old owner,
 * told by `onDisplaced`, ends the back-end subscriptions it serves with
 * `Subscription-State: terminated;reason=deactivated` (RFC 6665: re-subscribe at once), which makes
 * watcher nodes re-resolve too. User agents keep their dialogs throughout.
 *
 * Loops (draft 7.2.1): back-end SUBSCRIBEs carry `Sipmesh-Path`; an owner never forwards one (it
 * answers from its own data, or `404 Not Owner`), so a path naming the receiver is refused 482.
 * The pair rule holds per (presentity, origin node): a second back-end dialog from the same node
 * for the same presentity supersedes the first (the origin node re-subscribed after losing track,
 * which is no loop in a one-hop topology).
 *
 * Authorization rules: the owner's rules decide, and the watcher node's own copy can only make it
 * stricter (draft 7.1.2.2). A presentity's rules are one versioned document (authorization.ts:
 * hybrid logical clock, last writer wins) that follows the presentity across the mesh, over the
 * same mesh SIP path as back-end subscriptions: a `PUBLISH` to the presentity's AoR with
 * `Event: sipmesh-rules` (`RULES_EVENT`), accepted only from mesh peers (a user agent sending one
 * gets 403, whatever AoR it names, at the first node it reaches):
 * - with a body (`application/vnd.sipmesh.rules+json`, the document with its `version`, at most
 *   `MAX_RULES_BODY` bytes): a push. Validated with the admin API's parser (malformed, oversized or
 *   unversioned: 400, nothing stored); newer than ours: stored, persisted and applied to live
 *   subscriptions (200); the one we hold: 200; older: 412 with our version in
 *   `Sipmesh-Rules-Version`, nothing changed.
 * - without a body: a fetch. `Sipmesh-Rules-Version` says what the asker holds; the 200 carries our
 *   document when it is newer, no body otherwise.
 * Who sends what: an admin PUT is stored where it was made and pushed to the current owner when
 * that is another node; the old owner, told of a move by `onDisplaced`, pushes its document to the
 * new owner; the new owner, when a REGISTER's claim took the AoR from another node
 * (`ClaimResult.previous`), fetches from it, and holds decisions for that presentity (new
 * subscriptions, back-end ones included) until that answer comes or `decisionWaitMs` passes, so a
 * watcher blocked at the old owner is not let through in between. Rules that live only on a node
 * that is dead when the presentity moves are lost to the new owner (they come back when that node
 * returns and the presentity moves again, or an operator PUTs them again).
 */
import { randomBytes } from 'node:crypto'
import { Buffer } from 'node:buffer'
import { SipRequest, type SipResponse } from '../codec/message.ts'
import { Headers } from '../codec/headers.ts'
import { createResponse, generateTag } from '../codec/response.ts'
import { formatVia } from '../codec/via.ts'
import { parseUri, aorOf } from '../codec/uri.ts'
import { parseNameAddr } from '../codec/name-addr.ts'
import { parseCSeq } from '../codec/cseq.ts'
import { SipStatusError } from '../errors.ts'
import type { Aor, DurableStore, Logger, Registry, Route, Unwatch } from '../ports.ts'
import type { Registrar } from '../registrar/registrar.ts'
import type { PresentityView, SubscriptionsView } from '../inspect.ts'
import type { ServerTransaction, TransactionLayer } from '../transaction/layer.ts'
import { MESH_TRANSPORT, type Connector, type Flow } from '../proxy/flow.ts'
import { SourceRateLimiter } from '../transport/limits.ts'
import { responseForError } from '../proxy/error-response.ts'
import { PIDF_CONTENT_TYPE, buildPidf, parsePidf, type PidfDocument } from './pidf.ts'
import { presUriFor, presentityDocument } from './compose.ts'
import { PublicationStore, type PublicationStoreInit } from './publications.ts'
import { PresenceAuthorization, neutralPresence, parseDocument, serializeRules, type Decision, type PresentityRules, type RulesDocument } from './authorization.ts'
import { PATH_HEADER, SubscriptionPairs, checkIncoming, formatPath, parsePath } from './loop.ts'
import {
  AUTHORIZATION_HEADER, EVENT_PACKAGES, MAX_WATCHERS_PER_REQUEST, WATCHERS_HEADER, formatDecisions, formatSubscriptionState,
  formatWatchers, parseDecisions, parseEvent, parseExpiresHeader, parseSubscriptionState, parseWatchers, type SubscriptionState
} from './event.ts'
import { sipStatusFor } from './index.ts'

/** The header a node answers a request for an AoR it does not own with (same as the proxy's). */
const NOT_OWNER_HEADER = 'Sipmesh-Not-Owner'
/** On a back-end NOTIFY: `full` when the body is the presentity's real document (not the neutral one). */
const VIEW_HEADER = 'Sipmesh-View'
/** the event package of rules documents between nodes (mesh only, see the header) */
export const RULES_EVENT = 'sipmesh-rules'
export const RULES_CONTENT_TYPE = 'application/vnd.sipmesh.rules+json'
export const RULES_VERSION_HEADER = 'Sipmesh-Rules-Version'
/** largest rules document sent or accepted over the mesh, bytes (a SIP message is at most 64 KiB) */
export const MAX_RULES_BODY = 48 * 1024

export interface PresenceAgentComponents {
  registry: Registry
  registrar: Registrar<Flow>
  logger: Logger
  store?: DurableStore
}

/** What the agent needs once the gateway runs: how to send requests and reach peers. */
export interface PresenceAgentTransport {
  layer: TransactionLayer<Flow>
  mesh: (node: string) => Flow
  connector: Connector
  /** our advertised host and the ports user agents reach us on */
  host: string
  ports: { udp: number, tcp: number, ws?: number, tls?: number }
}

export interface PresenceAgentInit {
  domains: Iterable<string>
  /** shortest subscription accepted, s (shorter but not 0: 423). @default 60 */
  minExpires?: number
  /** longest subscription granted, s. @default 3600 */
  maxExpires?: number
  /** granted when the SUBSCRIBE has no Expires, s. @default 3600 */
  defaultExpires?: number
  /** expiry of back-end subscriptions between nodes, s. @default 600 */
  backendExpires?: number
  /** PUBLISH store limits and expiries (RFC 3903); here `minExpires` defaults to 5 s */
  publications?: Omit<PublicationStoreInit, 'logger'>
  /** node-wide default policy. @default 'allow' */
  nodeDefault?: Decision
  /** most subscriptions (notifier dialogs) held by this node (503 above). @default 100000 */
  maxSubscriptions?: number
  /**
   * most presentities with subscriptions here; each is watched in the registry (with the DHT: an
   * interest record and a periodic re-resolve), so a flood of SUBSCRIBEs to made-up users stops
   * here (503). @default 50000
   */
  maxPresentities?: number
  /**
   * Per-source limit of SUBSCRIBE and PUBLISH requests from user agents: a token bucket per
   * source host (IP address; every port, UDP and TCP/WebSocket connection of one host shares it,
   * as the transport layer's limit does), `burst` requests at once, refilled at `perSecond`.
   * Above it: 503 with Retry-After. User agents behind one NAT address share the bucket.
   * @default { burst: 200, perSecond: 50 }
   */
  rateLimit?: { burst: number, perSecond: number }
  /** how long a watcher's SUBSCRIBE waits for the owner's decision before `pending`, ms. @default 1500 */
  decisionWaitMs?: number
  /** delay before retrying a failed back-end subscription, ms. @default 2000 */
  retryMs?: number
}

type Mode = 'local' | 'remote' | 'held'
type BackendState = 'none' | 'pending' | 'accepted' | 'loop' | 'failed'

/** A subscription this node is the notifier of: a user agent's, or another node's back-end one. */
interface Sub {
  key: string
  kind: 'ua' | 'backend'
  p: Presentity
  /** ua: the watcher AoR; backend: the origin node id */
  watcher: string
  callId: string
  localTag: string
  remoteTag: string
  /** our From (the SUBSCRIBE's To without tag) */
  localUri: string
  /** their To (the SUBSCRIBE's From, tag included) */
  remote: string
  remoteTarget: string
  routeSet: string[]
  flow: Flow
  cseq: number
  remoteCseq: number
  expiresAt: number
  timer?: ReturnType<typeof setTimeout>
  /** backend: watcher identities and this node's decision for each */
  identities?: Map<string, Decision>
  sending: boolean
  dirty: boolean
  /** a final NOTIFY is queued or sent */
  ending?: SubscriptionState
  done: boolean
  /** decisions to carry on the next NOTIFY (backend, after a rule change) */
  pushDecisions?: Map<string, Decision>
  /** what was sent last (state and body), so that an unchanged state is not sent again */
  told?: { state: string, body: Uint8Array }
  /** the next NOTIFY must be sent even when nothing changed (after a SUBSCRIBE) */
  force?: boolean
}

/** This node's back-end subscription to the owner of a remote presentity. */
interface Backend {
  node: string
  callId: string
  localTag: string
  remoteTag?: string
  remoteTarget?: string
  cseq: number
  inflight: boolean
  ended: boolean
  established: boolean
  queued: Set<string>
  refreshTimer?: ReturnType<typeof setTimeout>
  retryTimer?: ReturnType<typeof setTimeout>
}

interface Presentity {
  aor: Aor
  mode: Mode
  owner?: string
  subs: Set<Sub>
  unwatch?: Unwatch
  backend?: Backend
  backendState: BackendState
  ownerDecisions: Map<string, Decision>
  remoteDoc?: Uint8Array
  waiters: Map<string, Array<() => void>>
  ready: Promise<void>
  doc?: Uint8Array
  neutral?: Uint8Array
  /** identities of SUBSCRIBEs being processed (not yet subscriptions): the back-end asks for them too */
  wanted: Map<string, number>
  closedTimer?: ReturnType<typeof setTimeout>
  retryTimer?: ReturnType<typeof setTimeout>
  /** when the last back-end subscription was started (ms) */
  lastStart: number
}

export interface PresenceStats {
  presentities: number
  subscriptions: number
  backendSubscriptions: number
  publications: number
  notifiesSent: number
  rateLimited: number
  /** final responses the agent sent to the requests it served (SUBSCRIBE, PUBLISH, NOTIFY), by class (`2xx`...) */
  responses: Record<string, number>
}

const NO_BODY = new Uint8Array(0)

export class PresenceAgent {
  readonly #registry: Registry
  readonly #registrar: Registrar<Flow>
  readonly #log: Logger
  readonly #domains: Set<string>
  readonly #min: number
  readonly #max: number
  readonly #default: number
  readonly #backendExpires: number
  readonly #maxSubs: number
  readonly #maxPresentities: number
  readonly #rate: SourceRateLimiter
  readonly #decisionWait: number
  readonly #retryMs: number
  readonly authorization: PresenceAuthorization
  readonly publications: PublicationStore<PidfDocument>
  readonly #presentities = new Map<Aor, Presentity>()
  readonly #subs = new Map<string, Sub>()
  readonly #backends = new Map<string, Presentity>()
  readonly #pairs = new SubscriptionPairs()
  readonly #unsub: Array<() => void> = []
  #t: PresenceAgentTransport | undefined
  #running = false
  readonly #stats = { notifiesSent: 0, rateLimited: 0 }
  readonly #responses: Record<string, number> = {}
  /** presentities whose rules are being fetched from their previous owner: decisions wait for it */
  readonly #rulesGate = new Map<Aor, Promise<void>>()

  constructor (components: PresenceAgentComponents, init: PresenceAgentInit) {
    this.#registry = components.registry
    this.#registrar = components.registrar
    this.#log = components.logger
    this.#domains = new Set([...init.domains].map(d => d.toLowerCase()))
    this.#min = init.minExpires ?? 60
    this.#max = init.maxExpires ?? 3600
    this.#default = Math.min(init.defaultExpires ?? 3600, this.#max)
    this.#backendExpires = init.backendExpires ?? 600
    this.#maxSubs = init.maxSubscriptions ?? 100_000
    this.#maxPresentities = init.maxPresentities ?? 50_000
    // the transport layer's per-source token bucket, applied here to SUBSCRIBE and PUBLISH only
    this.#rate = new SourceRateLimiter({ maxSources: 10_000, ...(init.rateLimit ?? { burst: 200, perSecond: 50 }) })
    this.#decisionWait = init.decisionWaitMs ?? 1500
    this.#retryMs = init.retryMs ?? 2000
    this.authorization = new PresenceAuthorization({ store: components.store, nodeDefault: init.nodeDefault, logger: this.#log })
    this.publications = new PublicationStore<PidfDocument>({ minExpires: 5, ...init.publications, logger: this.#log })
  }

  /** `stats.responses` without the walk `stats` makes (the gateway adds it to the proxy's) */
  get responseCounts (): Readonly<Record<string, number>> { return this.#responses }

  get stats (): PresenceStats {
    let backend = 0
    for (const p of this.#presentities.values()) if (p.backend !== undefined && !p.backend.ended) backend++
    return { presentities: this.#presentities.size, subscriptions: this.#subs.size, backendSubscriptions: backend, publications: this.publications.size, ...this.#stats, responses: { ...this.#responses } }
  }

  /**
   * One presentity's back-end subscriptions as this node sees them (diagnostics, tests): how many
   * this node holds as a watcher node (`holding`, with `to`: the owner node of the live one), and
   * those it serves as the owner, counted per origin node (`serving`). A watcher node holds at
   * most one per presentity, however many of its user agents watch it.
   */
  backendsOf (aor: string): { holding: number, to: string | undefined, serving: Record<string, number> } {
    const p = this.#presentities.get(aor)
    const serving: Record<string, number> = {}
    let holding = 0
    if (p !== undefined) {
      for (const s of p.subs) if (s.kind === 'backend' && !s.done) serving[s.watcher] = (serving[s.watcher] ?? 0) + 1
      for (const q of this.#backends.values()) if (q === p) holding++
    }
    const b = p?.backend
    return { holding, to: b !== undefined && !b.ended ? b.node : undefined, serving }
  }

  /** Load persisted rules (before start). */
  /**
   * The presentities tracked here, at most `limit`, for the admin API (`GET /subscriptions`): who
   * watches each and how it is served. A read of the agent's state, nothing more.
   */
  snapshot (limit: number): SubscriptionsView {
    const presentities: PresentityView[] = []
    for (const p of this.#presentities.values()) {
      if (presentities.length >= limit) break
      const watchers = new Set<string>()
      const watcherNodes = new Set<string>()
      for (const s of p.subs) if (!s.done) (s.kind === 'ua' ? watchers : watcherNodes).add(s.watcher)
      const b = p.backend
      presentities.push({
        aor: p.aor,
        mode: p.mode,
        ...(p.owner !== undefined ? { owner: p.owner } : {}),
        watchers: [...watchers].sort(),
        watcherNodes: [...watcherNodes].sort(),
        ...(b !== undefined && !b.ended ? { backend: p.backendState } : {}),
        publications: this.publications.get(p.aor, 'presence').length
      })
    }
    return { presentities, total: this.#presentities.size, subscriptions: this.#subs.size }
  }

  async load (): Promise<void> {
    const r = await this.authorization.load()
    if (r.skipped > 0) this.#log.warn('presence rules skipped', r)
  }

  start (t: PresenceAgentTransport): void {
    this.#t = t
    this.#running = true
    this.#unsub.push(this.publications.onChange((c) => { if (c.event === 'presence') this.#changed(c.presentity) }))
    this.#registrar.onChange((aor, bindings) => { if (this.#running) this.#onBindings(aor, bindings.length) })
    this.#unsub.push(this.#registry.onDisplaced((aor, by) => { if (this.#running) this.#onDisplaced(aor, by) }))
    this.#registrar.onClaim((aor, result) => {
      const prev = result.previous
      if (this.#running && prev !== undefined && prev.node !== this.#registry.nodeId) this.#fetchRules(aor, prev.node)
    })
  }

  stop (): void {
    this.#running = false
    for (const u of this.#unsub.splice(0)) u()
    for (const p of this.#presentities.values()) {
      p.unwatch?.()
      clearTimeout(p.closedTimer)
      clearTimeout(p.retryTimer)
      if (p.backend !== undefined) this.#clearBackend(p.backend)
    }
    for (const s of this.#subs.values()) clearTimeout(s.timer)
    this.#presentities.clear()
    this.#subs.clear()
    this.#backends.clear()
    this.publications.stop()
  }

  // ---- admin API: rules --------------------------------------------------------------------

  getRules (aor: string): PresentityRules {
    return this.authorization.get(aor)
  }

  /** The document this node holds for a presentity (admin GET): its rules and version (`'0'`: none). */
  getRulesDocument (aor: string): PresentityRules & { version: string } {
    const rules = this.authorization.get(aor)
    return { ...rules, version: (this.authorization.document(aor)?.version ?? 0n).toString() }
  }

  /**
   * Replace the rules of a presentity (JSON as in `parseRules`), apply them to live subscriptions,
   * and, when another node owns the presentity now, send them there (waiting at most `waitMs` for
   * its answer). `owner` is the owner as resolved (undefined: registered nowhere, the document
   * stays here); `delivered` whether the owner holds this document now.
   */
  async setRules (aor: string, rules: unknown, waitMs = 3000): Promise<PresentityRules & { version: string, owner?: string, delivered: boolean }> {
    const doc = await this.authorization.replace(aor, rules)
    const key = this.#normalize(aor)
    const stored = this.authorization.get(aor)
    const p = this.#presentities.get(key)
    if (p !== undefined) this.#rulesChanged(p)
    const self = this.#registry.nodeId
    let owner: string | undefined
    let delivered = false
    try {
      const route = await this.#registry.resolve(key)
      owner = route?.node
      if (this.#registrar.lookup(key).length > 0) owner = self
    } catch (err) {
      this.#log.warn('rules stored here; the owner could not be resolved', { aor: key, err: String(err) })
    }
    if (owner === self) delivered = true
    else if (owner !== undefined && this.#t !== undefined) {
      const sent = this.#pushRules(owner, key, doc).then(r => r.status >= 200 && r.status < 300, () => false)
      let timer: ReturnType<typeof setTimeout> | undefined
      delivered = await Promise.race([sent, new Promise<boolean>(resolve => { timer = setTimeout(() => { resolve(false) }, waitMs) })])
      clearTimeout(timer)
    }
    return { ...stored, version: doc.version.toString(), owner, delivered }
  }

  // ---- rules between nodes (see the header) ------------------------------------------------

  /** send our document of a presentity to a node (a push); resolves with its final response */
  async #pushRules (node: string, aor: Aor, doc: RulesDocument): Promise<SipResponse> {
    const body = Buffer.from(serializeRules(doc.rules, doc.version))
    return await this.#sendRulesRequest(node, aor, body, [['Content-Type', RULES_CONTENT_TYPE]])
  }

  async #sendRulesRequest (node: string, aor: Aor, body: Uint8Array, extra: Array<[string, string]>): Promise<SipResponse> {
    const t = this.#t
    if (t === undefined) throw new Error('presence agent not started')
    const domain = aor.slice(aor.lastIndexOf('@') + 1)
    const h = new Headers()
    h.append('Max-Forwards', '70')
    h.append('From', `<sip:${domain}>;tag=${generateTag()}`)
    h.append('To', `<${aor}>`)
    h.append('Call-ID', randomBytes(12).toString('base64url') + '@sipmesh')
    h.append('CSeq', '1 PUBLISH')
    h.append('Event', RULES_EVENT)
    for (const [n, v] of extra) h.append(n, v)
    return await this.#send(new SipRequest('PUBLISH', aor, h, body), t.mesh(node))
  }

  /** the old owner after a move: push the document to the new owner (a few tries while it is unreachable) */
  #handOverRules (aor: Aor, node: string, attempt = 0): void {
    const doc = this.authorization.document(aor)
    if (doc === undefined || !this.#running) return
    this.#pushRules(node, aor, doc).then((r) => {
      if ((r.status === 408 || r.status === 503) && attempt < 2 && this.#running) {
        setTimeout(() => { this.#handOverRules(aor, node, attempt + 1) }, this.#retryMs).unref?.()
        return
      }
      this.#log.debug('rules handed over to the new owner', { aor, node, status: r.status })
    }, (err: unknown) => { this.#log.debug('rules not handed over', { aor, node, err: String(err) }) })
  }

  /** the new owner after a move: ask the previous owner for a newer document; decisions wait meanwhile */
  #fetchRules (aor: Aor, node: string): void {
    if (this.#rulesGate.has(aor) || this.#t === undefined) return
    const have = this.authorization.document(aor)?.version ?? 0n
    const fetched = this.#sendRulesRequest(node, aor, NO_BODY, [[RULES_VERSION_HEADER, have.toString()]]).then(async (r) => {
      if (r.status !== 200 || r.body.length === 0) return
      const outcome = await this.#takeRules(aor, r.headers.get('Content-Type'), r.body)
      this.#log.debug('rules fetched from the previous owner', { aor, node, outcome })
    }).catch((err: unknown) => { this.#log.debug('rules not fetched from the previous owner', { aor, node, err: String(err) }) })
    let timer: ReturnType<typeof setTimeout> | undefined
    const gate = Promise.race([fetched, new Promise<void>(resolve => { timer = setTimeout(resolve, this.#decisionWait) })]).then(() => {
      clearTimeout(timer)
      if (this.#rulesGate.get(aor) !== gate) return
      this.#rulesGate.delete(aor)
      // watchers held at what they saw (see #view) get the state the rules give them now
      const p = this.#presentities.get(aor)
      if (p !== undefined && this.#running) this.#notifyAll(p)
    })
    this.#rulesGate.set(aor, gate)
  }

  /** validate a received document (the admin API's parser) and store it when newer; throws 400/415 */
  async #takeRules (aor: Aor, contentType: string | undefined, body: Uint8Array): Promise<'applied' | 'same' | 'stale'> {
    const ct = (contentType ?? '').split(';')[0].trim().toLowerCase()
    if (ct !== RULES_CONTENT_TYPE) throw new SipStatusError(415, 'Unsupported Media Type')
    if (body.length > MAX_RULES_BODY) throw new SipStatusError(400, 'Bad Request (rules too large)')
    let json: unknown
    try {
      json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body))
    } catch {
      throw new SipStatusError(400, 'Bad Request (rules are not JSON)')
    }
    const doc = parseDocument(json)
    if (doc.version === 0n) throw new SipStatusError(400, 'Bad Request (rules without a version)')
    const outcome = await this.authorization.accept(aor, doc)
    if (outcome === 'applied') {
      const p = this.#presentities.get(aor)
      if (p !== undefined) this.#rulesChanged(p)
    }
    return outcome
  }

  /** a PUBLISH of the rules event: mesh peers only (a push with a body, a fetch without) */
  async #rulesRequest (request: SipRequest, tx: ServerTransaction, fromMesh: boolean): Promise<void> {
    if (!fromMesh) { this.#respond(tx, createResponse(request, 403, 'Forbidden (rules are exchanged between mesh nodes only)')); return }
    let aor: Aor
    try {
      const u = parseUri(request.uri)
      if (u.user === undefined || !this.#domains.has(u.host.toLowerCase())) throw new Error('not ours')
      aor = aorOf(u)
    } catch {
      this.#respond(tx, createResponse(request, 404, 'Not Found (no presentity of our domains)'))
      return
    }
    if (request.body.length === 0) {
      let have = 0n
      try { have = BigInt(request.headers.get(RULES_VERSION_HEADER) ?? '0') } catch { /* treat as none */ }
      const doc = this.authorization.document(aor)
      if (doc === undefined || doc.version <= have) { this.#respond(tx, createResponse(request, 200)); return }
      const r = createResponse(request, 200, undefined, [['Content-Type', RULES_CONTENT_TYPE]])
      r.body = Buffer.from(serializeRules(doc.rules, doc.version))
      this.#respond(tx, r)
      return
    }
    const outcome = await this.#takeRules(aor, request.headers.get('Content-Type'), request.body)
    if (outcome === 'stale') {
      this.#respond(tx, createResponse(request, 412, 'Conditional Request Failed (older rules)', [[RULES_VERSION_HEADER, String(this.authorization.document(aor)?.version ?? 0n)]]))
      return
    }
    this.#respond(tx, createResponse(request, 200))
  }

  /** wait (bounded) until the rules of a presentity just taken over from another node are here */
  async #rulesReady (aor: Aor): Promise<void> {
    await this.#rulesGate.get(aor)
  }

  // ---- the proxy's interceptor -------------------------------------------------------------

  /**
   * Called by the proxy core for every new request before routing: true when the agent takes it
   * (and answers it through `tx`), false to leave it to the proxy.
   */
  intercept (request: SipRequest, tx: ServerTransaction, flow: Flow, fromMesh: boolean): boolean {
    const m = request.method
    if (m !== 'SUBSCRIBE' && m !== 'NOTIFY' && m !== 'PUBLISH') return false
    if (!this.#running) return false
    const h = request.headers
    const toTag = tagOf(h.get('To'))
    if (toTag !== undefined && (m === 'SUBSCRIBE' || m === 'NOTIFY')) {
      const callId = h.get('Call-ID') ?? ''
      const fromTag = tagOf(h.get('From')) ?? ''
      if (m === 'SUBSCRIBE') {
        const sub = this.#subs.get(dialogKey(callId, toTag, fromTag))
        if (sub !== undefined) { this.#run(request, tx, async () => { await this.#refresh(request, tx, sub) }); return true }
      } else {
        const p = this.#backends.get(callId)
        if (p?.backend !== undefined && p.backend.localTag === toTag) { this.#run(request, tx, async () => { this.#backendNotify(request, tx, p) }); return true }
      }
      // an in-dialog request for a dialog we do not know, sent to us as the notifier/subscriber
      if (this.#isOurTarget(request.uri)) { this.#respond(tx, createResponse(request, 481)); return true }
      return false
    }
    if (m === 'NOTIFY') return false
    if (m === 'PUBLISH' && parseEvent(h.get('Event'))?.pkg === RULES_EVENT) {
      this.#run(request, tx, async () => { await this.#rulesRequest(request, tx, fromMesh) })
      return true
    }
    let aor: string
    try {
      const u = parseUri(request.uri)
      if (u.user === undefined || !this.#domains.has(u.host.toLowerCase())) return false
      aor = aorOf(u)
    } catch { return false }
    if (m === 'SUBSCRIBE') {
      this.#run(request, tx, async () => { await (fromMesh ? this.#backendSubscribe(request, tx, flow, aor) : this.#uaSubscribe(request, tx, flow, aor)) })
      return true
    }
    // PUBLISH: taken when we serve the AoR here, or hold the publication its entity tag names
    // (RFC 3903 6: refresh, modify and remove work with or without a live binding); otherwise the
    // proxy routes it to the owner, and hands it back to `atOwner` if that is us or nobody
    if (this.#registrar.lookup(aor).length === 0 && this.#presentities.get(aor)?.mode !== 'local' && !this.#holdsTag(request, aor)) return false
    this.#run(request, tx, async () => { this.#publish(request, tx, flow, aor, fromMesh) })
    return true
  }

  /**
   * The proxy's `atOwner` seam: a PUBLISH for an AoR this node owns (`owned`), or that nobody owns,
   * reached where it would have gone to the user's devices or been answered as unavailable. The
   * agent is the event state compositor: an owned AoR's PUBLISH is served here, bindings or not
   * (a REGISTER's claim may still be in flight: issue 10 item 2). With nobody owning it, a
   * conditional PUBLISH (SIP-If-Match) is answered here (412 for a tag we do not hold); an initial
   * one waits for a REGISTER of that AoR this node is handling, and is served here if that bound
   * the user, else left to the proxy (480 / 404: the user is registered nowhere).
   */
  async atOwner (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: Aor, owned: boolean): Promise<boolean> {
    if (request.method !== 'PUBLISH' || !this.#running) return false
    if (!owned && request.headers.get('SIP-If-Match') === undefined) {
      await this.#registrar.settled(aor)
      if (this.#registrar.lookup(aor).length === 0) return false
    }
    const fromMesh = flow.transport === MESH_TRANSPORT
    this.#run(request, tx, async () => { this.#publish(request, tx, flow, aor, fromMesh) })
    return true
  }

  /** this node holds the live publication a PUBLISH's SIP-If-Match names */
  #holdsTag (request: SipRequest, aor: Aor): boolean {
    const tag = request.headers.get('SIP-If-Match')?.trim()
    if (tag === undefined || tag === '') return false
    const pkg = parseEvent(request.headers.get('Event'))?.pkg
    if (pkg === undefined) return false
    return this.publications.get(aor, pkg).some(p => p.etag === tag)
  }

  #run (request: SipRequest, tx: ServerTransaction, fn: () => Promise<void>): void {
    fn().catch((err: unknown) => {
      const s = sipStatusFor(err)
      if (s !== undefined) { this.#respond(tx, createResponse(request, s.status, s.reason, s.headers)); return }
      if (err instanceof RateLimitedError) { this.#respond(tx, createResponse(request, 503, err.reason, [['Retry-After', '5']])); return }
      // everything else as the proxy answers it (the one error-to-status place)
      this.#respond(tx, responseForError(request, err, this.#log))
    })
  }

  #respond (tx: ServerTransaction, response: SipResponse): void {
    // every final response of ours carries a To tag (8.2.6.2); dialog-creating ones set theirs before
    const to = response.headers.get('To')
    if (response.status >= 200 && to !== undefined && tagOf(to) === undefined) response.headers.set('To', `${to};tag=${generateTag()}`)
    if (response.status >= 200) {
      const k = `${Math.floor(response.status / 100)}xx`
      this.#responses[k] = (this.#responses[k] ?? 0) + 1
    }
    tx.respond(response)
  }

  // ---- SUBSCRIBE from a user agent (this node is the notifier) ------------------------------

  #checkEvent (request: SipRequest): void {
    const ev = parseEvent(request.headers.get('Event'))
    if (ev === undefined || !(EVENT_PACKAGES as readonly string[]).includes(ev.pkg)) {
      throw new EventError()
    }
  }

  #grant (request: SipRequest, min = this.#min): number {
    const e = parseExpiresHeader(request.headers.get('Expires'))
    if (e === undefined) return this.#default
    if (e === 0) return 0
    if (e < min) throw new TooBriefError(min)
    return Math.min(e, this.#max)
  }

  /**
   * The per-source limit, keyed by host alone (as the transport layer's SourceRateLimiter is):
   * a key with the port or transport would give a flooder a fresh bucket per source port or TCP
   * connection. An IPv4-mapped IPv6 address counts as its IPv4 address.
   */
  #limit (flow: Flow): void {
    if (flow.transport === MESH_TRANSPORT) return
    if (this.#rate.take(sourceHost(flow.remote.host))) return
    this.#stats.rateLimited++
    throw new RateLimitedError()
  }

  async #uaSubscribe (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: Aor): Promise<void> {
    try {
      this.#checkEvent(request)
    } catch (err) {
      if (err instanceof EventError) { this.#respond(tx, createResponse(request, 489, undefined, [['Allow-Events', EVENT_PACKAGES.join(', ')]])); return }
      throw err
    }
    this.#limit(flow)
    let expires: number
    try {
      expires = this.#grant(request)
    } catch (err) {
      if (err instanceof TooBriefError) { this.#respond(tx, createResponse(request, 423, undefined, [['Min-Expires', String(err.min)]])); return }
      throw err
    }
    const accept = request.headers.getAll('Accept')
    if (accept.length > 0 && !accept.some(a => /application\/pidf\+xml|\*\/\*|application\/\*/iu.test(a))) {
      this.#respond(tx, createResponse(request, 406, undefined, [['Accept', PIDF_CONTENT_TYPE]]))
      return
    }
    const h = request.headers
    const contact = h.get('Contact')
    const from = h.get('From')
    const to = h.get('To')
    const callId = h.get('Call-ID')
    const cseq = h.get('CSeq')
    if (contact === undefined || from === undefined || to === undefined || callId === undefined || cseq === undefined) throw new SipStatusError(400, 'Missing Header')
    let watcher: string
    let remoteTarget: string
    let remoteTag: string | undefined
    try {
      const f = parseNameAddr(from)
      watcher = aorOf(parseUri(f.uri))
      remoteTag = typeof f.params.tag === 'string' ? f.params.tag : undefined
      remoteTarget = parseNameAddr(contact).uri
      parseUri(remoteTarget)
    } catch {
      throw new SipStatusError(400, 'Malformed From or Contact')
    }
    if (remoteTag === undefined) throw new SipStatusError(400, 'Missing From Tag')
    if (this.#subs.size >= this.#maxSubs) throw new SipStatusError(503, 'Too Many Subscriptions')
    if (this.#presentities.size >= this.#maxPresentities && !this.#presentities.has(aor)) throw new SipStatusError(503, 'Too Many Presentities')

    const p = this.#presentity(aor)
    p.wanted.set(watcher, (p.wanted.get(watcher) ?? 0) + 1)
    try {
      await this.#admitWatcher(request, tx, flow, p, watcher, { from, to, callId, cseq, remoteTag, remoteTarget, expires })
    } finally {
      const n = (p.wanted.get(watcher) ?? 1) - 1
      if (n <= 0) p.wanted.delete(watcher)
      else p.wanted.set(watcher, n)
      this.#forget(p)
    }
  }

  async #admitWatcher (request: SipRequest, tx: ServerTransaction, flow: Flow, p: Presentity, watcher: string,
    d: { from: string, to: string, callId: string, cseq: string, remoteTag: string, remoteTarget: string, expires: number }): Promise<void> {
    const { from, to, callId, cseq, remoteTag, remoteTarget, expires } = d
    const aor = p.aor
    const h = request.headers
    await p.ready
    await this.#rulesReady(aor)
    if (this.authorization.decide(aor, watcher) === 'block') {
      this.#respond(tx, createResponse(request, 403))
      return
    }
    const localTag = generateTag()
    const sub: Sub = {
      key: own(dialogKey(callId, localTag, remoteTag)),
      kind: 'ua',
      p,
      watcher: own(watcher),
      callId: own(callId),
      localTag,
      remoteTag: own(remoteTag),
      localUri: own(stripTag(to)),
      remote: own(from),
      remoteTarget: own(remoteTarget),
      routeSet: h.getAll('Record-Route').map(own),
      flow,
      cseq: 0,
      remoteCseq: parseCSeq(cseq).seq,
      expiresAt: Date.now() + expires * 1000,
      sending: false,
      dirty: false,
      done: false
    }
    if (p.mode === 'remote') {
      // draft 7.1.2.2: wait (briefly) for the owner's decision for this watcher (and its document)
      if (!this.#decided(p, watcher)) {
        this.#queueIdentity(p, watcher)
        await this.#waitDecision(p, watcher)
      }
      if (p.ownerDecisions.get(watcher) === 'block') {
        this.#respond(tx, createResponse(request, 403))
        return
      }
    }
    this.#subs.set(sub.key, sub)
    p.subs.add(sub)
    // RFC 3261 12.1.1: the 2xx that creates the dialog carries the request's Record-Route (the
    // watcher's side builds its route set from it: a peer network's proxies, issue 13)
    const response = createResponse(request, 200, undefined, [['Expires', String(expires)], ['Contact', this.#contactFor(flow)], ...sub.routeSet.map(r => ['Record-Route', r] as [string, string])], { toTag: localTag })
    this.#respond(tx, response)
    if (expires === 0) {
      this.#end(sub, { state: 'terminated', reason: 'timeout' })
      return
    }
    this.#arm(sub)
    this.#notify(sub, true)
  }

  async #refresh (request: SipRequest, tx: ServerTransaction, sub: Sub): Promise<void> {
    const seq = parseCSeq(request.headers.get('CSeq') ?? '').seq
    if (seq <= sub.remoteCseq) { this.#respond(tx, createResponse(request, 500, 'CSeq Out Of Order')); return }
    sub.remoteCseq = seq
    try {
      this.#checkEvent(request)
    } catch (err) {
      if (err instanceof EventError) { this.#respond(tx, createResponse(request, 489, undefined, [['Allow-Events', EVENT_PACKAGES.join(', ')]])); return }
      throw err
    }
    if (sub.done || sub.ending !== undefined) { this.#respond(tx, createResponse(request, 481)); return }
    let expires: number
    try {
      expires = this.#grant(request, sub.kind === 'backend' ? 1 : this.#min)
    } catch (err) {
      if (err instanceof TooBriefError) { this.#respond(tx, createResponse(request, 423, undefined, [['Min-Expires', String(err.min)]])); return }
      throw err
    }
    if (sub.kind === 'ua') this.#limit(sub.flow)
    const extra: Array<[string, string]> = [['Expires', String(expires)], ['Contact', this.#contactFor(sub.flow)]]
    if (sub.kind === 'backend') {
      const added = this.#admitIdentities(sub, parseWatchers(request.headers.get(WATCHERS_HEADER)))
      if (added.size > 0) extra.push([AUTHORIZATION_HEADER, formatDecisions(added)])
    }
    this.#respond(tx, createResponse(request, 200, undefined, extra))
    if (expires === 0) {
      this.#end(sub, { state: 'terminated', reason: 'timeout' })
      return
    }
    sub.expiresAt = Date.now() + expires * 1000
    this.#arm(sub)
    this.#notify(sub, true)
  }

  // ---- back-end SUBSCRIBE from another node (this node owns the presentity) -----------------

  async #backendSubscribe (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: Aor): Promise<void> {
    try {
      this.#checkEvent(request)
    } catch (err) {
      if (err instanceof EventError) { this.#respond(tx, createResponse(request, 489, undefined, [['Allow-Events', EVENT_PACKAGES.join(', ')]])); return }
      throw err
    }
    const node = flow.node ?? flow.remote.host
    const self = this.#registry.nodeId
    const path = parsePath(request.headers.get(PATH_HEADER))
    const loop = checkIncoming(self, path)
    if (loop.loop) { this.#respond(tx, createResponse(request, 482, `Loop Detected (${loop.reason})`)); return }
    const expires = this.#grant(request, 1)
    if (this.#registrar.lookup(aor).length === 0 && this.#presentities.get(aor)?.mode !== 'local') {
      const route = await this.#registry.resolve(aor)
      if (route?.node !== self) {
        this.#respond(tx, createResponse(request, 404, 'Not Owner', [[NOT_OWNER_HEADER, self]]))
        return
      }
    }
    const h = request.headers
    const contact = h.get('Contact')
    const from = h.get('From')
    const to = h.get('To')
    const callId = h.get('Call-ID')
    const cseq = h.get('CSeq')
    if (contact === undefined || from === undefined || to === undefined || callId === undefined || cseq === undefined) throw new SipStatusError(400, 'Missing Header')
    const remoteTag = tagOf(from)
    if (remoteTag === undefined) throw new SipStatusError(400, 'Missing From Tag')
    if (this.#subs.size >= this.#maxSubs) throw new SipStatusError(503, 'Too Many Subscriptions')
    await this.#rulesReady(aor)
    const p = this.#presentity(aor)
    // we own it (checked above): local watchers stop any back-end subscription of their own
    if (p.mode !== 'local') this.#reroute(p, { aor, node: self, sip: '', version: 0n, expiresAt: Date.now() + 1000 })
    const localTag = generateTag()
    const key = dialogKey(callId, localTag, remoteTag)
    const admitted = this.#pairs.admit(aor, node, key)
    if (admitted === 'full') throw new SipStatusError(503, 'Too Many Subscriptions')
    if (admitted === 'loop') {
      // the same node subscribed again with a new dialog: it lost the old one; the new one wins
      for (const s of [...p.subs]) if (s.kind === 'backend' && s.watcher === node) this.#drop(s)
      this.#pairs.admit(aor, node, key)
    }
    const sub: Sub = {
      key, kind: 'backend', p, watcher: node, callId, localTag, remoteTag,
      localUri: stripTag(to),
      remote: from,
      remoteTarget: parseNameAddr(contact).uri,
      routeSet: [],
      flow,
      cseq: 0,
      remoteCseq: parseCSeq(cseq).seq,
      expiresAt: Date.now() + expires * 1000,
      identities: new Map(),
      sending: false,
      dirty: false,
      done: false
    }
    const decisions = this.#admitIdentities(sub, parseWatchers(h.get(WATCHERS_HEADER)))
    this.#subs.set(key, sub)
    p.subs.add(sub)
    this.#respond(tx, createResponse(request, 200, undefined, [
      ['Expires', String(expires)], ['Contact', this.#contactFor(flow)], [AUTHORIZATION_HEADER, formatDecisions(decisions)]
    ], { toTag: localTag }))
    if (expires === 0) { this.#end(sub, { state: 'terminated', reason: 'timeout' }); return }
    this.#arm(sub)
    this.#notify(sub, true)
  }

  #admitIdentities (sub: Sub, watchers: string[]): Map<string, Decision> {
    const out = new Map<string, Decision>()
    const ids = sub.identities
    if (ids === undefined) return out
    for (const w of watchers) {
      if (ids.size >= 10_000 && !ids.has(w)) break
      const d = this.authorization.decide(sub.p.aor, w)
      ids.set(w, d)
      out.set(w, d)
    }
    return out
  }

  // ---- PUBLISH (RFC 3903), at the owner ----------------------------------------------------

  #publish (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: Aor, fromMesh: boolean): void {
    const h = request.headers
    const ev = parseEvent(h.get('Event'))
    if (ev === undefined || ev.pkg !== 'presence') {
      this.#respond(tx, createResponse(request, 489, undefined, [['Allow-Events', EVENT_PACKAGES.join(', ')]]))
      return
    }
    if (!fromMesh) this.#limit(flow)
    // only the presentity publishes its own state (asserted identity from the mesh, From otherwise)
    const who = fromMesh ? h.get('P-Asserted-Identity') : h.get('From')
    let publisher: string | undefined
    try { publisher = who === undefined ? undefined : aorOf(parseUri(parseNameAddr(who).uri)) } catch { publisher = undefined }
    if (publisher !== aor) { this.#respond(tx, createResponse(request, 403, 'Forbidden (publisher is not the presentity)')); return }
    let body: PidfDocument | undefined
    if (request.body.length > 0) {
      const ct = (h.get('Content-Type') ?? '').split(';')[0].trim().toLowerCase()
      if (ct !== PIDF_CONTENT_TYPE) { this.#respond(tx, createResponse(request, 415, undefined, [['Accept', PIDF_CONTENT_TYPE]])); return }
      body = parsePidf(request.body)
    }
    const ifMatch = h.get('SIP-If-Match')?.trim()
    const expires = parseExpiresHeader(h.get('Expires'))
    const result = this.publications.publish({ presentity: aor, event: 'presence', ifMatch, expires, body })
    this.#respond(tx, createResponse(request, 200, undefined, [['SIP-ETag', result.etag], ['Expires', String(result.expires)]]))
  }

  // ---- presentities, modes, moves -----------------------------------------------------------

  #normalize (aor: string): string {
    try { return aorOf(parseUri(aor)) } catch { return aor }
  }

  #presentity (aor: Aor): Presentity {
    const existing = this.#presentities.get(aor)
    if (existing !== undefined) return existing
    const created: Presentity = {
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
    this.#presentities.set(aor, created)
    created.unwatch = this.#registry.watch(aor, (route) => { if (this.#running && this.#presentities.get(aor) === created) this.#reroute(created, route) })
    if (this.#registrar.lookup(aor).length > 0) {
      created.mode = 'local'
    } else {
      created.ready = this.#registry.resolve(aor).then(
        (route) => { if (this.#presentities.get(aor) === created) this.#reroute(created, route) },
        (err: unknown) => { this.#log.debug('presentity resolve failed', { aor, err: String(err) }) })
    }
    return created
  }

  /** drop a presentity nobody subscribes to any more */
  #forget (p: Presentity): void {
    if (p.subs.size > 0 || p.wanted.size > 0 || this.#presentities.get(p.aor) !== p) return
    this.#presentities.delete(p.aor)
    p.unwatch?.()
    clearTimeout(p.closedTimer)
    clearTimeout(p.retryTimer)
    if (p.backend !== undefined) this.#endBackend(p, p.backend)
    for (const ws of p.waiters.values()) for (const w of ws) w()
    p.waiters.clear()
  }

  #modeFor (aor: Aor, route: Route | undefined): { mode: Mode, owner?: string } {
    if (this.#registrar.lookup(aor).length > 0) return { mode: 'local' }
    if (route === undefined) return { mode: 'held' }
    if (route.node === this.#registry.nodeId) return { mode: 'local' }
    return { mode: 'remote', owner: route.node }
  }

  #reroute (p: Presentity, route: Route | undefined): void {
    const next = this.#modeFor(p.aor, route)
    if (next.mode === p.mode && next.owner === p.owner && (next.mode !== 'remote' || (p.backend !== undefined && !p.backend.ended))) return
    const wasLocal = p.mode === 'local'
    this.#log.debug('presentity rerouted', { aor: p.aor, from: p.mode, to: next.mode, owner: next.owner })
    if (p.backend !== undefined) this.#endBackend(p, p.backend)
    if (next.mode === 'remote' && p.mode === 'remote') {
      // owner to owner (a move): watchers keep what they were shown until the new owner answers
    } else if (next.mode === 'remote' && wasLocal) {
      // we served it: what our watchers saw stands until the new owner answers
      const doc = this.#localDoc(p)
      p.ownerDecisions.clear()
      for (const s of p.subs) if (s.kind === 'ua') p.ownerDecisions.set(s.watcher, this.authorization.decide(p.aor, s.watcher))
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
      for (const s of [...p.subs]) if (s.kind === 'backend') this.#end(s, { state: 'terminated', reason: 'deactivated' })
    }
    if (next.mode === 'remote') {
      this.#startBackend(p)
      return
    }
    for (const ws of p.waiters.values()) for (const w of ws) w()
    p.waiters.clear()
    this.#notifyAll(p)
  }

  #onBindings (aor: Aor, live: number): void {
    const p = this.#presentities.get(aor)
    if (p === undefined) return
    clearTimeout(p.closedTimer)
    if (live > 0) {
      if (p.mode !== 'local') { this.#reroute(p, undefined); return }
      this.#changed(aor)
      return
    }
    // the last binding went: tell watchers a little later, unless the user moved meanwhile
    p.closedTimer = setTimeout(() => { if (p.mode === 'local') this.#changed(aor) }, 200)
    p.closedTimer.unref?.()
  }

  #onDisplaced (aor: Aor, by: Route): void {
    if (by.node !== this.#registry.nodeId) this.#handOverRules(aor, by.node)
    const p = this.#presentities.get(aor)
    if (p !== undefined) {
      clearTimeout(p.closedTimer)
      this.#reroute(p, by)
    }
    // the user registered elsewhere: its publications here are stale (dropped after the re-route,
    // so nobody is told of the removal as if it were the user's state)
    for (const pub of this.publications.get(aor, 'presence')) {
      try { this.publications.publish({ presentity: aor, event: 'presence', ifMatch: pub.etag, expires: 0 }) } catch { /* gone already */ }
    }
  }

  #changed (aor: Aor): void {
    const p = this.#presentities.get(aor)
    if (p === undefined || p.mode !== 'local') return
    p.doc = undefined
    this.#notifyAll(p)
  }

  #rulesChanged (p: Presentity): void {
    for (const s of [...p.subs]) {
      if (s.kind === 'backend' && s.identities !== undefined) {
        const changed = new Map<string, Decision>()
        for (const [w, old] of s.identities) {
          const d = this.authorization.decide(p.aor, w)
          if (d !== old) { s.identities.set(w, d); changed.set(w, d) }
        }
        if (changed.size > MAX_WATCHERS_PER_REQUEST * 5) {
          this.#end(s, { state: 'terminated', reason: 'deactivated' })
          continue
        }
        if (changed.size > 0) s.pushDecisions = changed
      }
      this.#notify(s)
    }
  }

  // ---- documents -----------------------------------------------------------------------------

  #localDoc (p: Presentity): Uint8Array {
    if (p.doc === undefined) {
      const pubs = this.publications.get(p.aor, 'presence').map(x => ({ key: x.key, doc: x.body }))
      p.doc = Buffer.from(buildPidf(presentityDocument(presUriFor(p.aor), pubs, this.#registrar.lookup(p.aor).length)))
    }
    return p.doc
  }

  #neutral (p: Presentity): Uint8Array {
    p.neutral ??= Buffer.from(buildPidf(neutralPresence(presUriFor(p.aor))))
    return p.neutral
  }

  /** what a subscription is told now: a state and a body, or 'block' (end it, rejected) */
  #view (s: Sub): { state: 'active' | 'pending', body: Uint8Array, full?: boolean } | 'block' {
    const p = s.p
    if (s.kind === 'backend') {
      const ids = s.identities ?? new Map<string, Decision>()
      let anyAllowed = false
      for (const d of ids.values()) if (d === 'allow') { anyAllowed = true; break }
      const full = anyAllowed && p.mode === 'local'
      return { state: 'active', body: full ? this.#localDoc(p) : this.#neutral(p), full }
    }
    const local = this.authorization.decide(p.aor, s.watcher)
    if (local === 'block') return 'block'
    if (p.mode === 'held') return { state: 'active', body: this.#neutral(p) }
    if (p.mode === 'local') {
      // just taken over from another node whose rules are still on their way: what the watcher saw stands
      if (this.#rulesGate.has(p.aor)) return s.told === undefined ? { state: 'pending', body: this.#neutral(p) } : { state: s.told.state === 'pending' ? 'pending' : 'active', body: s.told.body }
      return { state: 'active', body: local === 'allow' ? this.#localDoc(p) : this.#neutral(p) }
    }
    const owner = p.ownerDecisions.get(s.watcher)
    if (owner === 'block') return 'block'
    if (p.backendState === 'loop') return { state: 'active', body: this.#neutral(p) }
    if (owner === undefined || (owner === 'allow' && p.remoteDoc === undefined)) return { state: 'pending', body: this.#neutral(p) }
    if (local === 'polite-block' || owner === 'polite-block') return { state: 'active', body: this.#neutral(p) }
    return { state: 'active', body: p.remoteDoc ?? this.#neutral(p) }
  }

  // ---- NOTIFY as notifier --------------------------------------------------------------------

  #notifyAll (p: Presentity): void {
    for (const s of [...p.subs]) this.#notify(s)
  }

  #arm (s: Sub): void {
    clearTimeout(s.timer)
    s.timer = setTimeout(() => { this.#end(s, { state: 'terminated', reason: 'timeout' }) }, Math.max(0, s.expiresAt - Date.now()))
    s.timer.unref?.()
  }

  /**
   * Send the current state (coalesced: one NOTIFY in flight per dialog, the latest state next).
   * `force`: a SUBSCRIBE asked for it (RFC 6665: a NOTIFY after every SUBSCRIBE); otherwise an
   * unchanged state is not sent again.
   */
  #notify (s: Sub, force = false): void {
    if (s.done || s.ending !== undefined) return
    if (force) s.force = true
    if (s.sending) { s.dirty = true; return }
    const v = this.#view(s)
    if (v === 'block') { this.#end(s, { state: 'terminated', reason: 'rejected' }); return }
    const extra: Array<[string, string]> = []
    if (s.kind === 'backend' && v.full === true) extra.push([VIEW_HEADER, 'full'])
    if (s.pushDecisions !== undefined) { extra.push([AUTHORIZATION_HEADER, formatDecisions(s.pushDecisions)]); s.pushDecisions = undefined }
    else if (s.force !== true && s.told !== undefined && s.told.state === v.state && Buffer.compare(s.told.body, v.body) === 0) return
    s.force = false
    s.told = { state: v.state, body: v.body }
    this.#sendNotify(s, { state: v.state, expires: (s.expiresAt - Date.now()) / 1000 }, v.body, extra)
  }

  /** end a subscription with a final NOTIFY (after any NOTIFY in flight) */
  #end (s: Sub, state: SubscriptionState): void {
    if (s.done || s.ending !== undefined) return
    s.ending = state
    clearTimeout(s.timer)
    if (s.sending) return
    this.#sendFinal(s)
  }

  #sendFinal (s: Sub): void {
    const state = s.ending ?? { state: 'terminated' as const }
    let body: Uint8Array = NO_BODY
    if (state.reason === 'timeout' || state.reason === undefined) {
      const v = this.#view(s)
      if (v !== 'block') body = v.body
    }
    this.#sendNotify(s, state, body, [])
    this.#drop(s)
  }

  /** forget a subscription without telling anyone */
  #drop (s: Sub): void {
    s.done = true
    clearTimeout(s.timer)
    this.#subs.delete(s.key)
    s.p.subs.delete(s)
    if (s.kind === 'backend') this.#pairs.release(s.p.aor, s.watcher, s.key)
    this.#forget(s.p)
  }

  #sendNotify (s: Sub, state: SubscriptionState, body: Uint8Array, extra: Array<[string, string]>): void {
    const t = this.#t
    if (t === undefined) return
    s.cseq++
    const h = new Headers()
    h.append('Max-Forwards', '70')
    for (const r of s.routeSet) h.append('Route', r)
    h.append('From', `${s.localUri};tag=${s.localTag}`)
    h.append('To', s.remote)
    h.append('Call-ID', s.callId)
    h.append('CSeq', `${s.cseq} NOTIFY`)
    h.append('Contact', this.#contactFor(s.flow))
    h.append('Event', 'presence')
    h.append('Subscription-State', formatSubscriptionState(state))
    for (const [n, v] of extra) h.append(n, v)
    if (body.length > 0) h.append('Content-Type', PIDF_CONTENT_TYPE)
    const request = new SipRequest('NOTIFY', s.remoteTarget, h, body)
    const final = state.state === 'terminated'
    if (!final) s.sending = true
    this.#stats.notifiesSent++
    void this.#flowFor(s).then(async flow => await this.#send(request, flow)).then((r) => {
      s.sending = false
      if (final) return
      if (r.status >= 300 && r.status !== 401 && r.status !== 407) {
        // RFC 6665 4.2.2: a failed NOTIFY removes the subscription
        this.#log.debug('NOTIFY failed: subscription removed', { status: r.status, presentity: s.p.aor, watcher: s.watcher })
        this.#drop(s)
        return
      }
      if (s.ending !== undefined) { if (!s.done) this.#sendFinal(s); return }
      if (s.dirty) { s.dirty = false; this.#notify(s) }
    }, (err: unknown) => {
      s.sending = false
      this.#log.debug('NOTIFY not sent', { err: String(err) })
      if (!final) this.#drop(s)
    })
  }

  async #flowFor (s: Sub): Promise<Flow> {
    const t = this.#t
    if (t === undefined) throw new Error('presence agent not started')
    if (s.flow.transport === MESH_TRANSPORT) return t.mesh(s.flow.node ?? s.watcher)
    const targetUri = s.routeSet.length > 0 ? parseNameAddr(s.routeSet[0]).uri : s.remoteTarget
    const u = parseUri(targetUri)
    if (typeof u.params.node === 'string') return t.mesh(u.params.node)
    if (s.flow.open && s.flow.reliable) return s.flow
    const transport = typeof u.params.transport === 'string' ? u.params.transport.toUpperCase() : 'UDP'
    if (u.host.toLowerCase().endsWith('.invalid') || (transport !== 'UDP' && transport !== 'TCP' && transport !== 'TLS')) {
      if (s.flow.open) return s.flow
      throw new SipStatusError(480, 'Watcher Unreachable')
    }
    return await t.connector.connect({ transport, host: u.host, port: u.port ?? (transport === 'TLS' ? 5061 : 5060) })
  }

  /** send a request in a client transaction; resolves with its final response (408/503 on failure) */
  async #send (request: SipRequest, flow: Flow): Promise<SipResponse> {
    const t = this.#t
    if (t === undefined) throw new Error('presence agent not started')
    const params: Record<string, string | null> = flow.transport === MESH_TRANSPORT ? { node: this.#registry.nodeId } : flow.transport === 'UDP' ? { rport: null } : {}
    const port = flow.transport === 'TLS' ? t.ports.tls ?? t.ports.udp : t.ports.udp
    request.headers.prepend('Via', formatVia({ protocol: 'SIP/2.0', transport: flow.transport, host: t.host, port, params, branch: newBranch() }))
    return await new Promise<SipResponse>((resolve) => {
      try {
        t.layer.sendRequest(request, flow, {
          receiveResponse: (r) => { if (r.status >= 200) resolve(r) },
          onRequestTimeout: () => { resolve(createResponse(request, 408)) },
          onTransportError: () => { resolve(createResponse(request, 503)) }
        })
      } catch (err) {
        this.#log.debug('request not sent', { method: request.method, err: String(err) })
        resolve(createResponse(request, 503))
      }
    })
  }

  #contactFor (flow: Flow): string {
    const t = this.#t
    const host = t?.host ?? '127.0.0.1'
    if (flow.transport === MESH_TRANSPORT) return `<sip:${host}:${t?.ports.udp ?? 5060};node=${this.#registry.nodeId}>`
    if (flow.transport === 'TCP') return `<sip:${host}:${t?.ports.tcp ?? 5060};transport=tcp>`
    if (flow.transport === 'TLS' && t?.ports.tls !== undefined) return `<sip:${host}:${t.ports.tls};transport=tls>`
    if ((flow.transport === 'WS' || flow.transport === 'WSS') && t?.ports.ws !== undefined) return `<sip:${host}:${t.ports.ws};transport=ws>`
    return `<sip:${host}:${t?.ports.udp ?? 5060}>`
  }

  #isOurTarget (uri: string): boolean {
    try {
      const u = parseUri(uri)
      if (typeof u.params.node === 'string') return u.params.node === this.#registry.nodeId
      const t = this.#t
      if (u.user !== undefined || t === undefined) return false
      return u.host === t.host && [t.ports.udp, t.ports.tcp, t.ports.ws].includes(u.port ?? 5060)
    } catch { return false }
  }

  // ---- back-end subscription as subscriber (this node watches a remote presentity) -----------

  #queueIdentity (p: Presentity, watcher: string): void {
    const b = p.backend
    if (b === undefined || b.ended) return
    b.queued.add(watcher)
    this.#pump(p, b)
  }

  /** the owner has decided for this watcher, and when it allows, its document has arrived */
  #decided (p: Presentity, watcher: string): boolean {
    const d = p.ownerDecisions.get(watcher)
    return d !== undefined && (d !== 'allow' || p.remoteDoc !== undefined)
  }

  async #waitDecision (p: Presentity, watcher: string): Promise<void> {
    if (p.mode !== 'remote' || this.#decided(p, watcher) || p.backendState === 'loop' || p.backendState === 'failed') return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, this.#decisionWait)
      function done (): void { clearTimeout(timer); resolve() }
      const list = p.waiters.get(watcher) ?? []
      list.push(done)
      p.waiters.set(watcher, list)
    })
  }

  /** wake the SUBSCRIBEs waiting for the owner: those now decided, or all of them (`all`: it failed) */
  #wake (p: Presentity, all = false): void {
    for (const [w, list] of [...p.waiters]) {
      if (!all && !this.#decided(p, w)) continue
      p.waiters.delete(w)
      for (const f of list) f()
    }
  }

  #startBackend (p: Presentity): void {
    if (p.owner === undefined) return
    const b: Backend = {
      node: p.owner,
      callId: randomBytes(12).toString('base64url') + '@sipmesh',
      localTag: generateTag(),
      cseq: 0,
      inflight: false,
      ended: false,
      established: false,
      queued: new Set()
    }
    for (const s of p.subs) if (s.kind === 'ua') b.queued.add(s.watcher)
    for (const w of p.wanted.keys()) b.queued.add(w)
    p.backend = b
    p.backendState = 'pending'
    p.lastStart = Date.now()
    this.#backends.set(b.callId, p)
    this.#pump(p, b)
  }

  #clearBackend (b: Backend): void {
    b.ended = true
    clearTimeout(b.refreshTimer)
    clearTimeout(b.retryTimer)
  }

  /** end our back-end subscription (unsubscribe, best effort) */
  #endBackend (p: Presentity, b: Backend): void {
    const wasUp = b.established && !b.ended
    this.#clearBackend(b)
    this.#backends.delete(b.callId)
    if (p.backend === b) p.backend = undefined
    if (wasUp) void this.#sendBackend(p, b, [], 0).catch(() => {})
  }

  /** send what the back-end subscription needs next: the initial SUBSCRIBE, queued identities, a refresh */
  #pump (p: Presentity, b: Backend, refresh = false): void {
    if (b.inflight || b.ended) return
    if (b.established && b.queued.size === 0 && !refresh) return
    const batch = [...b.queued].slice(0, MAX_WATCHERS_PER_REQUEST)
    for (const w of batch) b.queued.delete(w)
    b.inflight = true
    this.#sendBackend(p, b, batch, this.#backendExpires).then((r) => {
      b.inflight = false
      if (b.ended) return
      this.#backendResponse(p, b, batch, r)
    }, (err: unknown) => {
      b.inflight = false
      this.#log.debug('back-end SUBSCRIBE failed', { aor: p.aor, err: String(err) })
      for (const w of batch) b.queued.add(w)
      this.#backendFailed(p, b)
    })
  }

  async #sendBackend (p: Presentity, b: Backend, watchers: string[], expires: number): Promise<SipResponse> {
    const t = this.#t
    if (t === undefined) throw new Error('presence agent not started')
    b.cseq++
    const domain = p.aor.slice(p.aor.lastIndexOf('@') + 1)
    const h = new Headers()
    h.append('Max-Forwards', '70')
    h.append('From', `<sip:${domain}>;tag=${b.localTag}`)
    h.append('To', b.remoteTag === undefined ? `<${p.aor}>` : `<${p.aor}>;tag=${b.remoteTag}`)
    h.append('Call-ID', b.callId)
    h.append('CSeq', `${b.cseq} SUBSCRIBE`)
    h.append('Contact', this.#contactFor(t.mesh(b.node)))
    h.append('Event', 'presence')
    h.append('Accept', PIDF_CONTENT_TYPE)
    h.append('Expires', String(expires))
    h.append(PATH_HEADER, formatPath([this.#registry.nodeId]))
    if (watchers.length > 0) h.append(WATCHERS_HEADER, formatWatchers(watchers))
    const uri = b.remoteTarget ?? p.aor
    return await this.#send(new SipRequest('SUBSCRIBE', uri, h), t.mesh(b.node))
  }

  #backendResponse (p: Presentity, b: Backend, batch: string[], r: SipResponse): void {
    if (r.status >= 300) this.#log.debug('back-end SUBSCRIBE refused', { aor: p.aor, node: b.node, status: r.status })
    if (r.status >= 200 && r.status < 300) {
      const to = r.headers.get('To')
      if (!b.established) {
        b.remoteTag = tagOf(to)
        try { b.remoteTarget = parseNameAddr(r.headers.get('Contact') ?? '').uri } catch { b.remoteTarget = undefined }
        b.established = true
      }
      p.backendState = 'accepted'
      const decisions = parseDecisions(r.headers.get(AUTHORIZATION_HEADER))
      for (const [w, d] of decisions) p.ownerDecisions.set(w, d)
      // identities the owner did not answer for stay undecided (pending); ask again later
      let expires = this.#backendExpires
      try { expires = parseExpiresHeader(r.headers.get('Expires')) ?? expires } catch { /* keep ours */ }
      clearTimeout(b.refreshTimer)
      b.refreshTimer = setTimeout(() => { this.#pump(p, b, true) }, Math.max(1000, expires * 1000 * 0.8))
      b.refreshTimer.unref?.()
      this.#wake(p)
      if (decisions.size > 0) this.#notifyWatchers(p, new Set(decisions.keys()))
      this.#pump(p, b)
      return
    }
    if (r.status === 482) {
      p.backendState = 'loop'
      this.#clearBackend(b)
      this.#wake(p, true)
      this.#notifyAll(p)
      return
    }
    if (r.status === 403 || r.status === 603) {
      // the owner denied: every watcher of the batch is denied here too (draft 7.1.2.2)
      for (const w of batch) p.ownerDecisions.set(w, 'block')
      this.#wake(p)
      this.#notifyWatchers(p, new Set(batch))
      if (!b.established) { this.#clearBackend(b); this.#backends.delete(b.callId); p.backend = undefined }
      return
    }
    for (const w of batch) b.queued.add(w)
    if (r.status === 404 || r.status === 481 || r.headers.has(NOT_OWNER_HEADER)) {
      // the owner moved (or forgot us): find it again
      this.#reresolve(p, b)
      return
    }
    this.#backendFailed(p, b)
  }

  #backendFailed (p: Presentity, b: Backend): void {
    p.backendState = 'failed'
    this.#wake(p, true)
    clearTimeout(b.retryTimer)
    b.retryTimer = setTimeout(() => { this.#reresolve(p, b) }, this.#retryMs)
    b.retryTimer.unref?.()
  }

  /** the back-end subscription ended or failed: find the owner again (watchers keep their state meanwhile) */
  #reresolve (p: Presentity, b: Backend): void {
    this.#endBackend(p, b)
    this.#registry.resolve(p.aor, { fresh: true }).then((route) => {
      if (this.#presentities.get(p.aor) !== p || !this.#running) return
      // the registry's watch may have re-routed it meanwhile
      if (p.backend !== undefined && !p.backend.ended) return
      if (route !== undefined && route.node === b.node && Date.now() - p.lastStart < this.#retryMs) {
        // the same owner again, just after it ended or refused us: retry there a little later
        clearTimeout(p.retryTimer)
        p.retryTimer = setTimeout(() => {
          if (this.#presentities.get(p.aor) !== p || (p.backend !== undefined && !p.backend.ended)) return
          this.#reroute(p, route)
        }, this.#retryMs)
        p.retryTimer.unref?.()
        return
      }
      this.#reroute(p, route)
    }, () => {
      if (this.#presentities.get(p.aor) === p) this.#backendFailed(p, b)
    })
  }

  #backendNotify (request: SipRequest, tx: ServerTransaction, p: Presentity): void {
    const b = p.backend
    if (b === undefined) { this.#respond(tx, createResponse(request, 481)); return }
    const ev = parseEvent(request.headers.get('Event'))
    if (ev?.pkg !== 'presence') { this.#respond(tx, createResponse(request, 489, undefined, [['Allow-Events', EVENT_PACKAGES.join(', ')]])); return }
    const state = parseSubscriptionState(request.headers.get('Subscription-State'))
    if (state === undefined) { this.#respond(tx, createResponse(request, 400, 'Bad Subscription-State')); return }
    this.#respond(tx, createResponse(request, 200))
    if (b.remoteTag === undefined) b.remoteTag = tagOf(request.headers.get('From'))
    const decisions = parseDecisions(request.headers.get(AUTHORIZATION_HEADER))
    for (const [w, d] of decisions) p.ownerDecisions.set(w, d)
    if (state.state === 'terminated') {
      this.#clearBackend(b)
      this.#backends.delete(b.callId)
      if (p.backend === b) p.backend = undefined
      if (state.reason === 'rejected') {
        for (const s of p.subs) if (s.kind === 'ua') p.ownerDecisions.set(s.watcher, 'block')
        this.#notifyAll(p)
        return
      }
      // deactivated (the user moved), timeout, noresource, …: find the owner again and re-subscribe
      this.#reresolve(p, { ...b, established: false })
      return
    }
    if (request.body.length > 0) {
      const ct = (request.headers.get('Content-Type') ?? '').split(';')[0].trim().toLowerCase()
      // only the real document counts (the owner sends the neutral one while it allows nobody here)
      if (ct === PIDF_CONTENT_TYPE && request.headers.get(VIEW_HEADER) === 'full') p.remoteDoc = Buffer.from(request.body)
    }
    p.backendState = 'accepted'
    this.#wake(p)
    this.#notifyAll(p)
  }

  #notifyWatchers (p: Presentity, watchers: Set<string>): void {
    for (const s of [...p.subs]) if (s.kind === 'ua' && watchers.has(s.watcher)) this.#notify(s)
  }
}

class EventError extends Error {
  static override name = 'EventError'
  override name = 'EventError'
}

class TooBriefError extends Error {
  static override name = 'TooBriefError'
  override name = 'TooBriefError'
  readonly min: number
  constructor (min: number) { super('interval too brief'); this.min = min }
}

/** the rate-limit key of a source address: lower case, `::ffff:a.b.c.d` as `a.b.c.d` */
function sourceHost (host: string): string {
  const h = host.toLowerCase()
  return h.startsWith('::ffff:') && h.includes('.') ? h.slice(7) : h
}

class RateLimitedError extends SipStatusError {
  constructor () { super(503, 'Service Unavailable (rate limited)') }
}

/**
 * A copy of a string that does not keep its source alive: header values are slices of the whole
 * received message, which a long-lived subscription would otherwise retain (~0.5-1 KB each).
 */
function own (s: string): string {
  return s.length < 13 ? s : (' ' + s).slice(1)
}

function dialogKey (callId: string, localTag: string, remoteTag: string): string {
  return `${callId}\n${localTag}\n${remoteTag}`
}

function tagOf (value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  try {
    const t = parseNameAddr(value).params.tag
    return typeof t === 'string' && t !== '' ? t : undefined
  } catch { return undefined }
}

function stripTag (value: string): string {
  try {
    const n = parseNameAddr(value)
    return `<${n.uri}>`
  } catch { return value }
}

const BRANCH_PREFIX = 'z9hG4bKpa' + randomBytes(5).toString('base64url')
let branchCounter = 0
function newBranch (): string {
  branchCounter = (branchCounter + 1) % Number.MAX_SAFE_INTEGER
  return BRANCH_PREFIX + branchCounter.toString(36)
}
