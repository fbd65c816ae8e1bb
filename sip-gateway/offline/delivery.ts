/**
 * What a device's answer to a stored MESSAGE means for the backlog (issue 5): delivered, worth
 * another try later (keep it, and keep the messages behind it waiting, so order holds), or a
 * refusal of that one message for good (drop it, log it, go on with the next).
 *
 * The line is drawn where a SIP operator draws it: a failure that says something about the
 * device's or the user's state *now* (not reachable, busy, offline, overloaded, not
 * authenticated, a stale route) is transient; a failure that says something about *this
 * message* (its size, its content type, its encoding, this sender) would come back the same on
 * every retry, and keeping it would block everything queued behind it until the retention
 * period ends. Per status (RFC 3261 section 21, RFC 3428):
 *
 * - 2xx: delivered (202 too: a node on the way stored it durably in turn).
 * - 1xx, 3xx: transient. A redirect from a device or node is not followed for a stored message.
 * - 4xx, transient: 401/407 (a challenge we cannot answer now), 404 (a stale binding, or `404
 *   Not Owner` from a node that lost the AoR), 405/420/421 (this device cannot take MESSAGE at
 *   all: every message would fail alike, another device may come), 408 (timeout), 410, 423, 429,
 *   414/416/484/485 (about the Request-URI, the contact: the same for every message), 480
 *   (offline, do not disturb), 481, 482/483 (a routing loop, fixed by re-routing), 486 (busy),
 *   491, 494.
 * - 4xx, anything else: permanent, for that message. That is 400 (this request is malformed for
 *   it), 403 (it forbids this message, or this sender), 413 (too large), 415 (unsupported
 *   content type or encoding), 417, 488 (not acceptable here), 493 (undecipherable), and any 4xx
 *   not listed, which RFC 3261 8.1.3.2 says to treat as 400.
 * - 513 (Message Too Large): permanent. The proxy core sends a MESSAGE over 1300 bytes to a UDP
 *   contact over TCP to the same address first (RFC 3261 18.1.1), so a 513 means the device has
 *   no congestion-controlled path and never will for this message.
 * - Other 5xx: transient (500, 503, 504: server trouble, overload, timeouts; 501/505 as well: the
 *   device cannot handle MESSAGE, the same for every message).
 * - 6xx: 603 (Decline) and 606 (Not Acceptable) are permanent refusals; 600 (Busy Everywhere)
 *   and 604 (Does Not Exist Anywhere, for a user this mesh knows: a misconfigured device) are
 *   transient.
 * - No response at all (no reachable contact, a timeout or transport error the sender mapped to
 *   408/503, a throw): transient.
 */

export const Delivery = {
  /** a device took it (2xx): remove it */
  Delivered: 'delivered',
  /** try again later: keep it and everything after it */
  Retry: 'retry',
  /** refused for good: remove it and go on with the next */
  Refused: 'refused'
} as const
export type Delivery = typeof Delivery[keyof typeof Delivery]

/** 4xx statuses that are about the device's or user's state, not the message */
const TRANSIENT_4XX: ReadonlySet<number> = new Set([401, 404, 405, 407, 408, 410, 414, 416, 420, 421, 423, 429, 480, 481, 482, 483, 484, 485, 486, 491, 494])
/** 6xx statuses that refuse the message for good */
const PERMANENT_6XX: ReadonlySet<number> = new Set([603, 606])

/** The meaning of a final status for a stored message (see the table above). */
export function deliveryOf (status: number | undefined): Delivery {
  if (status === undefined || !Number.isInteger(status)) return Delivery.Retry
  if (status >= 200 && status < 300) return Delivery.Delivered
  if (status >= 400 && status < 500) return TRANSIENT_4XX.has(status) ? Delivery.Retry : Delivery.Refused
  if (status === 513) return Delivery.Refused
  if (status >= 600 && status < 700) return PERMANENT_6XX.has(status) ? Delivery.Refused : Delivery.Retry
  return Delivery.Retry
}

/**
 * Among the final responses of several devices (none 2xx), the one that decides what happens to
 * a stored message: a 6xx first (RFC 3261 16.7: it speaks for every device of the user), else
 * a transient failure (a device that is busy or unreachable now may still take the message
 * later, even if another refused it), else the first refusal.
 */
export function decidingResponse<R extends { status: number }> (finals: readonly R[]): R | undefined {
  return finals.find(r => r.status >= 600) ??
    finals.find(r => deliveryOf(r.status) === Delivery.Retry) ??
    finals[0]
}
