/**
 * The resource list server (RFC 4662): SUBSCRIBEs to a list URI this node knows (`ListStore`)
 * become one subscription dialog with the subscriber and, inside the agent, one member
 * subscription per member on the ordinary resources (resources.ts). A member subscription is a
 * user agent subscription in every respect but delivery (`Sub.sink`): it is authorized with the
 * subscriber's identity (the members' rules apply to her, RFC 4662 4.4), counts as her watching
 * the member (winfo), and for a member owned by another node it rides on the ONE back-end
 * subscription this node holds for that member, shared with ordinary watchers (backend.ts). What
 * the notifier would have sent lands here and is folded into the list's NOTIFY:
 * `multipart/related` with the RLMI document (rlmi.ts): full state after every SUBSCRIBE, then
 * partial (`fullState="false"`, `version` + 1) with only the members that changed, at most one
 * NOTIFY per `throttleMs` per list subscription (RFC 4662 5.3 asks for rate control).
 *
 * Requirements on the SUBSCRIBE (RFC 4662 4.1): `Supported: eventlist` (else 421 with
 * `Require: eventlist`); an Accept, when present, naming `multipart/related` and
 * `application/rlmi+xml` (else 406). A personal list (`owner`) is only for its owner: the
 * identity the gateway authenticated, or asserted by the mesh, or From (else 403). At most
 * `maxPerWatcher` list subscriptions per subscriber (403 above).
 *
 * A list edited through the admin API of any node reaches every node holding it (exchange.ts),
 * which calls `update`: live subscriptions follow the edit in place. Members added are opened
 * and appear with their state in the next partial NOTIFY; members removed are dropped and appear
 * once more in it as `terminated` with reason `noresource` (RFC 4662 5.2: a partial notification
 * carries the resources whose state changed; RFC 6665 4.2.2: the state no longer exists), after
 * which full-state NOTIFYs no longer name them. A deleted list ends its subscriptions with
 * `noresource` (RFC 6665 4.2.2: re-subscribing would not help). Ad hoc lists (RFC 5367) belong to
 * their subscription and never change.
 */
import { SipRequest, type SipRequest as Request, type SipResponse } from '../../codec/message.ts'
import { Headers } from '../../codec/headers.ts'
import { createResponse } from '../../codec/response.ts'
import { parseNameAddr } from '../../codec/name-addr.ts'
import { parseUri } from '../../codec/uri.ts'
import { parseCSeq } from '../../codec/cseq.ts'
import type { Aor, Logger } from '../../ports.ts'
import type { ServerTransaction } from '../../transaction/layer.ts'
import { MESH_TRANSPORT, type Flow } from '../../proxy/flow.ts'
import { formatSubscriptionState, type SubscriptionState } from '../event.ts'
import { acceptsType, type EventPackage } from '../package.ts'
import type { Notifier } from '../notifier.ts'
import type { Resources } from '../resources.ts'
import type { BackendSubscriptions } from '../backend.ts'
import type { AgentRequests } from '../requests.ts'
import type { AgentLimits } from '../limits.ts'
import { dialogKey, notifierDialog, own, subscribeDialogOf, type NotifierDialog, type Sub } from '../resource.ts'
import type { ListStore } from './store.ts'
import type { ResourceList } from './list.ts'
import { buildListNotify, MULTIPART_RELATED, RLMI_CONTENT_TYPE, type MemberState } from './rlmi.ts'

export const EVENTLIST = 'eventlist'

export interface ListServerComponents {
  lists: ListStore
  resources: Resources
  notifier: Notifier
  backends: BackendSubscriptions
  requests: AgentRequests
  limits: AgentLimits
  logger: Logger
  respond: (tx: ServerTransaction, response: SipResponse) => void
}

export interface ListServerInit {
  /** shortest time between two NOTIFYs of one list subscription, ms @default 1000 */
  throttleMs?: number
  /** how long the first NOTIFY waits for members' owners to answer, ms @default 1500 */
  firstWaitMs?: number
  /** most list subscriptions of one subscriber @default 20 */
  maxPerWatcher?: number
}

