/**
 * Shared pieces of the RFC 3261 section 25 grammar: tokens, quoted strings and `;name=value`
 * parameters.
 */
import { SipParseError } from '../errors.ts'

export type Params = Record<string, string | null>

/** token characters: alphanum and `-.!%*_+\`'~` */
const TOKEN = new Uint8Array(128)
for (let c = 0; c < 128; c++) {
  const ch = String.fromCharCode(c)
  if (/[A-Za-z0-9\-.!%*_+`'~]/.test(ch)) TOKEN[c] = 1
}

export function isTokenChar (c: number): boolean {
  return c < 128 && TOKEN[c] === 1
}

export function isToken (s: string): boolean {
  if (s.length === 0) return false
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c >= 128 || TOKEN[c] !== 1) return false
  }
  return true
}

export function isWhitespace (c: number): boolean {
  return c === 32 || c === 9 || c === 13 || c === 10
}

export function skipWhitespace (s: string, i: number): number {
  while (i < s.length && isWhitespace(s.charCodeAt(i))) i++
  return i
}

/** Index just past the closing quote of the quoted string that opens at `i`. */
export function endOfQuoted (s: string, i: number): number {
  for (let j = i + 1; j < s.length; j++) {
    const c = s.charCodeAt(j)
    if (c === 92 /* \ */) j++
    else if (c === 34 /* " */) return j + 1
  }
  throw new SipParseError('Unterminated quoted string')
}

/** The text of a quoted string (without quotes, escapes resolved). */
export function unquote (quoted: string): string {
  if (quoted.length < 2 || quoted.charCodeAt(0) !== 34) return quoted
  const inner = quoted.slice(1, -1)
  return inner.indexOf('\\') === -1 ? inner : inner.replace(/\\(.)/gs, '$1')
}

/** A quoted string holding `text`. */
export function quote (text: string): string {
  return '"' + text.replace(/["\\]/g, '\\$&') + '"'
}

/** Set a parameter without letting a hostile name such as `__proto__` touch the prototype. */
export function setParam (params: Params, name: string, value: string | null): void {
  if (name === '__proto__') {
    Object.defineProperty(params, name, { value, enumerable: true, writable: true, configurable: true })
  } else {
    params[name] = value
  }
}

/** parameter names written as constants when the text names them in lower case */
const KNOWN_PARAMS = ['branch', 'rport', 'received', 'tag', 'lr', 'transport', 'expires', 'node']

/** the known parameter `s.slice(from, to)` is, when it is one (as written, lower case) */
function knownParam (s: string, from: number, to: number): string | undefined {
  for (const p of KNOWN_PARAMS) if (p.length === to - from && s.startsWith(p, from)) return p
  return undefined
}

/**
 * Parse `*( SEMI name [EQUAL value] )` from `s[i]` to the end of `s`: names are lower-cased,
 * values kept raw (a quoted value keeps its quotes), a parameter without value is `null`.
 * Whitespace around `;` and `=` is allowed (SEMI and EQUAL in the grammar).
 */
export function parseParams (s: string, i: number, params: Params, what: string): void {
  const n = s.length
  while (true) {
    i = skipWhitespace(s, i)
    if (i >= n) return
    if (s.charCodeAt(i) !== 59 /* ; */) throw new SipParseError(`Unexpected character in ${what}`)
    i = skipWhitespace(s, i + 1)
    const nameStart = i
    while (i < n && isTokenChar(s.charCodeAt(i))) i++
    if (i === nameStart) throw new SipParseError(`Empty parameter name in ${what}`)
    const name = knownParam(s, nameStart, i) ?? s.slice(nameStart, i).toLowerCase()
    i = skipWhitespace(s, i)
    if (i < n && s.charCodeAt(i) === 61 /* = */) {
      i = skipWhitespace(s, i + 1)
      let end: number
      if (i < n && s.charCodeAt(i) === 34) {
        end = endOfQuoted(s, i)
      } else {
        end = i
        while (end < n) {
          const c = s.charCodeAt(end)
          if (c === 59 || isWhitespace(c) || c === 44 /* , */ || c === 34 || c === 60 /* < */ || c === 62 /* > */) break
          end++
        }
        if (end === i) throw new SipParseError(`Empty parameter value in ${what}`)
      }
      setParam(params, name, s.slice(i, end))
      i = end
    } else {
      setParam(params, name, null)
    }
  }
}

/** `;name=value;flag` for a parameter record (values written as stored). */
export function formatParams (params: Params): string {
  let out = ''
  for (const name in params) {
    const v = params[name]
    out += v === null || v === undefined ? `;${name}` : `;${name}=${v}`
  }
  return out
}
