/**
 * One event package (RFC 6665 7.2) as the agent serves it. The agent's rooms (notifier, back-end
 * subscriptions, resources, rules hand-over) know nothing of bodies; what differs between
 * `presence` (RFC 3856), `dialog` (RFC 4235) and `presence.winfo` (RFC 3857) lives behind this
 * interface:
 *
 * - the event name and the body type of its NOTIFYs (and of its PUBLISHes, when it takes any);
 * - who may watch a presentity (`decide`: the authorization rules, or the presentity alone);
 * - how the state of a presentity this node owns is composed (`compose`: one canonical body,
 *   shared by every watcher and sent once over a back-end subscription);
 * - what a watcher who may not see it (polite-block, pending, held) is shown (`neutral`);
 * - how one watcher's NOTIFY body is made from the canonical one (`render`: versions, full or
 *   partial state; absent: the canonical body as it is).
 *
 * A package tells the agent when a presentity's state changed (`onChange`), whatever the source
 * (publications, proxied calls, watchers).
 */
import type { Aor } from '../ports.ts'
import type { Decision } from './authorization.ts'
import type { PublicationStore, PublishResult } from './publications.ts'

/** What a user agent's subscription keeps for `render` between NOTIFYs. */
export interface RenderState {
  /** the version of the last document sent (RFC 4235 4.1, RFC 3858 4.1); -1 before the first */
  version: number
  /** package-specific memory of what was sent (for partial state) */
  last?: unknown
}

export interface PublishInput {
  presentity: Aor
  ifMatch?: string
  expires?: number
  body?: Uint8Array
}

export interface EventPackage {
  /** the Event header value (lower case) */
  readonly name: string
  /** the body type of NOTIFY (and PUBLISH) */
  readonly contentType: string
  /** true when a SUBSCRIBE's Accept values allow our body (none: our default, RFC 6665 7.2) */
  accepts: (accept: readonly string[]) => boolean
  /** whether the watcher may see the presentity's state of this package */
  decide: (aor: Aor, watcher: string) => Decision
  /** the canonical state of a presentity served here */
  compose: (aor: Aor) => Uint8Array
  /** the document a watcher gets while it may not see the state */
  neutral: (aor: Aor) => Uint8Array
  /** one watcher's NOTIFY body (absent: the canonical body) */
  render?: (aor: Aor, canonical: Uint8Array, state: RenderState) => Uint8Array
  /** RFC 3903 PUBLISH of this package (absent: 489) */
  publish?: (input: PublishInput) => PublishResult
  /** entity tags of the live publications of a presentity */
  etags?: (aor: Aor) => string[]
  /** the presentity registered elsewhere: publications made here are stale */
  displaced?: (aor: Aor) => void
  /** tell the agent when a presentity's state changed; returns the unsubscribe */
  onChange: (listener: (aor: Aor) => void) => () => void
  /** drop timers and state */
  stop?: () => void
}

/** `text/x; q=1` → `text/x` */
export function mediaType (value: string | undefined): string {
  return (value ?? '').split(';')[0].trim().toLowerCase()
}

/** whether any Accept value names `type` (or a wildcard covering it) */
export function acceptsType (accept: readonly string[], type: string): boolean {
  if (accept.length === 0) return true
  const major = type.slice(0, type.indexOf('/'))
  for (const a of accept) {
    for (const item of a.split(',')) {
      const t = mediaType(item)
      if (t === type || t === '*/*' || t === `${major}/*`) return true
    }
  }
  return false
}

/** A set of listeners, for `onChange`. */
export class ChangeListeners {
  readonly #listeners = new Set<(aor: Aor) => void>()
  add (listener: (aor: Aor) => void): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  emit (aor: Aor): void {
    for (const l of this.#listeners) l(aor)
  }
}

/** remove every live publication of a presentity in one package (it registered elsewhere) */
export function dropPublications (store: PublicationStore<unknown>, aor: Aor, event: string): void {
  for (const pub of store.get(aor, event)) {
    try { store.publish({ presentity: aor, event, ifMatch: pub.etag, expires: 0 }) } catch { /* gone already */ }
  }
}

/**
 * Versioned full-then-partial state for one watcher (RFC 4235 4.1, RFC 3858 4.1): the first
 * document is full; later ones carry only the items that changed (`serialize` differs) and, as
 * `ended(item)`, those that vanished; nothing changed (a refresh): full again. The version grows
 * by one per document. `items` are the current full state.
 */
export function versioned<T> (state: RenderState, items: readonly T[], id: (item: T) => string, serialize: (item: T) => string, ended: (item: T) => T | undefined): { version: number, full: boolean, items: T[] } {
  const now = new Map<string, { item: T, text: string }>()
  for (const item of items) now.set(id(item), { item, text: serialize(item) })
  const last = state.last as Map<string, { item: T, text: string }> | undefined
  state.version++
  state.last = now
  if (last === undefined) return { version: state.version, full: true, items: [...items] }
  const out: T[] = []
  for (const [k, v] of now) if (last.get(k)?.text !== v.text) out.push(v.item)
  for (const [k, v] of last) {
    if (now.has(k)) continue
    const gone = ended(v.item)
    if (gone !== undefined) out.push(gone)
  }
  return out.length === 0 ? { version: state.version, full: true, items: [...items] } : { version: state.version, full: false, items: out }
}
