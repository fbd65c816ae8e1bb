/**
 * The back-end subscriptions this node serves (draft-ietf-simple-intradomain-federation 6.1.1):
 * another node's SUBSCRIBE for a presentity this node owns, carrying its watchers' identities
 * (`Sipmesh-Watchers`), and a peer network's (peering.ts), which this node serves as the owner or
 * relays to the owner. Each watcher identity gets a decision (`Sipmesh-Authorization`): this
 * node's own as the owner, the owner's when it relays. The subscription dialogs themselves are the
 * notifier's (notifier.ts); in-dialog refreshes come through the agent, which asks
 * `decideIdentities` for the identities a refresh adds.
 */
import { SipStatusError } from '../errors.ts'
import { type SipRequest, type SipResponse } from '../codec/message.ts'
import { createResponse } from '../codec/response.ts'
import type { Aor, Registry } from '../ports.ts'
import type { Registrar } from '../registrar/registrar.ts'
import type { ServerTransaction } from '../transaction/layer.ts'
import type { Flow } from '../proxy/flow.ts'
import type { Decision } from './authorization.ts'
import { PATH_HEADER, checkIncoming, parsePath } from './loop.ts'
import { AUTHORIZATION_HEADER, WATCHERS_GONE_HEADER, WATCHERS_HEADER, formatDecisions, parseWatchers } from './event.ts'
import type { EventPackage } from './package.ts'
import type { RefusedWatchers } from './refused.ts'
import type { AgentRequests } from './requests.ts'
import type { Notifier } from './notifier.ts'
import { NOT_OWNER_HEADER, type BackendSubscriptions } from './backend.ts'
import type { Resources } from './resources.ts'
import type { RulesExchange } from './rules-exchange.ts'
import type { AgentLimits } from './limits.ts'
import { notifierDialog, own, subscribeDialogOf, type Resource, type Sub } from './resource.ts'
import { WATCHERS_OPTION, parsePeerWatchers } from './peering.ts'
import { EVENTLIST } from './lists/server.ts'

export interface BackendServerComponents {
  registry: Registry
  registrar: Registrar<Flow>
  resources: Resources
  notifier: Notifier
  backends: BackendSubscriptions
  rules: RulesExchange
  limits: AgentLimits
  requests: AgentRequests
  refused: RefusedWatchers
  /** the presence package (its watchers are listed by winfo) and winfo (no back-end subscriptions) */
  presence: EventPackage
  winfo: EventPackage
  packageOf: (request: SipRequest) => EventPackage | undefined
  badEvent: (request: SipRequest, tx: ServerTransaction) => void
  respond: (tx: ServerTransaction, response: SipResponse) => void
  /** the watchers of a presentity's presence changed (winfo) */
  watchersChanged: (aor: Aor) => void
  /** a resource list lives at this URI (a list is no presentity: 421) */
  isList: (aor: Aor) => boolean
  /** a watcher identity is still served here (by any subscription, or one on its way) */
  holds: (p: Resource, watcher: string) => boolean
}

export interface BackendServerInit {
  maxSubscriptions: number
  maxPresentities: number
}

export class BackendServer {
  readonly #registry: Registry
  readonly #registrar: Registrar<Flow>
  readonly #resources: Resources
  readonly #notifier: Notifier
  readonly #backends: BackendSubscriptions
  readonly #rules: RulesExchange
  readonly #limits: AgentLimits
  readonly #requests: AgentRequests
  readonly #refused: RefusedWatchers
  readonly #presence: EventPackage
  readonly #winfo: EventPackage
  readonly #packageOf: BackendServerComponents['packageOf']
  readonly #badEvent: BackendServerComponents['badEvent']
  readonly #respond: BackendServerComponents['respond']
  readonly #watchersChanged: BackendServerComponents['watchersChanged']
  readonly #isList: BackendServerComponents['isList']
  readonly #holds: BackendServerComponents['holds']
  readonly #maxSubs: number
  readonly #maxPresentities: number

  constructor (c: BackendServerComponents, init: BackendServerInit) {
    this.#registry = c.registry
    this.#registrar = c.registrar
    this.#resources = c.resources
    this.#notifier = c.notifier
    this.#backends = c.backends
    this.#rules = c.rules
    this.#limits = c.limits
    this.#requests = c.requests
    this.#refused = c.refused
    this.#presence = c.presence
    this.#winfo = c.winfo
    this.#packageOf = c.packageOf
    this.#badEvent = c.badEvent
    this.#respond = c.respond
    this.#watchersChanged = c.watchersChanged
    this.#isList = c.isList
    this.#holds = c.holds
    this.#maxSubs = init.maxSubscriptions
    this.#maxPresentities = init.maxPresentities
  }

