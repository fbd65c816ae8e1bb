/**
 * The one place where errors thrown while handling a request become its response (the
 * transaction-user boundary): SipStatusError (and SipParseError) carry their status; an AoR the
 * registry cannot hold (an error named `InvalidAorError`, ports.ts: too long, odd characters, from
 * the Request-URI, From or To of any request) is the sender's fault, 400; anything else is a bug
 * and becomes 500, logged at error. Client errors are logged at info, server errors at warn.
 *
 * An error that carries `retryAfter` (seconds, such as OfflineQuotaError's 480 Mailbox Full)
 * gets a `Retry-After` header (RFC 3261 20.33: when the sender may try again; meant for 404,
 * 413, 480, 486, 500, 503, 600 and 603).
 */
import { createResponse } from '../codec/response.ts'
import type { SipRequest, SipResponse } from '../codec/message.ts'
import { SipStatusError } from '../errors.ts'
import { INVALID_AOR_ERROR, type Logger } from '../ports.ts'

export function responseForError (request: SipRequest, err: unknown, log: Logger): SipResponse {
  if (err instanceof SipStatusError || (err as Error)?.name === 'SipStatusError' || (err as Error)?.name === 'SipParseError') {
    const e = err as SipStatusError
    const status = Number.isInteger(e.status) && e.status >= 300 && e.status <= 699 ? e.status : 500
    const fields = { method: request.method, status, reason: e.reason }
    if (status >= 500) log.warn('request failed', fields)
    else log.info('request refused', fields)
    return createResponse(request, status, e.reason, retryAfterOf(err), { toTag: true })
  }
  if ((err as Error)?.name === INVALID_AOR_ERROR) {
    log.info('request refused', { method: request.method, status: 400, reason: 'invalid address', err: String((err as Error).message).slice(0, 120) })
    return createResponse(request, 400, 'Bad Request (invalid address)', undefined, { toTag: true })
  }
  log.error('unexpected error while handling a request', { method: request.method, err: err instanceof Error ? (err.stack ?? err.message) : String(err) })
  return createResponse(request, 500, 'Server Internal Error', undefined, { toTag: true })
}

/** RFC 3261 20.33 / 25.1: `Retry-After: delta-seconds`, a 32-bit count of whole seconds */
function retryAfterOf (err: unknown): Array<[string, string]> | undefined {
  const v = (err as { retryAfter?: unknown }).retryAfter
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) return undefined
  return [['Retry-After', String(Math.min(Math.ceil(v), 0xffffffff))]]
}
