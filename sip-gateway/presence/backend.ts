/**
 * Back-end subscriptions, as subscriber (draft-ietf-simple-intradomain-federation 6.1.1): for a
 * resource another node owns, this node holds ONE subscription to the owner, shared by every local
 * watcher. It carries the watcher identities in `Sipmesh-Watchers` (batches of up to 200, on the
 * initial SUBSCRIBE and in-dialog refreshes); the owner answers with a decision per watcher in
 * `Sipmesh-Authorization`, and its NOTIFYs bring the composed state once. A watcher's SUBSCRIBE
 * waits (`decisionWaitMs`) for the owner's decision for it. A failed, refused or ended
 * subscription makes this node find the owner again (`reroute`, resources.ts).
 *
 * The owner may be a peer network (`peer:<domain>`, peering.ts): the subscription then goes over
 * the peer TLS flow with `Require: sipmesh-watchers`, and a peer that is not sipmesh (420, or a 2xx
 * without the tag) makes the resource `plain`: its watchers subscribe one by one through the proxy.
 */
import { Buffer } from 'node:buffer'
import { SipRequest, type SipResponse } from '../codec/message.ts'
import { Headers } from '../codec/headers.ts'
import { createResponse, generateTag, randomToken } from '../codec/response.ts'
import { parseNameAddr } from '../codec/name-addr.ts'
import type { Logger, Registry, Route } from '../ports.ts'
import type { ServerTransaction } from '../transaction/layer.ts'
import { PATH_HEADER, formatPath } from './loop.ts'
import {
  AUTHORIZATION_HEADER, MAX_WATCHERS_PER_REQUEST, WATCHERS_GONE_HEADER, WATCHERS_HEADER, formatWatchers, parseDecisions, parseEvent,
  parseExpiresHeader, parseSubscriptionState
} from './event.ts'
import { mediaType } from './package.ts'
import { VIEW_HEADER, type Notifier } from './notifier.ts'
import type { AgentRequests } from './requests.ts'
import { tagOf, type Backend, type Resource } from './resource.ts'
import { PeerCapabilities, WATCHERS_OPTION, peerOfOwner } from './peering.ts'
import { names } from './lists/server.ts'

/** The header a node answers a request for an AoR it does not own with (same as the proxy's). */
export const NOT_OWNER_HEADER = 'Sipmesh-Not-Owner'

export interface BackendSubscriptionsComponents {
  registry: Registry
  requests: AgentRequests
  notifier: Notifier
  logger: Logger
  /** the resource is still the live one for its key (not forgotten, agent running) */
  current: (p: Resource) => boolean
  /** the owner changed (or is to be found again): re-route the resource */
  reroute: (p: Resource, route: Route | undefined) => void
  /** answer a request the room serves (a NOTIFY of ours) */
  respond: (tx: ServerTransaction, response: SipResponse) => void
  /** the Allow-Events answer of a 489 */
  allowEvents: () => string
  /** the owner decided for these watchers (a peer network's back-end served here relays it) */
  ownerDecided: (p: Resource, watchers: ReadonlySet<string>) => void
  /** the domain our back-end subscriptions to peer networks speak for (From; their watchers are of it) */
  localDomain: string
}

export interface BackendSubscriptionsInit {
  /** expiry of back-end subscriptions between nodes, s. @default 600 */
  backendExpires?: number
  /** how long a watcher's SUBSCRIBE waits for the owner's decision before `pending`, ms. @default 1500 */
  decisionWaitMs?: number
  /** delay before retrying a failed back-end subscription, ms. @default 2000 */
  retryMs?: number
  /** how long a peer network that is not sipmesh is remembered as such, ms. @default 600000 */
  peerPlainMs?: number
}

export class BackendSubscriptions {
  readonly #registry: Registry
  readonly #requests: AgentRequests
  readonly #notifier: Notifier
  readonly #log: Logger
  readonly #current: (p: Resource) => boolean
  readonly #reroute: (p: Resource, route: Route | undefined) => void
  readonly #respond: (tx: ServerTransaction, response: SipResponse) => void
  readonly #allowEvents: () => string
  readonly #ownerDecided: (p: Resource, watchers: ReadonlySet<string>) => void
  readonly #localDomain: string
  /** which peer networks are plain (not sipmesh) for now */
  readonly capabilities: PeerCapabilities
  readonly #expires: number
  readonly decisionWait: number
  readonly retryMs: number
  /** Call-ID → the resource whose back-end subscription it is */
  readonly #byCallId = new Map<string, Resource>()

