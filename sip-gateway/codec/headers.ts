/**
 * SIP header fields (RFC 3261 section 7.3 and 20): an ordered list of (name, raw value).
 *
 * Values stay raw strings; structured parsing (Via, name-addr, URI, CSeq) happens only on demand
 * through the helpers of this folder. Names are case-insensitive and compact forms are mapped to
 * the full name on the way in, so `get('v')`, `get('VIA')` and `get('Via')` are the same.
 */

/** Compact forms (RFC 3261 7.3.3 and later RFCs) → lower-case full name. */
const COMPACT: Record<string, string> = {
  a: 'accept-contact', // RFC 3841
  b: 'referred-by', // RFC 3892
  c: 'content-type',
  d: 'request-disposition', // RFC 3841
  e: 'content-encoding',
  f: 'from',
  i: 'call-id',
  j: 'reject-contact', // RFC 3841
  k: 'supported',
  l: 'content-length',
  m: 'contact',
  n: 'identity-info', // RFC 4474
  o: 'event', // RFC 6665
  r: 'refer-to', // RFC 3515
  s: 'subject',
  t: 'to',
  u: 'allow-events', // RFC 6665
  v: 'via',
  x: 'session-expires', // RFC 4028
  y: 'identity' // RFC 4474
}

/** How we write the names we know (lower-case key → canonical spelling). */
const CANONICAL: Record<string, string> = {}
for (const name of [
  'Accept', 'Accept-Contact', 'Accept-Encoding', 'Accept-Language', 'Alert-Info', 'Allow',
  'Allow-Events', 'Authentication-Info', 'Authorization', 'Call-ID', 'Call-Info', 'Contact',
  'Content-Disposition', 'Content-Encoding', 'Content-Language', 'Content-Length',
  'Content-Type', 'CSeq', 'Date', 'Error-Info', 'Event', 'Expires', 'From', 'History-Info',
  'Identity', 'Identity-Info', 'In-Reply-To', 'Max-Forwards', 'MIME-Version', 'Min-Expires',
  'Min-SE', 'Organization', 'P-Asserted-Identity', 'P-Preferred-Identity', 'Path', 'Priority',
  'Privacy', 'Proxy-Authenticate', 'Proxy-Authorization', 'Proxy-Require', 'RAck', 'Reason',
  'Record-Route', 'Refer-To', 'Referred-By', 'Reject-Contact', 'Reply-To',
  'Request-Disposition', 'Require', 'Retry-After', 'Route', 'RSeq', 'Server', 'Service-Route',
  'Session-Expires', 'SIP-ETag', 'SIP-If-Match', 'Subject', 'Subscription-State', 'Supported',
  'Timestamp', 'To', 'Unsupported', 'User-Agent', 'Via', 'Warning', 'WWW-Authenticate'
]) {
  CANONICAL[name.toLowerCase()] = name
}

/**
 * Headers whose values are comma-separated lists (`#element` in the grammar), so that several
 * header lines and one line with commas mean the same. Everything else is never split: From,
 * To, Call-ID, CSeq, Date, WWW-Authenticate, Authorization (commas between auth params),
 * Subject, User-Agent, unknown extension headers...
 */
const LIST_HEADERS = new Set([
  'accept', 'accept-contact', 'accept-encoding', 'accept-language', 'alert-info', 'allow',
  'allow-events', 'call-info', 'contact', 'content-encoding', 'content-language', 'error-info',
  'history-info', 'in-reply-to', 'p-asserted-identity', 'p-preferred-identity', 'path',
  'proxy-require', 'reason', 'record-route', 'reject-contact', 'request-disposition', 'require',
  'route', 'security-client', 'security-server', 'security-verify', 'service-route', 'supported',
  'unsupported', 'via', 'warning'
])

import type { Via } from './via.ts'

const keyCache = new Map<string, string>()

