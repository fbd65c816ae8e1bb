/**
 * The transaction layer (RFC 3261 section 17): creates client and server transactions, matches
 * incoming messages to them (17.1.3 for responses, 17.2.3 for requests, including ACK and
 * CANCEL), and hands what matches nothing to the core above.
 */
import { SipRequest, type SipResponse } from '../codec/message.ts'
import { Headers } from '../codec/headers.ts'
import { topVia } from '../codec/via.ts'
import { parseCSeq } from '../codec/cseq.ts'
import { parseNameAddr } from '../codec/name-addr.ts'
import { SipStatusError } from '../errors.ts'
import type { TxFlow } from './message.ts'
import { timerSettings, type TimerSettings } from './timers.ts'
import { NonInviteClientTransaction } from './non-invite-client-transaction.ts'
import { InviteClientTransaction } from './invite-client-transaction.ts'
import { NonInviteServerTransaction } from './non-invite-server-transaction.ts'
import { InviteServerTransaction } from './invite-server-transaction.ts'
import { TransactionState as TxState, type ClientTransactionUser, type Transaction } from './transaction.ts'
import { LingerTable } from './linger-table.ts'
import { KeyTable } from './key-table.ts'
import { LingeringResponses } from './lingering-responses.ts'

export { TransactionState } from './transaction.ts'
export type { ClientTransactionUser, ServerTransactionUser } from './transaction.ts'

const MAGIC = 'z9hG4bK'

export type ServerTransaction = NonInviteServerTransaction<SipRequest, SipResponse> | InviteServerTransaction<SipRequest, SipResponse>
export type ClientTransaction = NonInviteClientTransaction<SipRequest, SipResponse> | InviteClientTransaction<SipRequest, SipResponse>

/** Where messages go and come from: a UDP peer, a TCP/WebSocket connection, a mesh node. */
export type MessageFlow = TxFlow<SipRequest | SipResponse>

/** What the layer hands up to the core. */
export interface TransactionCore<F extends MessageFlow> {
  /** a new request (not ACK, not a retransmission) with the server transaction created for it */
  onRequest (request: SipRequest, tx: ServerTransaction, flow: F): void
  /** an ACK matching no transaction: the ACK of a 2xx, end-to-end (17.2.3, 13.2.2.4) */
  onAck (ack: SipRequest, flow: F): void
  /** a CANCEL: `invite` is the INVITE server transaction it matches, if any (9.2) */
  onCancel (cancel: SipRequest, tx: ServerTransaction, invite: InviteServerTransaction<SipRequest, SipResponse> | undefined, flow: F): void
  /** a response matching no client transaction (16.7: forwarded statelessly by a proxy) */
  onStrayResponse (response: SipResponse, flow: F): void
}

export interface TransactionLayerInit {
  timers?: Partial<TimerSettings>
  /** most live server transactions before new requests get 503 (UDP ones linger 32 s, timer J). @default 300_000 */
  maxServerTransactions?: number
}

/** RFC 3261 17.2.3 key of a server transaction; ACK maps to its INVITE. */
export function serverKey (request: SipRequest): string {
  const via = topVia(request.headers)
  if (via === undefined) throw new SipStatusError(400, 'Missing Via')
  const method = request.method === 'ACK' ? 'INVITE' : request.method
  // 17.2.3: sent-by compared with the default port filled in (18.2.1: 5061 for TLS, else 5060)
  const port = via.port ?? (via.transport === 'TLS' ? 5061 : 5060)
  // one string for the key (no intermediate sent-by string per request)
  if (via.branch !== undefined && via.branch.startsWith(MAGIC)) return `${via.branch}|${via.host.toLowerCase()}:${port}|${method}`
  // RFC 2543 fallback (17.2.3): Request-URI, From tag, Call-ID, CSeq number, top Via (To tag left out: the ACK's differs)
  const from = request.headers.get('From') ?? ''
  let fromTag = ''
  try { fromTag = String(parseNameAddr(from).params.tag ?? '') } catch { /* keyed without it */ }
  const cseq = request.headers.get('CSeq')
  const seq = cseq === undefined ? '' : String(parseCSeq(cseq).seq)
  return `2543|${request.uri}|${fromTag}|${request.headers.get('Call-ID') ?? ''}|${seq}|${request.headers.get('Via')}|${method}`
}

