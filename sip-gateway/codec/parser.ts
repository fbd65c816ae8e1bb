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
import { Headers, firstElement, headerDisplayName, headerKey } from './headers.ts'
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
/** what a Request-URI must not hold (a module constant: a literal in a function is a new RegExp per call) */
const REQUEST_URI_BAD = /[<>"\t]/
/** white space, which a Call-ID must not hold */
const WHITESPACE = /\s/
const DIGITS = /^[0-9]+$/

interface NameInfo { name: string, key: string, display: string }

/**
 * Header names already checked, with key and spelling, found by a hash of the name's characters
 * in the message text, so that a known name costs no string of its own per line. Bounded: at most
 * 512 names, 4 per hash, so hostile names (or names made to collide) cannot fill it or make a
 * lookup long; a name left out is checked from its text each time.
 */
const checkedNames = new Map<number, NameInfo[]>()
let checkedCount = 0

/** the name `head.slice(from, to)`, checked (a token), or undefined */
function nameInfo (head: string, from: number, to: number): NameInfo | undefined {
  let h = 0x811c9dc5
  for (let i = from; i < to; i++) h = Math.imul(h ^ head.charCodeAt(i), 0x01000193)
  const bucket = checkedNames.get(h)
  if (bucket !== undefined) {
    for (const info of bucket) {
      if (info.name.length === to - from && head.startsWith(info.name, from)) return info
    }
  }
  const name = head.slice(from, to)
  if (!isToken(name)) return undefined
  const key = headerKey(name)
  const info = { name, key, display: headerDisplayName(name, key) }
  if (checkedCount < 512 && (bucket === undefined || bucket.length < 4)) {
    if (bucket === undefined) checkedNames.set(h, [info])
    else bucket.push(info)
    checkedCount++
  }
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
  if (len > maxSize) error ??= parseError('Message Too Large', 513)

  // start line
  let nl = head.indexOf('\n')
  let line = nl === -1 ? head : head.slice(0, nl)
  // every line ended by CRLF, none folded (a response so written can be forwarded as its bytes)
  let plain = nl !== -1
  if (line.charCodeAt(line.length - 1) === 13) line = line.slice(0, -1)
  else plain = false
  let request: SipRequest | undefined
  let response: SipResponse | undefined
  const headers = new Headers()
  if (line.length >= 4 && (line.charCodeAt(0) | 0x20) === 115 && (line.charCodeAt(1) | 0x20) === 105 && (line.charCodeAt(2) | 0x20) === 112 && line.charCodeAt(3) === 47) { // SIP/
    response = parseStatusLine(line, headers)
  } else {
    const sp1 = line.indexOf(' ')
    const sp2 = sp1 === -1 ? -1 : line.indexOf(' ', sp1 + 1)
    if (sp1 <= 0 || sp2 === -1 || line.indexOf(' ', sp2 + 1) !== -1 || sp2 === sp1 + 1) {
      throw new SipParseError('Malformed start line')
    }
    // the usual method and version as the constants they are (no string of their own per message)
    const method = knownMethod(line, sp1) ?? line.slice(0, sp1)
    const uri = line.slice(sp1 + 1, sp2)
    const version = line.length === sp2 + 8 && line.endsWith('SIP/2.0') ? 'SIP/2.0' : line.slice(sp2 + 1)
    if (!isToken(method)) throw new SipParseError('Malformed method')
    request = new SipRequest(method, uri, headers, EMPTY, version)
    if (version !== 'SIP/2.0') {
      if (!VERSION.test(version)) error ??= parseError('Malformed SIP version')
      else if (version.toUpperCase() !== 'SIP/2.0') error ??= parseError('Version Not Supported', 505)
      request.version = version.toUpperCase()
    }
    const colon = uri.indexOf(':')
    if (colon === 3 && uri.startsWith('sip')) {
      if (REQUEST_URI_BAD.test(uri)) error ??= parseError('Malformed Request-URI')
    } else if (colon <= 0 || !SCHEME.test(uri.slice(0, colon)) || REQUEST_URI_BAD.test(uri)) error ??= parseError('Malformed Request-URI')
    else if (!SUPPORTED_SCHEMES.has(uri.slice(0, colon).toLowerCase())) error ??= parseError('Unsupported URI Scheme', 416)
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
  // the top Via line in `head`, from its first character to the start of the next line
  let viaFrom = 0
  let viaTo = 0
  const pos = nl === -1 ? head.length : nl + 1
  let p = pos
  const n = head.length
  // one array of the right size for the header lines (at most one per line end left)
  let lines = pos < n ? 1 : 0
  for (let i = head.indexOf('\n', pos); i !== -1; i = head.indexOf('\n', i + 1)) lines++
  headers._reserve(lines + 2) // and room for what a proxy adds (P-Asserted-Identity, Max-Forwards)
  // each header line is read in place in `head`: its name and its value are the only strings
  // made of it (no string per line, no untrimmed copy of each value)
  while (p < n) {
    nl = head.indexOf('\n', p)
    const end = nl === -1 ? n : nl
    const lineStart = p
    const lineEnd = head.charCodeAt(end - 1) === 13 && end - 1 >= lineStart ? end - 1 : end
    p = end + 1
    if (lineEnd === end) plain = false
    if (lineEnd === lineStart) { plain = false; continue }
    const c0 = head.charCodeAt(lineStart)
    if (c0 === 32 || c0 === 9) {
      // folding (RFC 3261 7.3.1): a continuation line joins the previous value with one space
      plain = false
      if (last === -1) { error ??= parseError('Malformed header folding'); continue }
      const more = head.slice(lineStart, lineEnd).trim()
      if (more !== '') {
        const prev = headers._valueAt(last)
        headers._setValueAt(last, prev === '' ? more : prev + ' ' + more)
      }
      continue
    }
    const colon = head.indexOf(':', lineStart)
    if (colon <= lineStart || colon >= lineEnd) { error ??= parseError('Malformed header line'); continue }
    let nameEnd = colon
    while (nameEnd > lineStart && (head.charCodeAt(nameEnd - 1) === 32 || head.charCodeAt(nameEnd - 1) === 9)) nameEnd--
    const info = nameInfo(head, lineStart, nameEnd)
    if (info === undefined) { error ??= parseError('Malformed header name'); continue }
    const key = info.key
    const value = trimmedSlice(head, colon + 1, lineEnd)
    last = headers.size
    headers._push(info.display, key, value)
    switch (key) {
      case 'via': if (via === -1) { via = last; viaFrom = lineStart; viaTo = p } break
      case 'from': if (from === -1) from = last; else error ??= parseError('Duplicate From header'); break
      case 'to': if (to === -1) to = last; else error ??= parseError('Duplicate To header'); break
      case 'call-id': if (callId === -1) callId = last; else error ??= parseError('Duplicate Call-ID header'); break
      case 'cseq': if (cseq === -1) cseq = last; else error ??= parseError('Duplicate CSeq header'); break
      case 'content-length': if (contentLength === -1) contentLength = last; else error ??= parseError('Duplicate Content-Length header'); break
      case 'max-forwards': if (maxForwards === -1) maxForwards = last; else error ??= parseError('Duplicate Max-Forwards header'); break
    }
  }

  // the headers every routing decision relies on
  let viaOk = false
  if (via === -1) {
    error ??= parseError('Missing Via header')
  } else {
    const top = firstElement(headers._valueAt(via))
    try {
      if (top === undefined) throw new SipParseError('Malformed Via')
      headers._topVia = parseVia(top)
      headers._topViaText = top
      viaOk = true
    } catch (err) {
      error ??= parseError((err as SipParseError).reason ?? 'Malformed Via')
    }
  }
  if (from === -1) error ??= parseError('Missing From header')
  else if (headers._valueAt(from) === '') error ??= parseError('Malformed From header')
  if (to === -1) error ??= parseError('Missing To header')
  else if (headers._valueAt(to) === '') error ??= parseError('Malformed To header')
  if (callId === -1) error ??= parseError('Missing Call-ID header')
  else if (headers._valueAt(callId) === '' || WHITESPACE.test(headers._valueAt(callId))) error ??= parseError('Malformed Call-ID header')
  let cseqOk = false
  if (cseq === -1) {
    error ??= parseError('Missing CSeq header')
  } else {
    try {
      const parsed = parseCSeq(headers._valueAt(cseq))
      cseqOk = true
      if (request !== undefined && parsed.method !== request.method) error ??= parseError('CSeq method does not match the request method')
    } catch {
      error ??= parseError('Malformed CSeq header')
    }
  }
  if (maxForwards !== -1) {
    const mf = headers._valueAt(maxForwards)
    if (!DIGITS.test(mf) || mf.length > 10 || Number(mf) > 255) error ??= parseError('Malformed Max-Forwards header')
  }

  // body (RFC 3261 18.3: a longer Content-Length than the datagram is an error, a shorter one
  // truncates; without Content-Length the body runs to the end of the datagram)
  let body: Uint8Array = EMPTY
  let bodyLength = len - bodyStart
  if (contentLength !== -1) {
    const cl = headers._valueAt(contentLength)
    if (!DIGITS.test(cl) || cl.length > 10) {
      error ??= parseError('Malformed Content-Length header')
    } else {
      const declared = Number(cl)
      if (declared > bodyLength) error ??= parseError('Content-Length larger than the message body')
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
  // a response whose bytes say just what its headers say: from its first byte, its version
  // written as a sender must (RFC 3261 7.1: upper case), in CRLF lines none of them folded, its
  // characters one byte each (so places in `head` are places in the bytes), its Content-Length
  // the body to the last byte, its top Via line one element. A proxy may forward it as these
  // bytes less that line (16.7 step 3) instead of writing it anew (wire.ts)
  if (response !== undefined && plain && start === 0 && head.startsWith('SIP/2.0 ') && found !== undefined && found.bodyStart === found.headEnd + 3 &&
    head.length === headEnd - start && contentLength !== -1 && bodyStart + bodyLength === len &&
    viaTo < 32_768 && headers._valueAt(via).indexOf(',') === -1) {
    response._received = buf
    response._viaCut = viaFrom * 65_536 + viaTo
    // counted from here: 0 while the headers are as parsed
    headers._edits = 0
  }
  return message
}

/** methods written as constants when a start line names them */
const METHODS = ['MESSAGE', 'INVITE', 'ACK', 'BYE', 'CANCEL', 'OPTIONS', 'REGISTER', 'SUBSCRIBE', 'NOTIFY', 'PUBLISH', 'INFO', 'UPDATE', 'PRACK', 'REFER']

/** the method that `line` starts with and that ends at `end`, when it is one of METHODS */
function knownMethod (line: string, end: number): string | undefined {
  for (const m of METHODS) if (m.length === end && line.startsWith(m)) return m
  return undefined
}

/** an error to keep as the message's first (`error ??= parseError(...)`: later checks do not overwrite it) */
function parseError (reason: string, status = 400): SipParseError {
  return new SipParseError(reason, { status })
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
  if (sp1 !== 7 || !line.startsWith('SIP/2.0')) {
    const version = line.slice(0, sp1)
    if (!VERSION.test(version)) throw new SipParseError('Malformed status line')
    if (version.toUpperCase() !== 'SIP/2.0') throw new SipParseError('Version Not Supported', { status: 505 })
  }
  // Status-Code: 3DIGIT, the first 1-6, then SP (or the end of the line)
  const c1 = line.charCodeAt(sp1 + 1) - 48
  const c2 = line.charCodeAt(sp1 + 2) - 48
  const c3 = line.charCodeAt(sp1 + 3) - 48
  const after = line.charCodeAt(sp1 + 4)
  if (!(c1 >= 1 && c1 <= 6 && c2 >= 0 && c2 <= 9 && c3 >= 0 && c3 <= 9) || (line.length > sp1 + 4 && after !== 32)) {
    throw new SipParseError('Malformed status line')
  }
  const reason = line.length === sp1 + 7 && line.endsWith('OK') ? 'OK' : line.slice(sp1 + 5)
  return new SipResponse(c1 * 100 + c2 * 10 + c3, reason, headers, EMPTY, 'SIP/2.0')
}
