/**
 * The response context of a forwarded request (RFC 3261 16.7): its branches (one client
 * transaction per target), which responses go upstream, and the best final response when no
 * branch succeeded (16.7 step 6). Provisional responses (but 100) are relayed; the first 2xx is
 * relayed at once (for INVITE every 2xx is: each fork may set up a dialog); for non-INVITE
 * requests such as MESSAGE the first 2xx wins and later ones are dropped.
 */
import type { SipRequest, SipResponse } from '../codec/message.ts'
import { createResponse } from '../codec/response.ts'
import type { ClientTransaction, ServerTransaction } from '../transaction/layer.ts'
import { TransactionState } from '../transaction/transaction.ts'

export interface Branch {
  id: string
  request: SipRequest
  tx?: ClientTransaction
  /** final response received (or synthesized) */
  final?: SipResponse
  provisional: boolean
  /** the CANCEL was asked for before a provisional arrived (RFC 3261 9.1) */
  cancelPending: boolean
  /** a mesh branch answered "not owner": excluded from the choice, retried elsewhere */
  superseded: boolean
  /** the branch timed out at a device: when no branch succeeds, `rescue` may answer instead */
  rescuable?: boolean
}

export interface ResponseContextHooks {
  /** send the CANCEL of one branch */
  cancel (branch: Branch): void
  /** a final response is going upstream (for counters) */
  onFinal? (response: SipResponse): void
  /** a provisional response arrived on a branch (restarts timer C) */
  onProvisional? (response: SipResponse): void
  /**
   * Every branch failed and one of them was marked `rescuable`: answer instead of the best
   * failure (a MESSAGE kept by the offline store: 202). Runs only then, so a request that another
   * branch delivered is never kept as well; undefined or a rejection sends the best failure.
   */
  rescue? (best: SipResponse, request: SipRequest): Promise<SipResponse | undefined>
}

/** Pick the best final response among failed branches (16.7 step 6). */
export function bestResponse (responses: SipResponse[]): SipResponse | undefined {
  let best: SipResponse | undefined
  const rank = (s: number): number => s >= 600 ? 0 : s // any 6xx first, then the lowest code
  for (const r of responses) {
    if (best === undefined || rank(r.status) < rank(best.status)) best = r
  }
  return best
}

export class ResponseContext {
  readonly request: SipRequest
  readonly server: ServerTransaction
  /** in the order they were added (an array: most contexts have one branch, and none is looked up by id) */
  readonly branches: Branch[] = []
  readonly #hooks: ResponseContextHooks
  #finalSent = false
  #cancelled = false
  /** branches that may still be added (while a re-resolve runs) */
  #open = 0

  constructor (request: SipRequest, server: ServerTransaction, hooks: ResponseContextHooks) {
    this.request = request
    this.server = server
    this.#hooks = hooks
  }

  get finalSent (): boolean { return this.#finalSent }
  get cancelled (): boolean { return this.#cancelled }

  /** hold the context open while more branches may come (a re-resolve in flight) */
  hold (): () => void {
    this.#open++
    let done = false
    return () => { if (!done) { done = true; this.#open--; this.#maybeFinish() } }
  }

  addBranch (id: string, request: SipRequest): Branch {
    const b: Branch = { id, request, provisional: false, cancelPending: this.#cancelled, superseded: false }
    this.branches.push(b)
    return b
  }

  receive (branch: Branch, response: SipResponse): void {
    const status = response.status
    if (status < 200) {
      if (branch.final !== undefined) return
      branch.provisional = true
      this.#hooks.onProvisional?.(response)
      if (branch.cancelPending) { branch.cancelPending = false; this.#hooks.cancel(branch) }
      if (status > 100 && !this.#finalSent) this.server.respond(response)
      return
    }
    const first = branch.final === undefined
    if (first) branch.final = response
    if (status < 300) {
      if (!this.#finalSent) {
        this.#finalSent = true
        this.#hooks.onFinal?.(response)
        this.server.respond(response)
        // 16.7 step 10: a 2xx to INVITE cancels the other pending branches
        if (this.request.method === 'INVITE') this.#cancelOthers(branch)
      } else if (this.request.method === 'INVITE') {
        this.server.respond(response) // every 2xx of a forked INVITE goes upstream
      }
      return
    }
    if (status >= 600 && this.request.method === 'INVITE' && !this.#finalSent) this.#cancelOthers(branch)
    if (first) this.#maybeFinish()
  }

  /** drop a branch from the choice (it will be retried on another route) */
  supersede (branch: Branch): void {
    branch.superseded = true
    if (branch.final === undefined) branch.final = createResponse(this.request, 480)
  }

  /** a CANCEL for the request arrived (9.2 / 16.10) */
  cancel (): void {
    if (this.#cancelled) return
    this.#cancelled = true
    for (const b of this.branches) this.#cancelBranch(b)
    this.#maybeFinish()
  }

  #cancelOthers (winner: Branch): void {
    for (const b of this.branches) if (b !== winner) this.#cancelBranch(b)
  }

  #cancelBranch (b: Branch): void {
    if (b.final !== undefined) return
    if (b.provisional) this.#hooks.cancel(b)
    else b.cancelPending = true
  }

  /** once every branch is final and none succeeded, send the best response (16.7 step 6) */
  #maybeFinish (): void {
    if (this.#finalSent || this.#open > 0) return
    const finals: SipResponse[] = []
    for (const b of this.branches) {
      if (b.final === undefined) return
      if (!b.superseded) finals.push(b.final)
    }
    this.#finalSent = true
    let best = bestResponse(finals)
    if (best === undefined) {
      best = createResponse(this.request, this.#cancelled ? 487 : 480, undefined, undefined, { toTag: true })
    } else if (best.status === 503) {
      // 16.7 step 6: a 503 is not relayed as such (it would mean *this* proxy is unavailable)
      best = createResponse(this.request, 500, 'Server Internal Error', undefined, { toTag: true })
    }
    const rescue = this.#hooks.rescue
    if (rescue !== undefined && !this.#cancelled && this.branches.some(b => b.rescuable === true && !b.superseded)) {
      const failure = best
      rescue(failure, this.request).then(r => r ?? failure, () => failure).then(r => { this.#hooks.onFinal?.(r); this.server.respond(r) }, () => {})
      return
    }
    this.#hooks.onFinal?.(best)
    this.server.respond(best)
  }

  /** true once the server transaction no longer needs this context */
  get done (): boolean {
    if (!this.#finalSent) return false
    for (const b of this.branches) if (b.final === undefined && b.tx?.state !== TransactionState.Terminated) return false
    return true
  }
}
