/**
 * The proxy core (RFC 3261 section 16) of a sipmesh node: it decides, for every request that is
 * not a retransmission, whether this node answers it (REGISTER, OPTIONS to the node), delivers it
 * to the registered contacts of an AoR it owns (forking), or forwards it over the mesh to the
 * node that owns the AoR, and relays the responses back the same way.
 *
 * How a mesh hop appears in Via: `Via: SIP/2.0/MESH <our SIP host:port>;branch=z9hG4bK…;node=<peer id>`.
 * The transport token `MESH` says the hop went over the PeerChannel; `node` names the node that
 * added it. The owner node answers over the same PeerChannel (its server transaction remembers
 * the flow), so responses retrace the path; a stray response (no transaction left) is sent to the
 * node named in the next Via. Record-Route entries of ours carry the same `node` parameter so
 * mid-dialog requests find the mesh hop again.
 *
 * Record-Route and transports (RFC 3261 16.6 step 4, RFC 5658): an entry of ours names the
 * transport the user agent on that side uses (`transport=tcp`, `transport=ws` with the WebSocket
 * address; UDP, the default, is left implicit), so a caller whose INVITE came over TCP sends its
 * ACK and BYE over TCP too. When the request arrived from a user agent on one transport and leaves
 * to one on another (a call between two users of this node), two entries are inserted, the one for
 * the outgoing side on top: each user agent reaches the node by the entry it sees first, and the
 * node consumes both. A mesh side needs no entry of its own: nodes follow the `node` parameter.
 *
 * Loop detection (16.3 item 4, 16.6 item 8): our branches end in `.<hash>` of the fields that
 * identify the request as received (Request-URI, From tag, To tag, Call-ID, CSeq number, Route,
 * Proxy-Require); a request that carries one of our Vias with the hash it would get again is a
 * loop (482). A spiral (the Request-URI changed) hashes differently and passes.
 *
 * Routes (16.4, 16.12): a top Route naming this node is consumed. What is left is followed only
 * for a mesh peer, or for an in-dialog request from a user agent whose route set we are in and
 * whose other entries are all mesh Record-Route entries (`mayFollowRoute`, record-route.ts); anything else is
 * refused 403 (an ACK: dropped), so a user agent can never make the node send to a socket of
 * its choosing.
 *
 * Identity (RFC 3325): P-Asserted-Identity is removed from requests that come from user agents
 * and set to the From AoR (when it is of a served domain) on what this node forwards; requests
 * from the mesh keep theirs (a mesh peer is trusted). Without digest authentication the From AoR
 * is taken on the UA's word; with it (`authenticate`, auth/), only the authenticated identity is
 * asserted, and requests nobody authenticated (a foreign From, mid-dialog) get none.
 *
 * Peer networks (peering.ts): a request for a peered domain leaves from this node over mutually
 * authenticated TLS to the peer (`#toPeer`); a request from a peer (a TLS flow whose certificate
 * names a peer domain) must have its From in that domain, is never challenged (the certificate
 * authenticated it), and reaches users of our domains (routed like any request) or the dialogs we
 * Record-Routed, nothing else. Internal `Sipmesh-*` headers are removed from what a peer sends
 * (`stripInternalHeaders`), except the presence agent's back-end headers on a SUBSCRIBE it takes
 * itself (presence/peering.ts checks them), so a peer never passes for a node of the mesh; and a
 * peer's `Sipmesh-Not-Owner` answer is not followed. Record-Route entries facing a peer carry no `node` parameter (the
 * peer's mesh would read it as one of its own nodes): the peer reaches us by the entry's address.
 * An in-dialog request from one of our user agents may follow a Route towards a peer only over
 * TLS to a server whose certificate names a configured peer.
 *
 * Stale routes: a node that receives a request from the mesh for an AoR it does not own answers
 * `404 Not Owner` with `Sipmesh-Not-Owner: <its id>`; the sending node then re-resolves with
 * `fresh: true` and retries once (locally when the AoR is now ours).
 */
import { SipRequest, SipResponse } from '../codec/message.ts'
import { createResponse } from '../codec/response.ts'
import { cutTopVia } from '../codec/wire.ts'
import { parseVia, formatVia, prependVia, topVia } from '../codec/via.ts'
import { parseUri, aorOf, type SipUri } from '../codec/uri.ts'
import { parseNameAddr } from '../codec/name-addr.ts'
import { SipStatusError } from '../errors.ts'
import type { Logger, Registry, Route } from '../ports.ts'
import type { Registrar, Binding, Reply } from '../registrar/registrar.ts'
import type { ClientTransactionUser, TransactionCore, TransactionLayer, ServerTransaction } from '../transaction/layer.ts'
import type { InviteServerTransaction } from '../transaction/invite-server-transaction.ts'
import { responseForError } from './error-response.ts'
import { Timer } from '../transaction/timers.ts'
import { KeyTable } from '../transaction/key-table.ts'
import { ResponseContext, bestResponse, type Branch, type ResponseContextHooks } from './response-context.ts'
import { MESH_TRANSPORT, type Connector, type Flow } from './flow.ts'
import { DialogContacts } from './dialog-contacts.ts'
import { KeyedLock } from '../offline/keyed-lock.ts'
import { LogSampler } from '../transport/limits.ts'
import { headerDomain, stripInternalHeaders, PEER_BACKEND_HEADERS, type PeerNetworks } from './peering.ts'

export { stripInternalHeaders }
import { NodeAddress } from './address.ts'
import type { NodeAddressInit } from './address.ts'
import { observeInvite, type DialogObserver } from './dialog-observer.ts'

export type { ProxiedDialogEvent, DialogObserver } from './dialog-observer.ts'
import { cancelFor } from './cancel.ts'
import { Delivery } from './delivery.ts'
import { cloneMessage, generateBranch } from './outgoing.ts'
import { ContactFlows, tooLargeForUdp, isThenable, UDP_MESSAGE_LIMIT } from './contact-flows.ts'

export { UDP_MESSAGE_LIMIT }
import { IdentityAsserter } from './identity.ts'
import { findLoop, loopHashOf } from './loop.ts'
import { consumeOurRoute, mayFollowRoute, recordRoute } from './record-route.ts'
import { hasToTag, safeUri } from './message-reading.ts'

export { loopHashOf }

/** Methods this node knows (anything else: 501). */
export const KNOWN_METHODS: ReadonlySet<string> = new Set([
  'INVITE', 'ACK', 'BYE', 'CANCEL', 'OPTIONS', 'REGISTER', 'MESSAGE', 'SUBSCRIBE', 'NOTIFY',
  'PUBLISH', 'INFO', 'UPDATE', 'PRACK', 'REFER'
])
/**
 * Allow of the OPTIONS answer and of every 405: RFC 3261 20.5 (when present, Allow lists every
 * method the element understands, ACK and CANCEL included), so a 405 never contradicts OPTIONS.
 * At its own address the node answers OPTIONS and REGISTER; the rest it relays for AoRs.
 */
