/**
 * The Authorization / Proxy-Authorization credentials (RFC 3261 22.4 and 25.1, RFC 7616 3.4,
 * RFC 7235 2.1) a user agent answers a challenge with, and the WWW-Authenticate /
 * Proxy-Authenticate challenges (RFC 7616 3.3, RFC 8760 2.4) we send.
 *
 *     credentials    = auth-scheme LWS auth-param *(COMMA auth-param)
 *     auth-param     = token EQUAL ( token / quoted-string )
 *
 * The parser is written for hostile input: a bounded length and number of directives, quoted
 * strings with `\` escapes, empty list elements (`a=1,,b=2`, RFC 7230 7's #rule), unknown
 * directives ignored, a repeated directive refused (RFC 7616 3.4: each appears at most once),
 * directive names case-insensitive, and nothing that can reach an object prototype.
 */
import { isTokenChar, isWhitespace, quote } from '../codec/params.ts'
import { MalformedCredentialsError } from './errors.ts'
import type { DigestAlgorithm } from './digest.ts'

/** Longest credentials header value parsed, characters (SIP.js and SIPp send ~300). */
export const MAX_CREDENTIALS_LENGTH = 4096
/** Most directives in one credentials header. */
const MAX_DIRECTIVES = 32

/** The directives of one `Digest` credentials header, names lower-cased, values unquoted. */
export interface DigestCredentials {
  /** every directive, including the ones we do not use */
  readonly params: ReadonlyMap<string, string>
  readonly username?: string
  readonly realm?: string
  readonly nonce?: string
  readonly uri?: string
  readonly response?: string
  readonly algorithm?: string
  readonly qop?: string
  readonly nc?: string
  readonly cnonce?: string
  readonly opaque?: string
}

/**
 * Parse one credentials header value. Undefined when its scheme is not `Digest` (a `Basic` or
 * `Bearer` header is not for us); throws MalformedCredentialsError when it does not parse.
 */
export function parseCredentials (value: string): DigestCredentials | undefined {
  if (value.length > MAX_CREDENTIALS_LENGTH) throw new MalformedCredentialsError('header too long')
  const s = value
  const n = s.length
  let i = skip(s, 0)
  const schemeStart = i
  while (i < n && isTokenChar(s.charCodeAt(i))) i++
  if (i === schemeStart) throw new MalformedCredentialsError('no auth scheme')
  const scheme = s.slice(schemeStart, i)
  if (scheme.toLowerCase() !== 'digest') return undefined
  if (i < n && !isWhitespace(s.charCodeAt(i))) throw new MalformedCredentialsError('no space after the auth scheme')
  const params = new Map<string, string>()
  while (true) {
    i = skip(s, i)
    while (i < n && s.charCodeAt(i) === 44 /* , */) i = skip(s, i + 1)
    if (i >= n) break
    const nameStart = i
    while (i < n && isTokenChar(s.charCodeAt(i))) i++
    if (i === nameStart) throw new MalformedCredentialsError(`unexpected character at ${i}`)
    const name = s.slice(nameStart, i).toLowerCase()
    i = skip(s, i)
    if (i >= n || s.charCodeAt(i) !== 61 /* = */) throw new MalformedCredentialsError(`directive ${name} has no value`)
    i = skip(s, i + 1)
    let v: string
    if (i < n && s.charCodeAt(i) === 34 /* " */) {
      // quoted-string: qdtext / quoted-pair ("\" any character but CR, LF)
      let out = ''
      let j = i + 1
      let closed = false
      while (j < n) {
        const c = s.charCodeAt(j)
        if (c === 92 /* \ */) {
          if (j + 1 >= n) break
          out += s[j + 1]
          j += 2
          continue
        }
        if (c === 34) { closed = true; j++; break }
        if (c < 32 && c !== 9) throw new MalformedCredentialsError('control character in a quoted string')
        out += s[j]
        j++
      }
      if (!closed) throw new MalformedCredentialsError('unterminated quoted string')
      v = out
      i = j
    } else {
      const start = i
      while (i < n && isTokenChar(s.charCodeAt(i))) i++
      if (i === start) throw new MalformedCredentialsError(`directive ${name} has an empty value`)
      v = s.slice(start, i)
    }
    if (params.has(name)) throw new MalformedCredentialsError(`directive ${name} repeated`)
    if (params.size >= MAX_DIRECTIVES) throw new MalformedCredentialsError('too many directives')
    params.set(name, v)
    i = skip(s, i)
    if (i < n && s.charCodeAt(i) !== 44) throw new MalformedCredentialsError(`expected a comma after ${name}`)
  }
  return {
    params,
    username: params.get('username'),
    realm: params.get('realm'),
    nonce: params.get('nonce'),
    uri: params.get('uri'),
    response: params.get('response'),
    algorithm: params.get('algorithm'),
    qop: params.get('qop'),
    nc: params.get('nc'),
    cnonce: params.get('cnonce'),
    opaque: params.get('opaque')
  }
}

function skip (s: string, i: number): number {
  while (i < s.length && isWhitespace(s.charCodeAt(i))) i++
  return i
}

export interface ChallengeInit {
  realm: string
  nonce: string
  algorithm: DigestAlgorithm
  /** RFC 7616 3.3: the nonce was too old but the credentials were right; retry without asking the user */
  stale?: boolean
  opaque?: string
}

/**
 * One challenge (the value of one WWW-Authenticate or Proxy-Authenticate header, RFC 7616 3.3),
 * always with qop="auth". RFC 8760 2.4: one header per algorithm, in order of preference.
 */
export function formatChallenge (c: ChallengeInit): string {
  let out = `Digest realm=${quote(c.realm)}, qop="auth", algorithm=${c.algorithm}, nonce=${quote(c.nonce)}`
  if (c.opaque !== undefined) out += `, opaque=${quote(c.opaque)}`
  if (c.stale === true) out += ', stale=true'
  return out
}
