/**
 * The SIP message parser: one whole message (a datagram, or a message the stream transport has
 * framed by Content-Length) → `SipRequest` / `SipResponse`.
 *
 * Hand-written rather than sip.js's parser: sip.js's generated grammar re-decodes its tables on
 * every call (~1,350 messages/s here) and builds a full object model of every header, while a
 * gateway routing thousands of messages per second needs only the start line and a few headers.
 * So this parser is lazy: it splits header lines and keeps the values raw, checks just what every
 * routing decision relies on (start line, Via, From, To, Call-ID, CSeq, Max-Forwards,
 * Content-Length), and leaves structured parsing to the helpers (`parseVia`, `parseNameAddr`,
 * `parseUri`...) called on demand.
 */
import { Buffer } from 'node:buffer'
import { SipParseError } from '../errors.ts'
import { Headers, headerDisplayName, headerKey, splitList } from './headers.ts'
import { SipRequest, SipResponse, type SipMessage } from './message.ts'
import { parseCSeq } from './cseq.ts'
import { isToken } from './params.ts'
import { SUPPORTED_SCHEMES } from './uri.ts'
import { parseVia } from './via.ts'

export interface ParseOptions {
  /**
   * Largest message accepted, in bytes; a larger one raises a 513 SipParseError (answerable
   * when its headers are readable).
   * @default 65536
   */
  maxSize?: number
}

export const DEFAULT_MAX_MESSAGE_SIZE = 65_536

const EMPTY = new Uint8Array(0)
const VERSION = /^SIP\/[0-9]+\.[0-9]+$/i
const SCHEME = /^[A-Za-z][A-Za-z0-9+\-.]*$/
const DIGITS = /^[0-9]+$/

interface NameInfo { key: string, display: string }

/** Header names already checked, with key and spelling (bounded: hostile names cannot fill it). */
const checkedNames = new Map<string, NameInfo>()

function nameInfo (name: string): NameInfo | undefined {
  let info = checkedNames.get(name)
  if (info !== undefined) return info
  if (!isToken(name)) return undefined
  const key = headerKey(name)
  info = { key, display: headerDisplayName(name, key) }
  if (checkedNames.size < 512) checkedNames.set(name, info)
  return info
}

/**
 * Index of the end of the header section: the LF that ends the last header line, and where the
 * body starts. Accepts CRLF (and, leniently, bare LF) line ends. -1 when there is no empty line.
 */
export function findHeadEnd (buf: Uint8Array, from: number, to: number = buf.length): { headEnd: number, bodyStart: number } | undefined {
  let i = buf.indexOf(10, from)
  while (i !== -1 && i < to) {
    const next = buf[i + 1]
    if (next === 10) return { headEnd: i, bodyStart: i + 2 }
    if (next === 13 && buf[i + 2] === 10) return { headEnd: i, bodyStart: i + 3 }
    i = buf.indexOf(10, i + 1)
  }
  return undefined
}