interface Member { sub: Sub, state?: SubscriptionState, body?: Uint8Array }

interface ListSub extends NotifierDialog {
  list: ResourceList
  /** an ad hoc list (RFC 5367): no admin edit applies to it */
  adhoc: boolean
  pkg: EventPackage
  watcher: string
  members: Map<Aor, Member>
  changed: Set<Aor>
  /** members an edit removed, told as terminated in the next partial NOTIFY */
  removed: Set<Aor>
  version: number
  /** the next NOTIFY carries full state */
  full: boolean
  /** members are being opened: the first NOTIFY waits for them */
  opening: boolean
  sending: boolean
  lastSent: number
  timer?: ReturnType<typeof setTimeout>
  expiry?: ReturnType<typeof setTimeout>
  done: boolean
}

/** whether a Supported or Require header list names an option tag */
export function names (values: readonly string[], tag: string): boolean {
  return values.some(v => v.split(',').some(t => t.trim().toLowerCase() === tag))
}

export class ListServer {
  readonly #c: ListServerComponents
  readonly #log: Logger
  readonly #throttleMs: number
  readonly #firstWaitMs: number
  readonly #maxPerWatcher: number
  readonly #subs = new Map<string, ListSub>()
  readonly #perWatcher = new Map<string, number>()
  notifiesSent = 0

  constructor (components: ListServerComponents, init: ListServerInit = {}) {
    this.#c = components
    this.#log = components.logger
    this.#throttleMs = init.throttleMs ?? 1000
    this.#firstWaitMs = init.firstWaitMs ?? 1500
    this.#maxPerWatcher = init.maxPerWatcher ?? 20
  }

