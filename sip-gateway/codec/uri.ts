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

export function parseUri (s: string): SipUri {
  const colon = s.indexOf(':')
  if (colon <= 0) throw new SipParseError('Malformed URI')
  const rawScheme = s.slice(0, colon)
  if (!SCHEME.test(rawScheme)) throw new SipParseError('Malformed URI')
  const scheme = rawScheme.toLowerCase()
  if (!SUPPORTED_SCHEMES.has(scheme)) throw new SipParseError('Unsupported URI Scheme', { status: 416 })
  if (/[\s<>]/.test(s)) throw new SipParseError('Malformed URI')

  let rest = s.slice(colon + 1)
  const headers: Record<string, string> = {}
  const q = rest.indexOf('?')
  if (q !== -1) {
    for (const pair of rest.slice(q + 1).split('&')) {
      if (pair === '') continue
      const eq = pair.indexOf('=')
      const name = eq === -1 ? pair : pair.slice(0, eq)
      if (name === '' || name === '__proto__') throw new SipParseError('Malformed URI header')
      headers[name] = eq === -1 ? '' : pair.slice(eq + 1)
    }
    rest = rest.slice(0, q)
  }

  const uri: SipUri = { scheme, host: '', params: {}, headers }
  if (scheme === 'tel') {
    const semi = rest.indexOf(';')
    const number = semi === -1 ? rest : rest.slice(0, semi)
    if (number === '') throw new SipParseError('Malformed tel URI')
    uri.user = number
    if (semi !== -1) parseUriParams(rest.slice(semi + 1), uri.params)
    return uri
  }

  const at = rest.indexOf('@')
  if (at !== -1) {
    const userinfo = rest.slice(0, at)
    if (userinfo === '' || USER_BAD.test(userinfo)) throw new SipParseError('Malformed URI user')
    const pc = userinfo.indexOf(':')
    if (pc === -1) {
      uri.user = userinfo
    } else {
      uri.user = userinfo.slice(0, pc)
      uri.password = userinfo.slice(pc + 1)
      if (uri.user === '') throw new SipParseError('Malformed URI user')
    }
    rest = rest.slice(at + 1)
  }

  const semi = rest.indexOf(';')
  const hostport = semi === -1 ? rest : rest.slice(0, semi)
  let portStart: number
  if (hostport.charCodeAt(0) === 91 /* [ */) {
    const close = hostport.indexOf(']')
    if (close === -1) throw new SipParseError('Malformed URI host')
    uri.host = hostport.slice(0, close + 1)
    if (!IPV6_REF.test(uri.host)) throw new SipParseError('Malformed URI host')
    portStart = close + 1
    if (portStart < hostport.length && hostport.charCodeAt(portStart) !== 58) throw new SipParseError('Malformed URI host')
  } else {
    const pc = hostport.indexOf(':')
    uri.host = pc === -1 ? hostport : hostport.slice(0, pc)
    if (!HOST_CHAR.test(uri.host)) throw new SipParseError('Malformed URI host')
    portStart = pc === -1 ? hostport.length : pc
  }
  if (portStart < hostport.length) {
    uri.port = parsePort(hostport.slice(portStart + 1), 'URI')
  }
  if (semi !== -1) parseUriParams(rest.slice(semi + 1), uri.params)
  return uri
}

/** A port number 0..65535 written in decimal. */
export function parsePort (s: string, what: string): number {
  if (s.length === 0 || s.length > 5 || !/^[0-9]+$/.test(s)) throw new SipParseError(`Malformed port in ${what}`)
  const port = Number(s)
  if (port > 65535) throw new SipParseError(`Malformed port in ${what}`)
  return port
}

function parseUriParams (s: string, params: Params): void {
  for (const part of s.split(';')) {
    if (part === '') throw new SipParseError('Empty URI parameter')
    const eq = part.indexOf('=')
    if (eq === 0) throw new SipParseError('Empty URI parameter name')
    if (eq === -1) setParam(params, part.toLowerCase(), null)
    else setParam(params, part.slice(0, eq).toLowerCase(), part.slice(eq + 1))
  }
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
