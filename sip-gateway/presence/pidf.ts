/**
 * PIDF, the Presence Information Data Format (RFC 3863): parse a body into a small model and build a
 * document from one. Parsing and building go through fast-xml-parser with `preserveOrder`, then a
 * namespace-resolution pass of our own (fast-xml-parser keeps prefixes as written and does not
 * resolve them). Elements the model does not understand (RPID, data model, capabilities, …) are kept
 * as namespace-resolved trees and written back, so a presence server passes them through
 * (draft-ietf-simple-intradomain-federation 7.1.3: retain what you do not understand).
 *
 * Hostile input: the body size is capped before anything else; any DOCTYPE is refused, so no
 * entity is ever defined and none can expand (billion laughs, external entities); fast-xml-parser's
 * own entity processing is off and we decode only the five predefined XML entities and character
 * references; nesting depth, element count and attributes per element are capped. Every failure is
 * a `PidfError` (the gateway answers 400).
 */

import { XMLBuilder, XMLParser, XMLValidator } from 'fast-xml-parser'

export const PIDF_NS = 'urn:ietf:params:xml:ns:pidf'
export const XML_NS = 'http://www.w3.org/XML/1998/namespace'

/** Malformed or unacceptable PIDF. `reason` is a short human-readable explanation (400 reason text). */
export class PidfError extends Error {
  static override name = 'PidfError'
  override name = 'PidfError'
  readonly reason: string
  constructor (reason: string, options?: { cause?: unknown }) {
    // reasons quote the input: keep them short whatever the input
    const short = reason.length > 200 ? `${reason.slice(0, 200)}…` : reason
    super(`invalid PIDF: ${short}`, options)
    this.reason = short
  }
}

/** An attribute, namespace-resolved; `ns` is '' for unqualified attributes. */
export interface XmlAttribute {
  ns: string
  name: string
  /** the prefix it was written with, a hint for building */
  prefix?: string
  value: string
}

/** An element kept as-is: namespace-resolved, order of children preserved. */
export interface XmlElement {
  /** namespace URI, '' when none */
  ns: string
  /** local name */
  name: string
  /** the prefix it was written with, a hint for building */
  prefix?: string
  attrs: XmlAttribute[]
  children: XmlNode[]
}

/** Text (already unescaped) or an element. */
export type XmlNode = XmlElement | string

export interface PidfNote {
  text: string
  lang?: string
}

export type BasicStatus = 'open' | 'closed'

export interface PidfStatus {
  basic?: BasicStatus
  /** status extension elements (RPID etc.), in document order */
  extra: XmlElement[]
}

export interface PidfContact {
  uri: string
  /** decimal in [0, 1], as written */
  priority?: string
}

export interface PidfTuple {
  id: string
  status: PidfStatus
  /** tuple extension elements (outside the PIDF namespace), in document order */
  extra: XmlElement[]
  contact?: PidfContact
  notes: PidfNote[]
  /** xs:dateTime as written */
  timestamp?: string
}

export interface PidfDocument {
  /** the presentity URI (`pres:` or `sip:`) */
  entity: string
  tuples: PidfTuple[]
  notes: PidfNote[]
  /** presence-level extension elements (RPID person/device, …), in document order */
  extra: XmlElement[]
}

export interface PidfLimits {
  /**
   * Largest body accepted, in bytes (UTF-8)
   * @default 65536
   */
  maxBytes?: number
  /**
   * Deepest element nesting accepted
   * @default 32
   */
  maxDepth?: number
  /**
   * Most elements in one document
   * @default 2048
   */
  maxElements?: number
  /**
   * Most attributes (namespace declarations included) on one element
   * @default 64
   */
  maxAttributes?: number
}

export const DEFAULT_LIMITS: Required<PidfLimits> = Object.freeze({ maxBytes: 65536, maxDepth: 32, maxElements: 2048, maxAttributes: 64 })
/** no limits given: the defaults, not a copy of them per body */
const NO_LIMITS: PidfLimits = Object.freeze({})

/** what `String.prototype.trim` removes: ECMAScript's WhiteSpace and LineTerminator characters */
function isTrimmed (c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d) || c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff
}

// ---------------------------------------------------------------------------------------------
// parsing

/**
 * fast-xml-parser's options. Exported for a test showing that, even were a DOCTYPE to get past the
 * pre-scan, the library would not expand the entities it declares.
 */
export const PARSER_OPTIONS = Object.freeze({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '',
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: false,
  // entity handling is ours: no DTD is accepted, and only predefined entities are decoded below
  processEntities: false,
  htmlEntities: false,
  cdataPropName: '#cdata',
  ignoreDeclaration: true,
  ignorePiTags: true,
  // the real depth cap is checked before parsing; this is a backstop
  maxNestedTags: 256
} as const)