  get size (): number { return this.#subs.size }

  /** a list URI this node serves */
  serves (aor: Aor): boolean { return this.#c.lists.has(aor) }

  /** whether an in-dialog SUBSCRIBE belongs to a list subscription here */
  has (key: string): boolean { return this.#subs.has(key) }

  /** whether a list subscription to `uri` (not ad hoc) is live here */
  holds (uri: Aor): boolean {
    for (const ls of this.#subs.values()) if (!ls.adhoc && ls.list.uri === uri) return true
    return false
  }

  /**
   * The list at `uri` was edited (`list`) or deleted (undefined): its live subscriptions here
   * follow (see the header). Returns how many subscriptions it touched.
   */
  update (uri: Aor, list: ResourceList | undefined): number {
    let n = 0
    for (const ls of [...this.#subs.values()]) {
      if (ls.adhoc || ls.done || ls.list.uri !== uri) continue
      n++
      if (list === undefined) { this.#end(ls, { state: 'terminated', reason: 'noresource' }); continue }
      if (list.owner !== undefined && list.owner !== ls.watcher) { this.#end(ls, { state: 'terminated', reason: 'rejected' }); continue }
      const next = new Set(list.members)
      for (const [member, m] of [...ls.members]) {
        if (next.has(member)) continue
        ls.members.delete(member)
        ls.changed.delete(member)
        ls.removed.add(member)
        if (!m.sub.done) this.#c.notifier.drop(m.sub)
      }
      for (const member of list.members) {
        if (ls.members.has(member)) continue
        ls.removed.delete(member)
        const m = this.#openMember(ls, member)
        ls.changed.add(member)
        // its state once its owner decided for the subscriber; until then it shows `pending`
        void this.#decided(ls, m).then(() => { if (!ls.done && !m.sub.done) this.#c.notifier.notify(m.sub, true) })
      }
      ls.list = list
      this.#schedule(ls, false)
    }
    return n
  }

  stop (): void {
    for (const ls of this.#subs.values()) {
      ls.done = true
      clearTimeout(ls.timer)
      clearTimeout(ls.expiry)
    }
    this.#subs.clear()
    this.#perWatcher.clear()
  }

  /**
   * An initial SUBSCRIBE to `list` (ours, or fetched from its home: exchange.ts) with event
   * package `pkg`; `identity` is the subscriber as asserted by the mesh (undefined: From).
   */
  async subscribe (request: Request, tx: ServerTransaction, flow: Flow, list: ResourceList, pkg: EventPackage, identity: string | undefined, adhoc = false): Promise<void> {
    const h = request.headers
    // RFC 4662 4.1: without eventlist the subscriber could not read our NOTIFYs
    if (!names(h.getAll('Supported'), EVENTLIST) && !names(h.getAll('Require'), EVENTLIST)) {
      this.#c.respond(tx, createResponse(request, 421, undefined, [['Require', EVENTLIST]]))
      return
    }
    const accept = h.getAll('Accept')
    if (accept.length > 0 && (!acceptsType(accept, MULTIPART_RELATED) || !acceptsType(accept, RLMI_CONTENT_TYPE) || !acceptsType(accept, pkg.contentType))) {
      this.#c.respond(tx, createResponse(request, 406, undefined, [['Accept', `${MULTIPART_RELATED}, ${RLMI_CONTENT_TYPE}, ${pkg.contentType}`]]))
      return
    }
    if (flow.transport !== MESH_TRANSPORT) this.#c.limits.take(flow)
    const expires = this.#c.limits.grant(h.get('Expires'))
    const d = subscribeDialogOf(request)
    const watcher = identity ?? d.fromAor
    if (list.owner !== undefined && list.owner !== watcher) {
      this.#c.respond(tx, createResponse(request, 403, 'Forbidden (a personal list)'))
      return
    }
    if ((this.#perWatcher.get(watcher) ?? 0) >= this.#maxPerWatcher) {
      this.#c.respond(tx, createResponse(request, 403, 'Forbidden (too many list subscriptions)'))
      return
    }
    const ls: ListSub = {
      ...notifierDialog(d, h.getAll('Record-Route'), flow, expires),
      list,
      adhoc,
      pkg,
      watcher: own(watcher),
      members: new Map(),
      changed: new Set(),
      removed: new Set(),
      version: -1,
      full: true,
      opening: true,
      sending: false,
      lastSent: 0,
      done: false
    }
    const record = ls.routeSet.map(r => ['Record-Route', r] as [string, string])
    this.#c.respond(tx, createResponse(request, 200, undefined, [['Expires', String(expires)], ['Contact', this.#c.requests.contactFor(flow)], ['Require', EVENTLIST], ...record], { toTag: ls.localTag }))
    if (expires === 0) {
      // RFC 6665 4.2.1.4: a fetch; with no members opened there is no state to give
      this.#notify(ls, { state: 'terminated', reason: 'timeout' })
      return
    }
    this.#subs.set(ls.key, ls)
    this.#perWatcher.set(ls.watcher, (this.#perWatcher.get(ls.watcher) ?? 0) + 1)
    this.#arm(ls)
    await this.#open(ls)
  }

  /** an in-dialog SUBSCRIBE (refresh or unsubscribe) */
  refresh (request: Request, tx: ServerTransaction): void {
    const h = request.headers
    const ls = this.#subs.get(dialogKey(h.get('Call-ID') ?? '', parseNameAddr(h.get('To') ?? '').params.tag as string, parseNameAddr(h.get('From') ?? '').params.tag as string))
    if (ls === undefined || ls.done) { this.#c.respond(tx, createResponse(request, 481)); return }
    const seq = parseCSeq(h.get('CSeq') ?? '').seq
    if (seq <= ls.remoteCseq) { this.#c.respond(tx, createResponse(request, 500, 'CSeq Out Of Order')); return }
    ls.remoteCseq = seq
    if (ls.flow.transport !== MESH_TRANSPORT) this.#c.limits.take(ls.flow)
    const expires = this.#c.limits.grant(h.get('Expires'), this.#c.limits.min)
    this.#c.respond(tx, createResponse(request, 200, undefined, [['Expires', String(expires)], ['Contact', this.#c.requests.contactFor(ls.flow)], ['Require', EVENTLIST]]))
    if (expires === 0) { this.#end(ls, { state: 'terminated', reason: 'timeout' }); return }
    ls.expiresAt = Date.now() + expires * 1000
    this.#arm(ls)
    // RFC 4662 5.2: a refresh is answered with full state
    ls.full = true
    this.#schedule(ls, true)
  }

  #arm (ls: ListSub): void {
    clearTimeout(ls.expiry)
    ls.expiry = setTimeout(() => { this.#end(ls, { state: 'terminated', reason: 'timeout' }) }, Math.max(0, ls.expiresAt - Date.now()))
    ls.expiry.unref?.()
  }

  /** one member subscription per member; the first NOTIFY once their owners answered (bounded) */
  async #open (ls: ListSub): Promise<void> {
    const { notifier } = this.#c
    const waits: Array<Promise<void>> = []
    for (const member of ls.list.members) {
      waits.push(this.#decided(ls, this.#openMember(ls, member)))
    }
    let timer: ReturnType<typeof setTimeout> | undefined
    await Promise.race([Promise.allSettled(waits), new Promise<void>(resolve => { timer = setTimeout(resolve, this.#firstWaitMs) })])
    clearTimeout(timer)
    if (ls.done) return
    // every member's current state first (still `opening`: no NOTIFY yet), then one full NOTIFY
    for (const m of ls.members.values()) notifier.notify(m.sub, true)
    ls.opening = false
    this.#schedule(ls, true)
  }

  /** settles once a member's owner has decided for the subscriber (at once for a local member) */
  async #decided (ls: ListSub, m: Member): Promise<void> {
    const { backends } = this.#c
    const p = m.sub.p
    await p.ready
    if (p.mode !== 'remote') return
    if (!backends.decided(p, ls.watcher)) backends.queueIdentity(p, ls.watcher)
    await backends.waitDecision(p, ls.watcher)
  }

  /** a member subscription on the shared resources; what the notifier would send lands in the list */
  #openMember (ls: ListSub, member: Aor): Member {
    const p = this.#c.resources.open(ls.pkg, member)
    const m: Member = { sub: undefined as unknown as Sub }
    m.sub = {
      key: `list\n${ls.key}\n${member}`,
      kind: 'ua',
      p,
      watcher: ls.watcher,
      callId: ls.callId,
      localTag: ls.localTag,
      remoteTag: ls.remoteTag,
      localUri: ls.localUri,
      remote: ls.remote,
      remoteTarget: ls.remoteTarget,
      routeSet: [],
      flow: ls.flow,
      cseq: 0,
      remoteCseq: 0,
      expiresAt: ls.expiresAt,
      sending: false,
      dirty: false,
      done: false,
      sink: (state, body) => { this.#memberChanged(ls, member, state, body) }
    }
    ls.members.set(member, m)
    this.#c.notifier.add(m.sub)
    return m
  }

  #memberChanged (ls: ListSub, member: Aor, state: SubscriptionState, body: Uint8Array): void {
    const m = ls.members.get(member)
    if (m === undefined || ls.done) return
    m.state = state
    m.body = body
    ls.changed.add(member)
    if (!ls.opening) this.#schedule(ls, false)
  }

  /** send now, or once the throttle allows (one timer per list subscription) */
  #schedule (ls: ListSub, now: boolean): void {
    if (ls.done || ls.opening || ls.timer !== undefined) return
    if (ls.sending) return // sent when the NOTIFY in flight is answered
    const wait = now ? 0 : Math.max(0, ls.lastSent + this.#throttleMs - Date.now())
    if (wait === 0) { this.#notify(ls); return }
    ls.timer = setTimeout(() => { ls.timer = undefined; this.#notify(ls) }, wait)
    ls.timer.unref?.()
  }

  #memberStates (ls: ListSub, full: boolean): MemberState[] {
    const out: MemberState[] = []
    for (const [uri, m] of ls.members) {
      if (!full && !ls.changed.has(uri)) continue
      const s = m.state
      if (s === undefined) { out.push({ uri, state: 'pending' }); continue }
      if (s.state === 'terminated') { out.push({ uri, state: 'terminated', reason: s.reason ?? 'rejected' }); continue }
      out.push({ uri, state: s.state, ...(m.body !== undefined && m.body.length > 0 ? { body: m.body, contentType: ls.pkg.contentType } : {}) })
    }
    if (!full) for (const uri of ls.removed) out.push({ uri, state: 'terminated', reason: 'noresource' })
    return out
  }

  #notify (ls: ListSub, final?: SubscriptionState): void {
    if (!this.#c.requests.attached) return
    const full = ls.full || final !== undefined
    if (final === undefined && !full && ls.changed.size === 0 && ls.removed.size === 0) return
    const members = final !== undefined && ls.members.size === 0 ? [] : this.#memberStates(ls, full)
    ls.changed.clear()
    ls.removed.clear()
    ls.full = false
    ls.version++
    const state: SubscriptionState = final ?? { state: 'active', expires: (ls.expiresAt - Date.now()) / 1000 }
    const host = (() => { try { return parseUri(ls.list.uri).host } catch { return 'sipmesh.invalid' } })()
    const body = buildListNotify(ls.list.uri, ls.version, full, members, host)
    const h = new Headers()
    h.append('Max-Forwards', '70')
    for (const r of ls.routeSet) h.append('Route', r)
    h.append('From', `${ls.localUri};tag=${ls.localTag}`)
    h.append('To', ls.remote)
    h.append('Call-ID', ls.callId)
    h.append('CSeq', `${++ls.cseq} NOTIFY`)
    h.append('Contact', this.#c.requests.contactFor(ls.flow))
    h.append('Event', ls.pkg.name)
    h.append('Require', EVENTLIST)
    h.append('Subscription-State', formatSubscriptionState(state))
    h.append('Content-Type', body.contentType)
    const request = new SipRequest('NOTIFY', ls.remoteTarget, h, body.body)
    ls.sending = true
    ls.lastSent = Date.now()
    this.notifiesSent++
    const requests = this.#c.requests
    void requests.flowFor(ls).then(async flow => await requests.send(request, flow)).then((r) => {
      ls.sending = false
      if (final !== undefined) return
      if (r.status >= 300 && r.status !== 401 && r.status !== 407) {
        this.#log.debug('list NOTIFY failed: subscription removed', { status: r.status, list: ls.list.uri, watcher: ls.watcher })
        this.#drop(ls)
        return
      }
      if (ls.full || ls.changed.size > 0 || ls.removed.size > 0) this.#schedule(ls, false)
    }, (err: unknown) => {
      ls.sending = false
      this.#log.debug('list NOTIFY not sent', { err: String(err) })
      this.#drop(ls)
    })
  }

  /** end with a final NOTIFY (full state) and drop the member subscriptions */
  #end (ls: ListSub, state: SubscriptionState): void {
    if (ls.done) return
    ls.opening = false
    this.#notify(ls, state)
    this.#drop(ls)
  }

  #drop (ls: ListSub): void {
    if (ls.done) return
    ls.done = true
    clearTimeout(ls.timer)
    clearTimeout(ls.expiry)
    if (this.#subs.get(ls.key) === ls) {
      this.#subs.delete(ls.key)
      const n = (this.#perWatcher.get(ls.watcher) ?? 1) - 1
      if (n <= 0) this.#perWatcher.delete(ls.watcher)
      else this.#perWatcher.set(ls.watcher, n)
    }
    for (const m of ls.members.values()) if (!m.sub.done) this.#c.notifier.drop(m.sub)
  }
}