  constructor (components: BackendSubscriptionsComponents, init: BackendSubscriptionsInit = {}) {
    this.#registry = components.registry
    this.#requests = components.requests
    this.#notifier = components.notifier
    this.#log = components.logger
    this.#current = components.current
    this.#reroute = components.reroute
    this.#respond = components.respond
    this.#allowEvents = components.allowEvents
    this.#ownerDecided = components.ownerDecided
    this.#localDomain = components.localDomain
    this.capabilities = new PeerCapabilities(init.peerPlainMs)
    this.#expires = init.backendExpires ?? 600
    this.decisionWait = init.decisionWaitMs ?? 1500
    this.retryMs = init.retryMs ?? 2000
  }

  /** the resource whose back-end dialog a NOTIFY names (Call-ID and our tag) */
  forNotify (callId: string, toTag: string): Resource | undefined {
    const p = this.#byCallId.get(callId)
    return p?.backend !== undefined && p.backend.localTag === toTag ? p : undefined
  }

  /** how many live back-end subscriptions this node holds to peer networks */
  get toPeers (): number {
    let n = 0
    for (const p of this.#byCallId.values()) if (p.backend !== undefined && !p.backend.ended && peerOfOwner(p.backend.node) !== undefined) n++
    return n
  }

  /** how many back-end dialogs this node holds for a resource (diagnostics) */
  holding (p: Resource): number {
    let n = 0
    for (const q of this.#byCallId.values()) if (q === p) n++
    return n
  }

  clearAll (): void { this.#byCallId.clear() }

  queueIdentity (p: Resource, watcher: string): void {
    const b = p.backend
    if (b === undefined || b.ended) return
    b.queued.add(watcher)
    this.#pump(p, b)
  }

  /** the last local subscription of this watcher ended: the owner forgets it (winfo), and so do we */
  forgetIdentity (p: Resource, watcher: string): void {
    p.ownerDecisions.delete(watcher)
    const b = p.backend
    if (b === undefined || b.ended) return
    b.queued.delete(watcher)
    if (!b.established) return
    b.gone.add(watcher)
    this.#pump(p, b)
  }

  /** the owner has decided for this watcher, and when it allows, its document has arrived */
  decided (p: Resource, watcher: string): boolean {
    const d = p.ownerDecisions.get(watcher)
    return d !== undefined && (d !== 'allow' || p.remoteDoc !== undefined)
  }

  async waitDecision (p: Resource, watcher: string): Promise<void> {
    if (p.mode !== 'remote' || this.decided(p, watcher) || p.backendState === 'loop' || p.backendState === 'failed' || p.backendState === 'list' || p.backendState === 'plain') return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, this.decisionWait)
      function done (): void { clearTimeout(timer); resolve() }
      const list = p.waiters.get(watcher) ?? []
      list.push(done)
      p.waiters.set(watcher, list)
    })
  }

  /** wake the SUBSCRIBEs waiting for the owner: those now decided, or all of them (`all`: it failed) */
  wake (p: Resource, all = false): void {
    for (const [w, list] of [...p.waiters]) {
      if (!all && !this.decided(p, w)) continue
      p.waiters.delete(w)
      for (const f of list) f()
    }
  }

  start (p: Resource): void {
    if (p.owner === undefined) return
    const b: Backend = {
      node: p.owner,
      callId: randomToken(12) + '@sipmesh',
      localTag: generateTag(),
      cseq: 0,
      inflight: false,
      ended: false,
      established: false,
      queued: new Set(),
      gone: new Set()
    }
    for (const s of p.subs) {
      if (s.kind === 'ua') b.queued.add(s.watcher)
      else if (s.identities !== undefined && !s.done) for (const w of s.identities.keys()) b.queued.add(w)
    }
    for (const w of p.wanted.keys()) b.queued.add(w)
    p.backend = b
    p.backendState = 'pending'
    p.lastStart = Date.now()
    this.#byCallId.set(b.callId, p)
    this.#pump(p, b)
  }

