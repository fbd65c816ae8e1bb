/**
 * What the registrar reads of a REGISTER (RFC 3261 10.3 steps 5-7: To, CSeq, Contact) without the
 * general parsers where the request is written the usual way, and by them otherwise: each reader
 * gives exactly what the parse would.
 */
import { parseCSeq } from '../codec/cseq.ts'
import { headerKey, type Headers } from '../codec/headers.ts'

/**
 * `<sip:user@host>` (a To value) as `sip:user@host` when that is exactly what aorOf(parseNameAddr(to).uri)
 * gives for it: no display name, parameter, port or escape, a user of unreserved characters
 * other than `%` (RFC 3261 25.1: nothing parseUri reads as a password, a parameter or an escape)
 * and a lower-case host; '' otherwise (then To is parsed). The caller takes it only for an AoR it
 * holds or one of a domain it serves (so its host is one parseUri accepts).
 */
export function plainAor (to: string): string {
  const end = to.length - 1
  if (to.charCodeAt(0) !== 60 /* < */ || to.charCodeAt(end) !== 62 /* > */ || !to.startsWith('sip:', 1)) return ''
  let at = -1
  for (let i = 5; i < end; i++) {
    const c = to.charCodeAt(i)
    if (c === 64 /* @ */) {
      if (at !== -1 || i === 5) return ''
      at = i
    } else if ((at === -1 ? USER_CHAR[c] : HOST_CHAR[c]) !== 1) return ''
  }
  return at === -1 || at === end - 1 ? '' : to.slice(1, end)
}

/** the characters plainAor takes in a user part (RFC 3261 25.1 unreserved) and in a host */
const USER_CHAR = charSet('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*\'()')
const HOST_CHAR = charSet('abcdefghijklmnopqrstuvwxyz0123456789-.')
function charSet (chars: string): Uint8Array {
  const set = new Uint8Array(128)
  for (let i = 0; i < chars.length; i++) set[chars.charCodeAt(i)] = 1
  return set
}

/**
 * the sequence number of a REGISTER's CSeq: read in place for `<1 to 10 digits> REGISTER`,
 * else by parseCSeq (which refuses what is malformed)
 */
export function registerSeq (value: string): number {
  const n = value.length - 9
  if (n >= 1 && n <= 10 && value.endsWith(' REGISTER')) {
    let seq = 0
    for (let i = 0; i < n; i++) {
      const c = value.charCodeAt(i) - 48
      if (c < 0 || c > 9) return parseCSeq(value).seq
      seq = seq * 10 + c
    }
    if (seq <= 0xffffffff) return seq
  }
  return parseCSeq(value).seq
}

/** the Contact header's key, as the parser keys its lines */
const CONTACT = headerKey('Contact')

/**
 * the REGISTER's Contact values, as `getAll('Contact')` gives them: for one Contact line of one
 * value (the usual REGISTER) an array of that value alone, without the two arrays getAll grows
 */
export function contactsOf (headers: Headers): string[] {
  let line = -1
  for (let i = 0; i < headers.size; i++) {
    if (headers._keyAt(i) !== CONTACT) continue
    if (line !== -1) return headers.getAll(CONTACT)
    line = i
  }
  if (line === -1) return []
  const value = headers._valueAt(line)
  if (value.indexOf(',') !== -1) return headers.getAll(CONTACT)
  const v = value.trim()
  return v === '' ? [] : [v]
}

/** a Contact value is `*` (10.3 step 6) */
export function hasStar (contacts: string[]): boolean {
  for (let i = 0; i < contacts.length; i++) if (contacts[i].trim() === '*') return true
  return false
}