const ALLOW = [...KNOWN_METHODS].join(', ')
/** Methods relayed to the user agents of an AoR. */
const AOR_METHODS: ReadonlySet<string> = new Set(['INVITE', 'BYE', 'OPTIONS', 'MESSAGE', 'SUBSCRIBE', 'NOTIFY', 'PUBLISH', 'INFO', 'UPDATE', 'PRACK', 'REFER'])
/** Methods that may create a dialog: we Record-Route them. */
const DIALOG_METHODS: ReadonlySet<string> = new Set(['INVITE', 'SUBSCRIBE', 'REFER'])

export const NOT_OWNER_HEADER = 'Sipmesh-Not-Owner'

/** Flows a `sips:` request may take (RFC 5630): TLS, secure WebSocket, and the Noise-encrypted mesh. */
const SECURE_TRANSPORTS: ReadonlySet<string> = new Set(['TLS', 'WSS', MESH_TRANSPORT])

/**
 * Longest Request-URI interpreted (414 above, RFC 3261 21.4.12): room for a GRUU or a contact
 * with many parameters; an AoR the registry refuses below it (over 256 characters) gets 400.
 */
export const MAX_REQUEST_URI_LENGTH = 4096

/**
 * Seam for issue 5 (offline store): asked when an AoR of a served domain has no live binding.
 * Returning a reply (for example 202 after storing a MESSAGE) answers the request; undefined
 * falls back to 480 (user known here) or 404.
 */
export type UnavailableHandler = (request: SipRequest, aor: string) => Promise<Reply | undefined>

/**
 * Seam for the offline store (issue 10 item 3): asked for every MESSAGE to an AoR of ours, in
 * arrival order, before it is routed. While this node still holds stored messages for the user
 * (`holds`, synchronous), the MESSAGE is stored behind them (`append` resolves with the reply,
 * 202) instead of routed, so a live MESSAGE cannot overtake the backlog being delivered.
 */
export interface Backlog {
  holds (aor: string): boolean
  append (request: SipRequest, aor: string): Promise<Reply>
}

/**
 * Seam for the presence agent (issue 4): offered every new request after validation and Route
 * preprocessing, before routing. Returning true means it took the request (and answers `tx`).
 * `uri`: the Request-URI as the proxy parsed it (read it, never change it).
 */
export type RequestInterceptor = (request: SipRequest, tx: ServerTransaction, flow: Flow, fromMesh: boolean, uri?: Readonly<SipUri>) => boolean

/**
 * Seam for the presence agent's PUBLISH server (RFC 3903; issue 10 items 1 and 2): offered every
 * request whose method the owner serves itself (`OWNER_METHODS`) once routing found that this node
 * owns its AoR (`owned`) or that nobody does, where it would otherwise be delivered to the AoR's
 * contacts or answered as unavailable. Resolves true when it took the request (and answers `tx`).
 */
export type OwnerHandler = (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: string, owned: boolean) => Promise<boolean>

/**
 * Methods served by the node that owns the AoR, never by the AoR's user agents: a PUBLISH goes to
 * the event state compositor (the presence agent), whatever contacts the user has registered.
 */
const OWNER_METHODS: ReadonlySet<string> = new Set(['PUBLISH'])

/**
 * Seam for digest authentication (auth/, RFC 3261 22): offered every new request from a user
 * agent (never from the mesh) after validation, before the interceptor. `response` answers it
 * through its server transaction (401/407 challenge, 403, 400); otherwise `identity` is the
 * authenticated AoR, the only one asserted on what is forwarded (undefined: none).
 */
export type RequestAuthenticator = (request: SipRequest, toNode: boolean, routed: boolean) => { response: SipResponse } | { identity: string | undefined }

export interface ProxyCoreComponents {
  registry: Registry
  registrar: Registrar<Flow>
  logger: Logger
  /** a flow to a mesh node over the PeerChannel */
  mesh: (node: string) => Flow
  /** flows to user agents by address */
  connector: Connector
}

/** our address on the wire (`NodeAddressInit`: host, port, aliases, the WS/TLS/WSS ports) and the rest */
export interface ProxyCoreInit extends NodeAddressInit {
  domains: Iterable<string>
  /** peer networks (peering.ts); none: requests for other domains are refused */
  peers?: PeerNetworks
  onUnavailable?: UnavailableHandler
  /**
   * issue 5: a MESSAGE timed out (408) at a local device's contact; a reply (202 after storing it)
   * takes the place of that branch's 408
   */
  onTimeout?: UnavailableHandler
  /** issue 10 item 3: a MESSAGE for a user with stored messages here joins them */
  backlog?: Backlog
  /** the presence agent's interceptor (SUBSCRIBE, NOTIFY, PUBLISH it serves) */
  intercept?: RequestInterceptor
  /** the presence agent's PUBLISH server where this node owns the AoR, or nobody does */
  atOwner?: OwnerHandler
  /** digest authentication of user agents; absent: none (the From AoR is asserted) */
  authenticate?: RequestAuthenticator
  /** INVITE dialogs proxied for our users (the dialog event package); absent: nobody listens */
  dialogs?: DialogObserver
  /** timer C of a forwarded INVITE (RFC 3261 16.6 step 11), ms. @default 180000 */
  timerCMs?: number
}

export interface ProxyStats {
  requests: number
  forwardedMesh: number
  /** requests sent to a peer network */
  forwardedPeer: number
  deliveredLocal: number
  answeredLocally: number
  loops: number
  notOwnerRetries: number
  responses: Record<string, number>
}

export class ProxyCore implements TransactionCore<Flow> {
  readonly #registry: Registry
  readonly #registrar: Registrar<Flow>
  readonly #log: Logger
  /** `forwarded request failed` lines: at most 20 a second, so that a dead node cannot flood the log */
  readonly #failures = new LogSampler(20)
  readonly #mesh: (node: string) => Flow
  readonly #connector: Connector
  /** flows to contacts and Route targets (contact-flows.ts) */
  readonly #flows: ContactFlows
  /** requests this node originates (delivery.ts) */
  readonly #delivery: Delivery
  readonly #domains: Set<string>
  readonly #peers: PeerNetworks | undefined
  /** who we are on the wire (address.ts) */
  readonly #us: NodeAddress
  readonly #onUnavailable: UnavailableHandler | undefined
  readonly #onTimeout: UnavailableHandler | undefined
  readonly #intercept: RequestInterceptor | undefined
  readonly #backlog: Backlog | undefined
  readonly #atOwner: OwnerHandler | undefined
  readonly #authenticate: RequestAuthenticator | undefined
  readonly #dialogs: DialogObserver | undefined
  /** RFC 3325 P-Asserted-Identity on what we forward (identity.ts) */
  readonly #identity: IdentityAsserter
  readonly #timerC: number
  /**
   * the response contexts of the server transactions being answered, by the transaction's key (a
   * KeyTable, not a Map: one comes and goes per relayed request, see transaction/key-table.ts);
   * read through #contextOf, which checks that the context is this transaction's
   */
  readonly #contexts = new KeyTable<ResponseContext>()
  readonly #resolving = new Map<string, Promise<Route | undefined>>()
  /** MESSAGE routing per recipient AoR, in arrival order */
  readonly #inOrder = new KeyedLock()
  /** the AoR whose offline store may keep a MESSAGE when every branch failed (a device timed out) */
  readonly #rescueAor = new WeakMap<SipRequest, string>()
  /** the Contacts of the user agents of dialogs we Record-Routed (callers and callees), for requests inside them */
  readonly #dialogContacts = new DialogContacts()
  #layer: TransactionLayer<Flow> | undefined
  readonly stats: ProxyStats = { requests: 0, forwardedMesh: 0, forwardedPeer: 0, deliveredLocal: 0, answeredLocally: 0, loops: 0, notOwnerRetries: 0, responses: {} }

