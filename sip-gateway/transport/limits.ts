/** Small guards of the transport layer: per-source rate limiting and log sampling. */

export interface RateLimitInit {
  /** sustained messages per second from one source address */
  perSecond: number
  /** burst allowance above the sustained rate */
  burst: number
  /**
   * Source addresses tracked at most; the oldest is forgotten beyond this.
   * @default 65536
   */
  maxSources?: number
}

/** A token bucket per source address (RFC 3261 leaves overload policy to us; SPEC: per-source limits). */
export class SourceRateLimiter {
  private readonly perMs: number
  private readonly burst: number
  private readonly maxSources: number
  private readonly buckets = new Map<string, { tokens: number, at: number }>()

  constructor (init: RateLimitInit) {
    this.perMs = init.perSecond / 1000
    this.burst = Math.max(1, init.burst)
    this.maxSources = init.maxSources ?? 65_536
  }

  /** Take one token for `source`; false when it is over its rate. */
  take (source: string, now = Date.now()): boolean {
    let b = this.buckets.get(source)
    if (b === undefined) {
      if (this.buckets.size >= this.maxSources) {
        const oldest = this.buckets.keys().next().value
        if (oldest !== undefined) this.buckets.delete(oldest)
      }
      b = { tokens: this.burst, at: now }
      this.buckets.set(source, b)
    } else {
      b.tokens = Math.min(this.burst, b.tokens + (now - b.at) * this.perMs)
      b.at = now
    }
    if (b.tokens < 1) return false
    b.tokens -= 1
    return true
  }
}

/** Lets through at most `perSecond` events per second, and counts the rest. */
export class LogSampler {
  private readonly perSecond: number
  private windowStart = 0
  private count = 0
  private suppressed = 0

  constructor (perSecond: number) {
    this.perSecond = perSecond
  }

  /**
   * Whether to log this event; `suppressed` is how many were dropped in the previous window
   * (report it once, with the first event of a new window).
   */
  allow (now = Date.now()): { log: boolean, suppressed: number } {
    let suppressed = 0
    if (now - this.windowStart >= 1000) {
      suppressed = this.suppressed
      this.windowStart = now
      this.count = 0
      this.suppressed = 0
    }
    if (this.count < this.perSecond) {
      this.count++
      return { log: true, suppressed }
    }
    this.suppressed++
    return { log: false, suppressed: 0 }
  }
}
