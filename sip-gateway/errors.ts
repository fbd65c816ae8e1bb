/**
 * Errors of the SIP gateway. Small named classes, matched by `err.name` (or `instanceof`); each
 * one carries the SIP status it turns into at the transaction-user boundary.
 */
import type { SipRequest } from './codec/message.ts'

/** An error that becomes a SIP response `status reason` (drachtio's `SipError` shape). */
export class SipStatusError extends Error {
  override name = 'SipStatusError'
  readonly status: number
  readonly reason: string

  constructor (status: number, reason: string, options?: ErrorOptions) {
    super(`${status} ${reason}`, options)
    this.status = status
    this.reason = reason
  }
}

export interface SipParseErrorInit {
  /** @default 400 */
  status?: number
  /**
   * The request as far as it could be read, when its Via, From, To, Call-ID and CSeq were
   * readable: enough to build a response (`createResponse`). Absent for responses and for
   * requests that cannot be answered.
   */
  request?: SipRequest
  cause?: unknown
}

/**
 * A message (or a header value) that does not parse. `status` is 400 by default, 505 for a SIP
 * version we do not speak, 416 for an unsupported Request-URI scheme, 513 for a message that is
 * too large. `answerable` says whether a response can be sent (the partially parsed `request` is
 * then attached); otherwise the message is dropped and logged.
 */
export class SipParseError extends SipStatusError {
  override name = 'SipParseError'
  readonly answerable: boolean
  readonly request: SipRequest | undefined

  constructor (reason: string, init: SipParseErrorInit = {}) {
    super(init.status ?? 400, reason, init.cause === undefined ? undefined : { cause: init.cause })
    this.request = init.request
    this.answerable = init.request !== undefined
  }

  /** The same error, answerable with `request` (or not, when `request` is undefined). */
  withRequest (request: SipRequest | undefined): SipParseError {
    return new SipParseError(this.reason, { status: this.status, request, cause: this.cause })
  }
}

/**
 * A message could not be sent (no route to the peer, connection refused or closed, message too
 * large for the transport). The transaction layer reports it as 503 (RFC 3261 17.1.4, 17.2.4).
 */
export class TransportError extends SipStatusError {
  override name = 'TransportError'

  constructor (reason: string, options?: ErrorOptions) {
    super(503, reason, options)
  }
}