const parser = new XMLParser(PARSER_OPTIONS)
/** one decoder for every body: a fatal decoder keeps no state between `decode` calls */
const utf8 = new TextDecoder('utf-8', { fatal: true })

type OrderedNode = Record<string, unknown>

const NAME_RE = /^[A-Za-z_][\w.-]*$/u
const URI_RE = /^[A-Za-z][A-Za-z0-9+.-]*:[^\s<>"]+$/u
const DATETIME_RE = /^-?\d{4,}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$/u
const PRIORITY_RE = /^(0(\.\d{0,3})?|1(\.0{0,3})?|\.\d{1,3})$/u
/** the encoding an XML declaration names (a literal in the function was a new RegExp per body) */
const DECLARED_ENCODING_RE = /^\s*<\?xml\s[^>]*?encoding\s*=\s*["']([^"']*)["']/u
const UTF8_RE = /^utf-?8$/iu

/** Parse and validate a PIDF body. Throws `PidfError` on anything malformed, oversized or hostile. */
export function parsePidf (body: string | Uint8Array, limits: PidfLimits = NO_LIMITS): PidfDocument {
  return toDocument(parseXmlRoot(body, limits))
}

/**
 * The hardened XML reading behind `parsePidf`, for the other XML bodies of the presence packages
 * (dialog-info, watcherinfo, resource lists): size, encoding, DOCTYPE, depth, element and attribute
 * caps as above; returns the namespace-resolved root element. Throws `PidfError`.
 */
export function parseXmlRoot (body: string | Uint8Array, limits: PidfLimits = NO_LIMITS): XmlElement {
  const lim = limits === NO_LIMITS ? DEFAULT_LIMITS : { ...DEFAULT_LIMITS, ...limits }
  let text: string
  if (typeof body === 'string') {
    // UTF-8 never takes fewer bytes than UTF-16 code units: a long string fails without counting
    if (body.length > lim.maxBytes || Buffer.byteLength(body, 'utf8') > lim.maxBytes) throw new PidfError(`body larger than ${lim.maxBytes} bytes`)
    text = body
  } else {
    if (body.byteLength > lim.maxBytes) throw new PidfError(`body larger than ${lim.maxBytes} bytes`)
    try {
      text = utf8.decode(body)
    } catch (err) {
      throw new PidfError('body is not valid UTF-8', { cause: err })
    }
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
  // the first and last characters that `trim` would keep (no trimmed copies of the text)
  let first = 0
  while (first < text.length && isTrimmed(text.charCodeAt(first))) first++
  if (first === text.length) throw new PidfError('empty body')
  let last = text.length - 1
  while (isTrimmed(text.charCodeAt(last))) last--
  if (NON_XML_CHAR.test(text)) throw new PidfError('character not allowed in XML')
  if (text.includes('<!DOCTYPE') || text.includes('<!ENTITY')) throw new PidfError('DOCTYPE and entity declarations are not allowed')
  if (text.charCodeAt(first) !== 0x3c || text.charCodeAt(last) !== 0x3e) throw new PidfError('text outside the root element')
  const declared = text.charCodeAt(first + 1) === 0x3f ? DECLARED_ENCODING_RE.exec(text) : null
  if (declared !== null && !UTF8_RE.test(declared[1])) throw new PidfError(`encoding '${declared[1].slice(0, 20)}' is not UTF-8`)
  scanMarkup(text, lim.maxDepth)
  return readCommonXml(text, lim) ?? readXmlWithLibrary(text, lim)
}

/**
 * The full reader: fast-xml-parser's validator and parser, then our namespace resolution. For
 * text that passed `parseXmlRoot`'s checks; exported for the test that compares it with
 * `readCommonXml`.
 */
export function readXmlWithLibrary (text: string, lim: Required<PidfLimits>): XmlElement {
  let ordered: OrderedNode[]
  try {
    const valid = XMLValidator.validate(text)
    if (valid !== true) throw new PidfError(`not well-formed XML: ${valid.err.msg} (line ${valid.err.line})`)
    ordered = parser.parse(text) as OrderedNode[]
  } catch (err) {
    if (err instanceof PidfError) throw err
    throw new PidfError(`not well-formed XML: ${(err as Error)?.message ?? String(err)}`, { cause: err })
  }

  const counter = { elements: 0 }
  const roots: XmlElement[] = []
  for (const node of ordered) {
    const converted = convert(node, new Map([['xml', XML_NS]]), lim, counter, 1)
    if (typeof converted === 'string') {
      if (converted.trim() !== '') throw new PidfError('text outside the root element')
    } else if (converted !== undefined) {
      roots.push(converted)
    }
  }
  if (roots.length !== 1) throw new PidfError(roots.length === 0 ? 'no root element' : 'more than one root element')
  return roots[0]
}

// ---------------------------------------------------------------------------------------------
// the common case without the library

/** `version`, `encoding`, `standalone`, as an XML declaration writes them (no other spacing); sticky: `lastIndex` is its end */
const DECLARATION_RE = /<\?xml version=(?:"1\.0"|'1\.0')(?: encoding=(?:"[A-Za-z][\w.-]*"|'[A-Za-z][\w.-]*'))?(?: standalone=(?:"(?:yes|no)"|'(?:yes|no)'))? ?\?>/uy

const isSpace = (c: number): boolean => c === 0x20 || c === 0x0a || c === 0x09 || c === 0x0d
/** an ASCII name's first character (letter); `_` is left to the library, like any other name */
const isNameStart = (c: number): boolean => (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a)
/** an ASCII name's other characters: letters, digits, `_`, `.`, `-` */
const isNameChar = (c: number): boolean => isNameStart(c) || (c >= 0x30 && c <= 0x39) || c === 0x5f || c === 0x2e || c === 0x2d

/** where the ASCII name at `i` ends (`i` when there is none), or -1 past a second colon */
function nameEnd (text: string, i: number): number {
  if (!isNameStart(text.charCodeAt(i))) return i
  let colon = -1
  let j = i + 1
  for (; j < text.length; j++) {
    const c = text.charCodeAt(j)
    if (c === 0x3a) {
      if (colon !== -1 || !isNameStart(text.charCodeAt(j + 1))) return -1
      colon = j
    } else if (!isNameChar(c)) {
      break
    }
  }
  return j
}

/** `text[from, to)` as the library reads it (CR LF and CR as LF), decoded; undefined where the library would judge it */
function decodedOrUndefined (text: string, from: number, to: number): string | undefined {
  let raw = text.slice(from, to)
  if (raw.includes('\r')) raw = raw.replace(/\r\n?/gu, '\n')
  if (!raw.includes('&')) return raw
  try { return decodeXmlText(raw) } catch { return undefined }
}

/** namespace bindings in scope: one link per declaration, the innermost first */
interface Scope { readonly prefix: string, readonly ns: string, readonly up: Scope | undefined }
const TOP_SCOPE: Scope = { prefix: 'xml', ns: XML_NS, up: undefined }
function lookupNs (scope: Scope | undefined, prefix: string): string | undefined {
  for (let s = scope; s !== undefined; s = s.up) if (s.prefix === prefix) return s.ns
  return undefined
}

// Reused by every call (it never yields), written by index and never shrunk (an array emptied by
// `length = 0` gives its room back, and the next push allocates it again): the open elements,
// their names and scopes, the children read so far (copied out at each end tag into an array of
// their exact size: one grown by push from empty holds room for 17), one start tag's attributes.
const openElements: Array<XmlElement | undefined> = []
const openNames: string[] = []
const openScopes: Scope[] = []
const openChildren: number[] = []
const pending: Array<XmlNode | undefined> = []
const attrNames: string[] = []
const attrValues: string[] = []
/** the children of an element that has none: one array, frozen (a change would throw, not spread) */
const NO_CHILDREN = Object.freeze([]) as unknown as XmlNode[]

/**
 * The same tree as `readXmlWithLibrary` for the documents user agents send (an XML declaration,
 * elements with ASCII names, quoted attributes, text with the predefined entities and character
 * references), read in one pass with no intermediate tree; undefined for anything else (comments,
 * CDATA, processing instructions, other names or spacing, a limit or any rule broken), which the
 * full reader then judges and reports. It accepts only well-formed documents, so the library never
 * accepts less; line ends in text and attribute values are normalized as the library does (CR LF
 * and CR to LF). The library's validator and parser were two thirds of the bytes a PUBLISH
 * allocated (issue 11).
 */
export function readCommonXml (text: string, lim: Required<PidfLimits>): XmlElement | undefined {
  const root = readCommon(text, lim)
  // no tree kept alive by the reused arrays
  openElements.fill(undefined)
  pending.fill(undefined)
  return root
}

function readCommon (text: string, lim: Required<PidfLimits>): XmlElement | undefined {
  let i = 0
  if (text.charCodeAt(0) === 0x3c && text.charCodeAt(1) === 0x3f) {
    DECLARATION_RE.lastIndex = 0
    if (!DECLARATION_RE.test(text)) return undefined
    i = DECLARATION_RE.lastIndex
  }
  while (isSpace(text.charCodeAt(i))) i++
  let root: XmlElement | undefined
  let elements = 0
  let depth = 0
  let children = 0
  while (i < text.length) {
    if (text.charCodeAt(i) !== 0x3c) {
      // text: only inside the root element, and without `>` (left to the library)
      if (depth === 0) {
        for (; i < text.length; i++) if (!isSpace(text.charCodeAt(i))) return undefined
        break
      }
      const lt = text.indexOf('<', i)
      if (lt === -1) return undefined
      const gt = text.indexOf('>', i)
      if (gt !== -1 && gt < lt) return undefined
      const value = decodedOrUndefined(text, i, lt)
      if (value === undefined) return undefined
      pending[children++] = value
      i = lt
      continue
    }
    const c = text.charCodeAt(i + 1)
    if (c === 0x2f) {
      // an end tag: the open element's name, then `>` at once
      if (depth === 0) return undefined
      const qname = openNames[depth - 1]
      const end = i + 2 + qname.length
      if (!text.startsWith(qname, i + 2) || text.charCodeAt(end) !== 0x3e) return undefined
      depth--
      const from = openChildren[depth]
      if (children > from) {
        (openElements[depth] as XmlElement).children = pending.slice(from, children) as XmlNode[]
        children = from
      }
      i = end + 1
      if (depth === 0) {
        for (; i < text.length; i++) if (!isSpace(text.charCodeAt(i))) return undefined
      }
      continue
    }
    // a start tag (a second root, a comment, CDATA or a processing instruction: the library's)
    if (root !== undefined && depth === 0) return undefined
    const tagStart = i
    const nameStop = nameEnd(text, i + 1)
    if (nameStop <= i + 1) return undefined
    if (depth + 1 > lim.maxDepth || ++elements > lim.maxElements) return undefined
    let scope = depth === 0 ? TOP_SCOPE : openScopes[depth - 1]
    let j = nameStop
    let empty = false
    let count = 0
    let plain = 0
    while (true) {
      const spaced = isSpace(text.charCodeAt(j))
      while (isSpace(text.charCodeAt(j))) j++
      const d = text.charCodeAt(j)
      if (d === 0x3e) { j++; break }
      if (d === 0x2f) {
        if (text.charCodeAt(j + 1) !== 0x3e) return undefined
        empty = true
        j += 2
        break
      }
      // an attribute: after a space, name="value" or name='value'
      if (!spaced) return undefined
      const aStop = nameEnd(text, j)
      if (aStop <= j || text.charCodeAt(aStop) !== 0x3d) return undefined
      const quote = text.charCodeAt(aStop + 1)
      if (quote !== 0x22 && quote !== 0x27) return undefined
      const close = text.indexOf(quote === 0x22 ? '"' : "'", aStop + 2)
      if (close === -1) return undefined
      for (let k = aStop + 2; k < close; k++) {
        const v = text.charCodeAt(k)
        if (v === 0x3c || v === 0x3e) return undefined
      }
      const value = decodedOrUndefined(text, aStop + 2, close)
      if (value === undefined) return undefined
      if (count >= lim.maxAttributes) return undefined
      const name = text.slice(j, aStop)
      for (let k = 0; k < count; k++) if (attrNames[k] === name) return undefined
      if (name === 'xmlns' || name.startsWith('xmlns:')) {
        const prefix = name === 'xmlns' ? '' : name.slice(6)
        if (prefix === 'xmlns' || prefix === 'xml' || (prefix !== '' && value === '')) return undefined
        scope = { prefix, ns: value, up: scope }
      } else {
        plain++
      }
      attrNames[count] = name
      attrValues[count] = value
      count++
      j = close + 1
    }
    const colon = text.indexOf(':', i + 1)
    const prefixed = colon !== -1 && colon < nameStop
    const ns = lookupNs(scope, prefixed ? text.slice(i + 1, colon) : '')
    if (prefixed && ns === undefined) return undefined
    const attrs: XmlAttribute[] = plain === 0 ? [] : new Array(plain)
    let n = 0
    for (let k = 0; k < count; k++) {
      const name = attrNames[k]
      if (name === 'xmlns' || name.startsWith('xmlns:')) continue
      const value = attrValues[k]
      const at = name.indexOf(':')
      if (at === -1) {
        for (let a = 0; a < n; a++) if (attrs[a].ns === '' && attrs[a].name === name) return undefined
        attrs[n++] = { ns: '', name, value }
        continue
      }
      const aPrefix = name.slice(0, at)
      const local = name.slice(at + 1)
      const aNs = lookupNs(scope, aPrefix)
      if (aNs === undefined) return undefined
      for (let a = 0; a < n; a++) if (attrs[a].ns === aNs && attrs[a].name === local) return undefined
      attrs[n++] = { ns: aNs, name: local, prefix: aPrefix, value }
    }
    // no children yet: the shared frozen empty array until an end tag copies some out
    const el: XmlElement = { ns: ns ?? '', name: text.slice(prefixed ? colon + 1 : i + 1, nameStop), attrs, children: NO_CHILDREN }
    if (prefixed) el.prefix = text.slice(i + 1, colon)
    if (depth > 0) pending[children++] = el
    else root = el
    i = j
    if (!empty) {
      openElements[depth] = el
      openNames[depth] = text.slice(tagStart + 1, nameStop)
      openScopes[depth] = scope
      openChildren[depth] = children
      depth++
    } else if (depth === 0) {
      for (; i < text.length; i++) if (!isSpace(text.charCodeAt(i))) return undefined
    }
  }
  return depth === 0 ? root : undefined
}

/**
 * A cheap, linear scan before the XML library sees the text: refuses deep nesting (start tags minus
 * end tags, skipping comments, CDATA, processing instructions and self-closing tags) and any markup
 * declaration (`<!` that opens neither a comment nor a CDATA section, whatever its case or spacing).
 */
function scanMarkup (text: string, maxDepth: number): void {
  let depth = 0
  let i = 0
  while (true) {
    i = text.indexOf('<', i)
    if (i < 0) return
    const next = text[i + 1]
    if (next === '!') {
      const comment = text.startsWith('<!--', i)
      if (!comment && !text.startsWith('<![CDATA[', i)) throw new PidfError('DOCTYPE and markup declarations are not allowed')
      const end = comment ? text.indexOf('-->', i + 4) : text.indexOf(']]>', i + 9)
      if (end < 0) return // unterminated: the validator reports it
      i = end + 3
    } else if (next === '?') {
      const end = text.indexOf('?>', i + 2)
      if (end < 0) return
      i = end + 2
    } else if (next === '/') {
      depth--
      i += 2
    } else {
      const end = findTagEnd(text, i + 1)
      if (end < 0) return
      if (text[end - 1] !== '/') {
        depth++
        if (depth > maxDepth) throw new PidfError(`elements nested deeper than ${maxDepth}`)
      }
      i = end + 1
    }
  }
}

/** Index of the `>` closing a start tag, skipping quoted attribute values. */
function findTagEnd (text: string, from: number): number {
  let quote: string | undefined
  for (let i = from; i < text.length; i++) {
    const c = text[i]
    if (quote !== undefined) {
      if (c === quote) quote = undefined
    } else if (c === '"' || c === "'") {
      quote = c
    } else if (c === '>') {
      return i
    }
  }
  return -1
}

const PREDEFINED: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" }

/** Decode the five predefined entities and character references; anything else is an error. */
export function decodeXmlText (raw: string): string {
  if (!raw.includes('&')) return raw
  return raw.replace(/&([^;&\s<]{0,16});?/gu, (match, ref: string) => {
    if (!match.endsWith(';')) throw new PidfError("bare '&' in text or attribute value")
    if (ref.startsWith('#')) {
      const code = ref[1] === 'x' ? (/^#x[0-9A-Fa-f]{1,6}$/u.test(ref) ? parseInt(ref.slice(2), 16) : NaN) : (/^#\d{1,7}$/u.test(ref) ? parseInt(ref.slice(1), 10) : NaN)
      if (!isXmlChar(code)) throw new PidfError(`invalid character reference &${ref};`)
      return String.fromCodePoint(code)
    }
    const value = Object.hasOwn(PREDEFINED, ref) ? PREDEFINED[ref] : undefined
    if (value === undefined) throw new PidfError(`undefined entity &${ref};`)
    return value
  })
}

function isXmlChar (code: number): boolean {
  if (!Number.isInteger(code)) return false
  return code === 0x9 || code === 0xa || code === 0xd || (code >= 0x20 && code <= 0xd7ff) ||
    (code >= 0xe000 && code <= 0xfffd) || (code >= 0x10000 && code <= 0x10ffff)
}

function splitQName (qname: string): { prefix?: string, local: string } {
  const colon = qname.indexOf(':')
  if (colon < 0) return { local: qname }
  const prefix = qname.slice(0, colon)
  const local = qname.slice(colon + 1)
  if (prefix === '' || local === '' || local.includes(':')) throw new PidfError(`invalid qualified name '${qname}'`)
  return { prefix, local }
}

function convert (node: OrderedNode, parentScope: Map<string, string>, lim: Required<PidfLimits>, counter: { elements: number }, depth: number): XmlNode | undefined {
  const keys = Object.keys(node).filter(k => k !== ':@')
  if (keys.length !== 1) throw new PidfError('unexpected parser output')
  const key = keys[0]
  if (key === '#text') return decodeXmlText(String(node[key]))
  if (key === '#cdata') {
    const parts = node[key] as OrderedNode[]
    return parts.map(p => String(p['#text'] ?? '')).join('')
  }
  if (depth > lim.maxDepth) throw new PidfError(`elements nested deeper than ${lim.maxDepth}`)
  if (++counter.elements > lim.maxElements) throw new PidfError(`more than ${lim.maxElements} elements`)

  const rawAttrs = (node[':@'] ?? {}) as Record<string, unknown>
  const attrNames = Object.keys(rawAttrs)
  if (attrNames.length > lim.maxAttributes) throw new PidfError(`more than ${lim.maxAttributes} attributes on <${key}>`)

  let scope = parentScope
  const plain: Array<[string, string]> = []
  for (const name of attrNames) {
    const raw = String(rawAttrs[name])
    if (raw.includes('<')) throw new PidfError(`'<' in the value of attribute '${name}'`)
    const value = decodeXmlText(raw)
    if (name === 'xmlns' || name.startsWith('xmlns:')) {
      if (scope === parentScope) scope = new Map(parentScope)
      const prefix = name === 'xmlns' ? '' : name.slice(6)
      if (prefix === 'xmlns' || (prefix === 'xml' && value !== XML_NS)) throw new PidfError(`reserved prefix '${prefix}' redeclared`)
      if (prefix !== '' && value === '') throw new PidfError(`prefix '${prefix}' undeclared with an empty namespace`)
      if (prefix !== '' && !NAME_RE.test(prefix)) throw new PidfError(`invalid prefix '${prefix}'`)
      scope.set(prefix, value)
    } else {
      plain.push([name, value])
    }
  }

  const { prefix, local } = splitQName(key)
  if (!NAME_RE.test(local)) throw new PidfError(`invalid element name '${key}'`)
  const ns = scope.get(prefix ?? '')
  if (prefix !== undefined && ns === undefined) throw new PidfError(`unbound prefix '${prefix}' on <${key}>`)

  const attrs: XmlAttribute[] = []
  const seen = new Set<string>()
  for (const [name, value] of plain) {
    const q = splitQName(name)
    if (!NAME_RE.test(q.local)) throw new PidfError(`invalid attribute name '${name}'`)
    const attrNs = q.prefix === undefined ? '' : scope.get(q.prefix)
    if (attrNs === undefined) throw new PidfError(`unbound prefix '${q.prefix}' on attribute '${name}'`)
    const expanded = `${attrNs} ${q.local}`
    if (seen.has(expanded)) throw new PidfError(`attribute '${name}' repeated`)
    seen.add(expanded)
    attrs.push(q.prefix === undefined ? { ns: attrNs, name: q.local, value } : { ns: attrNs, name: q.local, prefix: q.prefix, value })
  }

  const children: XmlNode[] = []
  for (const child of node[key] as OrderedNode[]) {
    const converted = convert(child, scope, lim, counter, depth + 1)
    if (converted === undefined) continue
    const last = children[children.length - 1]
    if (typeof converted === 'string' && typeof last === 'string') children[children.length - 1] = last + converted
    else children.push(converted)
  }
  const element: XmlElement = { ns: ns ?? '', name: local, attrs, children }
  if (prefix !== undefined) element.prefix = prefix
  return element
}

function textOf (el: XmlElement, what: string): string {
  let out = ''
  for (const c of el.children) {
    if (typeof c !== 'string') throw new PidfError(`<${what}> must contain only text`)
    out += c
  }
  return out.trim()
}

function attr (el: XmlElement, name: string, ns = ''): string | undefined {
  for (const a of el.attrs) if (a.name === name && a.ns === ns) return a.value
  return undefined
}

function isPidf (el: XmlElement, name: string): boolean {
  return el.ns === PIDF_NS && el.name === name
}

function toNote (el: XmlElement): PidfNote {
  const note: PidfNote = { text: textOf(el, 'note') }
  const lang = attr(el, 'lang', XML_NS)
  if (lang !== undefined) note.lang = lang
  return note
}

/** Drop whitespace-only text between elements of an extension tree (pretty-printing noise). */
function tidy (el: XmlElement): XmlElement {
  const hasElements = el.children.some(c => typeof c !== 'string')
  const children = el.children
    .filter(c => !(hasElements && typeof c === 'string' && c.trim() === ''))
    .map(c => typeof c === 'string' ? c : tidy(c))
  return { ...el, children }
}

function toDocument (root: XmlElement): PidfDocument {
  if (root.name !== 'presence' || root.ns !== PIDF_NS) {
    throw new PidfError(`root element must be <presence> in namespace ${PIDF_NS}, got <${root.name}>${root.ns === '' ? ' without namespace' : ` in ${root.ns}`}`)
  }
  const entity = attr(root, 'entity')?.trim()
  if (entity === undefined || entity === '') throw new PidfError('<presence> has no entity attribute')
  if (!URI_RE.test(entity)) throw new PidfError(`entity '${entity}' is not a URI`)

  const doc: PidfDocument = { entity, tuples: [], notes: [], extra: [] }
  // the tuple ids seen, once there are two tuples (most documents have one)
  let ids: Set<string> | undefined
  for (const child of root.children) {
    if (typeof child === 'string') {
      if (child.trim() !== '') throw new PidfError('text directly inside <presence>')
      continue
    }
    if (isPidf(child, 'tuple')) {
      const tuple = toTuple(child)
      if (doc.tuples.length === 1) ids = new Set([doc.tuples[0].id])
      if (ids?.has(tuple.id) === true) throw new PidfError(`tuple id '${tuple.id}' is not unique`)
      ids?.add(tuple.id)
      doc.tuples.push(tuple)
    } else if (isPidf(child, 'note')) {
      doc.notes.push(toNote(child))
    } else {
      doc.extra.push(tidy(child))
    }
  }
  return doc
}

function toTuple (el: XmlElement): PidfTuple {
  const id = attr(el, 'id')
  if (id === undefined || id === '') throw new PidfError('<tuple> has no id attribute')
  if (!NAME_RE.test(id) || id.includes(':')) throw new PidfError(`tuple id '${id}' is not a valid xs:ID`)
  let status: PidfStatus | undefined
  const tuple: PidfTuple = { id, status: { extra: [] }, extra: [], notes: [] }
  for (const child of el.children) {
    if (typeof child === 'string') {
      if (child.trim() !== '') throw new PidfError(`text directly inside <tuple id="${id}">`)
      continue
    }
    if (isPidf(child, 'status')) {
      if (status !== undefined) throw new PidfError(`tuple '${id}' has more than one <status>`)
      status = toStatus(child, id)
    } else if (isPidf(child, 'contact')) {
      if (tuple.contact !== undefined) throw new PidfError(`tuple '${id}' has more than one <contact>`)
      const uri = textOf(child, 'contact')
      if (uri === '') throw new PidfError(`tuple '${id}' has an empty <contact>`)
      const contact: PidfContact = { uri }
      const priority = attr(child, 'priority')
      if (priority !== undefined) {
        if (!PRIORITY_RE.test(priority.trim())) throw new PidfError(`contact priority '${priority}' is not a decimal between 0 and 1`)
        contact.priority = priority.trim()
      }
      tuple.contact = contact
    } else if (isPidf(child, 'note')) {
      tuple.notes.push(toNote(child))
    } else if (isPidf(child, 'timestamp')) {
      if (tuple.timestamp !== undefined) throw new PidfError(`tuple '${id}' has more than one <timestamp>`)
      const ts = textOf(child, 'timestamp')
      if (!DATETIME_RE.test(ts)) throw new PidfError(`timestamp '${ts}' is not an xs:dateTime`)
      tuple.timestamp = ts
    } else {
      tuple.extra.push(tidy(child))
    }
  }
  if (status === undefined) throw new PidfError(`tuple '${id}' has no <status>`)
  tuple.status = status
  return tuple
}

function toStatus (el: XmlElement, tupleId: string): PidfStatus {
  const status: PidfStatus = { extra: [] }
  for (const child of el.children) {
    if (typeof child === 'string') {
      if (child.trim() !== '') throw new PidfError(`text directly inside <status> of tuple '${tupleId}'`)
      continue
    }
    if (isPidf(child, 'basic')) {
      if (status.basic !== undefined) throw new PidfError(`tuple '${tupleId}' has more than one <basic>`)
      const basic = textOf(child, 'basic')
      if (basic !== 'open' && basic !== 'closed') throw new PidfError(`<basic> must be open or closed, got '${basic.slice(0, 32)}'`)
      status.basic = basic
    } else {
      status.extra.push(tidy(child))
    }
  }
  return status
}

// ---------------------------------------------------------------------------------------------
// building

const builder = new XMLBuilder({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '',
  // values are escaped by us (escapeText / escapeAttr) so the output is exact
  processEntities: false,
  suppressEmptyNode: true
})

// Characters XML 1.0 cannot carry at all (controls, lone surrogates, U+FFFE/U+FFFF): written as U+FFFD.
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const NON_XML_CHARS = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff\ud800-\udfff]/gu
/** the same, for a test (not global: `test` keeps no position between calls) */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const NON_XML_CHAR = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff\ud800-\udfff]/u

/** Escape character data; characters XML cannot carry become U+FFFD. */
export function escapeText (s: string): string {
  return s.replace(NON_XML_CHARS, '\ufffd').replace(/[&<>\r]/gu, c => c === '&' ? '&amp;' : c === '<' ? '&lt;' : c === '>' ? '&gt;' : '&#13;')
}

/** Escape an attribute value (double-quoted); whitespace characters are kept as references. */
export function escapeAttr (s: string): string {
  return s.replace(NON_XML_CHARS, '\ufffd').replace(/[&<>"\t\n\r]/gu, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', '\t': '&#9;', '\n': '&#10;', '\r': '&#13;' })[c] as string)
}

/** Namespace → prefix, chosen once per document and declared on the root. */
class Prefixes {
  readonly byNs = new Map<string, string>([[XML_NS, 'xml']])
  private readonly used = new Set<string>(['xml', 'xmlns'])

  add (ns: string, hint: string | undefined): void {
    if (ns === '' || this.byNs.has(ns)) return
    let base = hint !== undefined && NAME_RE.test(hint) && !hint.toLowerCase().startsWith('xml') ? hint : 'ns'
    if (base === '') base = 'ns'
    let prefix = base
    for (let n = 1; this.used.has(prefix); n++) prefix = `${base}${n}`
    this.used.add(prefix)
    this.byNs.set(ns, prefix)
  }

  collect (el: XmlElement): void {
    // PIDF elements use the default namespace; a prefix for PIDF is only needed by attributes
    if (el.ns !== PIDF_NS) this.add(el.ns, el.prefix)
    for (const a of el.attrs) if (a.ns !== '') this.add(a.ns, a.prefix)
    for (const c of el.children) if (typeof c !== 'string') this.collect(c)
  }
}

type Ordered = Record<string, unknown>

function pidfElement (name: string, children: Ordered[], attrs?: Record<string, string>): Ordered {
  const out: Ordered = { [name]: children }
  if (attrs !== undefined && Object.keys(attrs).length > 0) out[':@'] = attrs
  return out
}

function textNode (s: string): Ordered {
  return { '#text': escapeText(s) }
}

function noteElement (note: PidfNote): Ordered {
  return pidfElement('note', [textNode(note.text)], note.lang === undefined ? undefined : { 'xml:lang': escapeAttr(note.lang) })
}

/** Serialize an extension element. `defaultNs` is the default namespace in scope at this point. */
function extraElement (el: XmlElement, prefixes: Prefixes, defaultNs: string): Ordered {
  const attrs: Record<string, string> = {}
  let name: string
  let inner = defaultNs
  if (el.ns === defaultNs) {
    name = el.name
  } else if (el.ns === '') {
    // an element in no namespace below a default namespace: undeclare it
    attrs.xmlns = ''
    inner = ''
    name = el.name
  } else if (prefixes.byNs.has(el.ns)) {
    name = `${prefixes.byNs.get(el.ns) as string}:${el.name}`
  } else {
    // a PIDF element below an element in no namespace: declare the default namespace again
    attrs.xmlns = escapeAttr(el.ns)
    inner = el.ns
    name = el.name
  }
  for (const a of el.attrs) {
    const key = a.ns === '' ? a.name : `${prefixes.byNs.get(a.ns) as string}:${a.name}`
    attrs[key] = escapeAttr(a.value)
  }
  const children = el.children.map(c => typeof c === 'string' ? textNode(c) : extraElement(c, prefixes, inner))
  return pidfElement(name, children, attrs)
}

/**
 * Build a PIDF document (UTF-8, with an XML declaration). Extension elements are written with
 * their original prefixes where these do not clash, declared once on `<presence>`.
 */
export function buildPidf (doc: PidfDocument): string {
  const prefixes = new Prefixes()
  const all = [...doc.extra, ...doc.tuples.flatMap(t => [...t.extra, ...t.status.extra])]
  for (const el of all) prefixes.collect(el)

  const rootAttrs: Record<string, string> = { xmlns: PIDF_NS }
  for (const [ns, prefix] of prefixes.byNs) if (ns !== XML_NS) rootAttrs[`xmlns:${prefix}`] = escapeAttr(ns)
  rootAttrs.entity = escapeAttr(doc.entity)

  const children: Ordered[] = []
  for (const t of doc.tuples) {
    const status: Ordered[] = []
    if (t.status.basic !== undefined) status.push(pidfElement('basic', [textNode(t.status.basic)]))
    for (const e of t.status.extra) status.push(extraElement(e, prefixes, PIDF_NS))
    const tuple: Ordered[] = [pidfElement('status', status)]
    for (const e of t.extra) tuple.push(extraElement(e, prefixes, PIDF_NS))
    if (t.contact !== undefined) {
      tuple.push(pidfElement('contact', [textNode(t.contact.uri)], t.contact.priority === undefined ? undefined : { priority: escapeAttr(t.contact.priority) }))
    }
    for (const n of t.notes) tuple.push(noteElement(n))
    if (t.timestamp !== undefined) tuple.push(pidfElement('timestamp', [textNode(t.timestamp)]))
    children.push(pidfElement('tuple', tuple, { id: escapeAttr(t.id) }))
  }
  for (const n of doc.notes) children.push(noteElement(n))
  for (const e of doc.extra) children.push(extraElement(e, prefixes, PIDF_NS))

  return '<?xml version="1.0" encoding="UTF-8"?>\n' + (builder.build([pidfElement('presence', children, rootAttrs)]) as string)
}

export const PIDF_CONTENT_TYPE = 'application/pidf+xml'
