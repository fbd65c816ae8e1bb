/**
 * RFC 4826 3.2 resource-lists documents (`application/resource-lists+xml`), as an ad hoc list
 * SUBSCRIBE carries them (RFC 5367) or an operator uploads them: read with pidf.ts's hardened XML
 * reader (no DOCTYPE, so no entity expansion; size, depth and element count bounded) and flattened
 * into the member URIs of every `<entry>`, nested `<list>`s included (depth bounded by the reader).
 * `<entry-ref>` and `<external>` are refused: resolving them would make the server fetch other
 * documents (XCAP, or any URI) on a stranger's behalf, and lets lists point at each other. At most
 * `maxEntries` distinct members; more is a `ResourceListsError` with status 413.
 */
import type { Aor } from '../../ports.ts'
import { BodyError, attrOf, readRoot } from '../xml.ts'
import type { XmlElement } from '../pidf.ts'
import { ListError, MAX_LIST_MEMBERS, listAor } from './list.ts'

export const RESOURCE_LISTS_NS = 'urn:ietf:params:xml:ns:resource-lists'
export const RESOURCE_LISTS_CONTENT_TYPE = 'application/resource-lists+xml'

export class ResourceListsError extends BodyError {
  static override name = 'ResourceListsError'
  override name = 'ResourceListsError'
  readonly status: number
  constructor (reason: string, status = 400) {
    super('resource-lists', reason)
    this.status = status
  }
}

export interface ResourceListsLimits {
  /** @default MAX_LIST_MEMBERS */
  maxEntries?: number
  /** @default 65536 */
  maxBytes?: number
}

/** the distinct member AoRs of a resource-lists document, in document order */
export function parseResourceLists (body: string | Uint8Array, limits: ResourceListsLimits = {}): Aor[] {
  const maxEntries = limits.maxEntries ?? MAX_LIST_MEMBERS
  const root = readRoot(body, { maxBytes: limits.maxBytes ?? 65536, maxDepth: 16, maxElements: 2 * maxEntries + 64 }, reason => new ResourceListsError(reason))
  if (root.ns !== RESOURCE_LISTS_NS || root.name !== 'resource-lists') throw new ResourceListsError('the root is not resource-lists')
  const out = new Set<Aor>()
  const walk = (el: XmlElement): void => {
    for (const c of el.children) {
      if (typeof c === 'string' || c.ns !== RESOURCE_LISTS_NS) continue
      if (c.name === 'list') walk(c)
      else if (c.name === 'entry') {
        let aor: Aor
        try { aor = listAor(attrOf(c, 'uri'), 'an entry uri') } catch (err) {
          throw new ResourceListsError(err instanceof ListError ? err.message : 'bad entry')
        }
        out.add(aor)
        if (out.size > maxEntries) throw new ResourceListsError(`more than ${maxEntries} entries`, 413)
      } else if (c.name === 'entry-ref' || c.name === 'external') {
        throw new ResourceListsError(`${c.name} is not supported (list the members with entry)`)
      }
    }
  }
  const lists = root.children.filter((c): c is XmlElement => typeof c !== 'string' && c.ns === RESOURCE_LISTS_NS && c.name === 'list')
  if (lists.length === 0) throw new ResourceListsError('no list element')
  for (const l of lists) walk(l)
  return [...out]
}
