/**
 * SIP, SIPS and tel URIs (RFC 3261 19.1, RFC 3966), parsed on demand, and the address-of-record
 * normalization the registry keys on.
 */
import { SipParseError } from '../errors.ts'
import { setParam, type Params } from './params.ts'

export interface SipUri {
  /** lower-case: `sip`, `sips` or `tel` */
  scheme: string
  /** as written (escapes kept); for tel URIs the number */
  user?: string
  password?: string
  /** as written; IPv6 references keep their brackets (`[::1]`); empty for tel URIs */
  host: string
  port?: number
  /** names lower-cased, values raw, `null` for a parameter without value */
  params: Params
  headers: Record<string, string>
}

/** The URI schemes we accept in a Request-URI (others get 416). */
export const SUPPORTED_SCHEMES: ReadonlySet<string> = new Set(['sip', 'sips', 'tel'])

const HOST_CHAR = /^[A-Za-z0-9\-._]+$/
const IPV6_REF = /^\[[0-9A-Fa-f:.]+\]$/
const SCHEME = /^[A-Za-z][A-Za-z0-9+\-.]*$/
const USER_BAD = /[\s<>"]/
/** module constants: a regular expression literal in a function body is a new RegExp object per call */
const URI_BAD = /[\s<>]/
const DIGITS = /^[0-9]+$/

export function parseUri (s: string): SipUri {
  const colon = s.indexOf(':')
  if (colon <= 0) throw new SipParseError('Malformed URI')
  // read by indices into `s`: only the parts kept become strings (the usual schemes as constants)
  let scheme: string
  if (colon === 3 && s.startsWith('sip')) scheme = 'sip'
  else if (colon === 4 && s.startsWith('sips')) scheme = 'sips'
  else {
    const rawScheme = s.slice(0, colon)
    if (!SCHEME.test(rawScheme)) throw new SipParseError('Malformed URI')
    scheme = rawScheme.toLowerCase()
    if (!SUPPORTED_SCHEMES.has(scheme)) throw new SipParseError('Unsupported URI Scheme', { status: 416 })
  }
  if (URI_BAD.test(s)) throw new SipParseError('Malformed URI')

  // what follows the scheme, up to the headers (`?`)
  let end = s.length
  const headers: Record<string, string> = {}
  const q = s.indexOf('?', colon + 1)
  if (q !== -1) {
    for (const pair of s.slice(q + 1).split('&')) {
      if (pair === '') continue
      const eq = pair.indexOf('=')
      const name = eq === -1 ? pair : pair.slice(0, eq)
      if (name === '' || name === '__proto__') throw new SipParseError('Malformed URI header')
      headers[name] = eq === -1 ? '' : pair.slice(eq + 1)
    }
    end = q
  }
  let i = colon + 1

  const uri: SipUri = { scheme, host: '', params: {}, headers }
  if (scheme === 'tel') {
    const semi = indexBefore(s, ';', i, end)
    const numberEnd = semi === -1 ? end : semi
    if (numberEnd === i) throw new SipParseError('Malformed tel URI')
    uri.user = s.slice(i, numberEnd)
    if (semi !== -1) parseUriParams(s, semi + 1, end, uri.params)
    return uri
  }

  const at = indexBefore(s, '@', i, end)
  if (at !== -1) {
    if (at === i) throw new SipParseError('Malformed URI user')
    const userinfo = s.slice(i, at)
    if (USER_BAD.test(userinfo)) throw new SipParseError('Malformed URI user')
    const pc = userinfo.indexOf(':')
    if (pc === -1) {
      uri.user = userinfo
    } else {
      uri.user = userinfo.slice(0, pc)
      uri.password = userinfo.slice(pc + 1)
      if (uri.user === '') throw new SipParseError('Malformed URI user')
    }
    i = at + 1
  }

  const semi = indexBefore(s, ';', i, end)
  const hostportEnd = semi === -1 ? end : semi
  let portStart: number
  if (s.charCodeAt(i) === 91 /* [ */ && i < hostportEnd) {
    const close = indexBefore(s, ']', i, hostportEnd)
    if (close === -1) throw new SipParseError('Malformed URI host')
    uri.host = s.slice(i, close + 1)
    if (!IPV6_REF.test(uri.host)) throw new SipParseError('Malformed URI host')
    portStart = close + 1
    if (portStart < hostportEnd && s.charCodeAt(portStart) !== 58) throw new SipParseError('Malformed URI host')
  } else {
    const pc = indexBefore(s, ':', i, hostportEnd)
    portStart = pc === -1 ? hostportEnd : pc
    uri.host = s.slice(i, portStart)
    if (!HOST_CHAR.test(uri.host)) throw new SipParseError('Malformed URI host')
  }
  if (portStart < hostportEnd) {
    // a port number 0..65535 written in decimal, read in place
    let port = 0
    let j = portStart + 1
    for (; j < hostportEnd; j++) {
      const c = s.charCodeAt(j)
      if (c < 48 || c > 57) break
      port = port * 10 + c - 48
    }
    if (j !== hostportEnd || j === portStart + 1 || j - portStart - 1 > 5 || port > 65535) throw new SipParseError('Malformed port in URI')
    uri.port = port
  }
  if (semi !== -1) parseUriParams(s, semi + 1, end, uri.params)
  return uri
}

/** `s.indexOf(c, from)` when found before `to`, else -1 */
function indexBefore (s: string, c: string, from: number, to: number): number {
  const k = s.indexOf(c, from)
  return k !== -1 && k < to ? k : -1
}

/** A port number 0..65535 written in decimal. */
export function parsePort (s: string, what: string): number {
  if (s.length === 0 || s.length > 5 || !DIGITS.test(s)) throw new SipParseError(`Malformed port in ${what}`)
  const port = Number(s)
  if (port > 65535) throw new SipParseError(`Malformed port in ${what}`)
  return port
}

/** `;`-separated parameters of `s` from `from` to `to` (names lower-cased, values raw) */
function parseUriParams (s: string, from: number, to: number, params: Params): void {
  let i = from
  for (;;) {
    const semi = indexBefore(s, ';', i, to)
    const partEnd = semi === -1 ? to : semi
    if (partEnd === i) throw new SipParseError('Empty URI parameter')
    const eq = indexBefore(s, '=', i, partEnd)
    if (eq === i) throw new SipParseError('Empty URI parameter name')
    if (eq === -1) setParam(params, uriParamName(s, i, partEnd), null)
    else setParam(params, uriParamName(s, i, eq), s.slice(eq + 1, partEnd))
    if (semi === -1) return
    i = semi + 1
  }
}

/** URI parameter names as constants when the text names one of the usual ones in lower case */
const URI_PARAMS = ['lr', 'transport', 'node', 'user', 'ob', 'maddr']

function uriParamName (s: string, from: number, to: number): string {
  for (const p of URI_PARAMS) if (p.length === to - from && s.startsWith(p, from)) return p
  return s.slice(from, to).toLowerCase()
}

export function formatUri (uri: SipUri): string {
  let out = uri.scheme + ':'
  if (uri.scheme === 'tel') {
    out += uri.user ?? ''
  } else {
    if (uri.user !== undefined) {
      out += uri.user
      if (uri.password !== undefined) out += ':' + uri.password
      out += '@'
    }
    out += uri.host
    if (uri.port !== undefined) out += ':' + uri.port
  }
  for (const name in uri.params) {
    const v = uri.params[name]
    out += v === null || v === undefined ? `;${name}` : `;${name}=${v}`
  }
  let sep = '?'
  for (const name in uri.headers) {
    out += `${sep}${name}=${uri.headers[name]}`
    sep = '&'
  }
  return out
}

/** Unreserved characters may be written escaped or not (RFC 3261 19.1.4): write them plain. */
function normalizeEscapes (s: string): string {
  if (s.indexOf('%') === -1) return s
  return s.replace(/%([0-9A-Fa-f]{2})/g, (all, hex: string) => {
    const c = String.fromCharCode(parseInt(hex, 16))
    return /[A-Za-z0-9\-_.!~*'()&=+$,;?/]/.test(c) ? c : all.toUpperCase()
  })
}

/**
 * The address-of-record of a URI: `sip:user@domain`, scheme and host lower-cased, no port,
 * password, parameters or headers; the user part keeps its case with unreserved characters
 * unescaped. `sips:` AoRs map to `sip:` (one user, one claim); tel URIs give `tel:number`.
 */
export function aorOf (uri: string | SipUri): string {
  const u = typeof uri === 'string' ? parseUri(uri) : uri
  if (u.scheme === 'tel') return 'tel:' + normalizeEscapes(u.user ?? '')
  const host = u.host.toLowerCase()
  return u.user === undefined ? `sip:${host}` : `sip:${normalizeEscapes(u.user)}@${host}`
}
