/**
 * The watcher information body (RFC 3858): `application/watcherinfo+xml`. Built by the
 * `presence.winfo` package; parsed (with pidf.ts's hardened XML reader) where a document comes
 * back: the watcher node reading its owner's canonical document, and tests. Checked: the root's
 * `version` and `state`, each `watcher-list` with `resource` and `package`, each `watcher` with
 * `id`, `status` (pending, active, waiting, terminated) and `event`, its text a URI; at most
 * `MAX_WATCHERS` watchers. Failures are `WatcherInfoError` (400).
 */
import { escapeAttr, escapeText, type XmlElement } from './pidf.ts'
import { attrOf as attr, readRoot, textOf, childrenOf, BodyError } from './xml.ts'

export const WATCHERINFO_NS = 'urn:ietf:params:xml:ns:watcherinfo'
export const WATCHERINFO_CONTENT_TYPE = 'application/watcherinfo+xml'
/** most watchers in one document */
export const MAX_WATCHERS = 2000

export const WATCHER_STATUSES = ['pending', 'active', 'waiting', 'terminated'] as const
export type WatcherStatus = typeof WATCHER_STATUSES[number]
/** RFC 3858 4: what made the watcher's subscription change state */
export const WATCHER_EVENTS = ['subscribe', 'approved', 'deactivated', 'probation', 'rejected', 'timeout', 'giveup', 'noresource'] as const
export type WatcherEvent = typeof WATCHER_EVENTS[number]

export class WatcherInfoError extends BodyError {
  static override name = 'WatcherInfoError'
  override name = 'WatcherInfoError'
  constructor (reason: string) { super('watcherinfo', reason) }
}

export interface Watcher {
  id: string
  uri: string
  status: WatcherStatus
  event: WatcherEvent
}

export interface WatcherList {
  resource: string
  package: string
  watchers: Watcher[]
}

export interface WatcherInfo {
  version: number
  state: 'full' | 'partial'
  lists: WatcherList[]
}

const URI_RE = /^[A-Za-z][A-Za-z0-9+.-]*:[^\s<>"]{1,1024}$/u
const ID_RE = /^[\x21-\x7e]{1,256}$/u

function children (el: XmlElement, name: string): XmlElement[] { return childrenOf(el, WATCHERINFO_NS, name) }

/** Parse a watcherinfo document; throws WatcherInfoError on anything malformed, oversized or hostile. */
export function parseWatcherInfo (body: string | Uint8Array): WatcherInfo {
  const root = readRoot(body, { maxBytes: 256 * 1024, maxDepth: 8, maxElements: MAX_WATCHERS + 64 }, reason => new WatcherInfoError(reason))
  if (root.ns !== WATCHERINFO_NS || root.name !== 'watcherinfo') throw new WatcherInfoError('the root is not watcherinfo')
  const version = attr(root, 'version') ?? ''
  if (!/^\d{1,15}$/u.test(version)) throw new WatcherInfoError('malformed version')
  const state = attr(root, 'state')
  if (state !== 'full' && state !== 'partial') throw new WatcherInfoError('state is neither full nor partial')
  const lists: WatcherList[] = []
  let count = 0
  for (const l of children(root, 'watcher-list')) {
    const resource = attr(l, 'resource') ?? ''
    const pkg = attr(l, 'package') ?? ''
    if (!URI_RE.test(resource)) throw new WatcherInfoError('resource is not a URI')
    if (!/^[A-Za-z0-9\-.!%*_+`'~]{1,64}$/u.test(pkg)) throw new WatcherInfoError('malformed package')
    const watchers: Watcher[] = []
    for (const w of children(l, 'watcher')) {
      if (++count > MAX_WATCHERS) throw new WatcherInfoError(`more than ${MAX_WATCHERS} watchers`)
      const id = attr(w, 'id') ?? ''
      if (!ID_RE.test(id)) throw new WatcherInfoError('watcher without an id')
      const status = attr(w, 'status') as WatcherStatus
      if (!WATCHER_STATUSES.includes(status)) throw new WatcherInfoError('unknown watcher status')
      const event = attr(w, 'event') as WatcherEvent
      if (!WATCHER_EVENTS.includes(event)) throw new WatcherInfoError('unknown watcher event')
      const uri = textOf(w)
      if (!URI_RE.test(uri)) throw new WatcherInfoError('watcher is not a URI')
      watchers.push({ id, uri, status, event })
    }
    lists.push({ resource, package: pkg, watchers })
  }
  return { version: Number(version), state, lists }
}

export function watcherXml (w: Watcher): string {
  return `<watcher id="${escapeAttr(w.id)}" status="${w.status}" event="${w.event}">${escapeText(w.uri)}</watcher>`
}

export function buildWatcherInfo (doc: WatcherInfo): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<watcherinfo xmlns="${WATCHERINFO_NS}" version="${doc.version}" state="${doc.state}">` +
    doc.lists.map(l => `<watcher-list resource="${escapeAttr(l.resource)}" package="${escapeAttr(l.package)}">${l.watchers.map(watcherXml).join('')}</watcher-list>`).join('') +
    '</watcherinfo>'
}
