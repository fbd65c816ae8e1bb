/**
 * Errors of the offline message store. Each carries the SIP status the MESSAGE that could not be
 * stored is answered with, so the gateway's single error → response mapping handles them.
 */
import { SipStatusError } from '../errors.ts'

export const QuotaScope = {
  /** the recipient's own backlog is full (count or bytes) */
  User: 'user',
  /** the node's offline store as a whole is full */
  Global: 'global'
} as const
export type QuotaScope = typeof QuotaScope[keyof typeof QuotaScope]

/**
 * Over quota: nothing was stored. Answered `480 Temporarily Unavailable` with a reason phrase that
 * says why, and a Retry-After hint (seconds).
 *
 * Why 480 and not 486: RFC 3428 names no status for a full store. RFC 3261 21.4.24 (486 Busy
 * Here) says the callee's end system *was contacted* and is busy, which is false for an offline
 * user; 21.4.18 (480) covers a callee who is "not logged in" and says the reason phrase SHOULD
 * indicate the more precise cause: "Mailbox Full" / "Offline Storage Full". A full node-wide store
 * is also 480 rather than 503 so that the sender does not fail over to another server and retry
 * the same full mailbox there.
 */
export class OfflineQuotaError extends SipStatusError {
  override name = 'OfflineQuotaError'
  readonly scope: QuotaScope
  /** seconds, for a Retry-After header */
  readonly retryAfter: number

  constructor (scope: QuotaScope, detail: string, retryAfter = 3600) {
    super(480, scope === QuotaScope.User ? 'Mailbox Full' : 'Offline Storage Full')
    this.message = `${this.message}: ${detail}`
    this.scope = scope
    this.retryAfter = retryAfter
  }
}

/** A message whose body (or whole stored record) exceeds the store's per-message limit: 513. */
export class OfflineMessageTooLargeError extends SipStatusError {
  override name = 'OfflineMessageTooLargeError'

  constructor (detail: string) {
    super(513, 'Message Too Large')
    this.message = `${this.message}: ${detail}`
  }
}

/** A malformed AoR or message field (control characters, over-long values, wrong types): 400. */
export class InvalidOfflineMessageError extends SipStatusError {
  override name = 'InvalidOfflineMessageError'

  constructor (detail: string) {
    super(400, 'Bad Request')
    this.message = `${this.message}: ${detail}`
  }
}

/** The store was used before `start()` or after `stop()`: 503. */
export class OfflineStoreStoppedError extends SipStatusError {
  override name = 'OfflineStoreStoppedError'

  constructor () {
    super(503, 'Offline Store Unavailable')
  }
}
