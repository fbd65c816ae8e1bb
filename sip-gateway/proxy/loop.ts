/**
 * Loop detection (RFC 3261 16.3 item 4, 16.6 item 8): our branches end in `.<hash>` of the fields
 * that identify the request as received (Request-URI, From tag, To tag, Call-ID, CSeq number,
 * Route, Proxy-Require, Proxy-Authorization); a request that carries one of our Vias with the hash
 * it would get again is a loop (482). A spiral (the Request-URI changed) hashes differently and
 * passes. Pure functions: what is "ours" comes from the NodeAddress passed in.
 */
import type { SipRequest } from '../codec/message.ts'
import { splitList } from '../codec/headers.ts'
import { parseNameAddrShared } from '../codec/name-addr.ts'
import { parseVia, topVia } from '../codec/via.ts'
import { SipStatusError } from '../errors.ts'
import type { NodeAddress } from './address.ts'

/**
 * 16.3 item 4: true when a Via of ours carries the hash this request would get again (a loop:
 * the caller answers 482); a malformed Via it has to read throws 400. The top Via is parsed
 * already (the parser checks it). A Via below it can only be a loop when its text holds the hash
 * (its branch ends with `.<hash>`), so only such a one is parsed: the others are components no
 * validation step involves, which 16.3 item 1 says to ignore and forward unchanged (every request
 * from the mesh carries the sender's Via second: a full parse of it was ~280 bytes per relayed
 * request on the receiving node).
 */
export function findLoop (request: SipRequest, us: NodeAddress): boolean {
  // every Via element, line by line (a line holding one element, the usual case, is not split)
  const h = request.headers
  let first = true
  let hash: string | undefined
  for (let i = 0; i < h.size; i++) {
    if (h._keyAt(i) !== 'via') continue
    const line = h._valueAt(i)
    if (line.indexOf(',') === -1) {
      if (line.trim() === '') continue
      if (!first) {
        hash ??= loopHashForCheck(request)
        if (line.indexOf(hash) === -1) continue
      }
      if (isLoopVia(request, line, first, us)) return true
      first = false
      continue
    }
    for (const element of splitList(line)) {
      if (!first) {
        hash ??= loopHashForCheck(request)
        if (element.indexOf(hash) === -1) continue
      }
      if (isLoopVia(request, element, first, us)) return true
      first = false
    }
  }
  return false
}

/** the loop hash of a request being checked, kept on it when it will be forwarded (the core's #handle) */
function loopHashForCheck (request: SipRequest): string {
  if (request.loopHash !== undefined) return request.loopHash
  const hash = loopHashOf(request)
  if (request.method !== 'REGISTER') request.loopHash = hash
  return hash
}

function isLoopVia (request: SipRequest, element: string, top: boolean, us: NodeAddress): boolean {
  let via
  // the top one is parsed already (kept on the headers)
  try { via = top ? topVia(request.headers) ?? parseVia(element) : parseVia(element.trim()) } catch { throw new SipStatusError(400, 'Malformed Via') }
  const ours = typeof via.params.node === 'string' ? via.params.node === us.nodeId : us.isOurVia(via)
  if (!ours || via.branch === undefined) return false
  const hash = request.loopHash ?? loopHashOf(request)
  return via.branch.endsWith('.' + hash)
}

/** the loop-detection hash of a request as received (RFC 3261 16.6 item 8): FNV-1a, base36 */
export function loopHashOf (request: SipRequest): string {
  const h = request.headers
  let tagFrom = ''
  let tagTo = ''
  try { tagFrom = String(parseNameAddrShared(h.get('From') ?? '').params.tag ?? '') } catch { /* hashed without it */ }
  try { tagTo = String(parseNameAddrShared(h.get('To') ?? '').params.tag ?? '') } catch { /* hashed without it */ }
  const cseq = h.get('CSeq') ?? ''
  // hashed field by field, as the fields joined by LF (list elements by commas) would be: no
  // joined string and no arrays per request
  let x = fnv(0x811c9dc5, request.uri)
  x = fnv(fnv(x, '\n'), tagFrom)
  x = fnv(fnv(x, '\n'), tagTo)
  x = fnv(fnv(x, '\n'), h.get('Call-ID') ?? '')
  x = fnv(fnv(x, '\n'), cseqNumber(cseq))
  x = fnvList(fnv(x, '\n'), h, 'Route')
  x = fnvList(fnv(x, '\n'), h, 'Proxy-Require')
  x = fnv(fnv(x, '\n'), h.get('Proxy-Authorization') ?? '')
  return x.toString(36)
}

/** FNV-1a over the UTF-16 code units of `s`, from `x` */
function fnv (x: number, s: string): number {
  for (let i = 0; i < s.length; i++) {
    x ^= s.charCodeAt(i)
    x = Math.imul(x, 0x01000193) >>> 0
  }
  return x
}

/** `fnv` of `h.getAll(name).join(',')`, without the array when the header is absent */
function fnvList (x: number, h: SipRequest['headers'], name: string): number {
  if (!h.has(name)) return x
  return fnv(x, h.getAll(name).join(','))
}

/** `cseq.trim().split(/\s+/)[0]`: the text before the first white space */
function cseqNumber (cseq: string): string {
  // read by char codes: a regular expression here cost a RegExp object and a match array per request
  const t = cseq.trim()
  for (let i = 0; i < t.length; i++) {
    if (isWhitespaceCode(t.charCodeAt(i))) return t.slice(0, i)
  }
  return t
}

/** what `\s` matches, by char code (the code units String.prototype.trim also removes) */
function isWhitespaceCode (c: number): boolean {
  if (c <= 32) return c === 32 || (c >= 9 && c <= 13)
  if (c < 160) return false
  return c === 160 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff
}

