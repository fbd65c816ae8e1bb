/**
 * The event state compositor's store of publications (RFC 3903, section 6): per presentity and
 * event package, the live publications, each with its entity tag and expiry.
 *
 * - initial PUBLISH (no SIP-If-Match, a body): a new publication and a new entity tag;
 * - refresh (SIP-If-Match, no body): a new entity tag and expiry, same state;
 * - modify (SIP-If-Match and a body): new state, new entity tag and expiry;
 * - remove (SIP-If-Match and Expires: 0);
 * - an entity tag that is unknown, expired, or belongs to another presentity or event package:
 *   `ConditionalRequestFailedError` (412);
 * - an expiry below the minimum: `IntervalTooBriefError` (423 with Min-Expires); above the maximum:
 *   lowered to the maximum (section 6, step 5).
 *
 * The store is generic in the body type: the gateway parses and validates the body (PIDF → 400)
 * before calling `publish`. Entity tags are 128 random bits (base64url, a SIP token), so they
 * cannot be guessed. A timer per publication removes it when it expires and emits a change.
 * Time goes through a small clock seam; by default it uses the global `Date.now` and `setTimeout`
 * at call time, so `mock.timers` from node:test drives it in tests.
 */

import { randomToken } from '../codec/response.ts'
import type { Aor, Logger } from '../ports.ts'

/** SIP-If-Match names no live publication of this presentity and event package: answer 412. */
export class ConditionalRequestFailedError extends Error {
  static override name = 'ConditionalRequestFailedError'
  override name = 'ConditionalRequestFailedError'
  readonly status = 412
  readonly etag: string
  constructor (etag: string) {
    super(`no live publication with entity tag ${etag.slice(0, 64)}`)
    this.etag = etag
  }
}

/** Expires below the minimum: answer 423 with a Min-Expires header. */
export class IntervalTooBriefError extends Error {
  static override name = 'IntervalTooBriefError'
  override name = 'IntervalTooBriefError'
  readonly status = 423
  readonly minExpires: number
  constructor (minExpires: number) {
    super(`expiry shorter than ${minExpires} s`)
    this.minExpires = minExpires
  }
}

/** A malformed publication request (initial PUBLISH without a body, bad Expires): answer 400. */
export class BadPublicationError extends Error {
  static override name = 'BadPublicationError'
  override name = 'BadPublicationError'
  readonly status = 400
  readonly reason: string
  constructor (reason: string) {
    super(reason)
    this.reason = reason
  }
}

/** A presentity (or the whole store) already has the most publications allowed: answer 403. */
export class TooManyPublicationsError extends Error {
  static override name = 'TooManyPublicationsError'
  override name = 'TooManyPublicationsError'
  readonly status = 403
  constructor (max: number, scope: 'presentity' | 'store' = 'presentity') {
    super(scope === 'presentity' ? `more than ${max} publications for one presentity` : `more than ${max} publications in all`)
  }
}

/** The time seam. */
export interface Clock {
  now(): number
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const handle = setTimeout(fn, ms) as { unref?: () => void }
    handle.unref?.()
    return handle
  },
  clearTimeout: handle => { clearTimeout(handle as ReturnType<typeof setTimeout>) }
}

export interface PublicationStoreInit {
  /**
   * Expiry in seconds when the request has no Expires header
   * @default 3600
   */
  defaultExpires?: number
  /**
   * Shortest expiry accepted in seconds (shorter, but not 0: 423)
   * @default 60
   */
  minExpires?: number
  /**
   * Longest expiry granted in seconds (longer is lowered to this)
   * @default 86400
   */
  maxExpires?: number
  /**
   * Most live publications per presentity and event package
   * @default 16
   */
  maxPerPresentity?: number
  /**
   * Most live publications in the whole store (a flood of PUBLISH for many AoRs stops here)
   * @default 100000
   */
  maxTotal?: number
  /** @default systemClock */
  clock?: Clock
  /** where a failing change listener is reported */
  logger?: Logger
}

export interface PublishRequest<D> {
  presentity: Aor
  /** the Event header's package name, e.g. `presence` */
  event: string
  /** SIP-If-Match, when present */
  ifMatch?: string
  /** Expires in seconds, when present */
  expires?: number
  /** the parsed body, when the request has one */
  body?: D
}

export type PublishOutcome = 'created' | 'refreshed' | 'modified' | 'removed'

export interface PublishResult {
  outcome: PublishOutcome
  /** SIP-ETag for the response (for `removed`, the tag that was removed) */
  etag: string
  /** Expires for the response, in seconds */
  expires: number
}

