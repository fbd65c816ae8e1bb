import type { TxFlow, TxRequest, TxResponse } from './message.ts'
import type { TimerSettings } from './timers.ts'
import { Timer } from './timers.ts'
import { Transaction, TransactionState, table } from './transaction.ts'
import type { ClientTransactionUser } from './transaction.ts'

const S = TransactionState

/** the TU of a completed transaction whose TU needs no word of its end (see #release) */
const RELEASED: ClientTransactionUser<never> = { receiveResponse () {}, onRequestTimeout () {}, onTransportError () {} }

/** RFC 3261 17.1.2, figure 6 */
const transitions = table({
  [S.Trying]: [S.Proceeding, S.Completed],
  [S.Proceeding]: [S.Completed]
})

/**
 * Non-INVITE client transaction (RFC 3261 17.1.2). Timer E retransmits the request over
 * unreliable flows (T1 doubling up to T2, then T2 once a provisional arrived), timer F (64*T1)
 * times the transaction out, timer K (T4, zero when reliable) absorbs response retransmissions.
 * Over an unreliable flow E and F run on one timer (one timeout per transaction, not two): each
 * interval of E is cut short where F falls, and F fires when the intervals reach 64*T1.
 */
export class NonInviteClientTransaction<Req extends TxRequest = TxRequest, Res extends TxResponse = TxResponse> extends Transaction<Req> {
  #request: Req | undefined
  #user: ClientTransactionUser<Res>
  /** timer E and F over an unreliable flow, F alone over a reliable one */
  readonly #timerEF = new Timer()
  /** made when needed: only without the layer's linger table */
  #timerK: Timer | undefined
  #interval: number
  /** the intervals of timer E run so far: the time since start, as timer F counts it */
  #elapsed = 0
  readonly #linger: ((key: string) => void) | undefined

  /**
   * `linger`: where the key of a transaction completed over an unreliable flow is handed for timer
   * K (the transaction layer's table, which absorbs retransmitted final responses); the
   * transaction then ends at once instead of staying alive T4. Absent: it lingers itself, as RFC
   * 3261 17.1.2.2 draws it.
   */
  constructor (key: string, request: Req, flow: TxFlow<Req>, user: ClientTransactionUser<Res>, timers: TimerSettings, linger?: (key: string) => void) {
    super(key, flow, timers, S.Trying, transitions)
    this.#request = request
    this.#user = user
    this.#interval = timers.t1
    this.#linger = linger
  }

  /** the request, until the final response: "completed" only absorbs response retransmissions */
  get request (): Req | undefined { return this.#request }

  /** send the request and arm the timers (17.1.2.2) */
  start (): void {
    if (this.reliable) this.#timerEF.set(64 * this.timers.t1, this.#onTimerF, this)
    else this.#armE()
    if (this.#request !== undefined) this.transmit(this.#request)
  }

  /** the next interval of timer E, cut short where timer F falls */
  #armE (): void {
    const left = 64 * this.timers.t1 - this.#elapsed
    const next = Math.min(this.#interval, left)
    this.#elapsed += next
    this.#timerEF.set(next, next === left ? this.#onTimerF : this.#onTimerE, this)
  }

  // methods (called with the transaction as `this` by the timer), not a closure per transaction
  #onTimerE (): void {
    if ((this.state !== S.Trying && this.state !== S.Proceeding) || this.#request === undefined) return
    this.transmit(this.#request)
    this.#interval = this.state === S.Trying ? Math.min(2 * this.#interval, this.timers.t2) : this.timers.t2
    if (this.state === S.Trying || this.state === S.Proceeding) this.#armE()
  }

  #onTimerF (): void {
    if (this.state !== S.Trying && this.state !== S.Proceeding) return
    this.transition(S.Terminated)
    this.#user.onRequestTimeout()
  }

  #terminate (): void { this.transition(S.Terminated) }

  receiveResponse (response: Res): void {
    const status = response.status
    switch (this.state) {
      case S.Trying:
      case S.Proceeding:
        if (status < 200) {
          this.transition(S.Proceeding)
          this.#user.receiveResponse(response)
          return
        }
        this.#timerEF.clear()
        this.transition(S.Completed)
        this.#user.receiveResponse(response)
        this.#release()
        if (this.reliable) this.transition(S.Terminated)
        else if (this.#linger !== undefined && this.is(S.Completed)) {
          this.#linger(this.key)
          this.transition(S.Terminated)
        } else (this.#timerK ??= new Timer()).set(this.timers.t4, this.#terminate, this)
        return
      default:
        // Completed: retransmissions of the final response are absorbed (17.1.2.2)
    }
  }

  /**
   * Lingering in "completed" (timer K) needs neither the request nor the TU: let them go, so
   * that what the TU holds (a proxy's response context) is not kept for T4 after the answer.
   * Only `onTerminated` is called from here on; a TU that has one is kept for it.
   */
  #release (): void {
    this.#request = undefined
    if (this.#user.onTerminated === undefined) this.#user = RELEASED
  }

  protected override transportFailed (error: unknown): void {
    if (this.state === S.Terminated || this.state === S.Completed) return
    this.transition(S.Terminated)
    this.#user.onTransportError(error)
  }

  protected override clearTimers (): void {
    this.#timerEF.clear(); this.#timerK?.clear()
  }

  protected override terminatedHook (): void { this.#user.onTerminated?.() }
}
