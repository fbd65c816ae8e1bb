/**
 * The CANCEL of a branch (RFC 3261 9.1): the same Request-URI, Call-ID, From, To and CSeq number
 * as the request it cancels, and that request's top Via only (its branch matches the client
 * transaction); Route and Max-Forwards kept, nothing else, no body.
 */
import { SipRequest } from '../codec/message.ts'
import { parseCSeq } from '../codec/cseq.ts'

/** the CANCEL of `request` (a branch's copy as sent); a malformed CSeq throws as parseCSeq does */
export function cancelFor (request: SipRequest): SipRequest {
  const r = request
  const h = r.headers.clone()
  const keep = new Set(['via', 'route', 'max-forwards', 'from', 'to', 'call-id'])
  for (const [name] of [...h.entries()]) if (!keep.has(name.toLowerCase())) h.delete(name)
  const via = r.headers.get('Via')
  h.delete('Via')
  if (via !== undefined) h.prepend('Via', via)
  const cseq = r.headers.get('CSeq')
  h.set('CSeq', `${cseq === undefined ? 1 : parseCSeq(cseq).seq} CANCEL`)
  h.set('Content-Length', '0')
  return new SipRequest('CANCEL', r.uri, h)
}