export interface Publication<D> {
  presentity: Aor
  event: string
  etag: string
  body: D
  /** ms since the epoch */
  expiresAt: number
  /** creation order, kept across refreshes and modifications */
  seq: number
  /** a string that sorts in creation order (for composition) */
  key: string
}

export type ChangeReason = 'created' | 'modified' | 'removed' | 'expired'

export interface PublicationChange {
  presentity: Aor
  event: string
  reason: ChangeReason
  etag: string
}

interface Entry<D> extends Publication<D> {
  timer: unknown
  /** when `timer` fires (ms since the epoch): a later expiry leaves it set, and it sets itself again for the rest */
  timerDue: number
}

const MAX_TIMER_MS = 2 ** 31 - 1

export function newEntityTag (): string {
  // from the codec's pool of random bytes: a `randomBytes` call per tag was 6% of a node
  // answering PUBLISH (issue 11); each byte is still handed out once
  return randomToken(16)
}

export class PublicationStore<D> {
  private readonly defaultExpires: number
  private readonly minExpires: number
  private readonly maxExpires: number
  private readonly maxPerPresentity: number
  private readonly maxTotal: number
  private total = 0
  private readonly clock: Clock
  private readonly logger?: Logger
  /**
   * event → presentity → live entries in creation order (at most `maxPerPresentity`: a scan of a
   * short array, no Map per presentity, no key string made per request)
   */
  private readonly state = new Map<string, Map<Aor, Array<Entry<D>>>>()
  /** the listeners, a new array at each change of the set (an emit goes through the array of its time) */
  private listeners: ReadonlyArray<(change: PublicationChange) => void> = []
  private seq = 0

  constructor (init: PublicationStoreInit = {}) {
    this.defaultExpires = init.defaultExpires ?? 3600
    this.minExpires = init.minExpires ?? 60
    this.maxExpires = init.maxExpires ?? 86400
    this.maxPerPresentity = init.maxPerPresentity ?? 16
    this.maxTotal = init.maxTotal ?? 100_000
    this.clock = init.clock ?? systemClock
    this.logger = init.logger
    if (!(this.minExpires >= 0 && this.minExpires <= this.defaultExpires && this.defaultExpires <= this.maxExpires)) {
      throw new RangeError('publication expiries must satisfy 0 <= minExpires <= defaultExpires <= maxExpires')
    }
  }

  /** Be told of every change of state (not of refreshes): created, modified, removed, expired. */
  onChange (handler: (change: PublicationChange) => void): () => void {
    if (!this.listeners.includes(handler)) this.listeners = [...this.listeners, handler]
    return () => { this.listeners = this.listeners.filter(l => l !== handler) }
  }

  /** Apply a PUBLISH request (RFC 3903 section 6, steps 3 to 7). Throws the typed errors above. */
  publish (req: PublishRequest<D>): PublishResult {
    const expires = this.grantedExpires(req.expires)

    if (req.ifMatch === undefined) {
      if (req.body === undefined) throw new BadPublicationError('initial PUBLISH without a body')
      if (expires === 0) {
        // Nothing to keep: accept and forget (the tag refers to nothing).
        return { outcome: 'removed', etag: newEntityTag(), expires: 0 }
      }
      let byPresentity = this.state.get(req.event)
      let entries = byPresentity?.get(req.presentity)
      if (entries !== undefined && entries.length >= this.maxPerPresentity) throw new TooManyPublicationsError(this.maxPerPresentity)
      if (this.total >= this.maxTotal) throw new TooManyPublicationsError(this.maxTotal, 'store')
      if (byPresentity === undefined) {
        byPresentity = new Map()
        this.state.set(req.event, byPresentity)
      }
      if (entries === undefined) {
        entries = []
        byPresentity.set(req.presentity, entries)
      }
      const seq = ++this.seq
      const entry: Entry<D> = {
        presentity: req.presentity,
        event: req.event,
        etag: newEntityTag(),
        body: req.body,
        expiresAt: 0,
        seq,
        key: seq.toString(36).padStart(12, '0'),
        timer: undefined,
        timerDue: 0
      }
      entries.push(entry)
      this.total++
      this.arm(entry, expires)
      this.emit({ presentity: entry.presentity, event: entry.event, reason: 'created', etag: entry.etag })
      return { outcome: 'created', etag: entry.etag, expires }
    }

    const etag = req.ifMatch.trim()
    const entry = this.find(req.presentity, req.event, etag)
    if (entry === undefined) throw new ConditionalRequestFailedError(etag)
    if (entry.expiresAt <= this.clock.now()) {
      // the timer has not run yet, but the publication is over
      this.drop(entry, 'expired')
      throw new ConditionalRequestFailedError(etag)
    }

    if (expires === 0) {
      this.drop(entry, 'removed')
      return { outcome: 'removed', etag, expires: 0 }
    }

    entry.etag = newEntityTag()
    this.arm(entry, expires)
    if (req.body === undefined) return { outcome: 'refreshed', etag: entry.etag, expires }
    entry.body = req.body
    this.emit({ presentity: entry.presentity, event: entry.event, reason: 'modified', etag: entry.etag })
    return { outcome: 'modified', etag: entry.etag, expires }
  }

