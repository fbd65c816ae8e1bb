/**
 * A response forwarded as the bytes it came in, with the proxy's own Via line cut out (RFC 3261
 * 16.7 step 3), as Kamailio forwards it: no copy of its headers, no header written anew. The
 * parser keeps the bytes of a response written plainly enough for that (`_received` on
 * `SipResponse`, its headers' `_edits` set to 0: as parsed); `cutTopVia` removes the top Via and
 * marks the headers as the parse less that line; `serializeMessage` then writes the bytes less
 * that line. Anything else, and any response changed in any other way, is serialized from its
 * headers as before.
 */
import { Buffer } from 'node:buffer'
import type { SipResponse } from './message.ts'

/**
 * `headers._edits` of a response whose headers are the parse less the top Via line: far from 0
 * (as parsed) and from anything a count of changes reaches, so that any further change moves
 * the count off both
 */
const CUT = -(2 ** 30)

/**
 * Remove the top Via element of `response` (a proxy's own, 16.7 step 3) and return it. When the
 * response is as `parseMessage` gave it, with its bytes kept, it is then sent as those bytes less
 * the top Via line, for as long as nothing else in it changes.
 */
export function cutTopVia (response: SipResponse): string | undefined {
  const h = response.headers
  const asParsed = response._received !== undefined && h._edits === 0
  const via = h.shift('Via')
  if (asParsed && via !== undefined) h._edits = CUT
  return via
}

/**
 * The bytes of `response` when it is its parse less the top Via line (`cutTopVia`) and its
 * start line and body are those it came with: its bytes as received less that line, in a buffer
 * of their own. Undefined otherwise.
 */
export function receivedBytes (response: SipResponse): Uint8Array | undefined {
  const src = response._received
  const h = response.headers
  if (src === undefined || h._edits !== CUT || response.version !== 'SIP/2.0') return undefined
  // the status line as received: "SIP/2.0 " (the parser kept no other), the code, the reason
  const status = response.status
  if (src[8] !== 48 + Math.floor(status / 100) || src[9] !== 48 + Math.floor(status / 10) % 10 || src[10] !== 48 + status % 10) return undefined
  const reason = response.reason
  let at = reason.length === 0 && src[11] === 13 ? 11 : 12
  if (at === 12 && src[11] !== 32) return undefined
  for (let i = 0; i < reason.length; i++, at++) if (src[at] !== reason.charCodeAt(i)) return undefined
  if (src[at] !== 13) return undefined
  // the body: the received one (the bytes' last ones), or none when none came
  const body = response.body
  if (body.length === 0 ? h.get('Content-Length') !== '0' : body.buffer !== src.buffer || body.byteOffset + body.length !== src.byteOffset + src.length) return undefined
  const cut = response._viaCut
  const from = Math.floor(cut / 65_536)
  const to = cut % 65_536
  const out = Buffer.allocUnsafe(src.length - (to - from))
  // copied by Buffer#copy: no view made per piece
  src.copy(out, 0, 0, from)
  src.copy(out, from, to, src.length)
  return out
}