/** RFC 3261 17.1.3 key of a client transaction: top Via branch and CSeq method. */
export function clientKey (message: SipRequest | SipResponse): string | undefined {
  const cseq = message.headers.get('CSeq')
  if (cseq === undefined) return undefined
  const branch = topVia(message.headers)?.branch
  if (branch === undefined) return undefined
  return `${branch}|${parseCSeq(cseq).method}`
}

/** The ACK of a 300-699 response to an INVITE (17.1.1.3), built by the client transaction. */
export function ackFor (invite: SipRequest, response: SipResponse): SipRequest {
  const h = new Headers()
  const via = invite.headers.get('Via')
  if (via !== undefined) h.append('Via', via)
  for (const r of invite.headers.getAll('Route')) h.append('Route', r)
  h.append('Max-Forwards', '70')
  h.append('From', invite.headers.get('From') ?? '')
  h.append('To', response.headers.get('To') ?? invite.headers.get('To') ?? '')
  h.append('Call-ID', invite.headers.get('Call-ID') ?? '')
  const cseq = invite.headers.get('CSeq')
  h.append('CSeq', `${cseq === undefined ? 1 : parseCSeq(cseq).seq} ACK`)
  h.append('Content-Length', '0')
  return new SipRequest('ACK', invite.uri, h)
}

