/**
 * The presence agent of a sipmesh node: RFC 6665 notifier and subscriber for the event packages
 * of package.ts (`presence`, RFC 3856; `dialog`, RFC 4235; `presence.winfo`, RFC 3857), the
 * RFC 3903 PUBLISH server, held subscriptions and moves (draft-ietf-simple-intradomain-federation
 * 6.1.1, 6.1.4). This file receives requests and admits subscriptions; the rooms do the rest:
 *
 * - `notifier.ts`: the subscription dialogs this node is the notifier of (user agents', and other
 *   nodes' back-end ones), expiry, coalesced NOTIFYs.
 * - `backend.ts`: the back-end subscription this node holds to the owner of a remote resource.
 * - `backend-server.ts`: the back-end subscriptions this node serves (as the owner, or relaying
 *   a peer network's to the owner), with a decision per watcher identity.
 * - `resources.ts`: one presentity in one package while anybody subscribes to it here; modes,
 *   moves, per-package state, what each watcher is told.
 * - `rules-exchange.ts`: authorization rules between nodes (push, fetch, hand-over after a move).
 * - `limits.ts`: per-source rate limit, granted expiries.
 * - `requests.ts`: sending our own requests; Contact; which flow a NOTIFY takes.
 * - `packages/`: the event packages.
 * - `lists/`: resource lists (RFC 4662): the list store the admin API fills, and the list server
 *   that serves SUBSCRIBEs to a list URI with member subscriptions on the resources above.
 *
 * Roles, per resource (`Resource.mode`):
 * - `local`: this node owns the AoR (live bindings here, or the registry names us). It serves the
 *   package's composed document to its own user agents and to the back-end subscriptions of other
 *   nodes, applying the package's decision per watcher (the authorization rules, or for
 *   `presence.winfo` the presentity alone).
 * - `remote`: another node owns it. This node stays the notifier towards its user agents and holds
 *   ONE back-end subscription per package to the owner, shared by every local watcher of that
 *   presentity. The back-end SUBSCRIBE (and in-dialog refreshes) carry the watcher identities in
 *   `Sipmesh-Watchers` (batches of up to 200); the owner answers with a decision per watcher in
 *   `Sipmesh-Authorization` (on the 2xx, and on a NOTIFY when its rules change). The back-end
 *   NOTIFY carries the owner's composed document once; this node hands each watcher what the
 *   owner decided for it: the document (allow), the neutral document (polite-block), or the end of
 *   its subscription (block: draft 7.1.2.2, a denied back-end decision denies the watcher whatever
 *   this node's own rules say). No real state reaches a watcher before the owner has decided for it
 *   (the watcher's SUBSCRIBE waits up to `decisionWaitMs` for that decision, then is accepted as
 *   `pending` with the neutral document).
 * - `held`: nobody owns it. The subscription is accepted, the watcher gets the neutral document,
 *   and `registry.watch()` tells us when the AoR is claimed; the back-end subscription is then
 *   created at once.
 *
 * Every resource with a subscription here is watched in the registry: a new route (a move) makes
 * the watcher node end its back-end subscription and subscribe at the new owner; the old owner,
 * told by `onDisplaced`, ends the back-end subscriptions it serves with
 * `Subscription-State: terminated;reason=deactivated` (RFC 6665: re-subscribe at once), which makes
 * watcher nodes re-resolve too. User agents keep their dialogs throughout.
 *
 * Loops (draft 7.2.1): back-end SUBSCRIBEs carry `Sipmesh-Path`; an owner never forwards one (it
 * answers from its own data, or `404 Not Owner`), so a path naming the receiver is refused 482.
 * The pair rule holds per (resource, origin node): a second back-end dialog from the same node
 * for the same resource supersedes the first (the origin node re-subscribed after losing track,
 * which is no loop in a one-hop topology).
 *
 * Peer networks (peering.ts): a user agent's SUBSCRIBE to a user of a peered domain is served
 * here like one to a remote user, the owner being the peer network (`peer:<domain>`): ONE
 * back-end subscription per presentity and package over the peer TLS flow, whatever the number of
 * watchers here. A peer's back-end SUBSCRIBE (`Require: sipmesh-watchers`) is served here like
 * another node's, its watchers all of the peer's domain (403 otherwise); when another node of ours
 * owns the presentity this node relays: its own back-end subscription to the owner carries the
 * peer's watchers, and the owner's decisions go on to the peer (`Resources.ownerDecided`). Each node
 * of the watcher network with watchers of a presentity holds its own such subscription: their
 * number is bounded by the nodes, not the watchers.
 *
 * Authorization rules: the owner's rules decide, and the watcher node's own copy can only make it
 * stricter (draft 7.1.2.2); how they follow the presentity across the mesh: rules-exchange.ts.
 * Rules that live only on a node that is dead when the presentity moves are lost to the new owner
 * (they come back when that node returns and the presentity moves again, or an operator PUTs them
 * again).
 */
