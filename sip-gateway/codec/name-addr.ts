/**
 * name-addr / addr-spec with header parameters (RFC 3261 20.10, 20.20, 20.39): the values of
 * From, To, Contact, Route, Record-Route, P-Asserted-Identity...
 */
import { SipParseError } from '../errors.ts'
import { endOfQuoted, parseParams, quote, skipWhitespace, unquote, type Params } from './params.ts'

export interface NameAddr {
  /** display name, unquoted */
  display?: string
  /** the URI, as written */
  uri: string
  /** header parameters (`tag`, `expires`, `q`...): names lower-cased, values raw */
  params: Params
}

/** what an unquoted display name must not hold (a module constant: a literal in a function is a new RegExp per call) */
const DISPLAY_BAD = /["<>]/
/** what an address URI must not hold (a module constant: a regular expression literal in a function is a new RegExp per call) */
const ADDRESS_URI_BAD = /[\s<>"]/

export function parseNameAddr (value: string): NameAddr {
  const s = value
  const n = s.length
  const i = skipWhitespace(s, 0)
  if (i >= n) throw new SipParseError('Empty address')
  let display: string | undefined
  const c = s.charCodeAt(i)
  let lt: number
  if (c === 34 /* " */) {
    const end = endOfQuoted(s, i)
    display = unquote(s.slice(i, end))
    lt = skipWhitespace(s, end)
    if (s.charCodeAt(lt) !== 60) throw new SipParseError('Malformed address: < expected after display name')
  } else {
    lt = s.indexOf('<', i)
    if (lt !== -1) {
      const d = s.slice(i, lt).trim()
      if (d !== '') {
        if (DISPLAY_BAD.test(d)) throw new SipParseError('Malformed display name')
        display = d
      }
    }
  }
  let uri: string
  let rest: number
  if (lt !== -1) {
    const gt = s.indexOf('>', lt + 1)
    if (gt === -1) throw new SipParseError('Malformed address: missing >')
    uri = s.slice(lt + 1, gt).trim()
    rest = gt + 1
  } else {
    // addr-spec: the URI ends at the first ';' (parameters then belong to the header)
    let end = i
    while (end < n) {
      const ch = s.charCodeAt(end)
      if (ch === 59 || ch === 32 || ch === 9) break
      end++
    }
    uri = s.slice(i, end)
    rest = end
  }
  const colon = uri.indexOf(':')
  if (colon <= 0 || ADDRESS_URI_BAD.test(uri)) throw new SipParseError('Malformed address URI')
  const params: Params = {}
  parseParams(s, rest, params, 'address')
  const out: NameAddr = { uri, params }
  if (display !== undefined) out.display = display
  return out
}

/**
 * `parseNameAddr` of a From or To value, with the last two results kept: the layers above read
 * the same request's From and To one after the other (the proxy's loop hash, its asserted
 * identity, the registrar's AoR), one parse each per request then, not two or three. The result
 * is shared: read it, never change it.
 */
export function parseNameAddrShared (value: string): Readonly<NameAddr> {
  for (let i = 0; i < recent.length; i++) if (recent[i][0] === value) return recent[i][1]
  const parsed = parseNameAddr(value)
  const slot = recent[nextRecent]
  if (slot === undefined) recent.push([value, parsed])
  else { slot[0] = value; slot[1] = parsed }
  nextRecent = (nextRecent + 1) % 2
  return parsed
}
const recent: Array<[text: string, parsed: Readonly<NameAddr>]> = []
let nextRecent = 0

export function formatNameAddr (addr: NameAddr): string {
  let out = addr.display === undefined || addr.display === '' ? `<${addr.uri}>` : `${quote(addr.display)} <${addr.uri}>`
  for (const name in addr.params) {
    const v = addr.params[name]
    out += v === null || v === undefined ? `;${name}` : `;${name}=${v}`
  }
  return out
}