/** Parse one whole SIP message. Throws only `SipParseError`. */
export function parseMessage (data: Uint8Array, options?: ParseOptions): SipMessage {
  const maxSize = options?.maxSize ?? DEFAULT_MAX_MESSAGE_SIZE
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  const len = buf.length

  // RFC 3261 7.5: ignore CRLFs before the start line
  let start = 0
  while (start < len && (buf[start] === 13 || buf[start] === 10)) start++
  if (start === len) throw new SipParseError('Empty message')

  let headEnd: number
  let bodyStart: number
  const found = findHeadEnd(buf, start)
  if (found !== undefined) {
    headEnd = found.headEnd
    bodyStart = found.bodyStart
  } else {
    // no empty line: tolerate a message that is all header (no body)
    headEnd = len
    bodyStart = len
  }

  const head = buf.toString('utf8', start, headEnd)
  // the first error found; later checks do not overwrite it
  let error: SipParseError | undefined
  const fail = (reason: string, status = 400): void => {
    if (error === undefined) error = new SipParseError(reason, { status })
  }
  if (len > maxSize) fail('Message Too Large', 513)

  // start line
  let nl = head.indexOf('\n')
  let line = nl === -1 ? head : head.slice(0, nl)
  if (line.charCodeAt(line.length - 1) === 13) line = line.slice(0, -1)
  let request: SipRequest | undefined
  let response: SipResponse | undefined
  const headers = new Headers()
  if (line.length >= 4 && line.slice(0, 4).toUpperCase() === 'SIP/') {
    response = parseStatusLine(line, headers)
  } else {
    const sp1 = line.indexOf(' ')
    const sp2 = sp1 === -1 ? -1 : line.indexOf(' ', sp1 + 1)
    if (sp1 <= 0 || sp2 === -1 || line.indexOf(' ', sp2 + 1) !== -1 || sp2 === sp1 + 1) {
      throw new SipParseError('Malformed start line')
    }
    const method = line.slice(0, sp1)
    const uri = line.slice(sp1 + 1, sp2)
    const version = line.slice(sp2 + 1)
    if (!isToken(method)) throw new SipParseError('Malformed method')
    request = new SipRequest(method, uri, headers, EMPTY, version)
    if (!VERSION.test(version)) fail('Malformed SIP version')
    else if (version.toUpperCase() !== 'SIP/2.0') fail('Version Not Supported', 505)
    if (version !== 'SIP/2.0') request.version = version.toUpperCase()
    const colon = uri.indexOf(':')
    if (colon <= 0 || !SCHEME.test(uri.slice(0, colon)) || /[<>"\t]/.test(uri)) fail('Malformed Request-URI')
    else if (!SUPPORTED_SCHEMES.has(uri.slice(0, colon).toLowerCase())) fail('Unsupported URI Scheme', 416)
  }

  // header lines
  let via = -1
  let from = -1
  let to = -1
  let callId = -1
  let cseq = -1
  let contentLength = -1
  let maxForwards = -1
  let last = -1
  const pos = nl === -1 ? head.length : nl + 1
  let p = pos
  const n = head.length
  // each header line is read in place in `head`: its name and its value are the only strings
  // made of it (no string per line, no untrimmed copy of each value)
  while (p < n) {
    nl = head.indexOf('\n', p)
    const end = nl === -1 ? n : nl
    const lineStart = p
    const lineEnd = head.charCodeAt(end - 1) === 13 && end - 1 >= lineStart ? end - 1 : end
    p = end + 1
    if (lineEnd === lineStart) continue
    const c0 = head.charCodeAt(lineStart)
    if (c0 === 32 || c0 === 9) {
      // folding (RFC 3261 7.3.1): a continuation line joins the previous value with one space
      if (last === -1) { fail('Malformed header folding'); continue }
      const more = head.slice(lineStart, lineEnd).trim()
      if (more !== '') {
        const prev = headers._valueAt(last)
        headers._setValueAt(last, prev === '' ? more : prev + ' ' + more)
      }
      continue
    }
    const colon = head.indexOf(':', lineStart)
    if (colon <= lineStart || colon >= lineEnd) { fail('Malformed header line'); continue }
    let nameEnd = colon
    while (nameEnd > lineStart && (head.charCodeAt(nameEnd - 1) === 32 || head.charCodeAt(nameEnd - 1) === 9)) nameEnd--
    const info = nameInfo(head.slice(lineStart, nameEnd))
    if (info === undefined) { fail('Malformed header name'); continue }
    const key = info.key
    const value = trimmedSlice(head, colon + 1, lineEnd)
    last = headers.size
    headers._push(info.display, key, value)
    switch (key) {
      case 'via': if (via === -1) via = last; break
      case 'from': if (from === -1) from = last; else fail('Duplicate From header'); break
      case 'to': if (to === -1) to = last; else fail('Duplicate To header'); break
      case 'call-id': if (callId === -1) callId = last; else fail('Duplicate Call-ID header'); break
      case 'cseq': if (cseq === -1) cseq = last; else fail('Duplicate CSeq header'); break
      case 'content-length': if (contentLength === -1) contentLength = last; else fail('Duplicate Content-Length header'); break
      case 'max-forwards': if (maxForwards === -1) maxForwards = last; else fail('Duplicate Max-Forwards header'); break
    }
  }

  // the headers every routing decision relies on
  let viaOk = false
  if (via === -1) {
    fail('Missing Via header')
  } else {
    const top = splitList(headers._valueAt(via))[0]
    try {
      if (top === undefined) throw new SipParseError('Malformed Via')
      headers._topVia = parseVia(top)
      headers._topViaText = top
      viaOk = true
    } catch (err) {
      fail((err as SipParseError).reason ?? 'Malformed Via')
    }
  }
  if (from === -1) fail('Missing From header')
  else if (headers._valueAt(from) === '') fail('Malformed From header')
  if (to === -1) fail('Missing To header')
  else if (headers._valueAt(to) === '') fail('Malformed To header')
  if (callId === -1) fail('Missing Call-ID header')
  else if (headers._valueAt(callId) === '' || /\s/.test(headers._valueAt(callId))) fail('Malformed Call-ID header')
  let cseqOk = false
  if (cseq === -1) {
    fail('Missing CSeq header')
  } else {
    try {
      const parsed = parseCSeq(headers._valueAt(cseq))
      cseqOk = true
      if (request !== undefined && parsed.method !== request.method) fail('CSeq method does not match the request method')
    } catch {
      fail('Malformed CSeq header')
    }
  }
  if (maxForwards !== -1) {
    const mf = headers._valueAt(maxForwards)
    if (!DIGITS.test(mf) || mf.length > 10 || Number(mf) > 255) fail('Malformed Max-Forwards header')
  }

  // body (RFC 3261 18.3: a longer Content-Length than the datagram is an error, a shorter one
  // truncates; without Content-Length the body runs to the end of the datagram)
  let body: Uint8Array = EMPTY
  let bodyLength = len - bodyStart
  if (contentLength !== -1) {
    const cl = headers._valueAt(contentLength)
    if (!DIGITS.test(cl) || cl.length > 10) {
      fail('Malformed Content-Length header')
    } else {
      const declared = Number(cl)
      if (declared > bodyLength) fail('Content-Length larger than the message body')
      else bodyLength = declared
    }
  }
  if (bodyLength > 0) body = new Uint8Array(buf.buffer, buf.byteOffset + bodyStart, bodyLength)

  const message = (request ?? response) as SipMessage
  message.body = body
  if (error !== undefined) {
    const answerable = request !== undefined && viaOk && cseqOk && from !== -1 && to !== -1 &&
      callId !== -1 && request.method !== 'ACK'
    throw error.withRequest(answerable ? request : undefined)
  }
  return message
}

/** `s.slice(from, to).trim()`, without the untrimmed copy when only ASCII whitespace is trimmed */
export function trimmedSlice (s: string, from: number, to: number): string {
  while (from < to && isAsciiSpace(s.charCodeAt(from))) from++
  while (to > from && isAsciiSpace(s.charCodeAt(to - 1))) to--
  const v = s.slice(from, to)
  // other white space trim() removes (U+00A0, U+FEFF, U+2028...): the same result as trim()
  return v.length > 0 && (v.charCodeAt(0) > 127 || v.charCodeAt(v.length - 1) > 127) ? v.trim() : v
}

/** the ASCII characters String.prototype.trim removes: TAB, LF, VT, FF, CR, SP */
function isAsciiSpace (c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13)
}

function parseStatusLine (line: string, headers: Headers): SipResponse {
  const sp1 = line.indexOf(' ')
  if (sp1 === -1) throw new SipParseError('Malformed status line')
  const version = line.slice(0, sp1)
  if (!VERSION.test(version)) throw new SipParseError('Malformed status line')
  if (version.toUpperCase() !== 'SIP/2.0') throw new SipParseError('Version Not Supported', { status: 505 })
  const code = line.slice(sp1 + 1, sp1 + 4)
  const after = line.charCodeAt(sp1 + 4)
  if (!/^[1-6][0-9][0-9]$/.test(code) || (line.length > sp1 + 4 && after !== 32)) {
    throw new SipParseError('Malformed status line')
  }
  return new SipResponse(Number(code), line.slice(sp1 + 5), headers, EMPTY, 'SIP/2.0')
}
