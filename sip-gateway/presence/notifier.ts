/**
 * The notifier (RFC 6665 4.2): the subscription dialogs this node holds, with user agents and
 * with other nodes' back-end subscriptions; their expiry; NOTIFY, coalesced (one in flight per
 * dialog, the latest state next) and not repeated when nothing changed; the final NOTIFY. What a
 * subscription is told comes from the resources room (`view`); this room only delivers it.
 *
 * Expiry: one timer for all subscriptions, not one each. Subscriptions sit in slots of
 * EXPIRY_SLOT_MS by their expiry time, and a ticker ends those of the slots that have passed (up
 * to one slot late: RFC 6665 4.2.2 asks only that the subscription end about then). A `Timeout`
 * per subscription, with its closure and context, was ~220 B of a subscription's ~880 B of heap
 * (issue 11: memory per subscription).
 */
import { Buffer } from 'node:buffer'
import { SipRequest } from '../codec/message.ts'
import { Headers } from '../codec/headers.ts'
import type { Logger } from '../ports.ts'
import { AUTHORIZATION_HEADER, formatDecisions, formatSubscriptionState, type SubscriptionState } from './event.ts'
import { SubscriptionPairs } from './loop.ts'
import type { AgentRequests } from './requests.ts'
import type { Resource, Sub } from './resource.ts'

/** On a back-end NOTIFY: `full` when the body is the presentity's real document (not the neutral one). */
export const VIEW_HEADER = 'Sipmesh-View'

/** What a subscription is told now: a state and a canonical body, or 'block' (end it, rejected). */
export type View = { state: 'active' | 'pending', body: Uint8Array, full?: boolean } | 'block'

export interface NotifierComponents {
  requests: AgentRequests
  logger: Logger
  /** what the subscription is told now (resources.ts) */
  view: (s: Sub) => View
  /** a subscription was removed: drop its resource when nobody else uses it */
  removed: (s: Sub) => void
}

const NO_BODY = new Uint8Array(0)
/** width of an expiry slot, ms */
export const EXPIRY_SLOT_MS = 250

export class Notifier {
  readonly #requests: AgentRequests
  readonly #log: Logger
  readonly #view: (s: Sub) => View
  readonly #removed: (s: Sub) => void
  readonly #subs = new Map<string, Sub>()
  /** back-end dialogs served, per (presentity, origin node): draft 7.2.1 */
  readonly pairs = new SubscriptionPairs()
  notifiesSent = 0
  /** expiry slot (EXPIRY_SLOT_MS since `#epoch`) → the subscriptions that end in it */
  readonly #slots = new Map<number, Set<Sub>>()
  readonly #epoch = Date.now()
  /** the next slot the ticker looks at */
  #cursor = 0
  #ticker: ReturnType<typeof setInterval> | undefined

  constructor (components: NotifierComponents) {
    this.#requests = components.requests
    this.#log = components.logger
    this.#view = components.view
    this.#removed = components.removed
  }