  constructor (components: ProxyCoreComponents, init: ProxyCoreInit) {
    this.#registry = components.registry
    this.#registrar = components.registrar
    this.#log = components.logger
    this.#mesh = components.mesh
    this.#connector = components.connector
    this.#flows = new ContactFlows(components.connector, components.mesh, components.logger)
    this.#domains = new Set([...init.domains].map(d => d.toLowerCase()))
    this.#us = new NodeAddress(components.registry, init)
    this.#delivery = new Delivery({ registrar: components.registrar, flows: this.#flows, us: this.#us, mesh: components.mesh, log: components.logger, layer: () => this.#tl })
    this.#peers = init.peers
    this.#onUnavailable = init.onUnavailable
    this.#onTimeout = init.onTimeout
    this.#intercept = init.intercept
    this.#backlog = init.backlog
    this.#atOwner = init.atOwner
    this.#authenticate = init.authenticate
    this.#identity = new IdentityAsserter(this.#domains, init.authenticate !== undefined)
    this.#dialogs = init.dialogs
    this.#timerC = init.timerCMs ?? 180_000
  }

  attach (layer: TransactionLayer<Flow>): void { this.#layer = layer }

  get #tl (): TransactionLayer<Flow> {
    if (this.#layer === undefined) throw new Error('proxy core not attached to a transaction layer')
    return this.#layer
  }

  // ---- TransactionCore -------------------------------------------------------------------

  onRequest (request: SipRequest, tx: ServerTransaction, flow: Flow): void {
    this.stats.requests++
    // synchronous where nothing waits (a MESSAGE to a contact at hand): no promise per message then
    let pending: void | Promise<void>
    try {
      pending = this.#handle(request, tx, flow)
    } catch (err) {
      this.#respond(tx, responseForError(request, err, this.#log))
      return
    }
    if (pending !== undefined) pending.catch((err: unknown) => { this.#respond(tx, responseForError(request, err, this.#log)) })
  }

  onAck (ack: SipRequest, flow: Flow): void {
    // the ACK of a 2xx is end-to-end: forward it statelessly along the route (16.11)
    this.#forwardStateless(ack, flow).catch((err: unknown) => { this.#log.debug('ACK dropped', { err: String(err) }) })
  }

  onCancel (cancel: SipRequest, tx: ServerTransaction, invite: InviteServerTransaction<SipRequest, SipResponse> | undefined, _flow: Flow): void {
    // 16.10: answer the CANCEL, then cancel the pending branches of the INVITE
    if (invite === undefined) {
      this.#respond(tx, createResponse(cancel, 481, undefined, undefined, { toTag: true }))
      return
    }
    this.#respond(tx, createResponse(cancel, 200, undefined, undefined, { toTag: true }))
    invite.markCancelled()
    const ctx = this.#contextOf(invite)
    if (ctx !== undefined) ctx.cancel()
    else if (invite.finalResponse === undefined) this.#respond(invite, createResponse(invite.request, 487, undefined, undefined, { toTag: true }))
  }

  onStrayResponse (response: SipResponse, _flow: Flow): void {
    // 16.7 / 16.11: a response with no transaction (a retransmitted 2xx) goes on statelessly
    try {
      const via = topVia(response.headers)
      if (via === undefined || !this.#us.isOurVia(via)) return
      const copy = cloneMessage(response) as SipResponse
      copy.headers.shift('Via')
      const next = copy.headers.get('Via')
      if (next === undefined) return
      const nv = parseVia(next)
      const flow = nv.transport === MESH_TRANSPORT && typeof nv.params.node === 'string'
        ? this.#mesh(nv.params.node)
        : undefined
      if (flow !== undefined) { Promise.resolve(flow.send(copy)).catch(() => {}); return }
      if (nv.transport === 'UDP' || nv.transport === 'TCP' || nv.transport === 'TLS') {
        const port = typeof nv.rport === 'number' ? nv.rport : nv.port ?? (nv.transport === 'TLS' ? 5061 : 5060)
        Promise.resolve(this.#connector.connect({ transport: nv.transport, host: nv.received ?? nv.host, port }))
          .then(async f => { await f.send(copy) }).catch(() => {})
      }
    } catch (err) {
      this.#log.debug('stray response dropped', { err: String(err) })
    }
  }

  // ---- request handling ------------------------------------------------------------------

  /** returns a promise only when something is waited for (a lookup, a connection, the registrar) */
  #handle (request: SipRequest, tx: ServerTransaction, flow: Flow): void | Promise<void> {
    // the loop hash covers the request as received (16.6 step 8), before we change anything. A
    // REGISTER with no Route and no Proxy-Authorization (what we may consume or strip) is hashed
    // only when needed (our Via in it, or forwarded to another domain): nothing hashed changes
    // before then, and the registrar answers nearly all of them without it (issue 9)
    // Any other request with neither is hashed after the presence agent's interceptor, which
    // answers most SUBSCRIBEs and PUBLISHes without it (issue 11): nothing hashed changes before
    // then either (#checkLoop hashes on its own when it meets our Via)
    const h = request.headers
    const early = h.has('Route') || h.has('Proxy-Authorization')
    if (early) request.loopHash = loopHashOf(request)
    const fromMesh = flow.transport === MESH_TRANSPORT
    // a peer network, by its certificate (peering.ts)
    const peer = fromMesh || this.#peers === undefined ? undefined : flow.peerDomain
    // RFC 3325: identity from user agents is never trusted (a trusted peer's is kept by `admit`)
    if (!fromMesh && peer === undefined) request.headers.delete('P-Asserted-Identity')
    // the id of a stored message (issue 5) is trusted from mesh peers only
    if (!fromMesh) request.headers.delete('Sipmesh-Message-Id')
    if (request.method === 'INVITE') this.#respond(tx, createResponse(request, 100))
    // a peer speaks for users of its own domain only, and never as a node of the mesh
    if (peer !== undefined) {
      this.#peers?.admit(request, peer)
      stripInternalHeaders(request, request.method === 'SUBSCRIBE' || request.method === 'NOTIFY' ? PEER_BACKEND_HEADERS : undefined)
    }

    // 16.3 request validation
    if (!KNOWN_METHODS.has(request.method)) throw new SipStatusError(501, 'Not Implemented')
    // RFC 3261 21.4.12: a Request-URI longer than we interpret (no AoR of ours is near it)
    if (request.uri.length > MAX_REQUEST_URI_LENGTH) throw new SipStatusError(414, 'Request-URI Too Long')
    const maxForwards = readMaxForwards(request)
    // RFC 3261 7.4.1 (a body needs its Content-Type), RFC 3428 section 7 (MESSAGE carries one)
    if (request.method === 'MESSAGE' && request.body.byteLength > 0 && !request.headers.has('Content-Type')) {
      throw new SipStatusError(400, 'Missing Content-Type')
    }
    if (findLoop(request, this.#us)) {
      this.stats.loops++
      throw new SipStatusError(482, 'Loop Detected')
    }
    const proxyRequire = request.headers.getAll('Proxy-Require')
    if (proxyRequire.length > 0) {
      this.#respond(tx, createResponse(request, 420, 'Bad Extension', [['Unsupported', proxyRequire.join(', ')]], { toTag: true }))
      return
    }

    // 16.4 route information preprocessing: our own Route entry is removed
    const consumedRoute = consumeOurRoute(request, this.#us)

    let uri: SipUri
    try {
      uri = parseUri(request.uri)
    } catch {
      throw new SipStatusError(400, 'Malformed Request-URI')
    }
    if (uri.scheme !== 'sip' && uri.scheme !== 'sips') throw new SipStatusError(416, 'Unsupported URI Scheme')
    const host = uri.host.toLowerCase()
    const toNode = this.#us.isOurUri(uri) || (this.#domains.has(host) && uri.user === undefined)
    if (!fromMesh && peer === undefined && this.#authenticate !== undefined) {
      const verdict = this.#authenticate(request, toNode, consumedRoute)
      if ('response' in verdict) { this.#respond(tx, verdict.response); return }
      if (verdict.identity !== undefined) this.#identity.remember(request, verdict.identity)
    }
    if (this.#intercept?.(request, tx, flow, fromMesh, uri) === true) return
    if (!early && request.method !== 'REGISTER') request.loopHash ??= loopHashOf(request)
    // what the agent did not take goes on as a plain request: no internal header of a peer's passes
    if (peer !== undefined) stripInternalHeaders(request)
    if (request.method === 'BYE' && this.#dialogs !== undefined) this.#dialogs({ kind: 'ended', callId: request.headers.get('Call-ID') ?? '' })

    // requests to the node itself (and REGISTER, whatever its Request-URI user part)
    if (request.method === 'REGISTER' && (toNode || this.#domains.has(host))) {
      if (fromMesh || peer !== undefined) throw new SipStatusError(403, 'REGISTER Is Not Relayed')
      return this.#register(request, tx, flow, uri)
    }
    if (toNode && request.headers.get('Route') === undefined) {
      this.stats.answeredLocally++
      if (request.method === 'OPTIONS') {
        this.#respond(tx, createResponse(request, 200, undefined, [['Allow', ALLOW], ['Accept', 'application/sdp, text/plain, application/pidf+xml']], { toTag: true }))
        return
      }
      this.#respond(tx, createResponse(request, 405, undefined, [['Allow', ALLOW]], { toTag: true }))
      return
    }

    if (maxForwards === 0) throw new SipStatusError(483, 'Too Many Hops')

    // a Route left: a mid-dialog request following the recorded route, when it may (16.4, 16.12)
    const nextRoute = request.headers.get('Route')
    if (nextRoute !== undefined) return this.#followRoute(request, tx, flow, nextRoute, fromMesh, peer, consumedRoute)

    if (!this.#domains.has(host) && peer === undefined && this.#peers?.has(host) === true) {
      return this.#toPeer(request, tx, flow, host, fromMesh)
    }
    if (!this.#domains.has(host)) return this.#toDialogParty(request, tx, flow, fromMesh, consumedRoute)
    if (!AOR_METHODS.has(request.method)) {
      this.#respond(tx, createResponse(request, 405, undefined, [['Allow', ALLOW]], { toTag: true }))
      return
    }

    const aor = aorOf(uri)
    // pager IM keeps its order per recipient (issue 10 item 3): a MESSAGE is routed only after the
    // one received before it for the same AoR was sent on (its response is not waited for) or
    // answered here (stored: 202, or refused), so a route lookup the first ones wait on cannot let
    // later ones overtake them. Waiting for the store costs nothing: the offline store writes one
    // user's messages one after the other anyway. Other recipients are not held up. While this
    // node holds stored messages for the user, a new one is stored behind them, not sent past them.
    // With nothing queued for the AoR the MESSAGE is routed at once, and holds the AoR's turn only
    // when its routing waits for something (no closure or promise for one sent on at once).
    if (request.method === 'MESSAGE') {
      if (!this.#inOrder.busy(aor)) {
        const pending = this.#routeMessage(request, tx, flow, aor, fromMesh)
        return pending === undefined ? undefined : this.#inOrder.run(aor, async () => { await pending })
      }
      return this.#inOrder.run(aor, async () => { await this.#routeMessage(request, tx, flow, aor, fromMesh) })
    }
    return this.#routeAor(request, tx, flow, aor, fromMesh)
  }

  /** REGISTER to a served domain: the registrar answers */
  #register (request: SipRequest, tx: ServerTransaction, flow: Flow, uri: SipUri): void | Promise<void> {
    // answered in this turn when the registrar answers at once (a refresh of a claim held here),
    // else one reaction on its answer, not an async function's frame and its await per REGISTER
    const reply = this.#registrar.handleNow(request, flow, uri)
    if (reply instanceof Promise) return reply.then(r => { this.#reply(tx, request, r) })
    this.#reply(tx, request, reply)
  }

  /** a request with a Route left once ours was consumed (16.4, 16.12) */
  async #followRoute (request: SipRequest, tx: ServerTransaction, flow: Flow, nextRoute: string, fromMesh: boolean, peer: string | undefined, consumedRoute: boolean): Promise<void> {
    const next = safeUri(parseNameAddr(nextRoute).uri)
    const target = mayFollowRoute(request, fromMesh, consumedRoute)
      ? await this.#flows.routeFlow(next)
      : await this.#peerRouteFlow(request, next, peer === undefined && !fromMesh && consumedRoute)
    if (!fromMesh) this.#identity.assert(request)
    this.#forward(request, tx, flow, [{ uri: request.uri, flow: target }])
  }

  /** a MESSAGE, in its AoR's turn: behind the user's stored messages while there are any, else routed */
  #routeMessage (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: string, fromMesh: boolean): void | Promise<void> {
    if (this.#backlog?.holds(aor) === true) {
      if (!fromMesh) this.#identity.assert(request)
      return this.#toBacklog(request, tx, aor, this.#backlog)
    }
    return this.#routeAor(request, tx, flow, aor, fromMesh)
  }

  async #toBacklog (request: SipRequest, tx: ServerTransaction, aor: string, backlog: Backlog): Promise<void> {
    this.#reply(tx, request, await backlog.append(request, aor))
  }

  /** a request whose Request-URI is outside our domains: one of our user agents' contacts, or refused */
  async #toDialogParty (request: SipRequest, tx: ServerTransaction, flow: Flow, fromMesh: boolean, consumedRoute: boolean): Promise<void> {
    // a Request-URI outside our domains may be the contact of one of our user agents (mid-dialog):
    // from the mesh, or from a user agent whose dialog we Record-Routed (our Route consumed, To tag)
    if (fromMesh || (consumedRoute && hasToTag(request))) {
      const binding = this.#registrar.findByContact(request.uri)
      if (binding !== undefined) {
        if (!fromMesh) this.#identity.assert(request)
        this.#forward(request, tx, flow, [{ uri: request.uri, flow: await this.#flows.bindingFlow(binding) }])
        return
      }
      // or the remote target of a dialog we Record-Routed, whatever the registrar holds: a
      // caller's Contact (it may never have registered) or the Contact a callee answered with
      // (it may differ from the one it registered). Sent only over the flow that user agent
      // used in the dialog's first transaction (the caller's UDP source or connection; the
      // flow the INVITE reached the callee on), never to the address its Contact names, so a
      // made-up Contact cannot aim the node anywhere
      const party = this.#dialogContacts.find(request.uri)
      if (party !== undefined) {
        let target = party.flow
        if (!target.open) {
          // a peer's connection closed: open one to the peer again (its address list, its certificate)
          if (target.peerDomain === undefined || this.#peers === undefined) throw new SipStatusError(480, 'Temporarily Unavailable')
          target = await this.#peers.connect(target.peerDomain, this.#connector)
        }
        if (!fromMesh) this.#identity.assert(request)
        this.#forward(request, tx, flow, [{ uri: request.uri, flow: target }])
        return
      }
    }
    throw new SipStatusError(403, 'Domain Not Served')
  }

  /**
   * A request for a peered domain (peering.ts): from one of our users (From in a served domain,
   * else 403; the mesh checked it when it came from the mesh), over TLS to the peer.
   */
  async #toPeer (request: SipRequest, tx: ServerTransaction, inbound: Flow, domain: string, fromMesh: boolean): Promise<void> {
    if (!AOR_METHODS.has(request.method)) {
      this.#respond(tx, createResponse(request, 405, undefined, [['Allow', ALLOW]], { toTag: true }))
      return
    }
    if (!fromMesh) {
      const from = headerDomain(request.headers.get('From'))
      if (from === undefined || !this.#domains.has(from)) throw new SipStatusError(403, 'Forbidden (From is not a user of this mesh)')
      this.#identity.assert(request)
      if (DIALOG_METHODS.has(request.method) && !hasToTag(request)) this.#dialogContacts.rememberCaller(request, inbound)
    }
    const target = await (this.#peers as PeerNetworks).connect(domain, this.#connector)
    this.stats.forwardedPeer++
    this.#forward(request, tx, inbound, [{ uri: request.uri, flow: target }])
  }

  /**
   * The presence agent hands back a user agent's SUBSCRIBE to a user of a peer network that is not
   * sipmesh (presence/peering.ts): it goes to the peer as it is, one subscription per watcher.
   */
  relayToPeer (request: SipRequest, tx: ServerTransaction, flow: Flow): void {
    let domain: string
    try { domain = parseUri(request.uri).host.toLowerCase() } catch { domain = '' }
    const go = async (): Promise<void> => {
      if (this.#peers?.has(domain) !== true) throw new SipStatusError(403, 'Domain Not Served')
      await this.#toPeer(request, tx, flow, domain, false)
    }
    go().catch((err: unknown) => { this.#respond(tx, responseForError(request, err, this.#log)) })
  }

  /**
   * An in-dialog request from one of our user agents whose route goes on to a peer network: only
   * over TLS, to a server whose certificate names a configured peer; anything else 403 (the node
   * never relays to a socket of a user agent's choosing).
   */
  async #peerRouteFlow (request: SipRequest, next: SipUri, allowed: boolean): Promise<Flow> {
    const tls = next.scheme === 'sips' || (typeof next.params.transport === 'string' && next.params.transport.toLowerCase() === 'tls')
    if (!allowed || !tls || this.#peers === undefined || this.#peers.size === 0 || !hasToTag(request)) throw new SipStatusError(403, 'Route Not Allowed')
    let flow: Flow
    try {
      flow = await this.#connector.connect({ transport: 'TLS', host: next.host, port: next.port ?? 5061 })
    } catch {
      throw new SipStatusError(503, 'Peer Network Unreachable')
    }
    if (flow.peerDomain === undefined || !this.#peers.has(flow.peerDomain)) throw new SipStatusError(403, 'Route Not Allowed')
    return flow
  }

  /** route a request for an AoR of a served domain: the owner here, another node, or nobody */
  #routeAor (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: string, fromMesh: boolean): void | Promise<void> {
    if (fromMesh) {
      // we own what we hold bindings for (the registrar drops them when displaced): no lookup then.
      // Without bindings we are an old owner the sender's route lagged behind, or the user just
      // left: ask the DHT itself, so that a message for a user who moved on is sent after her
      // (not-owner retry at the sender) and never stored here as if she were offline
      if (this.#registrar.lookup(aor).length === 0) return this.#deliverIfOwner(request, tx, flow, aor)
      return this.#deliverLocal(request, tx, flow, aor)
    }
    this.#identity.assert(request)
    if (DIALOG_METHODS.has(request.method) && !hasToTag(request)) this.#dialogContacts.rememberCaller(request, flow)
    // live local bindings mean we own the AoR (the registrar drops them when displaced)
    if (this.#registrar.lookup(aor).length > 0) return this.#deliverLocal(request, tx, flow, aor)
    // another node's route at hand: forwarded in this turn, no promise and no AoR turn taken
    const route = this.#registry.routeNow?.(aor)
    if (route !== undefined && route.node !== this.#registry.nodeId) {
      this.#toNode(request, tx, flow, aor, route.node, false)
      return
    }
    return this.#resolveAndRoute(request, tx, flow, aor)
  }

  async #deliverIfOwner (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: string): Promise<void> {
    if ((await this.#registry.resolve(aor, { fresh: true }))?.node !== this.#registry.nodeId) {
      this.#respond(tx, createResponse(request, 404, 'Not Owner', [[NOT_OWNER_HEADER, this.#registry.nodeId]], { toTag: true }))
      return
    }
    await this.#deliverLocal(request, tx, flow, aor)
  }

  async #resolveAndRoute (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: string): Promise<void> {
    await this.#toRoute(request, tx, flow, aor, await this.#resolve(aor))
  }

  /**
   * `registry.resolve`, with one guard for the hot path: concurrent calls for one AoR share one
   * lookup. The registry itself serves a known route at once and checks it again in the
   * background when its cache entry is old (stale-while-revalidate); its cache follows move
   * notices, so no route kept here can outlive one. A route that turns out wrong is caught by the
   * not-owner retry.
   */
  async #resolve (aor: string): Promise<Route | undefined> {
    let p = this.#resolving.get(aor)
    if (p === undefined) {
      const lookup = this.#registry.resolve(aor)
      p = lookup
      this.#resolving.set(aor, lookup)
      const done = (): void => { if (this.#resolving.get(aor) === lookup) this.#resolving.delete(aor) }
      lookup.then(done, done)
    }
    return await p
  }

  /** forward to wherever the route says: local contacts, another node, or nobody */
  async #toRoute (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: string, route: Route | undefined, retried = false): Promise<void> {
    if (route === undefined) {
      await this.#unavailable(request, tx, flow, aor)
      return
    }
    if (route.node === this.#registry.nodeId) {
      await this.#deliverLocal(request, tx, flow, aor)
      return
    }
    this.#toNode(request, tx, flow, aor, route.node, retried)
  }

  #toNode (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: string, node: string, retried: boolean): void {
    this.stats.forwardedMesh++
    this.#forward(request, tx, flow, [{ uri: request.uri, flow: this.#mesh(node), aor, retried }])
  }

  /**
   * To the AoR's contacts registered here. Synchronous while every contact's flow is at hand (UDP,
   * an open connection); from the first one that must wait (a connection to open) on, a promise.
   */
  #deliverLocal (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: string): void | Promise<void> {
    // the AoR is ours: what the owner serves itself never goes to the user's devices
    if (OWNER_METHODS.has(request.method)) return this.#toOwner(request, tx, flow, aor)
    const bindings = this.#registrar.lookup(aor)
    if (bindings.length === 0) return this.#unavailable(request, tx, flow, aor)
    this.stats.deliveredLocal++
    // RFC 3261 26.2.2 / RFC 5630: a sips: request travels over TLS on every hop, the last one too
    const secureOnly = request.uri.charCodeAt(4) === 58 /* : */ && request.uri.slice(0, 4).toLowerCase() === 'sips'
    const targets: Target[] = []
    for (let i = 0; i < bindings.length; i++) {
      const b = bindings[i]
      let to: Flow | Promise<Flow>
      try {
        to = this.#flows.contactFlow(request, b)
      } catch (err) {
        this.#log.debug('contact unreachable', { contact: b.uri, err: String(err) })
        continue
      }
      if (isThenable(to)) return this.#deliverLater(request, tx, flow, aor, bindings, i, to, targets, secureOnly)
      if (secureOnly && !SECURE_TRANSPORTS.has(to.transport)) continue
      targets.push({ uri: b.uri, flow: to, aorOffline: aor })
    }
    this.#forwardToContacts(request, tx, flow, targets, secureOnly)
  }

  /** #deliverLocal from the `from`-th binding on, whose flow is `first` */
  async #deliverLater (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: string, bindings: ReadonlyArray<Binding<Flow>>, from: number, first: Promise<Flow>, targets: Target[], secureOnly: boolean): Promise<void> {
    for (let i = from; i < bindings.length; i++) {
      const b = bindings[i]
      try {
        const to = i === from ? await first : await this.#flows.contactFlow(request, b)
        if (secureOnly && !SECURE_TRANSPORTS.has(to.transport)) continue
        targets.push({ uri: b.uri, flow: to, aorOffline: aor })
      } catch (err) {
        this.#log.debug('contact unreachable', { contact: b.uri, err: String(err) })
      }
    }
    this.#forwardToContacts(request, tx, flow, targets, secureOnly)
  }

  #forwardToContacts (request: SipRequest, tx: ServerTransaction, flow: Flow, targets: Target[], secureOnly: boolean): void {
    if (targets.length === 0) throw new SipStatusError(480, secureOnly ? 'Temporarily Unavailable (no contact over TLS for a sips: request)' : 'Temporarily Unavailable')
    this.#forward(request, tx, flow, targets)
  }

  async #toOwner (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: string): Promise<void> {
    if (await this.#atOwner?.(request, tx, flow, aor, true) !== true) throw new SipStatusError(480, 'Temporarily Unavailable')
  }

  async #unavailable (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: string): Promise<void> {
    if (OWNER_METHODS.has(request.method) && await this.#atOwner?.(request, tx, flow, aor, false) === true) return
    const reply = await this.#onUnavailable?.(request, aor)
    if (reply !== undefined) { this.#reply(tx, request, reply); return }
    if (this.#registrar.isKnown(aor)) throw new SipStatusError(480, 'Temporarily Unavailable')
    throw new SipStatusError(404, 'Not Found')
  }

  /**
   * Send a request this node originates (for example a stored MESSAGE, issue 5) to every live
   * contact of an AoR registered here (delivery.ts). Resolves with the first 2xx, or the final
   * response `pick` chooses when none succeeds (the best one of 16.7 by default), or undefined
   * when the AoR has no reachable contact here.
   */
  deliver (aor: string, request: SipRequest, pick: (finals: SipResponse[]) => SipResponse | undefined = bestResponse): Promise<SipResponse | undefined> {
    // not async: the room's promise is the caller's (no second promise per delivery)
    return this.#delivery.toContacts(aor, request, pick)
  }

  /**
   * Send a request this node originates (a stored MESSAGE, issue 5) to another node over the
   * mesh (delivery.ts). Resolves with the final response (408 on timeout, 503 when the node
   * cannot be reached).
   */
  deliverToNode (node: string, request: SipRequest): Promise<SipResponse> {
    return this.#delivery.toNode(node, request)
  }

  // ---- forwarding (16.6) and responses (16.7) ---------------------------------------------

  /** synchronous: nothing here waits, so a relayed message pays no promise for it */
  #forward (request: SipRequest, tx: ServerTransaction, inbound: Flow, targets: Target[]): void {
    if ((tx as InviteServerTransaction<SipRequest, SipResponse>).cancelled === true) {
      this.#respond(tx, createResponse(request, 487, undefined, undefined, { toTag: true }))
      return
    }
    let ctx = this.#contextOf(tx)
    if (ctx === undefined) {
      // a non-INVITE request (no timer C, no dialog to observe) shares one set of hooks: no closures per request
      ctx = request.method === 'INVITE' ? this.#inviteContext(request, tx, inbound, targets) : new ResponseContext(request, tx, this.#plainHooks)
      this.#contexts.set(tx.key, ctx)
      tx.onTerminated(this.#forgetContext)
    }
    const loopHash = request.loopHash ?? loopHashOf(request)
    for (const target of targets) this.#startBranch(ctx, request, inbound, target, loopHash)
  }

  /** the response context of an INVITE: timer C (16.6 step 11) and the dialog observer's view */
  #inviteContext (request: SipRequest, tx: ServerTransaction, inbound: Flow, targets: Target[]): ResponseContext {
    // 16.6 step 11: timer C bounds a forwarded INVITE; each provisional restarts it; when it
    // fires the pending branches are cancelled (those without a provisional time out by timer B)
    const timerC = new Timer()
    const c = (): void => { timerC.set(this.#timerC, () => { this.#contextOf(tx)?.cancel() }) }
    const observe = observeInvite(this.#dialogs, this.#registrar, this.#log, request, inbound, targets)
    const ctx = new ResponseContext(request, tx, {
      cancel: (b) => { this.#sendCancel(b) },
      onFinal: (r) => { this.#count(r.status); timerC.clear(); observe?.(r.status < 300 ? 'confirmed' : 'terminated', r.status) },
      onProvisional: (r) => { c(); if (r.status > 100) observe?.('early', r.status) },
      rescue: this.#plainHooks.rescue
    })
    c()
    tx.onTerminated(() => { timerC.clear() })
    return ctx
  }

  /** the hooks of every non-INVITE response context */
  readonly #plainHooks: ResponseContextHooks = {
    cancel: (b) => { this.#sendCancel(b) },
    onFinal: (r) => { this.#count(r.status) },
    rescue: async (_best, request) => {
      const aor = this.#rescueAor.get(request)
      if (aor === undefined || this.#onTimeout === undefined) return undefined
      const reply = await this.#onTimeout(request, aor)
      return reply === undefined ? undefined : createResponse(request, reply.status, reply.reason, reply.headers, { toTag: true })
    }
  }

  readonly #forgetContext = (tx: unknown): void => { this.#forget(tx as ServerTransaction) }

  /** the response context of `tx`, if it has one */
  #contextOf (tx: ServerTransaction): ResponseContext | undefined {
    const ctx = this.#contexts.get(tx.key)
    return ctx?.server === tx ? ctx : undefined
  }

  #forget (tx: ServerTransaction): void {
    if (this.#contexts.get(tx.key)?.server === tx) this.#contexts.delete(tx.key)
  }

  #startBranch (ctx: ResponseContext, request: SipRequest, inbound: Flow, target: Target, loopHash: string): void {
    const copy = cloneMessage(request) as SipRequest
    copy.uri = target.uri
    // 16.6 step 3: Max-Forwards
    const mf = readMaxForwards(request)
    copy.headers.set('Max-Forwards', String(mf === undefined ? 70 : mf - 1))
    // 16.6 step 4: Record-Route for requests that may set up a dialog
    if (DIALOG_METHODS.has(request.method)) {
      for (const entry of recordRoute(this.#us, inbound, target.flow).reverse()) copy.headers.prepend('Record-Route', entry)
    }
    // 16.6 step 8: our Via, with a branch that carries the loop hash
    const branch = `${generateBranch()}.${loopHash}`
    const params: Record<string, string | null> = {}
    if (target.flow.transport === MESH_TRANSPORT) params.node = this.#registry.nodeId
    else if (target.flow.transport === 'UDP') params.rport = null
    prependVia(copy.headers, { protocol: 'SIP/2.0', transport: target.flow.transport, host: this.#us.host, port: this.#us.portFor(target.flow.transport), params, branch }, true)
    // RFC 3325: identity crosses to a peer network only within one trust domain
    if (target.flow.peerDomain !== undefined) this.#peers?.outbound(copy, target.flow.peerDomain)
    const b = ctx.addBranch(branch, copy)
    if (tooLargeForUdp(copy, target.flow)) {
      ctx.receive(b, createResponse(request, 513, 'Message Too Large', undefined, { toTag: true }))
      this.#settle(ctx)
      return
    }
    b.tx = this.#tl.sendRequest(copy, target.flow, new ProxyCore.#BranchUser(this, ctx, b, request, copy, inbound, target))
  }

  /**
   * The client transaction user of one branch: what the three callbacks need, as fields of one
   * object whose methods live on the prototype (three closures and their context per branch before)
   */
  static readonly #BranchUser = class BranchUser implements ClientTransactionUser<SipResponse>, BranchState {
    readonly core: ProxyCore
    readonly ctx: ResponseContext
    readonly b: Branch
    /** the request as received (upstream responses are made from it) */
    readonly request: SipRequest
    /** the branch's copy, as sent */
    readonly copy: SipRequest
    readonly inbound: Flow
    readonly target: Target
    constructor (core: ProxyCore, ctx: ResponseContext, b: Branch, request: SipRequest, copy: SipRequest, inbound: Flow, target: Target) {
      this.core = core
      this.ctx = ctx
      this.b = b
      this.request = request
      this.copy = copy
      this.inbound = inbound
      this.target = target
    }

    receiveResponse (response: SipResponse): void { this.core.#onBranchResponse(this.ctx, this.b, response, this.inbound, this.target) }
    onRequestTimeout (): void { this.core.#onBranchTimeout(this) }
    onTransportError (err: unknown): void { this.core.#onBranchTransportError(this, err) }
  }

  #onBranchTimeout ({ ctx, b, request, target }: BranchState): void {
    if (target.flow.node !== undefined) this.#forwardFailed(request, target, 408, 'no answer from the node (timer F/B)')
    // synthesized from the request as received: it goes upstream without our Via
    const timeout = createResponse(request, 408, undefined, undefined, { toTag: true })
    // issue 5: a MESSAGE that timed out at a device is kept (202) instead of lost, but only
    // once every branch failed (the response context's rescue): a user's other device may
    // still take it, and then it must not be stored and delivered a second time
    if (target.aorOffline !== undefined && this.#onTimeout !== undefined && request.method === 'MESSAGE') {
      b.rescuable = true
      this.#rescueAor.set(request, target.aorOffline)
    }
    ctx.receive(b, timeout)
    this.#settle(ctx)
  }

  #onBranchTransportError ({ ctx, b, request, copy, inbound, target }: BranchState, err: unknown): void {
    this.#log.debug('branch transport error', { target: target.uri, node: target.flow.node, err: String(err) })
    // a mesh node we cannot reach may have died: its AoRs may live elsewhere now (P5)
    if (target.flow.node !== undefined) {
      const retry = this.#retryElsewhere(ctx, b, inbound, target)
      this.#forwardFailed(request, target, 503, `cannot reach the node: ${String(err).slice(0, 120)}`, retry)
      if (retry) return
    }
    ctx.receive(b, createResponse(copy, 503, undefined, undefined, { toTag: true }))
    this.#settle(ctx)
  }

  #onBranchResponse (ctx: ResponseContext, b: Branch, response: SipResponse, inbound: Flow, target: Target): void {
    if (target.flow.transport !== MESH_TRANSPORT && DIALOG_METHODS.has(ctx.request.method)) this.#dialogContacts.rememberCallee(response, target.flow)
    // 16.7 step 3: remove our Via. In place: the client transaction hands the response to its
    // user alone and keeps nothing of it, so no copy of its headers is made; a response as
    // received goes on as its bytes less our Via line while nothing else changes it (wire.ts)
    const copy = response
    cutTopVia(copy)
    if (copy.headers.get('Via') === undefined) return
    if (target.flow.node !== undefined && (response.status >= 500 || response.status === 408)) {
      this.#forwardFailed(ctx.request, target, response.status, `the node answered ${response.status} ${response.reason.slice(0, 60)}`)
    }
    if (response.status >= 200 && response.headers.has(NOT_OWNER_HEADER)) {
      copy.headers.delete(NOT_OWNER_HEADER)
      // only a node of the mesh can say it does not own an AoR (a peer network's answer stands as it is)
      if (target.flow.transport !== MESH_TRANSPORT) { ctx.receive(b, copy); this.#settle(ctx); return }
      if (this.#retryElsewhere(ctx, b, inbound, target)) return
      copy.status = 480
      copy.reason = 'Temporarily Unavailable'
    }
    ctx.receive(b, copy)
    this.#settle(ctx)
  }

  /**
   * Forget the response context of a non-INVITE request once it is answered and every branch
   * is final: the server transaction lingers for timer J (32 s over UDP) and must not keep the
   * branches alive with it. INVITE contexts stay (later 2xx of forks, CANCEL).
   */
  #settle (ctx: ResponseContext): void {
    if (ctx.request.method !== 'INVITE' && ctx.done && this.#contexts.get(ctx.server.key) === ctx) this.#contexts.delete(ctx.server.key)
  }

  /** one info line for a request sent over the mesh that failed there (sampled, see #failures) */
  #forwardFailed (request: SipRequest, target: Target, status: number, why: string, retrying = false): void {
    const { log, suppressed } = this.#failures.allow()
    if (!log) return
    this.#log.info('forwarded request failed', {
      method: request.method,
      aor: target.aor,
      node: target.flow.node,
      status,
      why,
      ...(retrying ? { retrying: 'resolving the AoR again' } : {}),
      ...(suppressed > 0 ? { suppressed } : {})
    })
  }

  /**
   * A mesh branch failed because the node is not (or no longer) the owner, or cannot be reached:
   * re-resolve from the DHT (`fresh`) and retry once, wherever the AoR lives now. False when no
   * retry applies (not a mesh branch, already retried, or the request is answered).
   */
  #retryElsewhere (ctx: ResponseContext, b: Branch, inbound: Flow, target: Target): boolean {
    if (target.aor === undefined || target.retried === true || ctx.finalSent) return false
    this.stats.notOwnerRetries++
    ctx.supersede(b)
    const release = ctx.hold()
    const aor = target.aor
    this.#registry.resolve(aor, { fresh: true })
      .then(async route => {
        if (route !== undefined && route.node === target.flow.node) {
          // the DHT still names the node that failed: nobody else to try
          if (!ctx.finalSent) this.#respond(ctx.server, createResponse(ctx.request, 480, undefined, undefined, { toTag: true }))
          return
        }
        await this.#toRoute(ctx.request, ctx.server, inbound, aor, route, true)
      })
      .catch((err: unknown) => {
        if (!ctx.finalSent) this.#respond(ctx.server, responseForError(ctx.request, err, this.#log))
      })
      .finally(release)
    return true
  }

  #sendCancel (b: Branch): void {
    // 9.1: same Request-URI, Call-ID, From, To, CSeq number and the branch's Via (cancel.ts)
    const cancel = cancelFor(b.request)
    const flow = b.tx === undefined ? undefined : (b.tx as unknown as { flow: Flow }).flow
    if (flow === undefined) return
    try {
      this.#tl.sendRequest(cancel, flow, { receiveResponse () {}, onRequestTimeout () {}, onTransportError () {} })
    } catch (err) {
      this.#log.debug('CANCEL not sent', { err: String(err) })
    }
  }

  async #forwardStateless (request: SipRequest, flow: Flow): Promise<void> {
    if (readMaxForwards(request) === 0) return
    const fromMesh = flow.transport === MESH_TRANSPORT
    const peer = fromMesh || this.#peers === undefined ? undefined : flow.peerDomain
    // RFC 3325 as in #handle: identity (and a stored message's id) only from mesh peers
    if (!fromMesh) {
      if (peer === undefined) request.headers.delete('P-Asserted-Identity')
      request.headers.delete('Sipmesh-Message-Id')
    }
    if (peer !== undefined) {
      try { this.#peers?.admit(request, peer) } catch { return }
    }
    const consumed = consumeOurRoute(request, this.#us)
    const next = request.headers.get('Route')
    let target: Flow | undefined
    if (next !== undefined) {
      // an ACK cannot be refused: one that may not follow its Route is dropped
      const nextUri = safeUri(parseNameAddr(next).uri)
      if (mayFollowRoute(request, fromMesh, consumed)) target = await this.#flows.routeFlow(nextUri)
      else {
        try {
          target = await this.#peerRouteFlow(request, nextUri, peer === undefined && !fromMesh && consumed)
        } catch {
          this.#log.info('ACK with a Route not allowed dropped', { route: next })
          return
        }
      }
    } else {
      const uri = safeUri(request.uri)
      if (this.#domains.has(uri.host.toLowerCase()) && uri.user !== undefined) {
        const route = await this.#resolve(aorOf(uri))
        if (route === undefined) return
        if (route.node !== this.#registry.nodeId) target = this.#mesh(route.node)
        else {
          const b = this.#registrar.lookup(aorOf(uri))[0]
          if (b !== undefined) target = await this.#flows.bindingFlow(b)
        }
      } else {
        const b = this.#registrar.findByContact(request.uri)
        if (b !== undefined) target = await this.#flows.bindingFlow(b)
        else if (fromMesh || (consumed && hasToTag(request))) {
          // the remote target of a dialog we Record-Routed (as in #handle), over its own flow
          const party = this.#dialogContacts.find(request.uri)
          if (party !== undefined && party.flow.open) target = party.flow
        }
        if (target === undefined && !fromMesh) return // never relay for strangers
      }
    }
    if (target === undefined) return
    const copy = cloneMessage(request) as SipRequest
    if (!fromMesh) this.#identity.assert(copy)
    const mf = readMaxForwards(request)
    copy.headers.set('Max-Forwards', String(mf === undefined ? 70 : mf - 1))
    if (target.peerDomain !== undefined) this.#peers?.outbound(copy, target.peerDomain)
    const params: Record<string, string | null> = target.transport === MESH_TRANSPORT ? { node: this.#registry.nodeId } : {}
    copy.headers.prepend('Via', formatVia({ protocol: 'SIP/2.0', transport: target.transport, host: this.#us.host, port: this.#us.portFor(target.transport), params, branch: `${generateBranch()}.${loopHashOf(request)}` }))
    await target.send(copy)
  }

  // ---- helpers ---------------------------------------------------------------------------

  #reply (tx: ServerTransaction, request: SipRequest, reply: Reply): void {
    this.#respond(tx, createResponse(request, reply.status, reply.reason, reply.headers, { toTag: true }))
  }

  #respond (tx: ServerTransaction, response: SipResponse): void {
    if (response.status >= 200 && this.#contextOf(tx) === undefined) this.#count(response.status)
    tx.respond(response)
  }

  #count (status: number): void {
    const k = STATUS_CLASSES[Math.floor(status / 100)] ?? `${Math.floor(status / 100)}xx`
    this.stats.responses[k] = (this.stats.responses[k] ?? 0) + 1
  }
}

/** what a branch's transaction user holds (see ProxyCore.#BranchUser) */
interface BranchState {
  readonly ctx: ResponseContext
  readonly b: Branch
  readonly request: SipRequest
  readonly copy: SipRequest
  readonly inbound: Flow
  readonly target: Target
}

interface Target {
  uri: string
  flow: Flow
  /** for mesh branches: the AoR, to re-resolve on "not owner" */
  aor?: string
  retried?: boolean
  /** for local contacts of an AoR: a MESSAGE timing out there is offered to `onTimeout` */
  aorOffline?: string
}

/** the keys of `stats.responses` per status class, as constants (no string per response counted) */
const STATUS_CLASSES = ['0xx', '1xx', '2xx', '3xx', '4xx', '5xx', '6xx']

/** 1 to 3 digits (a module constant: a regular expression literal in a function is a new RegExp object per call) */
const MAX_FORWARDS = /^\d{1,3}$/

/** Max-Forwards as a number (undefined when absent); malformed: 400 */
export function readMaxForwards (request: SipRequest): number | undefined {
  const v = request.headers.get('Max-Forwards')
  if (v === undefined) return undefined
  const t = v.trim()
  if (!MAX_FORWARDS.test(t) || Number(t) > 255) throw new SipStatusError(400, 'Malformed Max-Forwards')
  return Number(t)
}