const LINE_BREAKS = /[\r\n\0]+/g
const HAS_LINE_BREAK = /[\r\n\0]/
/** a header name (a token); module constants: a regular expression literal in a function body is a new RegExp object (56 bytes) per call */
const HEADER_NAME = /^[A-Za-z0-9\-.!%*_+`'~]+$/

/** A value safe to write on one header line: CR, LF and NUL runs become one space. */
function clean (value: string): string {
  const v = String(value)
  return HAS_LINE_BREAK.test(v) ? v.replace(LINE_BREAKS, ' ') : v
}

/** A name safe to write: a header name must be a token. */
function cleanName (name: string): string {
  if (!HEADER_NAME.test(name)) throw new TypeError(`Invalid header name: ${JSON.stringify(name)}`)
  return name
}

/** Lower-case full name of a header name (compact forms expanded). */
export function headerKey (name: string): string {
  let key = keyCache.get(name)
  if (key === undefined) {
    const lower = name.toLowerCase()
    key = COMPACT[lower] ?? lower
    if (keyCache.size < 1024) keyCache.set(name, key)
  }
  return key
}

/** The spelling we write for a header name: canonical for known names, as given otherwise. */
export function headerDisplayName (name: string, key = headerKey(name)): string {
  return CANONICAL[key] ?? name
}

/** Whether a header is a comma-separated list header. */
export function isListHeader (name: string): boolean {
  return LIST_HEADERS.has(headerKey(name))
}

/**
 * Split a comma-separated header value into its elements, ignoring commas inside quoted strings
 * (with backslash escapes) and inside `<...>`. Elements are trimmed; empty ones are dropped.
 */
export function splitList (value: string): string[] {
  // fast path: no comma at all
  if (value.indexOf(',') === -1) {
    const v = value.trim()
    return v === '' ? [] : [v]
  }
  const out: string[] = []
  let start = 0
  let quoted = false
  let angle = false
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i)
    if (quoted) {
      if (c === 92 /* \ */) i++
      else if (c === 34 /* " */) quoted = false
    } else if (c === 34) {
      quoted = true
    } else if (c === 60 /* < */) {
      angle = true
    } else if (c === 62 /* > */) {
      angle = false
    } else if (c === 44 /* , */ && !angle) {
      const v = value.slice(start, i).trim()
      if (v !== '') out.push(v)
      start = i + 1
    }
  }
  const v = value.slice(start).trim()
  if (v !== '') out.push(v)
  return out
}

/** First element of a list value (what `splitList(value)[0]` gives, without splitting it all). */
export function firstElement (value: string): string | undefined {
  if (value.indexOf(',') === -1) {
    const v = value.trim()
    return v === '' ? undefined : v
  }
  return splitList(value)[0]
}

/** triples of room a clone keeps before its first header line: a proxy prepends its Via there */
const FRONT_ROOM = 1

/** Ordered header fields of one SIP message. */
export class Headers {
  /**
   * The header lines as one flat array of (name as written, lower-case key, raw value) triples,
   * used from `_start` to `_end`: one array per message instead of three, and room at the front
   * and back, so that what a proxy does to every message it relays (prepend its Via to a
   * request, shift its Via off a response) moves nothing and allocates nothing. Names are written
   * in canonical spelling for known headers; values with folding undone, surrounding whitespace
   * trimmed.
   */
  private _a: string[]
  private _start: number
  private _end: number
  /**
   * The top Via element parsed, and the text it was parsed from (see `topVia` in via.ts): the
   * transport, the transaction layer and the proxy all read it, once per message instead of once
   * each. Valid while the top Via text is the same string; any change to it makes a new parse.
   */
  _topViaText: string | undefined = undefined
  _topVia: Readonly<Via> | undefined = undefined
  /**
   * How many times the lines were changed (every write below counts one): bytes kept for a
   * message (`receivedBytes` in wire.ts) stand for it only while this is what it was when they were kept
   */
  _edits = 0

  constructor (init?: Iterable<readonly [string, string]> | Record<string, string>) {
    this._a = []
    this._start = 0
    this._end = 0
    if (init !== undefined) {
      const entries = Symbol.iterator in init
        ? init as Iterable<readonly [string, string]>
        : Object.entries(init)
      for (const [name, value] of entries) this.append(name, value)
    }
  }

  /** Number of header lines. */
  get size (): number {
    return (this._end - this._start) / 3
  }

  /**
   * Room for `lines` header lines, for a parser that knows about how many come (an array of the
   * right size at once, not one grown by copies). Only on empty headers.
   */
  _reserve (lines: number): void {
    if (this._end === this._start && lines > 0) {
      this._edits++
      this._a = new Array<string>(3 * lines)
      this._start = 0
      this._end = 0
    }
  }

  /**
   * Append without normalizing the name further: `key` is already `headerKey(name)`. Used by the
   * parser on the hot path.
   */
  _push (name: string, key: string, value: string): void {
    this._edits++
    const a = this._a
    const e = this._end
    if (e + 3 <= a.length) {
      a[e] = name
      a[e + 1] = key
      a[e + 2] = value
    } else {
      a.length = e
      a.push(name, key, value)
    }
    this._end = e + 3
  }

  /** Replace the raw value of the i-th header line. */
  _setValueAt (i: number, value: string): void {
    this._edits++
    this._a[this._start + 3 * i + 2] = value
  }

  /** Lower-case key of the i-th header line. */
  _keyAt (i: number): string {
    return this._a[this._start + 3 * i + 1]
  }

  /** Name as written of the i-th header line. */
  _nameAt (i: number): string {
    return this._a[this._start + 3 * i]
  }

  /** Raw value of the i-th header line. */
  _valueAt (i: number): string {
    return this._a[this._start + 3 * i + 2]
  }

  /** index (in lines) of the first line with `key` at or after line `from`, -1 when none */
  private _find (key: string, from = 0): number {
    const a = this._a
    for (let j = this._start + 3 * from + 1; j < this._end; j += 3) {
      if (a[j] === key) return (j - 1 - this._start) / 3
    }
    return -1
  }

  /**
   * First value of a header: for list headers the first element of the first line, otherwise
   * the whole first line. Undefined when absent.
   */
  get (name: string): string | undefined {
    const key = headerKey(name)
    const a = this._a
    const list = LIST_HEADERS.has(key)
    for (let j = this._start + 1; j < this._end; j += 3) {
      if (a[j] === key) {
        if (!list) return a[j + 1]
        const first = firstElement(a[j + 1])
        if (first !== undefined) return first
      }
    }
    return undefined
  }

  /**
   * Every value of a header in order: list headers are split on commas (respecting quotes and
   * `<...>`), other headers give one value per line.
   */
  getAll (name: string): string[] {
    const key = headerKey(name)
    const a = this._a
    const list = LIST_HEADERS.has(key)
    const out: string[] = []
    for (let j = this._start + 1; j < this._end; j += 3) {
      if (a[j] === key) {
        if (list) {
          for (const v of splitList(a[j + 1])) out.push(v)
        } else {
          out.push(a[j + 1])
        }
      }
    }
    return out
  }

  /** Raw values of every line of a header, unsplit. */
  getLines (name: string): string[] {
    const key = headerKey(name)
    const a = this._a
    const out: string[] = []
    for (let j = this._start + 1; j < this._end; j += 3) {
      if (a[j] === key) out.push(a[j + 1])
    }
    return out
  }

  has (name: string): boolean {
    return this._find(headerKey(name)) !== -1
  }

  /** Replace every line of a header with one line (at the place of the first), or append it. */
  set (name: string, value: string): this {
    const key = headerKey(cleanName(name))
    value = clean(value)
    const i = this._find(key)
    if (i === -1) {
      this._push(headerDisplayName(name, key), key, String(value))
      return this
    }
    this._setValueAt(i, String(value))
    this._removeFrom(key, i + 1)
    return this
  }

  /** Add a line at the end. */
  append (name: string, value: string): this {
    const key = headerKey(cleanName(name))
    this._push(headerDisplayName(name, key), key, clean(value))
    return this
  }

  /** Add a line before every other line of the same header (at the very top when none). */
  prepend (name: string, value: string): this {
    const key = headerKey(cleanName(name))
    value = clean(value)
    let i = this._find(key)
    if (i === -1) i = 0
    this._insertAt(i, headerDisplayName(name, key), key, String(value))
    return this
  }

  /** Remove every line of a header. Returns whether one was there. */
  delete (name: string): boolean {
    const key = headerKey(name)
    const i = this._find(key)
    if (i === -1) return false
    this._removeFrom(key, i)
    return true
  }

  /**
   * Replace the first element of a list header (for example the top Via, to add `received`),
   * keeping the other elements of that line. Returns false when the header is absent.
   */
  replaceFirst (name: string, value: string): boolean {
    this._edits++
    const key = headerKey(name)
    value = clean(value)
    const a = this._a
    for (let j = this._start + 1; j < this._end; j += 3) {
      if (a[j] !== key) continue
      const raw = a[j + 1]
      if (!LIST_HEADERS.has(key) || raw.indexOf(',') === -1) {
        a[j + 1] = value
        return true
      }
      const parts = splitList(raw)
      if (parts.length === 0) continue
      parts[0] = value
      a[j + 1] = parts.join(', ')
      return true
    }
    return false
  }

  /**
   * Remove and return the first element of a list header (for example the top Via of a
   * response a proxy forwards). Undefined when absent.
   */
  shift (name: string): string | undefined {
    this._edits++
    const key = headerKey(name)
    const a = this._a
    for (let j = this._start + 1; j < this._end; j += 3) {
      if (a[j] !== key) continue
      const raw = a[j + 1]
      const list = LIST_HEADERS.has(key)
      if (!list || raw.indexOf(',') === -1) {
        // one element on the line (a relayed response's Via, the usual case): no array for it
        const v = list ? raw.trim() : raw
        this._removeAt((j - 1 - this._start) / 3)
        if (!list || v !== '') return v
        j -= 3
        continue
      }
      const parts = splitList(raw)
      if (parts.length <= 1) {
        this._removeAt((j - 1 - this._start) / 3)
        if (parts.length === 1) return parts[0]
        j -= 3
        continue
      }
      a[j + 1] = parts.slice(1).join(', ')
      return parts[0]
    }
    return undefined
  }

  /** `[name, raw value]` per line, in order. */
  * entries (): IterableIterator<[string, string]> {
    for (let j = this._start; j < this._end; j += 3) yield [this._a[j], this._a[j + 2]]
  }

  [Symbol.iterator] (): IterableIterator<[string, string]> {
    return this.entries()
  }

  /** a copy, with room for one line at the front (a proxy's Via) */
  clone (): Headers {
    const h = new Headers()
    const n = this._end - this._start
    const a = new Array<string>(3 * FRONT_ROOM + n)
    const src = this._a
    for (let j = 0, from = this._start; j < n; j++) a[3 * FRONT_ROOM + j] = src[from + j]
    h._a = a
    h._start = 3 * FRONT_ROOM
    h._end = 3 * FRONT_ROOM + n
    h._topViaText = this._topViaText
    h._topVia = this._topVia
    return h
  }

  /** insert a line before line `i`, into room at the front or back when there is some */
  private _insertAt (i: number, name: string, key: string, value: string): void {
    this._edits++
    const a = this._a
    const at = this._start + 3 * i
    if (this._start >= 3) {
      // the lines before `at` move up into the room at the front
      for (let j = this._start; j < at; j++) a[j - 3] = a[j]
      this._start -= 3
    } else {
      if (this._end + 3 > a.length) a.push(name, key, value) // grown once; overwritten below
      for (let j = this._end - 1; j >= at; j--) a[j + 3] = a[j]
      this._end += 3
    }
    const w = this._start + 3 * i
    a[w] = name
    a[w + 1] = key
    a[w + 2] = value
  }

  /** remove line `i`, moving the shorter side */
  private _removeAt (i: number): void {
    this._edits++
    const a = this._a
    const at = this._start + 3 * i
    if (at - this._start <= this._end - at - 3) {
      for (let j = at - 1; j >= this._start; j--) a[j + 3] = a[j]
      a[this._start] = a[this._start + 1] = a[this._start + 2] = undefined as unknown as string
      this._start += 3
    } else {
      for (let j = at + 3; j < this._end; j++) a[j - 3] = a[j]
      this._end -= 3
      a[this._end] = a[this._end + 1] = a[this._end + 2] = undefined as unknown as string
    }
  }

  /** remove every line with `key` from line `from` on */
  private _removeFrom (key: string, from: number): void {
    this._edits++
    const a = this._a
    let w = this._start + 3 * from
    for (let r = w; r < this._end; r += 3) {
      if (a[r + 1] === key) continue
      if (w !== r) {
        a[w] = a[r]
        a[w + 1] = a[r + 1]
        a[w + 2] = a[r + 2]
      }
      w += 3
    }
    for (let j = w; j < this._end; j++) a[j] = undefined as unknown as string
    this._end = w
  }
}