  get size (): number { return this.#subs.size }

  get (key: string): Sub | undefined { return this.#subs.get(key) }

  values (): IterableIterator<Sub> { return this.#subs.values() }

  add (sub: Sub): void {
    this.#subs.set(sub.key, sub)
    sub.p.subs.add(sub)
  }

  clear (): void {
    this.#subs.clear()
    this.#slots.clear()
    clearInterval(this.#ticker)
    this.#ticker = undefined
  }

  notifyAll (p: Resource): void {
    for (const s of [...p.subs]) this.notify(s)
  }

  notifyWatchers (p: Resource, watchers: Set<string>): void {
    for (const s of [...p.subs]) if (s.kind === 'ua' && watchers.has(s.watcher)) this.notify(s)
  }

  /** (re)schedule a subscription's end at its `expiresAt` */
  arm (s: Sub): void {
    this.#disarm(s)
    const slot = Math.max(this.#cursor, Math.ceil((s.expiresAt - this.#epoch) / EXPIRY_SLOT_MS))
    let set = this.#slots.get(slot)
    if (set === undefined) { set = new Set(); this.#slots.set(slot, set) }
    set.add(s)
    s.slot = slot
    if (this.#ticker === undefined) {
      this.#cursor = Math.min(slot, Math.floor((Date.now() - this.#epoch) / EXPIRY_SLOT_MS))
      this.#ticker = setInterval(() => { this.#expire() }, EXPIRY_SLOT_MS)
      this.#ticker.unref?.()
    }
  }

  #disarm (s: Sub): void {
    if (s.slot === undefined) return
    const set = this.#slots.get(s.slot)
    set?.delete(s)
    if (set?.size === 0) this.#slots.delete(s.slot)
    s.slot = undefined
  }

  /** end the subscriptions of every slot that has passed */
  #expire (): void {
    const now = Date.now()
    const upTo = Math.floor((now - this.#epoch) / EXPIRY_SLOT_MS)
    for (; this.#cursor <= upTo; this.#cursor++) {
      const set = this.#slots.get(this.#cursor)
      if (set === undefined) continue
      this.#slots.delete(this.#cursor)
      for (const s of set) {
        s.slot = undefined
        if (s.expiresAt <= now) this.end(s, { state: 'terminated', reason: 'timeout' })
        else this.arm(s)
      }
    }
    if (this.#slots.size === 0) {
      clearInterval(this.#ticker)
      this.#ticker = undefined
    }
  }

  /**
   * Send the current state (coalesced: one NOTIFY in flight per dialog, the latest state next).
   * `force`: a SUBSCRIBE asked for it (RFC 6665: a NOTIFY after every SUBSCRIBE); otherwise an
   * unchanged state is not sent again.
   */
  notify (s: Sub, force = false): void {
    if (s.done || s.ending !== undefined) return
    if (force) s.force = true
    if (s.sending) { s.dirty = true; return }
    const v = this.#view(s)
    if (v === 'block') { this.end(s, { state: 'terminated', reason: 'rejected' }); return }
    const extra: Array<[string, string]> = []
    if (s.kind === 'backend' && v.full === true) extra.push([VIEW_HEADER, 'full'])
    if (s.pushDecisions !== undefined) { extra.push([AUTHORIZATION_HEADER, formatDecisions(s.pushDecisions)]); s.pushDecisions = undefined } else if (s.force !== true && s.told !== undefined && s.told.state === v.state && Buffer.compare(s.told.body, v.body) === 0) return
    s.force = false
    s.told = { state: v.state, body: v.body }
    this.#sendNotify(s, { state: v.state, expires: (s.expiresAt - Date.now()) / 1000 }, this.#render(s, v.body), extra)
  }

  /** end a subscription with a final NOTIFY (after any NOTIFY in flight) */
  end (s: Sub, state: SubscriptionState): void {
    if (s.done || s.ending !== undefined) return
    s.ending = state
    this.#disarm(s)
    if (s.sending) return
    this.#sendFinal(s)
  }

  /** forget a subscription without telling anyone */
  drop (s: Sub): void {
    s.done = true
    this.#disarm(s)
    this.#subs.delete(s.key)
    s.p.subs.delete(s)
    if (s.kind === 'backend') this.pairs.release(s.p.key, s.watcher, s.key)
    this.#removed(s)
  }

  /** a user agent's body from the canonical one (the package's versions and partial state) */
  #render (s: Sub, body: Uint8Array): Uint8Array {
    const pkg = s.p.pkg
    if (s.kind !== 'ua' || pkg.render === undefined || body.length === 0) return body
    s.render ??= { version: -1 }
    try {
      return pkg.render(s.p.aor, body, s.render)
    } catch (err) {
      // a document the owner node sent that does not parse: the watcher gets it as it came
      this.#log.debug('NOTIFY body not rendered', { event: pkg.name, presentity: s.p.aor, err: String(err) })
      return body
    }
  }

  #sendFinal (s: Sub): void {
    const state = s.ending ?? { state: 'terminated' as const }
    let body: Uint8Array = NO_BODY
    if (state.reason === 'timeout' || state.reason === undefined) {
      const v = this.#view(s)
      if (v !== 'block') body = this.#render(s, v.body)
    }
    this.#sendNotify(s, state, body, [])
    this.drop(s)
  }

  #sendNotify (s: Sub, state: SubscriptionState, body: Uint8Array, extra: Array<[string, string]>): void {
    if (s.sink !== undefined) { s.sink(state, body); return }
    if (!this.#requests.attached) return
    s.cseq++
    const h = new Headers()
    h.append('Max-Forwards', '70')
    for (const r of s.routeSet) h.append('Route', r)
    h.append('From', `${s.localUri};tag=${s.localTag}`)
    h.append('To', s.remote)
    h.append('Call-ID', s.callId)
    h.append('CSeq', `${s.cseq} NOTIFY`)
    h.append('Contact', this.#requests.contactFor(s.flow))
    h.append('Event', s.p.pkg.name)
    h.append('Subscription-State', formatSubscriptionState(state))
    for (const [n, v] of extra) h.append(n, v)
    if (body.length > 0) h.append('Content-Type', s.p.pkg.contentType)
    const request = new SipRequest('NOTIFY', s.remoteTarget, h, body)
    const final = state.state === 'terminated'
    if (!final) s.sending = true
    this.notifiesSent++
    void this.#requests.flowFor(s).then(async flow => await this.#requests.send(request, flow)).then((r) => {
      s.sending = false
      if (final) return
      if (r.status >= 300 && r.status !== 401 && r.status !== 407) {
        // RFC 6665 4.2.2: a failed NOTIFY removes the subscription
        this.#log.debug('NOTIFY failed: subscription removed', { status: r.status, presentity: s.p.aor, watcher: s.watcher })
        this.drop(s)
        return
      }
      if (s.ending !== undefined) { if (!s.done) this.#sendFinal(s); return }
      if (s.dirty) { s.dirty = false; this.notify(s) }
    }, (err: unknown) => {
      s.sending = false
      this.#log.debug('NOTIFY not sent', { err: String(err) })
      if (!final) this.drop(s)
    })
  }
}