import { SipStatusError } from '../errors.ts'
import { type SipRequest, type SipResponse } from '../codec/message.ts'
import { createResponse, generateTag } from '../codec/response.ts'
import { parseUri, aorOf, type SipUri } from '../codec/uri.ts'
import { parseNameAddr, parseNameAddrShared } from '../codec/name-addr.ts'
import { parseCSeq } from '../codec/cseq.ts'
import type { Aor, DurableStore, Logger, Registry } from '../ports.ts'
import type { Registrar } from '../registrar/registrar.ts'
import type { PresentityView, SubscriptionsView } from '../inspect.ts'
import type { ServerTransaction } from '../transaction/layer.ts'
import { MESH_TRANSPORT, type Flow } from '../proxy/flow.ts'
import { responseForError } from '../proxy/error-response.ts'
import type { PidfDocument } from './pidf.ts'
import type { PublicationStore, PublicationStoreInit } from './publications.ts'
import { PresenceAuthorization, type Decision, type PresentityRules } from './authorization.ts'
import { parseEvent, parseExpiresHeader } from './event.ts'
import { sipStatusFor } from './index.ts'
import { mediaType, type EventPackage } from './package.ts'
import { PresencePackage } from './packages/presence.ts'
import { DialogPackage } from './packages/dialog.ts'
import { WinfoPackage } from './packages/winfo.ts'
import { RefusedWatchers } from './refused.ts'
import { CallsExchange, CALLS_EVENT } from './calls-exchange.ts'
import type { ProxiedDialogEvent } from '../proxy/core.ts'
import { AgentRequests, type PresenceAgentTransport } from './requests.ts'
import { Notifier } from './notifier.ts'
import { BackendSubscriptions } from './backend.ts'
import { BackendServer } from './backend-server.ts'
import { Resources } from './resources.ts'
import { RulesExchange, RULES_EVENT } from './rules-exchange.ts'
import { AgentLimits, RateLimitedError, TooBriefError } from './limits.ts'
import { dialogKey, notifierDialog, own, subscribeDialogOf, tagOf, type Resource, type Sub, type SubscribeDialog } from './resource.ts'
import { WATCHERS_OPTION } from './peering.ts'
import { ListStore, type ListStoreInit } from './lists/store.ts'
import { EVENTLIST, ListServer, names, type ListServerInit } from './lists/server.ts'
import { ListExchange, LIST_EVENT, checkListSize, type ListExchangeInit } from './lists/exchange.ts'
import { ListError, parseResourceList, type ResourceList } from './lists/list.ts'
import { parseResourceLists, RESOURCE_LISTS_CONTENT_TYPE } from './lists/resource-lists.ts'

/** RFC 5367 5: the option tag of a SUBSCRIBE carrying its own resource list */
export const RECIPIENT_LIST_SUBSCRIBE = 'recipient-list-subscribe'

export { RULES_EVENT, RULES_CONTENT_TYPE, RULES_VERSION_HEADER, MAX_RULES_BODY } from './rules-exchange.ts'
export type { PresenceAgentTransport } from './requests.ts'

export interface PresenceAgentComponents {
  registry: Registry
  registrar: Registrar<Flow>
  logger: Logger
  store?: DurableStore
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
   * most resources (presentity and package) with subscriptions here; each is watched in the
   * registry (with the DHT: an interest record and a periodic re-resolve), so a flood of
   * SUBSCRIBEs to made-up users stops here (503). @default 50000
   */
  maxPresentities?: number
  /**
   * Per-source limit of SUBSCRIBE and PUBLISH requests from user agents: a token bucket per
   * source host (IP address; every port, UDP and TCP/WebSocket connection of one host shares it,
   * as the transport layer's limit does), `burst` requests at once, refilled at `perSecond`.
   * Above it: 503 with Retry-After. User agents behind one NAT address share the bucket, and so
   * do all the users behind an edge proxy or a peer network's border node: hence off by default
   * (`--presence-rate-limit`), like the transport layer's `--rate-limit`.
   * @default undefined (no limit)
   */
  rateLimit?: { burst: number, perSecond: number }
  /** how long a watcher's SUBSCRIBE waits for the owner's decision before `pending`, ms. @default 1500 */
  decisionWaitMs?: number
  /** delay before retrying a failed back-end subscription, ms. @default 2000 */
  retryMs?: number
  /** resource lists (lists/): how many, NOTIFY rate, subscriptions per subscriber */
  lists?: ListStoreInit & ListServerInit & ListExchangeInit
  /** how long a peer network that is not sipmesh is remembered as such, ms (peering.ts). @default 600000 */
  peerPlainMs?: number
}

export interface PresenceStats {
  presentities: number
  subscriptions: number
  backendSubscriptions: number
  /** back-end subscriptions this node holds to peer networks (peering.ts), of `backendSubscriptions` */
  peerBackendSubscriptions: number
  /** back-end subscriptions of peer networks this node serves */
  peerBackendsServed: number
  publications: number
  notifiesSent: number
  rateLimited: number
  /** final responses the agent sent to the requests it served (SUBSCRIBE, PUBLISH, NOTIFY), by class (`2xx`...) */
  responses: Record<string, number>
}

type DialogFields = Omit<SubscribeDialog, 'fromAor'> & { expires: number }

export class PresenceAgent {
  readonly #registry: Registry
  readonly #registrar: Registrar<Flow>
  readonly #log: Logger
  readonly #domains: Set<string>
  readonly #maxSubs: number
  readonly #maxPresentities: number
  readonly authorization: PresenceAuthorization
  readonly #presence: PresencePackage
  readonly #dialog: DialogPackage
  readonly #winfo: WinfoPackage
  readonly #refused: RefusedWatchers
  readonly #calls: CallsExchange
  readonly #packages = new Map<string, EventPackage>()
  readonly #requests: AgentRequests
  readonly #limits: AgentLimits
  readonly #notifier: Notifier
  readonly #backends: BackendSubscriptions
  readonly #resources: Resources
  readonly #rules: RulesExchange
  readonly #backendServer: BackendServer
  /** the resource lists this node serves (admin API `/lists/`) */
  readonly lists: ListStore
  readonly #listServer: ListServer
  readonly #exchange: ListExchange
  readonly #unsub: Array<() => void> = []
  #running = false
  readonly #responses: Record<string, number> = {}
  /** the last URI text whose AoR was read, and that AoR (`#aorOfText`) */
  #lastUri = ''
  #lastAor: Aor = ''