  async subscribe (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: Aor): Promise<void> {
    const pkg = this.#packageOf(request)
    if (pkg === undefined) { this.#badEvent(request, tx); return }
    const node = flow.node ?? flow.remote.host
    const self = this.#registry.nodeId
    const path = parsePath(request.headers.get(PATH_HEADER))
    const loop = checkIncoming(self, path)
    if (loop.loop) { this.#respond(tx, createResponse(request, 482, `Loop Detected (${loop.reason})`)); return }
    const expires = this.#limits.grant(request.headers.get('Expires'), 1)
    if (this.#registrar.lookup(aor).length === 0 && this.#resources.get(pkg.name, aor)?.mode !== 'local') {
      const route = await this.#registry.resolve(aor)
      if (route?.node !== self) {
        this.#respond(tx, createResponse(request, 404, 'Not Owner', [[NOT_OWNER_HEADER, self]]))
        return
      }
    }
    const h = request.headers
    const d = subscribeDialogOf(request)
    if (this.#notifier.size >= this.#maxSubs) throw new SipStatusError(503, 'Too Many Subscriptions')
    await this.#rules.ready(aor)
    const p = this.#resources.open(pkg, aor)
    // we own it (checked above): local watchers stop any back-end subscription of their own
    if (p.mode !== 'local') this.#resources.reroute(p, { aor, node: self, sip: '', version: 0n, expiresAt: Date.now() + 1000 })
    const sub: Sub = {
      ...notifierDialog(d, [], flow, expires),
      kind: 'backend',
      p,
      watcher: node,
      identities: new Map(),
      sending: false,
      dirty: false,
      done: false
    }
    this.#admitPair(sub)
    const decisions = this.admitIdentities(sub, parseWatchers(h.get(WATCHERS_HEADER)))
    this.#notifier.add(sub)
    if (p.pkg === this.#presence) this.#watchersChanged(aor)
    this.#respond(tx, createResponse(request, 200, undefined, [
      ['Expires', String(expires)], ['Contact', this.#requests.contactFor(flow)], [AUTHORIZATION_HEADER, formatDecisions(decisions)]
    ], { toTag: sub.localTag }))
    if (expires === 0) { this.#notifier.end(sub, { state: 'terminated', reason: 'timeout' }); return }
    this.#notifier.arm(sub)
    this.#notifier.notify(sub, true)
  }

  /**
   * A peer network's back-end SUBSCRIBE (peering.ts), at whichever node its TLS flow reached: this
   * node is its notifier. Every watcher identity must be of the peer's domain (403) and the list
   * well formed (400). When this node owns the presentity it decides per watcher itself; when
   * another node does, it relays: its own back-end subscription to the owner carries the peer's
   * watchers, and the owner's decisions are passed on (waiting up to `decisionWaitMs` for them).
   */
  async peerSubscribe (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: Aor): Promise<void> {
    const peer = flow.peerDomain as string
    const pkg = this.#packageOf(request)
    if (pkg === undefined || pkg === this.#winfo) { this.#badEvent(request, tx); return }
    const h = request.headers
    const watchers = parsePeerWatchers(h.get(WATCHERS_HEADER), peer)
    parsePeerWatchers(h.get(WATCHERS_GONE_HEADER), peer)
    const path = parsePath(h.get(PATH_HEADER))
    const loop = checkIncoming(this.#registry.nodeId, path)
    if (loop.loop) { this.#respond(tx, createResponse(request, 482, `Loop Detected (${loop.reason})`)); return }
    const expires = this.#limits.grant(h.get('Expires'), 1)
    if (this.#isList(aor)) { this.#respond(tx, createResponse(request, 421, undefined, [['Require', EVENTLIST]])); return }
    const d = subscribeDialogOf(request)
    if (this.#notifier.size >= this.#maxSubs) throw new SipStatusError(503, 'Too Many Subscriptions')
    if (this.#resources.size >= this.#maxPresentities && !this.#resources.has(pkg.name, aor)) throw new SipStatusError(503, 'Too Many Presentities')
    await this.#rules.ready(aor)
    const p = this.#resources.open(pkg, aor)
    // the identities keep the resource (and the back-end's interest in them) alive while we wait
    for (const w of watchers) p.wanted.set(w, (p.wanted.get(w) ?? 0) + 1)
    try {
      await p.ready
      // the pair rule per (presentity, origin node of the peer network)
      const origin = `${peer}/${path[0] ?? d.callId}`
      const sub: Sub = {
        ...notifierDialog(d, [], flow, expires),
        kind: 'backend',
        p,
        watcher: own(origin),
        peer,
        identities: new Map(),
        undecided: new Set(),
        sending: false,
        dirty: false,
        done: false
      }
      const decisions = await this.decideIdentities(sub, watchers)
      if (!this.#resources.current(p)) throw new SipStatusError(503, 'Presentity Moved')
      this.#admitPair(sub)
      this.#notifier.add(sub)
      if (p.pkg === this.#presence) this.#watchersChanged(aor)
      this.#respond(tx, createResponse(request, 200, undefined, [
        ['Expires', String(expires)], ['Contact', this.#requests.contactFor(flow)], ['Require', WATCHERS_OPTION],
        [AUTHORIZATION_HEADER, formatDecisions(decisions)]
      ], { toTag: sub.localTag }))
      if (expires === 0) { this.#notifier.end(sub, { state: 'terminated', reason: 'timeout' }); return }
      this.#notifier.arm(sub)
      this.#notifier.notify(sub, true)
    } finally {
      for (const w of watchers) {
        const n = (p.wanted.get(w) ?? 1) - 1
        if (n <= 0) p.wanted.delete(w)
        else p.wanted.set(w, n)
      }
      this.#resources.forget(p)
    }
  }

  /**
   * The pair rule (draft 7.2.1) per presentity and origin node: a second back-end dialog from the
   * same origin supersedes the first (it lost the old one; the new one wins); too many: 503.
   */
  #admitPair (sub: Sub): void {
    const { p, watcher, key } = sub
    const pairs = this.#notifier.pairs
    const admitted = pairs.admit(p.key, watcher, key)
    if (admitted === 'full') throw new SipStatusError(503, 'Too Many Subscriptions')
    if (admitted === 'loop') {
      for (const s of [...p.subs]) if (s.kind === 'backend' && s.watcher === watcher) this.#notifier.drop(s)
      pairs.admit(p.key, watcher, key)
    }
  }

  /**
   * An in-dialog refresh of a back-end subscription served here: the watcher identities it adds
   * get their decisions (into `extra`, the 200's headers), those it names gone are forgotten. A
   * peer network's identities must be of its own domain (peering.ts: 400 / 403 otherwise).
   */
  async refreshed (sub: Sub, request: SipRequest, extra: Array<[string, string]>): Promise<void> {
    // a peer network's: its watchers strictly of its own domain (peering.ts), else 400 / 403
    const parse = (v: string | undefined): string[] => sub.peer !== undefined ? parsePeerWatchers(v, sub.peer) : parseWatchers(v)
    const goneIds = parse(request.headers.get(WATCHERS_GONE_HEADER))
    const added = await this.decideIdentities(sub, parse(request.headers.get(WATCHERS_HEADER)))
    if (added.size > 0) extra.push([AUTHORIZATION_HEADER, formatDecisions(added)])
    let gone = 0
    for (const w of goneIds) {
      if (sub.identities?.delete(w) !== true) continue
      gone++
      sub.undecided?.delete(w)
      if (sub.peer !== undefined && sub.p.mode === 'remote' && !this.#holds(sub.p, w)) this.#backends.forgetIdentity(sub.p, w)
    }
    if ((added.size > 0 || gone > 0) && sub.p.pkg === this.#presence) this.#watchersChanged(sub.p.aor)
    if (sub.peer !== undefined) extra.push(['Require', WATCHERS_OPTION])
  }

  /**
   * Decisions for watcher identities a back-end subscription brings: this node's own when it owns
   * the presentity (or nobody does); the owner's, relayed, when another node owns it (a peer
   * network's back-end: the identities join our back-end subscription to the owner, and those the
   * owner has not decided within the wait are told later, `Resources.ownerDecided`).
   */
  async decideIdentities (sub: Sub, watchers: string[]): Promise<Map<string, Decision>> {
    const p = sub.p
    if (p.mode !== 'remote' || sub.peer === undefined) return this.admitIdentities(sub, watchers)
    const ids = sub.identities ?? new Map<string, Decision>()
    const fresh = watchers.filter(w => !ids.has(w) && ids.size < 10_000)
    for (const w of fresh) if (!this.#backends.decided(p, w)) this.#backends.queueIdentity(p, w)
    await Promise.all(fresh.map(async w => { await this.#backends.waitDecision(p, w) }))
    const out = new Map<string, Decision>()
    for (const w of fresh) {
      const d = p.ownerDecisions.get(w)
      // undecided: held as polite-block (no real state) until the owner's decision is relayed
      ids.set(w, d ?? 'polite-block')
      if (d === undefined) sub.undecided?.add(w)
      else out.set(w, d)
    }
    return out
  }

  admitIdentities (sub: Sub, watchers: string[]): Map<string, Decision> {
    const out = new Map<string, Decision>()
    const ids = sub.identities
    if (ids === undefined) return out
    for (const w of watchers) {
      if (ids.size >= 10_000 && !ids.has(w)) break
      const d = sub.p.pkg.decide(sub.p.aor, w)
      ids.set(w, d)
      out.set(w, d)
      // the watcher's node will refuse her (403): listed a while after her identity goes (winfo)
      if (d === 'block' && sub.p.pkg === this.#presence) this.#refused.note(sub.p.aor, w)
    }
    return out
  }
}
