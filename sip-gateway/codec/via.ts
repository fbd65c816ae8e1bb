/** One Via header element (RFC 3261 20.42, with `received` and `rport` of RFC 3581). */
import { SipParseError } from '../errors.ts'
import type { Headers } from './headers.ts'
import { isTokenChar, parseParams, setParam, skipWhitespace, type Params } from './params.ts'
import { parsePort } from './uri.ts'

export interface Via {
  /** `SIP/2.0` (upper-cased) */
  protocol: string
  /** upper-cased: `UDP`, `TCP`, `TLS`, `WS`, `WSS`, `SCTP`... */
  transport: string
  /** the sent-by host as written; IPv6 references keep their brackets */
  host: string
  port?: number
  /** every parameter, names lower-cased, values raw, `null` without value */
  params: Params
  branch?: string
  received?: string
  /** RFC 3581: a number when filled in, `null` when present without value (a request for it) */
  rport?: number | null
}

const HOST = /^(?:[A-Za-z0-9\-._]+|\[[0-9A-Fa-f:.]+\])$/

function readToken (s: string, i: number): number {
  while (i < s.length && isTokenChar(s.charCodeAt(i))) i++
  return i
}

/** the transports written as constants when a Via names them so (no strings of their own per message) */
const SENT_PROTOCOLS = ['UDP', 'TCP', 'TLS', 'WS', 'WSS', 'MESH'].map(t => ({ text: `SIP/2.0/${t} `, transport: t }))

export function parseVia (value: string): Via {
  const s = value
  let i = skipWhitespace(s, 0)
  // the usual `SIP/2.0/<transport> `, read as constants
  for (const p of SENT_PROTOCOLS) {
    if (s.startsWith(p.text, i)) return parseSentBy(s, skipWhitespace(s, i + p.text.length), 'SIP/2.0', p.transport)
  }
  // sent-protocol = protocol-name SLASH protocol-version SLASH transport (SLASH = SWS "/" SWS)
  let e = readToken(s, i)
  const name = s.slice(i, e)
  i = skipWhitespace(s, e)
  if (name === '' || s.charCodeAt(i) !== 47) throw new SipParseError('Malformed Via')
  i = skipWhitespace(s, i + 1)
  e = readToken(s, i)
  const version = s.slice(i, e)
  i = skipWhitespace(s, e)
  if (version === '' || s.charCodeAt(i) !== 47) throw new SipParseError('Malformed Via')
  i = skipWhitespace(s, i + 1)
  e = readToken(s, i)
  const transport = s.slice(i, e)
  if (transport === '') throw new SipParseError('Malformed Via')
  // LWS then sent-by
  i = skipWhitespace(s, e)
  if (i === e) throw new SipParseError('Malformed Via')
  return parseSentBy(s, i, `${name}/${version}`.toUpperCase(), transport.toUpperCase())
}

/** sent-by = host [ COLON port ] from `s[i]`, then the parameters */
function parseSentBy (s: string, i: number, protocol: string, transport: string): Via {
  const n = s.length
  let hostEnd: number
  if (s.charCodeAt(i) === 91 /* [ */) {
    hostEnd = s.indexOf(']', i)
    if (hostEnd === -1) throw new SipParseError('Malformed Via host')
    hostEnd++
  } else {
    hostEnd = i
    while (hostEnd < n) {
      const c = s.charCodeAt(hostEnd)
      if (c === 58 || c === 59 || c === 32 || c === 9 || c === 13 || c === 10) break
      hostEnd++
    }
  }
  const host = s.slice(i, hostEnd)
  if (!HOST.test(host)) throw new SipParseError('Malformed Via host')
  const via: Via = { protocol, transport, host, params: {} }
  i = skipWhitespace(s, hostEnd)
  if (i < n && s.charCodeAt(i) === 58 /* : */) {
    i = skipWhitespace(s, i + 1)
    // port = 1*DIGIT, at most 65535 (read from the text: no string of its own)
    let pe = i
    let port = 0
    while (pe < n && s.charCodeAt(pe) >= 48 && s.charCodeAt(pe) <= 57) port = port * 10 + s.charCodeAt(pe++) - 48
    if (pe === i || pe - i > 5 || port > 65535) throw new SipParseError('Malformed port in Via')
    via.port = port
    i = pe
  }
  parseParams(s, i, via.params, 'Via')
  const p = via.params
  if (p.branch !== undefined) {
    if (p.branch === null || p.branch === '') throw new SipParseError('Malformed Via branch')
    via.branch = p.branch
  }
  if (p.received !== undefined) {
    if (p.received === null) throw new SipParseError('Malformed Via received')
    via.received = p.received
  }
  if (p.rport !== undefined) {
    via.rport = p.rport === null ? null : parsePort(p.rport, 'Via rport')
  }
  return via
}

