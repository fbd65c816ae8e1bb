/**
 * Proxy-derived dialog state (RFC 4235, packages/calls.ts) follows a user who moves to another
 * node mid-call. The call's signalling keeps crossing the nodes in its route set (RFC 3261 16.6
 * Record-Route), so its BYE reaches the node that proxied the INVITE, not the new owner, which
 * serves the user's `dialog` NOTIFYs. So, as the rules follow a move (rules-exchange.ts), calls do:
 * - the old owner, told of the move, hands its live calls of the user over to the new owner
 *   (`handOver`) and from then on relays every change of them (`relaying`) to whichever node owns
 *   the user when the change happens (resolved, so a second move is followed too), until it has
 *   no call of her left or owns her again;
 * - the new owner keeps what each node relays (`ProxiedCalls.relay`) and composes it with its own;
 *   when the user moves on again, it hands over what other nodes relayed to it too, each set
 *   under its relaying node's name (`Sipmesh-Calls-Origin`), so their next push replaces it.
 * On the wire: a `PUBLISH` to the user's AoR with `Event: sipmesh-calls` (`CALLS_EVENT`, accepted
 * from mesh peers only: a user agent gets 403), its body the relaying node's full set of the
 * user's calls as a dialog-info document (`application/dialog-info+xml`, parsed by the hardened
 * parser of dialog-info.ts; malformed: 400, a wrong type: 415, another entity: 400, more than
 * `MAX_RELAYED_PER_USER` dialogs: 400). Why not a publication: a publication's entity tag belongs
 * to its publisher, here the relaying node's set simply replaces its previous one.
 * Bounds: a relaying node that dies takes its calls' ends with it; the owner drops its live entries
 * after `relayTtlMs` (calls.ts, 6 h) or when the user moves on.
 */
import { Buffer } from 'node:buffer'
import type { SipRequest, SipResponse } from '../codec/message.ts'
import { createResponse } from '../codec/response.ts'
import { parseUri, aorOf } from '../codec/uri.ts'
import type { Aor, Logger, Registry } from '../ports.ts'
import type { ServerTransaction } from '../transaction/layer.ts'
import { mediaType } from './package.ts'
import type { AgentRequests } from './requests.ts'
import { DIALOG_INFO_CONTENT_TYPE, DialogInfoError, buildDialogInfo, parseDialogInfo, type DialogEntry } from './dialog-info.ts'
import { MAX_RELAYED_PER_USER, type ProxiedCalls } from './packages/calls.ts'

export const CALLS_EVENT = 'sipmesh-calls'
/** the node whose calls a push carries, when not the sender's own (a hand-over of relayed calls) */
export const CALLS_ORIGIN_HEADER = 'Sipmesh-Calls-Origin'

export interface CallsExchangeComponents {
  calls: ProxiedCalls
  registry: Pick<Registry, 'nodeId' | 'resolve'>
  /** whether this node holds live registrations of the user (it owns her) */
  owns: (aor: Aor) => boolean
  requests: AgentRequests
  logger: Logger
  domains: ReadonlySet<string>
  respond: (tx: ServerTransaction, response: SipResponse) => void
}

export class CallsExchange {
  readonly #c: CallsExchangeComponents
  readonly #log: Logger
  /** users whose calls here are relayed to their owner */
  readonly #relaying = new Set<Aor>()
  readonly #unlisten: () => void
  relayed = 0

  constructor (components: CallsExchangeComponents) {
    this.#c = components
    this.#log = components.logger
    this.#unlisten = components.calls.onOwnChange((aor) => { this.#ownChanged(aor) })
  }

  stop (): void {
    this.#unlisten()
    this.#relaying.clear()
  }

  /** the user moved to `node`: our live calls of her go there, and their changes after them */
  handOver (aor: Aor, node: string): void {
    for (const [origin, entries] of this.#c.calls.relayedBy(aor)) {
      if (origin !== node) this.#send(node, aor, entries, origin)
      this.#c.calls.relay(aor, origin, []) // not ours to serve any more
    }
    const own = this.#c.calls.own(aor)
    if (!own.some(e => e.state !== 'terminated')) return
    this.#relaying.add(aor)
    this.#send(node, aor, own)
  }

  #ownChanged (aor: Aor): void {
    if (!this.#relaying.has(aor)) return
    if (this.#c.owns(aor)) { this.#relaying.delete(aor); return }
    if (this.#c.calls.own(aor).length === 0) this.#relaying.delete(aor) // the last push: none left
    this.#c.registry.resolve(aor).then((route) => {
      if (route === undefined || route.node === this.#c.registry.nodeId) return
      this.#send(route.node, aor, this.#c.calls.own(aor))
    }, (err: unknown) => { this.#log.debug('calls not relayed: owner unknown', { aor, err: String(err) }) })
  }

  #send (node: string, aor: Aor, entries: readonly DialogEntry[], origin?: string): void {
    if (!this.#c.requests.attached) return
    const dialogs = entries.slice(0, MAX_RELAYED_PER_USER)
    const body = Buffer.from(buildDialogInfo({ version: 0, state: 'full', entity: aor, dialogs }))
    const extra: Array<[string, string]> = [['Content-Type', DIALOG_INFO_CONTENT_TYPE]]
    if (origin !== undefined) extra.push([CALLS_ORIGIN_HEADER, origin])
    this.relayed++
    this.#c.requests.publishTo(node, aor, CALLS_EVENT, extra, body).then((r) => {
      if (r.status >= 300) this.#log.debug('calls relay refused', { aor, node, status: r.status })
    }, (err: unknown) => { this.#log.debug('calls not relayed', { aor, node, err: String(err) }) })
  }

  /** a PUBLISH of the calls event: mesh peers only; the sending node's calls of the user */
  handle (request: SipRequest, tx: ServerTransaction, fromMesh: boolean, node: string | undefined): void {
    const respond = (status: number, reason?: string, headers?: Array<[string, string]>): void => { this.#c.respond(tx, createResponse(request, status, reason, headers)) }
    if (!fromMesh || node === undefined) { respond(403, 'Forbidden (calls are relayed between mesh nodes only)'); return }
    let aor: Aor
    try {
      const u = parseUri(request.uri)
      if (u.user === undefined || !this.#c.domains.has(u.host.toLowerCase())) throw new Error('not ours')
      aor = aorOf(u)
    } catch {
      respond(404, 'Not Found (no user of our domains)')
      return
    }
    const origin = request.headers.get(CALLS_ORIGIN_HEADER)?.trim() ?? node
    if (origin.length === 0 || origin.length > 128 || origin === this.#c.registry.nodeId) { respond(400, `Bad Request (${CALLS_ORIGIN_HEADER})`); return }
    if (mediaType(request.headers.get('Content-Type')) !== DIALOG_INFO_CONTENT_TYPE) { respond(415, undefined, [['Accept', DIALOG_INFO_CONTENT_TYPE]]); return }
    let dialogs
    try {
      const doc = parseDialogInfo(request.body)
      if (doc.state !== 'full') throw new DialogInfoError('relayed calls are full state')
      if (doc.entity !== aor) throw new DialogInfoError('entity is not the Request-URI')
      if (doc.dialogs.length > MAX_RELAYED_PER_USER) throw new DialogInfoError(`more than ${MAX_RELAYED_PER_USER} calls`)
      dialogs = doc.dialogs
    } catch (err) {
      respond(400, `Bad Request (${err instanceof DialogInfoError ? err.message.slice(0, 80) : 'dialog-info'})`)
      return
    }
    this.#c.calls.relay(aor, origin, dialogs)
    respond(200)
  }
}