export class TransactionLayer<F extends MessageFlow = MessageFlow> {
  readonly timers: TimerSettings
  readonly #core: TransactionCore<F>
  /** live server transactions by key (a KeyTable, not a Map: see key-table.ts) */
  readonly #servers = new KeyTable<ServerTransaction>()
  /**
   * Non-INVITE server transactions over UDP that sent their final response: for timer J (64*T1,
   * 32 s) a retransmitted request gets the same bytes again (RFC 3261 17.2.2); only the key, the
   * bytes and the flow are kept, not the transaction, and the bytes outside V8's heap (see
   * LingeringResponses).
   */
  readonly #lingering: LingeringResponses<TxFlow<never>>
  readonly #lingerHandoff = (key: string, bytes: Uint8Array, flow: TxFlow<never>): void => {
    this.#lingering.set(key, bytes, flow)
  }

  /**
   * Non-INVITE client transactions over UDP that received their final response: for timer K (T4,
   * 5 s) a retransmitted final response is absorbed (RFC 3261 17.1.2.2); only the key is kept.
   */
  readonly #lingeringClients: LingerTable<true>
  readonly #clientLingerHandoff = (key: string): void => { this.#lingeringClients.set(key, true) }
  /** live client transactions by key (a KeyTable, not a Map: see key-table.ts) */
  readonly #clients = new KeyTable<ClientTransaction>()
  readonly #maxServers: number
  /** counters for metrics */
  readonly stats = { serverCreated: 0, clientCreated: 0, retransmissionsAbsorbed: 0, responsesAbsorbed: 0, strayResponses: 0, overload: 0 }

  constructor (core: TransactionCore<F>, init: TransactionLayerInit = {}) {
    this.#core = core
    this.timers = timerSettings(init.timers)
    this.#maxServers = init.maxServerTransactions ?? 300_000
    this.#lingering = new LingeringResponses(64 * this.timers.t1)
    this.#lingeringClients = new LingerTable(this.timers.t4)
  }

  /** live server transactions, those lingering for timer J included */
  get serverCount (): number { return this.#servers.size + this.#lingering.size }
  /** live client transactions, those lingering for timer K included */
  get clientCount (): number { return this.#clients.size + this.#lingeringClients.size }

  /** An incoming request: match a server transaction or create one (17.2.3). */
  receiveRequest (request: SipRequest, flow: F): void {
    const key = serverKey(request)
    const existing = this.#servers.get(key)
    if (request.method === 'ACK') {
      if (existing !== undefined) existing.receiveRequest(request)
      else this.#core.onAck(request, flow)
      return
    }
    if (existing !== undefined) {
      this.stats.retransmissionsAbsorbed++
      existing.receiveRequest(request)
      return
    }
    const lingering = this.#lingering.get(key)
    if (lingering !== undefined) {
      this.stats.retransmissionsAbsorbed++
      Promise.resolve(lingering.flow.sendBytes?.(lingering.bytes)).catch(() => {})
      return
    }
    if (this.serverCount >= this.#maxServers) {
      this.stats.overload++
      throw new SipStatusError(503, 'Service Unavailable')
    }
    const tx: ServerTransaction = request.method === 'INVITE'
      ? new InviteServerTransaction<SipRequest, SipResponse>(key, request, flow, this.timers)
      : new NonInviteServerTransaction<SipRequest, SipResponse>(key, request, flow, this.timers, {}, this.#lingerHandoff)
    this.stats.serverCreated++
    if (request.method === 'CANCEL') {
      this.#trackServer(tx)
      const invite = this.#servers.get(key.replace(/\|CANCEL$/, '|INVITE'))
      this.#core.onCancel(request, tx, invite instanceof InviteServerTransaction ? invite : undefined, flow)
      return
    }
    if (request.method === 'INVITE') {
      this.#trackServer(tx)
      this.#core.onRequest(request, tx, flow)
      return
    }
    // a non-INVITE transaction answered in this turn (a REGISTER refresh the registrar answers at
    // once) ends in it, handing its response to the linger table: it enters the table of live
    // transactions only when it outlives the turn (no set and delete per request there; nothing
    // else runs before onRequest returns, and what a retransmission matches then is in the linger table)
    tx.onTerminated(this.#untrackServer)
    this.#core.onRequest(request, tx, flow)
    if (tx.state !== TxState.Terminated) this.#servers.set(key, tx)
  }

  /** An incoming response: match a client transaction (17.1.3) or hand it up as stray. */
  receiveResponse (response: SipResponse, flow: F): void {
    const key = clientKey(response)
    const tx = key === undefined ? undefined : this.#clients.get(key)
    if (tx === undefined) {
      // a retransmitted final response of a completed client transaction (timer K)
      if (key !== undefined && this.#lingeringClients.has(key)) { this.stats.responsesAbsorbed++; return }
      this.stats.strayResponses++
      this.#core.onStrayResponse(response, flow)
      return
    }
    tx.receiveResponse(response)
  }

  /**
   * Send a request in a new client transaction. The request's top Via must carry a unique
   * RFC 3261 branch (the key of the transaction).
   */
  sendRequest (request: SipRequest, flow: MessageFlow, user: ClientTransactionUser<SipResponse>): ClientTransaction {
    const key = clientKey(request)
    if (key === undefined) throw new Error('a client request needs a Via with a branch and a CSeq')
    if (this.#clients.has(key)) throw new Error(`client transaction ${key} exists`)
    const tx: ClientTransaction = request.method === 'INVITE'
      ? new InviteClientTransaction<SipRequest, SipResponse>(key, request, flow, user, this.timers, (res) => ackFor(request, res))
      : new NonInviteClientTransaction<SipRequest, SipResponse>(key, request, flow, user, this.timers, this.#clientLingerHandoff)
    this.#trackClient(tx)
    this.stats.clientCreated++
    tx.start()
    return tx
  }

  /** Terminate every transaction (shutdown). */
  close (): void {
    for (const tx of [...this.#servers.values(), ...this.#clients.values()]) tx.terminate()
    this.#servers.clear()
    this.#lingering.clear()
    this.#lingeringClients.clear()
    this.#clients.clear()
  }

  // one listener per table for every transaction (no closure per transaction)
  readonly #untrackServer = (tx: Transaction<unknown>): void => { if (this.#servers.get(tx.key) === tx) this.#servers.delete(tx.key) }
  readonly #untrackClient = (tx: Transaction<unknown>): void => { if (this.#clients.get(tx.key) === tx) this.#clients.delete(tx.key) }

  #trackServer (tx: ServerTransaction): void {
    this.#servers.set(tx.key, tx)
    tx.onTerminated(this.#untrackServer)
  }

  #trackClient (tx: ClientTransaction): void {
    this.#clients.set(tx.key, tx)
    tx.onTerminated(this.#untrackClient)
  }
}
