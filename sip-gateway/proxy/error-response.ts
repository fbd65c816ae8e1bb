/**
 * The one place where errors thrown while handling a request become its response (the
 * transaction-user boundary): SipStatusError (and SipParseError) carry their status; anything
 * else is a bug and becomes 500, logged at error. Client errors are logged at info.
 */
import { createResponse } from '../codec/response.ts'
import type { SipRequest, SipResponse } from '../codec/message.ts'
import { SipStatusError } from '../errors.ts'
import type { Logger } from '../ports.ts'

export function responseForError (request: SipRequest, err: unknown, log: Logger): SipResponse {
  if (err instanceof SipStatusError || (err as Error)?.name === 'SipStatusError' || (err as Error)?.name === 'SipParseError') {
    const e = err as SipStatusError
    const status = Number.isInteger(e.status) && e.status >= 300 && e.status <= 699 ? e.status : 500
    const fields = { method: request.method, status, reason: e.reason }
    if (status >= 500) log.warn('request failed', fields)
    else log.info('request refused', fields)
    return createResponse(request, status, e.reason, undefined, { toTag: true })
  }
  log.error('unexpected error while handling a request', { method: request.method, err: err instanceof Error ? (err.stack ?? err.message) : String(err) })
  return createResponse(request, 500, 'Server Internal Error', undefined, { toTag: true })
}
