/** SIP message → bytes (RFC 3261 section 7), Content-Length set from the body. */
import { Buffer } from 'node:buffer'
import { SipRequest, type SipMessage } from './message.ts'
import { receivedBytes } from './wire.ts'

/**
 * Where the header section is written, piece by piece, before one copy into the message's own
 * buffer: building it as one string first allocated a rope of concatenations and its flattened
 * copy per message (a third of the codec's bytes on the relay path). Grown when a head needs it.
 */
let scratch = Buffer.allocUnsafe(16_384)

export function serializeMessage (m: SipMessage): Uint8Array {
  // a response forwarded as the bytes it came in less its top Via (wire.ts)
  if (!(m instanceof SipRequest) && m._received !== undefined) {
    const bytes = receivedBytes(m)
    if (bytes !== undefined) return bytes
  }
  const h = m.headers
  const body = m.body
  const n = h.size
  // a bound of the head's size in UTF-16 units (at most 3 UTF-8 bytes each), with room for the
  // start line's separators, a Content-Length of any body and the blank line; a larger scratch
  // when it could not hold the head, so that no write below is ever cut short
  let bound = 96 + m.version.length + (m instanceof SipRequest ? m.method.length + m.uri.length : m.reason.length)
  for (let i = 0; i < n; i++) bound += h._nameAt(i).length + h._valueAt(i).length + 16
  if (bound * 3 > scratch.length) scratch = Buffer.allocUnsafe(Math.max(bound * 3, scratch.length * 2))
  const buf = scratch
  let at = 0
  if (m instanceof SipRequest) {
    at += buf.write(m.method, at)
    buf[at++] = 32
    at += buf.write(m.uri, at)
    buf[at++] = 32
    at += buf.write(m.version, at)
  } else {
    at += buf.write(m.version, at)
    buf[at++] = 32
    at += buf.write(String(m.status), at)
    buf[at++] = 32
    at += buf.write(m.reason, at)
  }
  buf[at++] = 13
  buf[at++] = 10
  let lengthWritten = false
  for (let i = 0; i < n; i++) {
    let value: string
    if (h._keyAt(i) === 'content-length') {
      if (lengthWritten) continue
      value = String(body.length)
      lengthWritten = true
    } else {
      value = h._valueAt(i)
    }
    at += buf.write(h._nameAt(i), at)
    buf[at++] = 58
    buf[at++] = 32
    at += buf.write(value, at)
    buf[at++] = 13
    buf[at++] = 10
  }
  if (!lengthWritten) {
    at += buf.write('Content-Length: ', at)
    at += buf.write(String(body.length), at)
    buf[at++] = 13
    buf[at++] = 10
  }
  buf[at++] = 13
  buf[at++] = 10
  const out = Buffer.allocUnsafe(at + body.length)
  buf.copy(out, 0, 0, at)
  if (body.length > 0) out.set(body, at)
  return out
}
