/**
 * Small readers over pidf.ts's namespace-resolved XML trees, shared by the bodies of the event
 * packages (dialog-info, watcherinfo): the root through the hardened reader with the body's own
 * error class, attributes, children in one namespace, text.
 */
import { PidfError, parseXmlRoot, type PidfLimits, type XmlElement } from './pidf.ts'

/** the root element of a body; the reader's failures become `fail(reason)` */
export function readRoot (body: string | Uint8Array, limits: PidfLimits, fail: (reason: string) => Error): XmlElement {
  try {
    return parseXmlRoot(body, limits)
  } catch (err) {
    if (err instanceof PidfError) throw fail(err.reason)
    throw err
  }
}

/** an unqualified attribute's value */
export function attrOf (el: XmlElement, name: string): string | undefined {
  return el.attrs.find(a => a.ns === '' && a.name === name)?.value
}

/** the child elements of one namespace and name, in order */
export function childrenOf (el: XmlElement, ns: string, name: string): XmlElement[] {
  return el.children.filter((c): c is XmlElement => typeof c !== 'string' && c.ns === ns && c.name === name)
}

/** the element's own text, trimmed */
export function textOf (el: XmlElement): string {
  return el.children.filter((c): c is string => typeof c === 'string').join('').trim()
}

/** A malformed, oversized or hostile body of one of the packages (the agent answers 400). */
export class BodyError extends Error {
  /** a short human-readable explanation (the 400's reason text) */
  readonly reason: string
  constructor (what: string, reason: string) {
    // reasons quote the input: keep them short whatever the input
    const short = reason.length > 200 ? `${reason.slice(0, 200)}…` : reason
    super(`invalid ${what}: ${short}`)
    this.reason = short
  }
}