/**
 * The top Via element of a message, parsed once and kept on its headers while the text of the
 * top Via stays the same (the parser fills it in when it checks the Via). Shared: callers must
 * not change it (a copy, then `setTopVia`, to write a changed one). Undefined when there is no
 * Via; throws `SipParseError` when it is malformed.
 */
export function topVia (headers: Headers): Readonly<Via> | undefined {
  const text = headers.get('via')
  if (text === undefined) return undefined
  if (headers._topVia !== undefined && headers._topViaText === text) return headers._topVia
  const via = parseVia(text)
  headers._topViaText = text
  headers._topVia = via
  return via
}

/**
 * Replace the top Via element with `via` (written by `formatVia`), keeping it parsed. `owned`:
 * the caller gives `via` and its `params` away (a copy made for this call), kept as the parse
 * instead of copies of them.
 */
export function setTopVia (headers: Headers, via: Readonly<Via>, owned = false): void {
  const text = formatVia(via)
  if (!headers.replaceFirst('via', text)) return
  // replaceFirst stores the text as given when the line holds one element
  const stored = headers.get('via')
  if (stored === text) {
    headers._topViaText = stored
    headers._topVia = owned ? fillParsed(via as Via, via.params) : asParsed(via)
  }
}

/**
 * Add `via` as the new top Via (a proxy's own, 16.6 step 8), keeping it parsed. `owned`: the
 * caller made `via` (and its params) for this call alone, so it becomes the parsed Via itself
 * instead of a copy.
 */
export function prependVia (headers: Headers, via: Readonly<Via>, owned = false): void {
  const text = formatVia(via)
  headers.prepend('Via', text)
  if (headers.get('via') === text) {
    headers._topViaText = text
    headers._topVia = owned ? fillParsed(via as Via, via.params) : asParsed(via)
  }
}

/** `via` as `parseVia(formatVia(via))` gives it: the overrides written into its parameters too */
function asParsed (via: Readonly<Via>): Via {
  return fillParsed({ ...via }, { ...via.params })
}

/** `out` (a copy of a Via, or one the caller gave away) with `params` made as a parse would give them */
function fillParsed (out: Via, params: Params): Via {
  if (out.branch !== undefined) setParam(params, 'branch', out.branch)
  if (out.received !== undefined) setParam(params, 'received', out.received)
  if (out.rport !== undefined) setParam(params, 'rport', out.rport === null ? null : String(out.rport))
  out.params = params
  // and the other way: parameters named branch, received, rport fill the fields in
  if (typeof params.branch === 'string') out.branch = params.branch
  if (typeof params.received === 'string') out.received = params.received
  if (params.rport !== undefined) out.rport = params.rport === null ? null : Number(params.rport)
  return out
}

/**
 * The pieces of a Via being written: one array for every call (no rope of concatenations). The
 * join's buffer is as long as the array (8 bytes a slot here), and `parts.length = 0` then `push`
 * let go of the backing store and grew a new one per call (together ~230 of the ~450 bytes a Via
 * cost, measured): the array keeps its backing store (16 slots), its length set to the pieces
 * written for the join (a shorter length within the store moves nothing), and it is emptied
 * after the join so that it keeps no young string alive through a scavenge.
 */
const ROOM = 16
const parts: string[] = new Array<string>(ROOM).fill('')
let count = 0

function put (s: string): void {
  if (count < parts.length) parts[count] = s
  else parts.push(s)
  count++
}

/**
 * Write a Via element. `branch`, `received` and `rport` override the same names in `params`;
 * the other parameters are written in their order.
 */
export function formatVia (via: Readonly<Via>): string {
  count = 0
  put(via.protocol); put('/'); put(via.transport); put(' '); put(via.host)
  if (via.port !== undefined) { put(':'); put(String(via.port)) }
  const params = via.params
  const rport = via.rport === undefined ? undefined : via.rport === null ? null : String(via.rport)
  // the overrides take the place of a parameter of the same name, else go last (in this order)
  for (const name in params) {
    const v = name === 'branch' && via.branch !== undefined
      ? via.branch
      : name === 'received' && via.received !== undefined
        ? via.received
        : name === 'rport' && rport !== undefined ? rport : params[name]
    put(';'); put(name)
    if (v !== null && v !== undefined) { put('='); put(v) }
  }
  if (via.branch !== undefined && !Object.hasOwn(params, 'branch')) { put(';branch='); put(via.branch) }
  if (via.received !== undefined && !Object.hasOwn(params, 'received')) { put(';received='); put(via.received) }
  if (rport !== undefined && !Object.hasOwn(params, 'rport')) { put(rport === null ? ';rport' : ';rport='); put(rport ?? '') }
  parts.length = count
  const text = parts.join('')
  for (let k = 0; k < count; k++) parts[k] = ''
  // back to its room (a Via of many parameters grew it: back to the usual size)
  parts.length = ROOM
  if (count < ROOM) parts.fill('', count)
  return text
}
