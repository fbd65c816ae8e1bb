/**
 * New claims that took long, told at warn with where the time went.
 *
 * A REGISTER waits for its claim: signed on the signing thread, stored in this node's LevelDB
 * batch, and answered by every replica. Under a REGISTER ladder on a 3-node mesh a few REGISTERs
 * came late enough for SIPp to retransmit them (T1, 500 ms) while the rest took milliseconds
 * (issue 9); which stage held them was not visible. At most one line per `intervalMs`, for the
 * slowest claim of that interval, with the count.
 */
import type { Logger } from '@libp2p/interface'

/** where a new claim's time went, ms */
export interface ClaimTimes {
  /** from the call until signed */
  signed: number
  /** from the write (once signed) until this node's store had it */
  stored: number
  /** from the write (once signed) until every replica answered (a claim answered early: until the answer it was decided on) */
  answered: number
  /** the whole claim */
  total: number
  /** replicas that stored it */
  replicas: number
}

export interface SlowClaimsInit {
  /** a claim slower than this is counted and may be logged @default 250 */
  thresholdMs?: number
  /** at most one line per this many ms @default 5000 */
  intervalMs?: number
}

export class SlowClaims {
  readonly #log: Logger
  readonly #threshold: number
  readonly #interval: number
  #lastLogAt = 0
  #pending = 0
  #slowest?: { aor: string, t: ClaimTimes }
  /** claims slower than the threshold since start (a metric) */
  count = 0

  /** ms from which a claim counts as slow (a caller may skip `record` below it) */
  get thresholdMs (): number {
    return this.#threshold
  }

  constructor (log: Logger, init: SlowClaimsInit = {}) {
    this.#log = log
    this.#threshold = init.thresholdMs ?? 250
    this.#interval = init.intervalMs ?? 5_000
  }

  record (aor: string, t: ClaimTimes, now = Date.now()): void {
    if (t.total < this.#threshold) return
    this.count++
    this.#pending++
    if (this.#slowest == null || t.total > this.#slowest.t.total) this.#slowest = { aor, t }
    if (now - this.#lastLogAt < this.#interval) return
    const { aor: worst, t: w } = this.#slowest
    // the libp2p logger's error() is the node log's warn (node/logger.ts)
    this.#log.error('%d new claims took over %d ms; the slowest, %s, %d ms: signed after %d, then stored here after %d, %d replicas answered after %d',
      this.#pending, this.#threshold, worst, Math.round(w.total), Math.round(w.signed), Math.round(w.stored), w.replicas, Math.round(w.answered))
    this.#lastLogAt = now
    this.#pending = 0
    this.#slowest = undefined
  }
}
