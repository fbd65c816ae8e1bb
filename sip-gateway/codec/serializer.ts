/** SIP message → bytes (RFC 3261 section 7), Content-Length set from the body. */
import { Buffer } from 'node:buffer'
import { SipRequest, type SipMessage } from './message.ts'

export function serializeMessage (m: SipMessage): Uint8Array {
  let s = m instanceof SipRequest
    ? `${m.method} ${m.uri} ${m.version}\r\n`
    : `${m.version} ${m.status} ${m.reason}\r\n`
  const h = m.headers
  const body = m.body
  let lengthWritten = false
  for (let i = 0, n = h.size; i < n; i++) {
    if (h._keyAt(i) === 'content-length') {
      if (!lengthWritten) {
        s += `${h._nameAt(i)}: ${body.length}\r\n`
        lengthWritten = true
      }
      continue
    }
    s += `${h._nameAt(i)}: ${h._valueAt(i)}\r\n`
  }
  if (!lengthWritten) s += `Content-Length: ${body.length}\r\n`
  s += '\r\n'
  const headLength = Buffer.byteLength(s)
  const out = Buffer.allocUnsafe(headLength + body.length)
  out.write(s, 0, headLength, 'utf8')
  if (body.length > 0) out.set(body, headLength)
  return out
}
