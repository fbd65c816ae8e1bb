/**
 * The Contacts of the user agents of dialogs this node Record-Routed: the caller's, from a
 * dialog-creating request (INVITE, SUBSCRIBE, REFER) this node took from the user agent itself,
 * and the callee's, from its answer (a 2xx, or a 1xx with a To tag) to such a request this node
 * delivered to it. A request inside such a dialog that comes back along the route set (from the
 * mesh, or from a user agent on this node) has the other party's Contact as its Request-URI
 * (RFC 3261 12.2.1.1) and no Route left once ours is consumed: it may be delivered there whatever
 * the registrar holds: a caller that never registered, a callee that answered with a Contact other
 * than the one it registered. Only contacts of user agents the node itself talked to are kept, and
 * such a request is sent over the flow that user agent used (the caller's UDP source address or
 * connection; the flow the request reached the callee on), not to the address the Contact names:
 * whatever a user agent writes in its Contact, the node only ever reaches that user agent (no
 * open relay, see ProxyCore).
 *
 * Bounded: at most `max` contacts, each forgotten `ttlMs` after its dialog was last used.
 */
import { contactKey } from '../registrar/bindings.ts'
import type { SipRequest, SipResponse } from '../codec/message.ts'
import { parseNameAddr } from '../codec/name-addr.ts'
import type { Flow } from './flow.ts'
import { hasToTag } from './message-reading.ts'

export interface DialogContact {
  uri: string
  /** the flow of the user agent: the one the dialog-creating request arrived on (caller) or was sent on (callee) */
  flow: Flow
}

export class DialogContacts {
  readonly #entries = new Map<string, DialogContact & { until: number }>()
  readonly #max: number
  readonly #ttlMs: number
  readonly #now: () => number

  constructor (init: { max?: number, ttlMs?: number, now?: () => number } = {}) {
    this.#max = init.max ?? 100_000
    this.#ttlMs = init.ttlMs ?? 12 * 3_600_000
    this.#now = init.now ?? Date.now
  }

  get size (): number { return this.#entries.size }

  /**
   * Keep `uri` as reached over `flow`. With `takeOver: false` a live entry of another user agent
   * (another flow that is still open) is kept: a callee cannot claim a Contact another user agent's
   * dialog uses (its caller's, say) and so draw that dialog's requests to itself.
   */
  remember (uri: string, flow: Flow, options: { takeOver?: boolean } = {}): void {
    let key: string
    try { key = contactKey(uri) } catch { return }
    const existing = this.#entries.get(key)
    if (options.takeOver === false && existing !== undefined && existing.until > this.#now() && existing.flow.open && !sameFlow(existing.flow, flow)) return
    this.#entries.delete(key)
    if (this.#entries.size >= this.#max) {
      const oldest = this.#entries.keys().next().value
      if (oldest !== undefined) this.#entries.delete(oldest)
    }
    this.#entries.set(key, { uri, flow, until: this.#now() + this.#ttlMs })
  }

  /** the contact a Request-URI names, refreshed (the dialog is in use), or undefined */
  find (uri: string): DialogContact | undefined {
    let key: string
    try { key = contactKey(uri) } catch { return undefined }
    const e = this.#entries.get(key)
    if (e === undefined) return undefined
    const now = this.#now()
    if (e.until <= now) {
      this.#entries.delete(key)
      return undefined
    }
    this.#entries.delete(key)
    e.until = now + this.#ttlMs
    this.#entries.set(key, e)
    return e
  }

  /** a user agent's dialog-creating request: requests inside the dialog may come back to its Contact */
  rememberCaller (request: SipRequest, flow: Flow): void {
    const contact = request.headers.get('Contact')
    if (contact === undefined) return
    try {
      this.remember(parseNameAddr(contact).uri, flow)
    } catch {
      // a malformed Contact: nothing to come back to
    }
  }

  /**
   * A user agent of this node answered a dialog-creating request we Record-Routed (a 2xx, or a 1xx
   * with a To tag: an early dialog): its Contact is the dialog's remote target (RFC 3261 12.1.2),
   * which need not be the Contact it registered. Requests inside the dialog come back to it: they
   * go over the flow this branch used, the one the callee answered on.
   */
  rememberCallee (response: SipResponse, flow: Flow): void {
    if (response.status < 101 || response.status >= 300) return
    if (response.status < 200 && !hasToTag(response)) return
    const contact = response.headers.get('Contact')
    if (contact === undefined) return
    try {
      // a Contact another user agent's dialog already uses stays that user agent's
      this.remember(parseNameAddr(contact).uri, flow, { takeOver: false })
    } catch {
      // a malformed Contact: nothing to come back to
    }
  }
}

/** the same user agent's flow: the same object, or the same transport and remote address */
function sameFlow (a: Flow, b: Flow): boolean {
  return a === b || (a.transport === b.transport && a.remote.host === b.remote.host && a.remote.port === b.remote.port)
}