  clear (b: Backend): void {
    b.ended = true
    clearTimeout(b.refreshTimer)
    clearTimeout(b.retryTimer)
  }

  /** end our back-end subscription (unsubscribe, best effort) */
  end (p: Resource, b: Backend): void {
    const wasUp = b.established && !b.ended
    this.clear(b)
    this.#byCallId.delete(b.callId)
    if (p.backend === b) p.backend = undefined
    if (wasUp) void this.#sendSubscribe(p, b, [], 0).catch(() => {})
  }

  /** send what the back-end subscription needs next: the initial SUBSCRIBE, queued identities, a refresh */
  #pump (p: Resource, b: Backend, refresh = false): void {
    if (b.inflight || b.ended) return
    if (b.established && b.queued.size === 0 && b.gone.size === 0 && !refresh) return
    const batch = [...b.queued].slice(0, MAX_WATCHERS_PER_REQUEST)
    for (const w of batch) b.queued.delete(w)
    const gone = [...b.gone].slice(0, MAX_WATCHERS_PER_REQUEST)
    for (const w of gone) b.gone.delete(w)
    b.inflight = true
    this.#sendSubscribe(p, b, batch, this.#expires, gone).then((r) => {
      b.inflight = false
      if (b.ended) return
      this.#response(p, b, batch, r)
    }, (err: unknown) => {
      b.inflight = false
      this.#log.debug('back-end SUBSCRIBE failed', { aor: p.aor, err: String(err) })
      for (const w of batch) b.queued.add(w)
      this.#failed(p, b)
    })
  }

  async #sendSubscribe (p: Resource, b: Backend, watchers: string[], expires: number, gone: string[] = []): Promise<SipResponse> {
    b.cseq++
    const peer = peerOfOwner(b.node)
    // to a peer network we speak for our domain (its certificate check wants our users' domain)
    const domain = peer !== undefined ? this.#localDomain : p.aor.slice(p.aor.lastIndexOf('@') + 1)
    const flow = peer !== undefined ? (b.flow = await this.#requests.peerFlow(peer, b.flow)) : this.#requests.mesh(b.node)
    const h = new Headers()
    h.append('Max-Forwards', '70')
    if (peer !== undefined) h.append('Require', WATCHERS_OPTION)
    h.append('From', `<sip:${domain}>;tag=${b.localTag}`)
    h.append('To', b.remoteTag === undefined ? `<${p.aor}>` : `<${p.aor}>;tag=${b.remoteTag}`)
    h.append('Call-ID', b.callId)
    h.append('CSeq', `${b.cseq} SUBSCRIBE`)
    h.append('Contact', this.#requests.contactFor(flow))
    h.append('Event', p.pkg.name)
    h.append('Accept', p.pkg.contentType)
    h.append('Expires', String(expires))
    h.append(PATH_HEADER, formatPath([this.#registry.nodeId]))
    if (watchers.length > 0) h.append(WATCHERS_HEADER, formatWatchers(watchers))
    if (gone.length > 0) h.append(WATCHERS_GONE_HEADER, formatWatchers(gone))
    const uri = b.remoteTarget ?? p.aor
    return await this.#requests.send(new SipRequest('SUBSCRIBE', uri, h), flow)
  }

  #response (p: Resource, b: Backend, batch: string[], r: SipResponse): void {
    if (r.status >= 300) this.#log.debug('back-end SUBSCRIBE refused', { aor: p.aor, node: b.node, status: r.status })
    const peer = peerOfOwner(b.node)
    if (peer !== undefined && this.#plainPeer(p, b, peer, r)) return
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
      let expires = this.#expires
      try { expires = parseExpiresHeader(r.headers.get('Expires')) ?? expires } catch { /* keep ours */ }
      clearTimeout(b.refreshTimer)
      b.refreshTimer = setTimeout(() => { this.#pump(p, b, true) }, Math.max(1000, expires * 1000 * 0.8))
      b.refreshTimer.unref?.()
      this.wake(p)
      if (decisions.size > 0) {
        const decided = new Set(decisions.keys())
        this.#ownerDecided(p, decided)
        this.#notifier.notifyWatchers(p, decided)
      }
      this.#pump(p, b)
      return
    }
    if (r.status === 482) {
      p.backendState = 'loop'
      this.clear(b)
      this.wake(p, true)
      this.#notifier.notifyAll(p)
      return
    }
    if (r.status === 421) {
      // the owner serves this URI as a resource list (lists/exchange.ts): a watcher without
      // `Supported: eventlist` gets the owner's 421 from here too (RFC 4662 4.1), not a pending
      // subscription to a presentity that does not exist
      p.backendState = 'list'
      this.wake(p, true)
      if (!b.established) { this.clear(b); this.#byCallId.delete(b.callId); p.backend = undefined }
      return
    }
    if (r.status === 403 || r.status === 603) {
      // the owner denied: every watcher of the batch is denied here too (draft 7.1.2.2)
      for (const w of batch) p.ownerDecisions.set(w, 'block')
      this.wake(p)
      this.#ownerDecided(p, new Set(batch))
      this.#notifier.notifyWatchers(p, new Set(batch))
      if (!b.established) { this.clear(b); this.#byCallId.delete(b.callId); p.backend = undefined }
      return
    }
    for (const w of batch) b.queued.add(w)
    if (r.status === 404 || r.status === 481 || r.headers.has(NOT_OWNER_HEADER)) {
      // the owner moved (or forgot us): find it again
      this.reresolve(p, b)
      return
    }
    this.#failed(p, b)
  }

  /**
   * A peer network's answer to our back-end SUBSCRIBE: is the peer plain (not sipmesh)? 420 (it
   * does not know the option tag, RFC 3261 8.2.2.3) or a 2xx without the tag (something accepted
   * it as a plain subscription) say so, and are remembered; before the peer has ever answered with
   * the tag, any other refusal but 403 hands the watchers to the per-watcher path too (they get the
   * peer's own answer), without remembering it. True when handled so.
   */
  #plainPeer (p: Resource, b: Backend, peer: string, r: SipResponse): boolean {
    const tagged = names(r.headers.getAll('Require'), WATCHERS_OPTION) || names(r.headers.getAll('Supported'), WATCHERS_OPTION)
    if (tagged) { this.capabilities.markSipmesh(peer); return false }
    const plain = r.status === 420 || (r.status >= 200 && r.status < 300)
    if (!plain && (this.capabilities.sipmesh(peer) || r.status < 300 || r.status === 403)) return false
    if (plain) {
      this.capabilities.markPlain(peer)
      this.#log.info('peer network is not sipmesh: per-watcher subscriptions', { peer, status: r.status })
    }
    // no unsubscribe: a plain peer's NOTIFYs in that dialog are answered 481, which ends it (RFC 6665 4.1.3)
    this.clear(b)
    this.#byCallId.delete(b.callId)
    if (p.backend === b) p.backend = undefined
    p.backendState = 'plain'
    this.wake(p, true)
    // watchers already served from this peer's back-end (it was replaced by a plain server) subscribe again, one by one
    for (const s of [...p.subs]) if (s.kind === 'ua') this.#notifier.end(s, { state: 'terminated', reason: 'deactivated' })
    return true
  }

  #failed (p: Resource, b: Backend): void {
    p.backendState = 'failed'
    this.wake(p, true)
    clearTimeout(b.retryTimer)
    b.retryTimer = setTimeout(() => { this.reresolve(p, b) }, this.retryMs)
    b.retryTimer.unref?.()
  }

  /** the back-end subscription ended or failed: find the owner again (watchers keep their state meanwhile) */
  reresolve (p: Resource, b: Backend): void {
    this.end(p, b)
    if (peerOfOwner(b.node) !== undefined) { this.#resubscribePeer(p); return }
    this.#registry.resolve(p.aor, { fresh: true }).then((route) => {
      if (!this.#current(p)) return
      // the registry's watch may have re-routed it meanwhile
      if (p.backend !== undefined && !p.backend.ended) return
      if (route !== undefined && route.node === b.node && Date.now() - p.lastStart < this.retryMs) {
        // the same owner again, just after it ended or refused us: retry there a little later
        clearTimeout(p.retryTimer)
        p.retryTimer = setTimeout(() => {
          if (!this.#current(p) || (p.backend !== undefined && !p.backend.ended)) return
          this.#reroute(p, route)
        }, this.retryMs)
        p.retryTimer.unref?.()
        return
      }
      this.#reroute(p, route)
    }, () => {
      if (this.#current(p)) this.#failed(p, b)
    })
  }

  /** a peer network's back-end ended or failed: subscribe to the peer again (not twice within `retryMs`) */
  #resubscribePeer (p: Resource): void {
    const again = (): void => {
      if (!this.#current(p) || (p.backend !== undefined && !p.backend.ended)) return
      this.#reroute(p, undefined)
    }
    clearTimeout(p.retryTimer)
    const wait = this.retryMs - (Date.now() - p.lastStart)
    if (wait <= 0) { again(); return }
    p.retryTimer = setTimeout(again, wait)
    p.retryTimer.unref?.()
  }

  /** a NOTIFY of the owner in our back-end dialog */
  notified (request: SipRequest, tx: ServerTransaction, p: Resource): void {
    const b = p.backend
    if (b === undefined) { this.#respond(tx, createResponse(request, 481)); return }
    const ev = parseEvent(request.headers.get('Event'))
    if (ev?.pkg !== p.pkg.name) { this.#respond(tx, createResponse(request, 489, undefined, [['Allow-Events', this.#allowEvents()]])); return }
    const state = parseSubscriptionState(request.headers.get('Subscription-State'))
    if (state === undefined) { this.#respond(tx, createResponse(request, 400, 'Bad Subscription-State')); return }
    this.#respond(tx, createResponse(request, 200))
    if (b.remoteTag === undefined) b.remoteTag = tagOf(request.headers.get('From'))
    const decisions = parseDecisions(request.headers.get(AUTHORIZATION_HEADER))
    for (const [w, d] of decisions) p.ownerDecisions.set(w, d)
    if (decisions.size > 0) this.#ownerDecided(p, new Set(decisions.keys()))
    if (state.state === 'terminated') {
      this.clear(b)
      this.#byCallId.delete(b.callId)
      if (p.backend === b) p.backend = undefined
      if (state.reason === 'rejected') {
        const all = new Set<string>()
        for (const s of p.subs) {
          if (s.kind === 'ua') all.add(s.watcher)
          else for (const w of s.identities?.keys() ?? []) all.add(w)
        }
        for (const w of all) p.ownerDecisions.set(w, 'block')
        this.#ownerDecided(p, all)
        this.#notifier.notifyAll(p)
        return
      }
      // deactivated (the user moved), timeout, noresource, …: find the owner again and re-subscribe
      this.reresolve(p, { ...b, established: false })
      return
    }
    const docBefore = p.remoteDoc
    const stateBefore = p.backendState
    if (request.body.length > 0) {
      // only the real document counts (the owner sends the neutral one while it allows nobody here)
      if (mediaType(request.headers.get('Content-Type')) === p.pkg.contentType && request.headers.get(VIEW_HEADER) === 'full' &&
        (docBefore === undefined || Buffer.compare(docBefore, request.body) !== 0)) p.remoteDoc = Buffer.from(request.body)
    }
    p.backendState = 'accepted'
    this.wake(p)
    // Every watcher is looked at again only when what they are shown may have changed: the
    // document or the back-end's state. The owner answers each in-dialog SUBSCRIBE that carries new
    // watcher identities with a NOTIFY (RFC 6665 4.2.1.2) of the same document; looking at all of
    // a presentity's watchers for each made a ladder of new watchers quadratic (issue 11: the
    // cross-node SUBSCRIBE collapse). Decisions it carries concern their watchers alone.
    if (stateBefore !== 'accepted' || p.remoteDoc !== docBefore) this.#notifier.notifyAll(p)
    else if (decisions.size > 0) this.#notifier.notifyWatchers(p, new Set(decisions.keys()))
  }
}
