import type { TxFlow, TxRequest, TxResponse } from './message.ts'
import type { TimerSettings } from './timers.ts'
import { Timer } from './timers.ts'
import { Transaction, TransactionState, table } from './transaction.ts'
import type { ClientTransactionUser } from './transaction.ts'

const S = TransactionState

/** RFC 3261 17.1.1, figure 5, with the "accepted" state of RFC 6026 section 7.2 */
const transitions = table({
  [S.Calling]: [S.Proceeding, S.Completed, S.Accepted],
  [S.Proceeding]: [S.Completed, S.Accepted]
})

/**
 * INVITE client transaction (RFC 3261 17.1.1). Timer A retransmits over unreliable flows
 * (doubling from T1), timer B (64*T1) times out a transaction that saw no response, timer D
 * (32 s unreliable, zero reliable) absorbs final-response retransmissions in "completed", where
 * each one is ACKed again. The ACK for a 300-699 response is built by `buildAck` (17.1.1.3).
 * A 2xx moves to "accepted" (RFC 6026) for timer M (64*T1), passing 2xx retransmissions up.
 */
export class InviteClientTransaction<Req extends TxRequest = TxRequest, Res extends TxResponse = TxResponse> extends Transaction<Req> {
  readonly request: Req
  readonly #user: ClientTransactionUser<Res>
  readonly #buildAck: (response: Res) => Req
  readonly #timerA = new Timer()
  readonly #timerB = new Timer()
  readonly #timerD = new Timer()
  readonly #timerM = new Timer()
  #interval: number
  #ack: Req | undefined

  constructor (key: string, request: Req, flow: TxFlow<Req>, user: ClientTransactionUser<Res>, timers: TimerSettings, buildAck: (response: Res) => Req) {
    super(key, flow, timers, S.Calling, transitions)
    this.request = request
    this.#user = user
    this.#buildAck = buildAck
    this.#interval = timers.t1
  }

  start (): void {
    this.#timerB.set(64 * this.timers.t1, () => this.#onTimerB())
    if (!this.reliable) this.#timerA.set(this.#interval, () => this.#onTimerA())
    this.transmit(this.request)
  }

  #onTimerA (): void {
    if (this.state !== S.Calling) return
    this.transmit(this.request)
    this.#interval *= 2
    if (this.state === S.Calling) this.#timerA.set(this.#interval, () => this.#onTimerA())
  }

  #onTimerB (): void {
    if (this.state !== S.Calling) return
    this.transition(S.Terminated)
    this.#user.onRequestTimeout()
  }

  receiveResponse (response: Res): void {
    const status = response.status
    switch (this.state) {
      case S.Calling:
      case S.Proceeding:
        this.#timerA.clear()
        if (status < 200) {
          this.#timerB.clear()
          this.transition(S.Proceeding)
          this.#user.receiveResponse(response)
        } else if (status < 300) {
          this.#timerB.clear()
          this.transition(S.Accepted)
          this.#timerM.set(64 * this.timers.t1, () => this.transition(S.Terminated))
          this.#user.receiveResponse(response)
        } else {
          this.#timerB.clear()
          this.transition(S.Completed)
          this.#ack = this.#buildAck(response)
          this.transmit(this.#ack)
          this.#user.receiveResponse(response)
          if (!this.is(S.Completed)) return
          if (this.reliable) this.transition(S.Terminated)
          else this.#timerD.set(Math.max(32000, 64 * this.timers.t1), () => this.transition(S.Terminated))
        }
        return
      case S.Completed:
        // a retransmitted final response: ACK it again, do not pass it up (17.1.1.2)
        if (status >= 300 && this.#ack !== undefined) this.transmit(this.#ack)
        return
      case S.Accepted:
        if (status >= 200 && status < 300) this.#user.receiveResponse(response)
        return
      default:
    }
  }

  protected override transportFailed (error: unknown): void {
    if (this.state !== S.Calling && this.state !== S.Proceeding) return
    this.transition(S.Terminated)
    this.#user.onTransportError(error)
  }

  protected override clearTimers (): void {
    this.#timerA.clear(); this.#timerB.clear(); this.#timerD.clear(); this.#timerM.clear()
  }

  protected override terminatedHook (): void { this.#user.onTerminated?.() }
}
