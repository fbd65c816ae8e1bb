/**
 * Overload is answered, not queued (RFC 3261 21.5.4): beyond capacity the registrar answers a
 * REGISTER 503 with Retry-After at once, instead of letting it wait while the user agent's UDP
 * retransmissions pile up behind it. Capacity is two figures:
 *
 * - REGISTERs in progress (waiting for their claim to be stored, then for their write): over
 *   `maxPending` a new one is refused;
 * - the event loop's lag, sampled by one timer: while it is over `maxLagMs` in two samples in a
 *   row, new REGISTERs are refused (the node is behind on everything; queuing more makes every
 *   answer later). One late sample alone is a single pause the loop has already come out of (a
 *   full GC, the memory trim of node/memory-trim.ts): refusing the REGISTERs that waited through
 *   it would turn one pause into 100 ms of 503s (issue 9: 256-408 REGISTERs refused right after an
 *   839 ms trim, with the loop keeping up again).
 *
 * What is shed is counted, and logged at warn at most once per `logIntervalMs` with the counts
 * since the last line (never a line per request).
 */
import type { Logger } from '../ports.ts'

export interface OverloadInit {
  /** most REGISTERs in progress at once (more: 503). @default 2000 */
  maxPending?: number
  /** event-loop lag over which REGISTERs are refused, ms; 0: not watched. @default 500 */
  maxLagMs?: number
  /** Retry-After of the 503, seconds (a random 0-100% is added, so refused agents do not come back together). @default 5 */
  retryAfterSeconds?: number
  /** at most one warn line per this long, ms. @default 10000 */
  logIntervalMs?: number
}

export type ShedReason = 'pending' | 'lag'

export class OverloadGuard {
  readonly maxPending: number
  readonly maxLagMs: number
  readonly #retryAfter: number
  readonly #logInterval: number
  readonly #log: Logger
  /** REGISTERs in progress */
  pending = 0
  /** REGISTERs refused, by reason (for metrics) */
  readonly shed: Record<ShedReason, number> = { pending: 0, lag: 0 }
  /** the last sampled event-loop lag, ms */
  lagMs = 0
  /** the sample before it, ms */
  #previousLagMs = 0
  #sinceLog: Record<ShedReason, number> = { pending: 0, lag: 0 }
  #lastLog = 0
  #sampler: ReturnType<typeof setInterval> | undefined

  constructor (log: Logger, init: OverloadInit = {}) {
    this.#log = log
    this.maxPending = init.maxPending ?? 2000
    this.maxLagMs = init.maxLagMs ?? 500
    this.#retryAfter = init.retryAfterSeconds ?? 5
    this.#logInterval = init.logIntervalMs ?? 10_000
    if (!(this.maxPending >= 1) || !(this.maxLagMs >= 0) || !(this.#retryAfter >= 1)) {
      throw new RangeError('maxPending and retryAfterSeconds must be at least 1, maxLagMs not negative')
    }
  }

  /** sample the event loop's lag (one timer, every 100 ms) */
  start (): void {
    if (this.maxLagMs === 0 || this.#sampler !== undefined) return
    const every = 100
    let expected = performance.now() + every
    this.#sampler = setInterval(() => {
      const now = performance.now()
      this.#previousLagMs = this.lagMs
      this.lagMs = Math.max(0, now - expected)
      expected = now + every
    }, every)
    this.#sampler.unref?.()
  }

  stop (): void {
    clearInterval(this.#sampler)
    this.#sampler = undefined
    this.lagMs = 0
    this.#previousLagMs = 0
  }

  /** the lag was over `maxLagMs` in the last two samples: the loop is behind, not out of one pause */
  get lagging (): boolean {
    return this.maxLagMs > 0 && Math.min(this.lagMs, this.#previousLagMs) > this.maxLagMs
  }

  /** undefined when a new REGISTER may go ahead, else why it is refused (counted and logged) */
  check (): ShedReason | undefined {
    const reason: ShedReason | undefined = this.pending >= this.maxPending
      ? 'pending'
      : this.lagging ? 'lag' : undefined
    if (reason === undefined) return undefined
    this.shed[reason]++
    this.#sinceLog[reason]++
    const now = Date.now()
    if (now - this.#lastLog >= this.#logInterval) {
      this.#log.warn('overload: REGISTERs refused with 503', {
        refused: { ...this.#sinceLog },
        pending: this.pending,
        maxPending: this.maxPending,
        lagMs: Math.round(this.lagMs),
        maxLagMs: this.maxLagMs,
        sinceMs: this.#lastLog === 0 ? undefined : now - this.#lastLog
      })
      this.#lastLog = now
      this.#sinceLog = { pending: 0, lag: 0 }
    }
    return reason
  }

  /** Retry-After seconds for a 503: the configured delay plus up to as much again, at random */
  retryAfter (): number {
    return this.#retryAfter + Math.floor(Math.random() * (this.#retryAfter + 1))
  }
}
