import type { TxFlow, TxRequest, TxResponse } from './message.ts'
import type { TimerSettings } from './timers.ts'

/**
 * Transaction states of RFC 3261 section 17 (figures 5-8), plus "accepted" from RFC 6026 for
 * INVITE transactions that saw a 2xx (so 2xx retransmissions and their ACKs are not mistaken for
 * new requests).
 */
export const TransactionState = {
  Calling: 'calling',
  Trying: 'trying',
  Proceeding: 'proceeding',
  Completed: 'completed',
  Confirmed: 'confirmed',
  Accepted: 'accepted',
  Terminated: 'terminated'
} as const
export type TransactionState = typeof TransactionState[keyof typeof TransactionState]

export class TransactionStateError extends Error {
  static readonly code = 'ERR_TRANSACTION_STATE'
  override name = 'TransactionStateError'
}

/** The layer above a client transaction (the proxy core, the registrar's outbound side...). */
export interface ClientTransactionUser<Res extends TxResponse = TxResponse> {
  /** every provisional and final response the transaction lets through */
  receiveResponse (response: Res): void
  /** timer B or F fired: the TU should act as if it received a 408 */
  onRequestTimeout (): void
  /** the transport failed: the TU should act as if it received a 503 */
  onTransportError (error: unknown): void
  /** the transaction ended (any reason) */
  onTerminated? (): void
}

/** The layer above a server transaction. */
export interface ServerTransactionUser<Req extends TxRequest = TxRequest> {
  onTransportError? (error: unknown): void
  /** INVITE only: timer H fired, the ACK never came (RFC 3261 17.2.1) */
  onAckTimeout? (): void
  /** INVITE only, RFC 6026: an ACK arrived for a 2xx this transaction sent */
  receiveAck? (ack: Req): void
  onTerminated? (): void
}

export type TransitionTable = Readonly<Record<TransactionState, readonly TransactionState[]>>

/**
 * Shared state handling: every transition is checked against the figure the subclass implements.
 */
export abstract class Transaction<M> {
  readonly key: string
  protected readonly flow: TxFlow<M>
  protected readonly timers: TimerSettings
  #state: TransactionState
  readonly #table: TransitionTable
  /** the first listener in a field, any others in an array made when one comes (most have one or two) */
  #listener: ((tx: Transaction<M>) => void) | undefined = undefined
  #listeners: Array<(tx: Transaction<M>) => void> | undefined = undefined

  protected constructor (key: string, flow: TxFlow<M>, timers: TimerSettings, initial: TransactionState, table: TransitionTable) {
    this.key = key
    this.flow = flow
    this.timers = timers
    this.#state = initial
    this.#table = table
  }

  get state (): TransactionState { return this.#state }
  get reliable (): boolean { return this.flow.reliable }

  /** state check that TypeScript does not narrow (callbacks may have moved the state) */
  protected is (state: TransactionState): boolean { return this.#state === state }

  /** called once when the transaction reaches "terminated" (the layer removes it from its table) */
  onTerminated (listener: (tx: Transaction<M>) => void): void {
    if (this.#listener === undefined) this.#listener = listener
    else (this.#listeners ??= []).push(listener)
  }

  protected transition (to: TransactionState): void {
    const from = this.#state
    if (from === to) return
    if (!this.#table[from].includes(to)) {
      throw new TransactionStateError(`${this.constructor.name}: ${from} -> ${to} is not a valid transition`)
    }
    this.#state = to
    if (to === TransactionState.Terminated) {
      this.clearTimers()
      this.terminatedHook()
      this.#listener?.(this)
      if (this.#listeners !== undefined) for (const l of this.#listeners) l(this)
    }
  }

  /** stop all timers and end now (shutdown) */
  terminate (): void {
    if (this.#state !== TransactionState.Terminated) this.transition(TransactionState.Terminated)
  }

  protected abstract clearTimers (): void
  protected abstract terminatedHook (): void

  /** send through the flow; a synchronous throw or a rejection becomes a transport error */
  protected transmit (message: M): void {
    let result: void | Promise<void>
    try {
      result = this.flow.send(message)
    } catch (err) {
      this.transportFailed(err)
      return
    }
    if (result !== undefined && typeof (result as Promise<void>).then === 'function') {
      (result as Promise<void>).then(undefined, (err: unknown) => { this.transportFailed(err) })
    }
  }

  /** send bytes already serialized (see TxFlow.sendBytes); errors as `transmit` */
  protected transmitBytes (data: Uint8Array): void {
    let result: void | Promise<void>
    try {
      result = this.flow.sendBytes?.(data)
    } catch (err) {
      this.transportFailed(err)
      return
    }
    if (result !== undefined && typeof (result as Promise<void>).then === 'function') {
      (result as Promise<void>).then(undefined, (err: unknown) => { this.transportFailed(err) })
    }
  }

  protected abstract transportFailed (error: unknown): void
}

/** every state may go to terminated; the rest is per figure */
export function table (t: Partial<Record<TransactionState, TransactionState[]>>): TransitionTable {
  const out = {} as Record<TransactionState, TransactionState[]>
  for (const s of Object.values(TransactionState)) {
    out[s] = s === TransactionState.Terminated ? [] : [...(t[s] ?? []), TransactionState.Terminated]
  }
  return out
}