  /** The live publications of a presentity for an event package, in creation order. */
  get (presentity: Aor, event: string): Array<Publication<D>> {
    const entries = this.state.get(event)?.get(presentity)
    if (entries === undefined) return []
    const now = this.clock.now()
    // kept in creation order
    return entries
      .filter(e => e.expiresAt > now)
      .map(({ timer: _timer, timerDue: _due, ...pub }) => pub)
  }

  /** How many publications are held, over all presentities. */
  get size (): number {
    return this.total
  }

  /** Cancel every expiry timer and forget everything (no change events). */
  stop (): void {
    for (const byPresentity of this.state.values()) {
      for (const entries of byPresentity.values()) for (const entry of entries) this.clock.clearTimeout(entry.timer)
    }
    this.state.clear()
    this.total = 0
  }

  private grantedExpires (expires: number | undefined): number {
    if (expires === undefined) return this.defaultExpires
    if (!Number.isSafeInteger(expires) || expires < 0) throw new BadPublicationError('Expires must be a non-negative integer')
    if (expires === 0) return 0
    if (expires < this.minExpires) throw new IntervalTooBriefError(this.minExpires)
    return Math.min(expires, this.maxExpires)
  }

  /** the live entry of a presentity and event package with this entity tag */
  private find (presentity: Aor, event: string, etag: string): Entry<D> | undefined {
    const entries = this.state.get(event)?.get(presentity)
    if (entries === undefined) return undefined
    for (let i = 0; i < entries.length; i++) if (entries[i].etag === etag) return entries[i]
    return undefined
  }

  /**
   * A new expiry. The entry's timer is set again only when the expiry comes before it fires: a
   * refresh or modification to a later expiry (the usual case) leaves it, and when it fires it
   * sets itself for the rest (`expire`).
   */
  private arm (entry: Entry<D>, expires: number): void {
    const ms = expires * 1000
    const now = this.clock.now()
    entry.expiresAt = now + ms
    if (entry.timer !== undefined && entry.timerDue <= entry.expiresAt) return
    this.clock.clearTimeout(entry.timer)
    const wait = Math.min(ms, MAX_TIMER_MS)
    entry.timerDue = now + wait
    entry.timer = this.clock.setTimeout(() => this.expire(entry), wait)
  }

  private expire (entry: Entry<D>): void {
    if (this.find(entry.presentity, entry.event, entry.etag) !== entry) return
    const now = this.clock.now()
    const left = entry.expiresAt - now
    if (left > 0) {
      // a clamped timer (very long expiry), a later expiry since it was set, or an early wake-up: wait for the rest
      const wait = Math.min(left, MAX_TIMER_MS)
      entry.timerDue = now + wait
      entry.timer = this.clock.setTimeout(() => this.expire(entry), wait)
      return
    }
    this.drop(entry, 'expired')
  }

  private drop (entry: Entry<D>, reason: 'removed' | 'expired'): void {
    const byPresentity = this.state.get(entry.event)
    const entries = byPresentity?.get(entry.presentity)
    if (byPresentity === undefined || entries === undefined) return
    const i = entries.indexOf(entry)
    if (i === -1) return
    this.clock.clearTimeout(entry.timer)
    entry.timer = undefined
    entries.splice(i, 1)
    this.total--
    if (entries.length === 0) byPresentity.delete(entry.presentity)
    this.emit({ presentity: entry.presentity, event: entry.event, reason, etag: entry.etag })
  }

  private emit (change: PublicationChange): void {
    for (const listener of this.listeners) {
      try {
        listener(change)
      } catch (err) {
        // a listener's failure is its own; the store stays consistent
        this.logger?.error('publication change listener failed', { err: String(err), presentity: change.presentity })
      }
    }
  }
}