  constructor (components: PresenceAgentComponents, init: PresenceAgentInit) {
    this.#registry = components.registry
    this.#registrar = components.registrar
    this.#log = components.logger
    this.#domains = new Set([...init.domains].map(d => d.toLowerCase()))
    this.#maxSubs = init.maxSubscriptions ?? 100_000
    this.#maxPresentities = init.maxPresentities ?? 50_000
    this.#limits = new AgentLimits(init)
    this.authorization = new PresenceAuthorization({ store: components.store, nodeDefault: init.nodeDefault, logger: this.#log })
    this.#presence = new PresencePackage({ authorization: this.authorization, bindings: aor => this.#registrar.lookup(aor).length, logger: this.#log }, { publications: init.publications })
    this.#add(this.#presence)
    this.#dialog = new DialogPackage({ authorization: this.authorization, logger: this.#log }, { publications: init.publications })
    this.#add(this.#dialog)
    this.#winfo = new WinfoPackage({ watchers: aor => this.#watchersOf(aor) })
    this.#refused = new RefusedWatchers(aor => { this.#watchersChanged(aor) })
    this.#add(this.#winfo)
    const decisionWaitMs = init.decisionWaitMs ?? 1500
    const retryMs = init.retryMs ?? 2000
    const running = (): boolean => this.#running
    const respond = (tx: ServerTransaction, r: SipResponse): void => { this.#respond(tx, r) }
    this.#requests = new AgentRequests({ registry: this.#registry, logger: this.#log })
    this.#notifier = new Notifier({ requests: this.#requests, logger: this.#log, view: s => this.#resources.view(s), removed: s => { this.#removed(s) } })
    this.#backends = new BackendSubscriptions({
      registry: this.#registry,
      requests: this.#requests,
      notifier: this.#notifier,
      logger: this.#log,
      current: p => this.#resources.current(p),
      reroute: (p, route) => { this.#resources.reroute(p, route) },
      respond,
      allowEvents: () => this.#allowEvents(),
      ownerDecided: (p, watchers) => { this.#resources.ownerDecided(p, watchers) },
      localDomain: [...this.#domains][0] ?? ''
    }, { backendExpires: init.backendExpires, decisionWaitMs, retryMs, peerPlainMs: init.peerPlainMs })
    this.#rules = new RulesExchange({
      authorization: this.authorization,
      requests: this.#requests,
      logger: this.#log,
      domains: this.#domains,
      running,
      respond,
      applied: aor => { this.#rulesChanged(aor) },
      released: aor => { for (const p of this.#resources.ofAor(aor)) this.#notifier.notifyAll(p) }
    }, { decisionWaitMs, retryMs })
    this.#resources = new Resources({
      registry: this.#registry,
      registrar: this.#registrar,
      notifier: this.#notifier,
      backends: this.#backends,
      logger: this.#log,
      running,
      gated: aor => this.#rules.gated(aor),
      peerOf: aor => this.#requests.peerOf(aor)
    })
    this.#backendServer = new BackendServer({
      registry: this.#registry,
      registrar: this.#registrar,
      resources: this.#resources,
      notifier: this.#notifier,
      backends: this.#backends,
      rules: this.#rules,
      limits: this.#limits,
      requests: this.#requests,
      refused: this.#refused,
      presence: this.#presence,
      winfo: this.#winfo,
      packageOf: r => this.#packageOf(r),
      badEvent: (r, tx) => { this.#badEvent(r, tx) },
      respond,
      watchersChanged: aor => { this.#watchersChanged(aor) },
      isList: aor => this.lists.get(aor) !== undefined,
      holds: (p, watcher) => this.#holds(p, watcher)
    }, { maxSubscriptions: this.#maxSubs, maxPresentities: this.#maxPresentities })
    this.lists = new ListStore({ store: components.store, logger: this.#log }, init.lists)
    this.#listServer = new ListServer({
      lists: this.lists,
      resources: this.#resources,
      notifier: this.#notifier,
      backends: this.#backends,
      requests: this.#requests,
      limits: this.#limits,
      logger: this.#log,
      respond
    }, init.lists)
    this.#calls = new CallsExchange({
      calls: this.#dialog.calls,
      registry: this.#registry,
      owns: aor => this.#registrar.lookup(aor).length > 0,
      requests: this.#requests,
      logger: this.#log,
      domains: this.#domains,
      respond
    })
    this.#exchange = new ListExchange({
      lists: this.lists,
      registry: this.#registry,
      requests: this.#requests,
      logger: this.#log,
      domains: this.#domains,
      respond,
      applied: (uri, list) => { this.#listServer.update(uri, list) },
      inUse: (uri) => this.#listServer.holds(uri),
      remove: async (uri) => await this.deleteList(uri)
    }, init.lists)
  }

  /** this node's id in the mesh (a list's `home`) */
  get nodeId (): string { return this.#registry.nodeId }

  /** the RFC 3903 publications of the presence package */
  get publications (): PublicationStore<PidfDocument> { return this.#presence.publications }

  /** the proxy core's dialog seam: INVITE dialogs proxied for our users (RFC 4235 state) */
  observeDialog (event: ProxiedDialogEvent): void {
    if (this.#running) this.#dialog.observe(event)
  }

  /** `stats.responses` without the walk `stats` makes (the gateway adds it to the proxy's) */
  get responseCounts (): Readonly<Record<string, number>> { return this.#responses }

  get stats (): PresenceStats {
    let backend = 0
    let peerServed = 0
    for (const p of this.#resources.values()) {
      if (p.backend !== undefined && !p.backend.ended) backend++
      for (const s of p.subs) if (s.peer !== undefined && !s.done) peerServed++
    }
    return {
      presentities: this.#resources.size,
      subscriptions: this.#notifier.size,
      backendSubscriptions: backend,
      peerBackendSubscriptions: this.#backends.toPeers,
      peerBackendsServed: peerServed,
      publications: this.publications.size + this.#dialog.publications.size,
      notifiesSent: this.#notifier.notifiesSent,
      rateLimited: this.#limits.rateLimited,
      responses: { ...this.#responses }
    }
  }

  /**
   * One presentity's back-end subscriptions as this node sees them (diagnostics, tests): how many
   * this node holds as a watcher node (`holding`, with `to`: the owner node of the live one), and
   * those it serves as the owner, counted per origin node (`serving`). A watcher node holds at
   * most one per presentity and package, however many of its user agents watch it.
   */
  backendsOf (aor: string, event = 'presence'): { holding: number, to: string | undefined, serving: Record<string, number> } {
    const p = this.#resources.get(event, aor)
    const serving: Record<string, number> = {}
    let holding = 0
    if (p !== undefined) {
      for (const s of p.subs) if (s.kind === 'backend' && !s.done) serving[s.watcher] = (serving[s.watcher] ?? 0) + 1
      holding = this.#backends.holding(p)
    }
    const b = p?.backend
    return { holding, to: b !== undefined && !b.ended ? b.node : undefined, serving }
  }

  /**
   * The presentities tracked here, at most `limit`, for the admin API (`GET /subscriptions`): who
   * watches each and how it is served. A read of the agent's state, nothing more. One entry per
   * presentity and event package (`event`: dialog and presence.winfo beside presence).
   */
  snapshot (limit: number): SubscriptionsView {
    const presentities: PresentityView[] = []
    for (const p of this.#resources.values()) {
      if (presentities.length >= limit) break
      const watchers = new Set<string>()
      const watcherNodes = new Set<string>()
      for (const s of p.subs) if (!s.done) (s.kind === 'ua' ? watchers : watcherNodes).add(s.watcher)
      const b = p.backend
      presentities.push({
        aor: p.aor,
        ...(p.pkg !== this.#presence ? { event: p.pkg.name } : {}),
        mode: p.mode,
        ...(p.owner !== undefined ? { owner: p.owner } : {}),
        watchers: [...watchers].sort(),
        watcherNodes: [...watcherNodes].sort(),
        ...(b !== undefined && !b.ended ? { backend: p.backendState } : {}),
        publications: p.pkg.etags?.(p.aor).length ?? 0
      })
    }
    return { presentities, total: this.#resources.size, subscriptions: this.#notifier.size }
  }

  /** Load persisted rules (before start). */
  async load (): Promise<void> {
    const r = await this.authorization.load()
    if (r.skipped > 0) this.#log.warn('presence rules skipped', r)
    const l = await this.lists.load()
    if (l.skipped > 0) this.#log.warn('resource lists skipped', l)
  }

  start (t: PresenceAgentTransport): void {
    this.#requests.attach(t)
    this.#running = true
    for (const pkg of this.#packages.values()) {
      this.#unsub.push(pkg.onChange((aor) => { if (this.#running) this.#resources.changed(this.#resources.get(pkg.name, aor)) }))
    }
    this.#registrar.onChange((aor, bindings) => { if (this.#running) this.#resources.onBindings(aor, bindings.length) })
    this.#unsub.push(this.#registry.onDisplaced((aor, by) => { if (this.#running) this.#onDisplaced(aor, by.node, by) }))
    this.#exchange.start()
    this.#exchange.rehome().catch((err: unknown) => { this.#log.warn('lists not re-homed', { err: String(err) }) })
    this.#registrar.onClaim((aor, result) => {
      const prev = result.previous
      if (this.#running && prev !== undefined && prev.node !== this.#registry.nodeId) this.#rules.fetch(aor, prev.node)
    })
  }

  stop (): void {
    this.#running = false
    for (const u of this.#unsub.splice(0)) u()
    this.#exchange.stop()
    this.#refused.stop()
    this.#calls.stop()
    this.#listServer.stop()
    this.#resources.stop()
    this.#notifier.clear()
    this.#backends.clearAll()
    for (const pkg of this.#packages.values()) pkg.stop?.()
  }

  #add (pkg: EventPackage): void { this.#packages.set(pkg.name, pkg) }

  #allowEvents (): string { return [...this.#packages.keys()].join(', ') }

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
    this.#rulesChanged(key)
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
    else if (owner !== undefined && this.#requests.attached) {
      const sent = this.#rules.push(owner, key, doc).then(r => r.status >= 200 && r.status < 300, () => false)
      let timer: ReturnType<typeof setTimeout> | undefined
      delivered = await Promise.race([sent, new Promise<boolean>(resolve => { timer = setTimeout(() => { resolve(false) }, waitMs) })])
      clearTimeout(timer)
    }
    return { ...stored, version: doc.version.toString(), owner, delivered }
  }

  // ---- admin API: resource lists (lists/) ----------------------------------------------------

  /** the list at a URI: this node's, or its home node's (undefined: none); `home` names the node */
  async getList (uri: string): Promise<(ResourceList & { home: string }) | undefined> {
    const key = this.#normalize(uri)
    const own = this.lists.get(key)
    if (own !== undefined) return { ...own, home: this.#registry.nodeId }
    const found = await this.#exchange.find(key)
    if (found === undefined) return undefined
    const route = await this.#registry.resolve(key).catch(() => undefined)
    return { ...found, home: route?.node ?? '' }
  }

  /** define or replace a list here (JSON as in `parseResourceList`); this node becomes its home */
  async putList (uri: string, input: unknown): Promise<ResourceList & { home: string }> {
    const list = parseResourceList(uri, input, this.#domains, this.lists.limits)
    checkListSize(list)
    if (this.#registrar.lookup(list.uri).length > 0) throw new ListError(409, 'registered_user', `${list.uri} is a registered user`)
    list.version = this.#exchange.nextVersion(list.uri)
    await this.lists.put(list)
    await this.#exchange.home(list)
    return { ...list, home: this.#registry.nodeId }
  }

  /** remove a list, here or at its home node; false when no node holds one at that URI */
  async deleteList (uri: string): Promise<boolean> {
    const key = this.#normalize(uri)
    const version = this.#exchange.nextVersion(key)
    if (!this.lists.has(key)) return await this.#exchange.forwardDelete(key)
    if (!(await this.lists.delete(key))) return false
    await this.#exchange.unhome(key, version)
    return true
  }

  /** the rules of a presentity changed here: every resource of it decides again */
  #rulesChanged (aor: Aor): void {
    for (const p of this.#resources.ofAor(aor)) this.#resources.decisionsChanged(p)
    this.#watchersChanged(aor)
  }

  // ---- watchers (presence.winfo) -------------------------------------------------------------

  /** the watchers of a presentity's presence this node knows, with their decisions (as its owner) */
  * #watchersOf (aor: Aor): Iterable<readonly [string, Decision]> {
    const p = this.#resources.get(this.#presence.name, aor)
    const seen = new Set<string>()
    for (const s of p?.subs ?? []) {
      if (s.done) continue
      if (s.kind === 'ua') {
        if (seen.has(s.watcher)) continue
        seen.add(s.watcher)
        yield [s.watcher, this.#presence.decide(aor, s.watcher)]
      } else if (s.identities !== undefined) {
        for (const [w, d] of s.identities) {
          if (seen.has(w)) continue
          seen.add(w)
          yield [w, d]
        }
      }
    }
    // RFC 3857 3.2: refused outright here (no subscription), listed terminated/rejected a while
    for (const w of this.#refused.of(aor)) if (!seen.has(w)) yield [w, 'block']
  }

  /** the watchers of a presentity's presence changed: its winfo subscribers are told */
  #watchersChanged (aor: Aor): void {
    if (this.#resources.has(this.#winfo.name, aor)) this.#winfo.changed(aor)
  }

  /** a subscription was removed (notifier.ts): the resource may go; a watcher gone is told */
  #removed (s: Sub): void {
    const p = s.p
    if (p.mode === 'remote') {
      // identities nobody here watches any more: the owner forgets them (winfo)
      if (s.kind === 'ua' && p.pkg === this.#presence && !this.#holds(p, s.watcher)) this.#backends.forgetIdentity(p, s.watcher)
      if (s.peer !== undefined) for (const w of s.identities?.keys() ?? []) if (!this.#holds(p, w)) this.#backends.forgetIdentity(p, w)
    }
    if (p.pkg === this.#presence) this.#watchersChanged(p.aor)
    this.#resources.forget(p)
  }

  /** a watcher identity is still served here: a user agent's subscription, a peer's back-end one, or a SUBSCRIBE on its way */
  #holds (p: Resource, watcher: string): boolean {
    if (p.wanted.has(watcher)) return true
    for (const o of p.subs) if (!o.done && (o.kind === 'ua' ? o.watcher === watcher : o.identities?.has(watcher) === true)) return true
    return false
  }

  // ---- the proxy's interceptor -------------------------------------------------------------

  /**
   * Called by the proxy core for every new request before routing: true when the agent takes it
   * (and answers it through `tx`), false to leave it to the proxy. `uri`: the Request-URI as the
   * proxy parsed it (else parsed here).
   */
  intercept (request: SipRequest, tx: ServerTransaction, flow: Flow, fromMesh: boolean, uri?: Readonly<SipUri>): boolean {
    const m = request.method
    if (m !== 'SUBSCRIBE' && m !== 'NOTIFY' && m !== 'PUBLISH') return false
    if (!this.#running) return false
    const h = request.headers
    const toTag = tagOf(h.get('To'))
    if (toTag !== undefined && (m === 'SUBSCRIBE' || m === 'NOTIFY')) {
      const callId = h.get('Call-ID') ?? ''
      const fromTag = tagOf(h.get('From')) ?? ''
      if (m === 'SUBSCRIBE') {
        if (this.#listServer.has(dialogKey(callId, toTag, fromTag))) { this.#run(request, tx, async () => { this.#listServer.refresh(request, tx) }); return true }
        const sub = this.#notifier.get(dialogKey(callId, toTag, fromTag))
        if (sub !== undefined) { this.#run(request, tx, async () => { await this.#refresh(request, tx, sub) }); return true }
      } else {
        const p = this.#backends.forNotify(callId, toTag)
        if (p !== undefined) { this.#run(request, tx, async () => { this.#backends.notified(request, tx, p) }); return true }
      }
      // an in-dialog request for a dialog we do not know, sent to us as the notifier/subscriber
      if (this.#requests.isOurTarget(request.uri)) { this.#respond(tx, createResponse(request, 481)); return true }
      return false
    }
    if (m === 'NOTIFY') return false
    if (m === 'SUBSCRIBE' && !fromMesh && flow.peerDomain === undefined) {
      // a user agent of ours watching a user of a peer network: one back-end subscription to the peer (peering.ts)
      const peerAor = this.#peerPresentity(request)
      if (peerAor !== undefined) { this.#run(request, tx, async () => { await this.#uaSubscribe(request, tx, flow, peerAor) }); return true }
    }
    // a PUBLISH's Event, read once
    const event = m === 'PUBLISH' ? parseEvent(h.get('Event')) : undefined
    if (event?.pkg === RULES_EVENT) {
      this.#run(request, tx, async () => { await this.#rules.handle(request, tx, fromMesh) })
      return true
    }
    if (event?.pkg === CALLS_EVENT) {
      this.#run(request, tx, async () => { this.#calls.handle(request, tx, fromMesh, flow.node) })
      return true
    }
    if (event?.pkg === LIST_EVENT) {
      this.#run(request, tx, async () => { this.#exchange.handle(request, tx, fromMesh, flow.node) })
      return true
    }
    let aor: string
    try {
      const u = uri ?? parseUri(request.uri)
      if (u.user === undefined || !this.#domains.has(u.host.toLowerCase())) return false
      aor = aorOf(u)
      this.#lastUri = request.uri
      this.#lastAor = aor
    } catch { return false }
    if (m === 'SUBSCRIBE' && flow.peerDomain !== undefined && names(h.getAll('Require'), WATCHERS_OPTION)) {
      this.#run(request, tx, async () => { await this.#backendServer.peerSubscribe(request, tx, flow, aor) })
      return true
    }
    const list = m === 'SUBSCRIBE' ? this.lists.get(aor) : undefined
    if (list !== undefined) {
      this.#run(request, tx, async () => { await this.#listSubscribe(request, tx, flow, list, fromMesh) })
      return true
    }
    if (m === 'SUBSCRIBE' && !fromMesh && names(h.getAll('Require'), RECIPIENT_LIST_SUBSCRIBE)) {
      this.#run(request, tx, async () => { await this.#adHocSubscribe(request, tx, flow, aor) })
      return true
    }
    if (m === 'SUBSCRIBE' && !fromMesh && (names(h.getAll('Supported'), EVENTLIST) || names(h.getAll('Require'), EVENTLIST))) {
      // perhaps a list of another node (lists/exchange.ts); a user otherwise
      this.#run(request, tx, async () => {
        const remote = await this.#exchange.find(aor)
        await (remote !== undefined ? this.#listSubscribe(request, tx, flow, remote, fromMesh) : this.#uaSubscribe(request, tx, flow, aor))
      })
      return true
    }
    if (m === 'SUBSCRIBE') {
      this.#run(request, tx, async () => { await (fromMesh ? this.#backendServer.subscribe(request, tx, flow, aor) : this.#uaSubscribe(request, tx, flow, aor)) })
      return true
    }
    // PUBLISH: taken when we serve the AoR here, or hold the publication its entity tag names
    // (RFC 3903 6: refresh, modify and remove work with or without a live binding); otherwise the
    // proxy routes it to the owner, and hands it back to `atOwner` if that is us or nobody
    const pkg = event === undefined ? undefined : this.#packages.get(event.pkg)
    if (this.#registrar.lookup(aor).length === 0 && !this.#servesLocally(aor) && !this.#holdsTag(request, aor, pkg)) return false
    // answered at once: no promise or closure per PUBLISH (issue 11)
    try {
      this.#publish(request, tx, flow, aor, fromMesh, pkg)
    } catch (err) {
      this.#failed(request, tx, err)
    }
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

  /**
   * The presentity of a user agent's SUBSCRIBE that this node serves through a back-end
   * subscription to a peer network (peering.ts): a user of a peered domain, in the presence or
   * dialog package, watched by a user of our (first) domain, the peer not known to be plain;
   * undefined otherwise (lists, other packages and plain peers go through the proxy as they are).
   */
  #peerPresentity (request: SipRequest): Aor | undefined {
    const h = request.headers
    let aor: Aor
    let peer: string | undefined
    try {
      const u = parseUri(request.uri)
      if (u.user === undefined) return undefined
      aor = aorOf(u)
      peer = this.#requests.peerOf(aor)
      if (peer === undefined) return undefined
      const from = parseUri(parseNameAddr(h.get('From') ?? '').uri)
      if (from.host.toLowerCase() !== [...this.#domains][0]) return undefined
    } catch { return undefined }
    const pkg = this.#packageOf(request)
    if (pkg !== this.#presence && pkg !== this.#dialog) return undefined
    if (names(h.getAll('Supported'), EVENTLIST) || names(h.getAll('Require'), EVENTLIST) || names(h.getAll('Require'), RECIPIENT_LIST_SUBSCRIBE)) return undefined
    return this.#backends.capabilities.plain(peer) ? undefined : aor
  }

  /** any resource of the AoR is served here (local mode) */
  #servesLocally (aor: Aor): boolean {
    return this.#resources.ofAor(aor).some(p => p.mode === 'local')
  }

  /** this node holds the live publication a PUBLISH's SIP-If-Match names */
  #holdsTag (request: SipRequest, aor: Aor, pkg: EventPackage | undefined): boolean {
    const tag = request.headers.get('SIP-If-Match')?.trim()
    if (tag === undefined || tag === '') return false
    return pkg?.etags?.(aor).includes(tag) === true
  }

  #packageOf (request: SipRequest): EventPackage | undefined {
    const ev = parseEvent(request.headers.get('Event'))
    return ev === undefined ? undefined : this.#packages.get(ev.pkg)
  }

  #run (request: SipRequest, tx: ServerTransaction, fn: () => Promise<void>): void {
    fn().catch((err: unknown) => { this.#failed(request, tx, err) })
  }

  /** the answer to a request whose handling threw `err` */
  #failed (request: SipRequest, tx: ServerTransaction, err: unknown): void {
    const s = sipStatusFor(err)
    if (s !== undefined) { this.#respond(tx, createResponse(request, s.status, s.reason, s.headers)); return }
    if (err instanceof RateLimitedError) { this.#respond(tx, createResponse(request, 503, err.reason, [['Retry-After', '5']])); return }
    if (err instanceof TooBriefError) { this.#respond(tx, createResponse(request, 423, undefined, [['Min-Expires', String(err.min)]])); return }
    // everything else as the proxy answers it (the one error-to-status place)
    this.#respond(tx, responseForError(request, err, this.#log))
  }

  /** the AoR of a URI's text, the last one kept (a PUBLISH's From is its Request-URI, read just before) */
  #aorOfText (uri: string): Aor {
    if (uri === this.#lastUri) return this.#lastAor
    const aor = aorOf(parseUri(uri))
    this.#lastUri = uri
    this.#lastAor = aor
    return aor
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

  #badEvent (request: SipRequest, tx: ServerTransaction): void {
    this.#respond(tx, createResponse(request, 489, undefined, [['Allow-Events', this.#allowEvents()]]))
  }

  // ---- SUBSCRIBE from a user agent (this node is the notifier) ------------------------------

  async #uaSubscribe (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: Aor): Promise<void> {
    const pkg = this.#packageOf(request)
    if (pkg === undefined) { this.#badEvent(request, tx); return }
    this.#limits.take(flow)
    const expires = this.#limits.grant(request.headers.get('Expires'))
    if (!pkg.accepts(request.headers.getAll('Accept'))) {
      this.#respond(tx, createResponse(request, 406, undefined, [['Accept', pkg.contentType]]))
      return
    }
    const { from, to, callId, cseq, fromAor: watcher, remoteTag, remoteTarget } = subscribeDialogOf(request)
    if (this.#notifier.size >= this.#maxSubs) throw new SipStatusError(503, 'Too Many Subscriptions')
    if (this.#resources.size >= this.#maxPresentities && !this.#resources.has(pkg.name, aor)) throw new SipStatusError(503, 'Too Many Presentities')

    const p = this.#resources.open(pkg, aor)
    p.wanted.set(watcher, (p.wanted.get(watcher) ?? 0) + 1)
    try {
      await this.#admitWatcher(request, tx, flow, p, watcher, { from, to, callId, cseq, remoteTag, remoteTarget, expires })
    } finally {
      const n = (p.wanted.get(watcher) ?? 1) - 1
      if (n <= 0) p.wanted.delete(watcher)
      else p.wanted.set(watcher, n)
      this.#resources.forget(p)
    }
  }

  async #admitWatcher (request: SipRequest, tx: ServerTransaction, flow: Flow, p: Resource, watcher: string, d: DialogFields): Promise<void> {
    const { expires } = d
    const aor = p.aor
    await p.ready
    await this.#rules.ready(aor)
    if (p.pkg.decide(aor, watcher) === 'block') {
      this.#respond(tx, createResponse(request, 403))
      if (p.pkg === this.#presence && p.mode !== 'remote') this.#refused.note(aor, watcher)
      return
    }
    const sub: Sub = {
      ...notifierDialog(d, request.headers.getAll('Record-Route'), flow, d.expires),
      kind: 'ua',
      p,
      watcher: own(watcher),
      sending: false,
      dirty: false,
      done: false
    }
    if (p.mode === 'remote') {
      // draft 7.1.2.2: wait (briefly) for the owner's decision for this watcher (and its document)
      if (!this.#backends.decided(p, watcher)) {
        this.#backends.queueIdentity(p, watcher)
        await this.#backends.waitDecision(p, watcher)
      }
      if (p.backendState === 'list') {
        this.#respond(tx, createResponse(request, 421, undefined, [['Require', EVENTLIST]]))
        return
      }
      if (p.backendState === 'plain') {
        // the peer network is not sipmesh (peering.ts): this watcher subscribes there itself, through the proxy
        this.#requests.relayToPeer(request, tx, flow)
        return
      }
      if (p.ownerDecisions.get(watcher) === 'block') {
        this.#respond(tx, createResponse(request, 403))
        return
      }
    }
    this.#notifier.add(sub)
    if (p.pkg === this.#presence) {
      this.#refused.forget(aor, watcher)
      this.#watchersChanged(aor)
    }
    // RFC 3261 12.1.1: the 2xx that creates the dialog carries the request's Record-Route (the
    // watcher's side builds its route set from it: a peer network's proxies, issue 13)
    const response = createResponse(request, 200, undefined, [['Expires', String(expires)], ['Contact', this.#requests.contactFor(flow)], ...sub.routeSet.map(r => ['Record-Route', r] as [string, string])], { toTag: sub.localTag })
    this.#respond(tx, response)
    if (expires === 0) {
      this.#notifier.end(sub, { state: 'terminated', reason: 'timeout' })
      return
    }
    this.#notifier.arm(sub)
    this.#notifier.notify(sub, true)
  }

  async #refresh (request: SipRequest, tx: ServerTransaction, sub: Sub): Promise<void> {
    const seq = parseCSeq(request.headers.get('CSeq') ?? '').seq
    if (seq <= sub.remoteCseq) { this.#respond(tx, createResponse(request, 500, 'CSeq Out Of Order')); return }
    sub.remoteCseq = seq
    if (this.#packageOf(request) !== sub.p.pkg) { this.#badEvent(request, tx); return }
    if (sub.done || sub.ending !== undefined) { this.#respond(tx, createResponse(request, 481)); return }
    const expires = this.#limits.grant(request.headers.get('Expires'), sub.kind === 'backend' ? 1 : this.#limits.min)
    if (sub.kind === 'ua') this.#limits.take(sub.flow)
    const extra: Array<[string, string]> = [['Expires', String(expires)], ['Contact', this.#requests.contactFor(sub.flow)]]
    if (sub.kind === 'backend') await this.#backendServer.refreshed(sub, request, extra)
    this.#respond(tx, createResponse(request, 200, undefined, extra))
    if (expires === 0) {
      this.#notifier.end(sub, { state: 'terminated', reason: 'timeout' })
      return
    }
    sub.expiresAt = Date.now() + expires * 1000
    this.#notifier.arm(sub)
    this.#notifier.notify(sub, true)
  }

  /**
   * RFC 5367: an ad hoc list, the members in the SUBSCRIBE's `application/resource-lists+xml`
   * body (`Require: recipient-list-subscribe`), to any address of a served domain (conventionally
   * `sip:rls@<domain>`, which is then the list URI of the RLMI documents). The list lives as long
   * as the subscription; it is served like a stored one (lists/server.ts).
   */
  async #adHocSubscribe (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: Aor): Promise<void> {
    if (mediaType(request.headers.get('Content-Type')) !== RESOURCE_LISTS_CONTENT_TYPE) {
      this.#respond(tx, createResponse(request, 415, undefined, [['Accept', RESOURCE_LISTS_CONTENT_TYPE]]))
      return
    }
    // hostile bodies: ResourceListsError, answered 400 / 413 by sipStatusFor (index.ts)
    const members = parseResourceLists(request.body, { maxEntries: this.lists.limits.maxMembers })
    await this.#listSubscribe(request, tx, flow, { uri: aor, members: members.filter(m => m !== aor) }, false)
  }

  /** a SUBSCRIBE to a list URI (lists/server.ts); the subscriber as the mesh asserts it, or From */
  async #listSubscribe (request: SipRequest, tx: ServerTransaction, flow: Flow, list: ResourceList, fromMesh: boolean): Promise<void> {
    const pkg = this.#packageOf(request)
    if (pkg === undefined || pkg === this.#winfo) { this.#badEvent(request, tx); return }
    if (this.#notifier.size + this.#listServer.size >= this.#maxSubs) throw new SipStatusError(503, 'Too Many Subscriptions')
    let identity: string | undefined
    if (fromMesh && !names(request.headers.getAll('Supported'), EVENTLIST) && !names(request.headers.getAll('Require'), EVENTLIST)) {
      // another node's back-end subscription to the list URI, as if to a user: a list is no presentity
      this.#respond(tx, createResponse(request, 421, undefined, [['Require', EVENTLIST]]))
      return
    }
    if (fromMesh) {
      const pai = request.headers.get('P-Asserted-Identity')
      try { identity = pai === undefined ? undefined : aorOf(parseUri(parseNameAddr(pai).uri)) } catch { identity = undefined }
      if (identity === undefined) throw new SipStatusError(403, 'Forbidden (no asserted identity)')
    }
    await this.#listServer.subscribe(request, tx, flow, list, pkg, identity)
  }

  // ---- PUBLISH (RFC 3903), at the owner ----------------------------------------------------

  /** `pkg`: the package of the request's Event, when read already (else read here) */
  #publish (request: SipRequest, tx: ServerTransaction, flow: Flow, aor: Aor, fromMesh: boolean, pkg = this.#packageOf(request)): void {
    const h = request.headers
    if (pkg?.publish === undefined) { this.#badEvent(request, tx); return }
    if (!fromMesh) this.#limits.take(flow)
    // only the presentity publishes its own state (asserted identity from the mesh, From otherwise)
    const who = fromMesh ? h.get('P-Asserted-Identity') : h.get('From')
    let publisher: string | undefined
    try { publisher = who === undefined ? undefined : this.#aorOfText(parseNameAddrShared(who).uri) } catch { publisher = undefined }
    if (publisher !== aor) { this.#respond(tx, createResponse(request, 403, 'Forbidden (publisher is not the presentity)')); return }
    const type = h.get('Content-Type')
    if (request.body.length > 0 && type !== pkg.contentType && mediaType(type) !== pkg.contentType) {
      this.#respond(tx, createResponse(request, 415, undefined, [['Accept', pkg.contentType]]))
      return
    }
    const ifMatch = h.get('SIP-If-Match')?.trim()
    const expires = parseExpiresHeader(h.get('Expires'))
    const result = pkg.publish({ presentity: aor, ifMatch, expires, body: request.body })
    this.#respond(tx, createResponse(request, 200, undefined, [['SIP-ETag', result.etag], ['Expires', String(result.expires)]]))
  }

  // ---- presentities, moves -------------------------------------------------------------------

  #normalize (aor: string): string {
    try { return aorOf(parseUri(aor)) } catch { return aor }
  }

  #onDisplaced (aor: Aor, node: string, by: Parameters<Resources['onDisplaced']>[1]): void {
    if (node !== this.#registry.nodeId) {
      this.#rules.handOver(aor, node)
      this.#calls.handOver(aor, node)
    }
    this.#resources.onDisplaced(aor, by)
    // the user registered elsewhere: its publications here are stale (dropped after the re-route,
    // so nobody is told of the removal as if it were the user's state)
    for (const pkg of this.#packages.values()) pkg.displaced?.(aor)
    if (node !== this.#registry.nodeId) this.#exchange.displaced(aor, node)
  }
}
