import type { TxFlow, TxRequest, TxResponse } from './message.ts'
import type { TimerSettings } from './timers.ts'
import { Timer } from './timers.ts'
import { Transaction, TransactionState, table } from './transaction.ts'
import type { ServerTransactionUser } from './transaction.ts'

const S = TransactionState

/** RFC 3261 17.2.1, figure 7, with "accepted" from RFC 6026 section 7.1 */
const transitions = table({
  [S.Proceeding]: [S.Completed, S.Accepted],
  [S.Completed]: [S.Confirmed]
})

/**
 * INVITE server transaction (RFC 3261 17.2.1). A retransmitted INVITE gets the last response
 * again. A 300-699 final response moves to "completed": timer G retransmits it over unreliable
 * flows (T1 doubling up to T2) until the ACK arrives, timer H (64*T1) gives up waiting for the
 * ACK. The ACK moves to "confirmed", where timer I (T4 unreliable, zero reliable) absorbs further
 * ACKs. A 2xx moves to "accepted" (RFC 6026) for timer L (64*T1): 2xx retransmissions from the
 * TU go out, request retransmissions are absorbed, ACKs go to the TU.
 */
export class InviteServerTransaction<Req extends TxRequest = TxRequest, Res extends TxResponse = TxResponse> extends Transaction<Res> {
  readonly request: Req
  #user: ServerTransactionUser<Req>
  readonly #timerG = new Timer()
  readonly #timerH = new Timer()
  readonly #timerI = new Timer()
  readonly #timerL = new Timer()
  #interval: number
  #last: Res | undefined
  #cancelled = false

  constructor (key: string, request: Req, flow: TxFlow<Res>, timers: TimerSettings, user: ServerTransactionUser<Req> = {}) {
    super(key, flow, timers, S.Proceeding, transitions)
    this.request = request
    this.#user = user
    this.#interval = timers.t1
  }

  setUser (user: ServerTransactionUser<Req>): void { this.#user = user }

  get finalResponse (): Res | undefined { return this.#last !== undefined && this.#last.status >= 200 ? this.#last : undefined }

  /** set when a CANCEL matched this transaction (RFC 3261 9.2) */
  get cancelled (): boolean { return this.#cancelled }
  markCancelled (): void { this.#cancelled = true }

  /** a retransmitted INVITE, or an ACK, matched this transaction */
  receiveRequest (request: Req): void {
    if (request.method === 'ACK') {
      if (this.state === S.Completed) {
        this.#timerG.clear()
        this.#timerH.clear()
        this.transition(S.Confirmed)
        if (this.reliable) this.transition(S.Terminated)
        else this.#timerI.set(this.timers.t4, () => this.transition(S.Terminated))
      } else if (this.state === S.Accepted) {
        this.#user.receiveAck?.(request)
      }
      return
    }
    if ((this.state === S.Proceeding || this.state === S.Completed) && this.#last !== undefined) this.transmit(this.#last)
  }

  respond (response: Res): void {
    const status = response.status
    if (this.state === S.Accepted && status >= 200 && status < 300) {
      // RFC 6026 7.1: 2xx retransmissions from the TU are sent in "accepted"
      this.transmit(response)
      return
    }
    if (this.state !== S.Proceeding) return
    this.#last = response
    if (status < 200) {
      this.transmit(response)
    } else if (status < 300) {
      this.transition(S.Accepted)
      this.#timerL.set(64 * this.timers.t1, () => this.transition(S.Terminated))
      this.transmit(response)
    } else {
      this.transition(S.Completed)
      this.#timerH.set(64 * this.timers.t1, () => this.#onTimerH())
      if (!this.reliable) this.#timerG.set(this.#interval, () => this.#onTimerG())
      this.transmit(response)
    }
  }

  #onTimerG (): void {
    if (this.state !== S.Completed || this.#last === undefined) return
    this.transmit(this.#last)
    this.#interval = Math.min(2 * this.#interval, this.timers.t2)
    if (this.state === S.Completed) this.#timerG.set(this.#interval, () => this.#onTimerG())
  }

  #onTimerH (): void {
    if (this.state !== S.Completed) return
    this.transition(S.Terminated)
    this.#user.onAckTimeout?.()
  }

  protected override transportFailed (error: unknown): void {
    if (this.state === S.Terminated) return
    this.transition(S.Terminated)
    this.#user.onTransportError?.(error)
  }

  protected override clearTimers (): void {
    this.#timerG.clear(); this.#timerH.clear(); this.#timerI.clear(); this.#timerL.clear()
  }

  protected override terminatedHook (): void { this.#user.onTerminated?.() }
}
