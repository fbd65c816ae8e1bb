import type { TxFlow, TxRequest, TxResponse } from './message.ts'
import type { TimerSettings } from './timers.ts'
import { Timer } from './timers.ts'
import { Transaction, TransactionState, table } from './transaction.ts'
import type { ServerTransactionUser } from './transaction.ts'

const S = TransactionState

/** takes over a completed transaction's final response (as bytes) for `ms` (timer J) */
export type LingerHandoff = (key: string, bytes: Uint8Array, flow: TxFlow<never>, ms: number) => void

/** RFC 3261 17.2.2, figure 8 */
const transitions = table({
  [S.Trying]: [S.Proceeding, S.Completed],
  [S.Proceeding]: [S.Completed]
})

/**
 * Non-INVITE server transaction (RFC 3261 17.2.2). Request retransmissions are absorbed in
 * "trying" and answered with the last response otherwise; timer J (64*T1 unreliable, zero
 * reliable) keeps the final response around for them.
 */
export class NonInviteServerTransaction<Req extends TxRequest = TxRequest, Res extends TxResponse = TxResponse> extends Transaction<Res> {
  #request: Req | undefined
  #user: ServerTransactionUser<Req>
  /** made when needed: only without the layer's linger table, or over a flow that cannot resend bytes */
  #timerJ: Timer | undefined
  #last: Res | undefined
  /** the final response as sent, over a flow that can resend bytes (UDP): `#last` is then dropped */
  #packed: Uint8Array | undefined

  readonly #linger: LingerHandoff | undefined

  /**
   * `linger`: where a final response sent over a flow that resends bytes (UDP) is handed for
   * timer J (the transaction layer's table of lingering responses); the transaction then ends at
   * once instead of staying alive 64*T1 for retransmissions. Absent: the transaction lingers
   * itself, as RFC 3261 17.2.2 draws it.
   */
  constructor (key: string, request: Req, flow: TxFlow<Res>, timers: TimerSettings, user: ServerTransactionUser<Req> = {}, linger?: LingerHandoff) {
    super(key, flow, timers, S.Trying, transitions)
    this.#request = request
    this.#user = user
    this.#linger = linger
  }

  /**
   * The request, until the final response is sent: a completed transaction only lingers (timer
   * J, 32 s over UDP) to answer retransmissions with the stored response, so it lets the request
   * (and the datagram under its body) go.
   */
  get request (): Req | undefined { return this.#request }

  setUser (user: ServerTransactionUser<Req>): void { this.#user = user }

  /**
   * the final response, once sent (over a flow that resends bytes, such as UDP, only its bytes are
   * kept: then undefined)
   */
  get finalResponse (): Res | undefined { return this.#last !== undefined && this.#last.status >= 200 ? this.#last : undefined }

  /** a retransmission of the request matched this transaction */
  receiveRequest (_request: Req): void {
    if (this.state !== S.Proceeding && this.state !== S.Completed) return
    if (this.#packed !== undefined) this.transmitBytes(this.#packed)
    else if (this.#last !== undefined) this.transmit(this.#last)
  }

  /** the TU responds; responses after the final one are ignored (17.2.2) */
  respond (response: Res): void {
    if (this.state === S.Completed || this.state === S.Terminated) return
    this.#last = response
    if (response.status < 200) {
      this.transition(S.Proceeding)
      this.transmit(response)
      return
    }
    this.transition(S.Completed)
    this.#request = undefined
    const flow = this.flow
    if (!this.reliable && flow.serialize !== undefined && flow.sendBytes !== undefined) {
      // lingering for timer J: keep the bytes, let the response (and the request under it) go
      this.#packed = flow.serialize(response)
      this.#last = undefined
      this.transmitBytes(this.#packed)
      if (this.#linger !== undefined && this.is(S.Completed)) {
        this.#linger(this.key, this.#packed, flow, 64 * this.timers.t1)
        this.transition(S.Terminated)
        return
      }
    } else {
      this.transmit(response)
    }
    if (!this.is(S.Completed)) return
    if (this.reliable) this.transition(S.Terminated)
    else (this.#timerJ ??= new Timer()).set(64 * this.timers.t1, this.#terminate, this)
  }

  protected override transportFailed (error: unknown): void {
    if (this.state === S.Terminated) return
    this.transition(S.Terminated)
    this.#user.onTransportError?.(error)
  }

  #terminate (): void { this.transition(S.Terminated) }

  protected override clearTimers (): void { this.#timerJ?.clear() }
  protected override terminatedHook (): void { this.#user.onTerminated?.() }
}
