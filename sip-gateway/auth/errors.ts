/**
 * Errors of digest authentication. Small named classes matched by `err.name`; each carries the
 * SIP status it becomes at the transaction-user boundary.
 */
import { SipStatusError } from '../errors.ts'

/**
 * An Authorization or Proxy-Authorization header that does not parse (RFC 7616 3.4 grammar), is
 * too large, or lacks a directive qop=auth requires (RFC 7616 3.4: `cnonce` and `nc` with
 * `qop`; we always challenge with qop, so a response without it is not one to our challenge).
 * Answered 400: the client sent something no retry with the same credentials can fix.
 */
export class MalformedCredentialsError extends SipStatusError {
  override name = 'MalformedCredentialsError'

  constructor (detail: string) {
    super(400, 'Malformed Credentials')
    this.message = `${this.message}: ${detail}`
  }
}
