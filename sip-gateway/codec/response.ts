/** Building responses to requests (RFC 3261 8.2.6), tags and branches, reason phrases. */
import { randomBytes } from 'node:crypto'
import { Headers } from './headers.ts'
import { SipResponse, type SipRequest } from './message.ts'
import { parseNameAddr } from './name-addr.ts'

/** Default reason phrases (RFC 3261 21 and the extensions we answer with). */
export const REASON_PHRASES: Readonly<Record<number, string>> = {
  100: 'Trying', 180: 'Ringing', 181: 'Call Is Being Forwarded', 182: 'Queued', 183: 'Session Progress',
  200: 'OK', 202: 'Accepted', 204: 'No Notification',
  300: 'Multiple Choices', 301: 'Moved Permanently', 302: 'Moved Temporarily', 305: 'Use Proxy', 380: 'Alternative Service',
  400: 'Bad Request', 401: 'Unauthorized', 402: 'Payment Required', 403: 'Forbidden', 404: 'Not Found',
  405: 'Method Not Allowed', 406: 'Not Acceptable', 407: 'Proxy Authentication Required', 408: 'Request Timeout',
  410: 'Gone', 412: 'Conditional Request Failed', 413: 'Request Entity Too Large', 414: 'Request-URI Too Long',
  415: 'Unsupported Media Type', 416: 'Unsupported URI Scheme', 420: 'Bad Extension', 421: 'Extension Required',
  423: 'Interval Too Brief', 429: 'Too Many Requests', 480: 'Temporarily Unavailable',
  481: 'Call/Transaction Does Not Exist', 482: 'Loop Detected', 483: 'Too Many Hops', 484: 'Address Incomplete',
  485: 'Ambiguous', 486: 'Busy Here', 487: 'Request Terminated', 488: 'Not Acceptable Here', 489: 'Bad Event',
  491: 'Request Pending', 493: 'Undecipherable',
  500: 'Server Internal Error', 501: 'Not Implemented', 502: 'Bad Gateway', 503: 'Service Unavailable',
  504: 'Server Time-out', 505: 'Version Not Supported', 513: 'Message Too Large',
  600: 'Busy Everywhere', 603: 'Decline', 604: 'Does Not Exist Anywhere', 606: 'Not Acceptable'
}

export function reasonPhrase (status: number): string {
  return REASON_PHRASES[status] ?? (status < 200 ? 'Provisional' : status < 300 ? 'Success' : status < 400 ? 'Redirection' : status < 500 ? 'Client Error' : status < 600 ? 'Server Error' : 'Global Failure')
}

/**
 * Random bytes for tags and branches, drawn 4 KiB at a time: a `randomBytes` call per tag costs a
 * trip into OpenSSL that was a quarter of answering a REGISTER (profiled: 585 of 2,457 ms in the
 * proxy core's request handling). Each byte is handed out once.
 */
const POOL_BYTES = 4096
let pool = randomBytes(POOL_BYTES)
let poolAt = 0

/**
 * `n` random bytes from the pool, written in `encoding`: read in place (`toString` with a range),
 * no view of the pool made per call
 */
function random (n: number, encoding: 'hex' | 'base64url'): string {
  if (poolAt + n > POOL_BYTES) {
    pool = randomBytes(POOL_BYTES)
    poolAt = 0
  }
  poolAt += n
  return pool.toString(encoding, poolAt - n, poolAt)
}

/** A random tag for From/To (RFC 3261 19.3: at least 32 random bits; 48 here). */
export function generateTag (): string {
  return random(6, 'hex')
}

/** `bytes` random bytes from the pool as base64url (a SIP token): entity tags, Call-IDs. */
export function randomToken (bytes: number): string {
  return random(bytes, 'base64url')
}

/** A random Via branch with the RFC 3261 magic cookie (8.1.1.7). */
export function generateBranch (): string {
  return 'z9hG4bK' + random(9, 'base64url')
}

export interface CreateResponseOptions {
  /**
   * Add this tag to the To header when it has none (true: a random one). RFC 3261 8.2.6.2: a
   * UAS adds a To tag to every response but 100.
   * @default no tag added
   */
  toTag?: string | boolean
  body?: Uint8Array
}

const TAG = /tag/i

function hasTag (to: string): boolean {
  // no `tag` anywhere (in any case): none, without parsing (most requests outside a dialog)
  if (!TAG.test(to)) return false
  try {
    return parseNameAddr(to).params.tag != null
  } catch {
    return /;\s*tag\s*=/i.test(to)
  }
}

/**
 * A response to `request`: Via (every one, in order), From, To, Call-ID and CSeq copied
 * (RFC 3261 8.2.6.2), Timestamp copied on 100 (8.2.6.1), then `extraHeaders`.
 */
export function createResponse (
  request: SipRequest,
  status: number,
  reason: string = reasonPhrase(status),
  extraHeaders?: Iterable<readonly [string, string]> | Record<string, string>,
  options: CreateResponseOptions = {}
): SipResponse {
  const src = request.headers
  const headers = new Headers()
  // room for the copied lines and a few more, at once
  let copied = 0
  for (let i = 0, n = src.size; i < n; i++) {
    const key = src._keyAt(i)
    if (key === 'via' || key === 'from' || key === 'to' || key === 'call-id' || key === 'cseq' || key === 'timestamp') copied++
  }
  headers._reserve(copied + 4)
  for (let i = 0, n = src.size; i < n; i++) {
    const key = src._keyAt(i)
    if (key === 'via' || key === 'from' || key === 'call-id' || key === 'cseq' || (key === 'timestamp' && status === 100)) {
      headers._push(src._nameAt(i), key, src._valueAt(i))
    } else if (key === 'to') {
      let to = src._valueAt(i)
      if (options.toTag !== undefined && options.toTag !== false && status !== 100 && !hasTag(to)) {
        to += ';tag=' + (options.toTag === true ? generateTag() : options.toTag)
      }
      headers._push(src._nameAt(i), key, to)
    }
  }
  if (extraHeaders !== undefined) {
    const entries = Symbol.iterator in extraHeaders
      ? extraHeaders as Iterable<readonly [string, string]>
      : Object.entries(extraHeaders)
    for (const [name, value] of entries) headers.append(name, value)
  }
  return new SipResponse(status, reason, headers, options.body)
}
