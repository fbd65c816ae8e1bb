/**
 * The `presence.winfo` event package (RFC 3857, RFC 3858 bodies): a presentity watching who
 * watches her presence. The owner node knows every watcher across the mesh: its own user agents'
 * subscriptions and the identities the back-end subscriptions of other nodes carry
 * (`Sipmesh-Watchers`, removed again with `Sipmesh-Watchers-Gone`), each with the decision of her
 * rules: allow is `active`, polite-block `pending` (the watcher is shown neutral state; the
 * presentity sees a request waiting), block `terminated` (event `rejected`). A watcher that goes
 * is shown `terminated` (event `timeout`) in the next partial document. Only the presentity
 * herself may subscribe (`decide`: the watcher identity is the From AoR, which digest
 * authentication, when on, has authenticated at the first node; over the mesh, the asserting node's
 * `Sipmesh-Watchers`).
 */
import { Buffer } from 'node:buffer'
import { createHash } from 'node:crypto'
import type { Aor } from '../../ports.ts'
import type { Decision } from '../authorization.ts'
import { ChangeListeners, acceptsType, versioned, type EventPackage, type RenderState } from '../package.ts'
import { WATCHERINFO_CONTENT_TYPE, buildWatcherInfo, parseWatcherInfo, watcherXml, type Watcher, type WatcherInfo } from '../watcherinfo.ts'

export interface WinfoPackageComponents {
  /** the watchers of a presentity's presence this node knows (as its owner), with their decisions */
  watchers: (aor: Aor) => Iterable<readonly [string, Decision]>
}

/** the watcher element id of a watcher URI: stable across documents and nodes */
export function watcherId (uri: string): string {
  return createHash('sha256').update(uri).digest('base64url').slice(0, 16)
}

export class WinfoPackage implements EventPackage {
  readonly name = 'presence.winfo'
  readonly contentType = WATCHERINFO_CONTENT_TYPE
  readonly #watchers: WinfoPackageComponents['watchers']
  readonly #changes = new ChangeListeners()
  /** canonical documents parsed once, whatever the number of watchers rendering them */
  readonly #parsed = new WeakMap<Uint8Array, WatcherInfo>()

  constructor (components: WinfoPackageComponents) {
    this.#watchers = components.watchers
  }

  accepts (accept: readonly string[]): boolean { return acceptsType(accept, WATCHERINFO_CONTENT_TYPE) }

  /** RFC 3857 5.1.1: the presentity alone */
  decide (aor: Aor, watcher: string): Decision { return watcher === aor ? 'allow' : 'block' }

  compose (aor: Aor): Uint8Array {
    const watchers: Watcher[] = []
    for (const [uri, d] of this.#watchers(aor)) {
      watchers.push({ id: watcherId(uri), uri, status: d === 'allow' ? 'active' : d === 'polite-block' ? 'pending' : 'terminated', event: d === 'block' ? 'rejected' : 'subscribe' })
    }
    watchers.sort((a, b) => a.uri < b.uri ? -1 : a.uri > b.uri ? 1 : 0)
    return Buffer.from(buildWatcherInfo({ version: 0, state: 'full', lists: [{ resource: aor, package: 'presence', watchers }] }))
  }

  neutral (aor: Aor): Uint8Array {
    return Buffer.from(buildWatcherInfo({ version: 0, state: 'full', lists: [{ resource: aor, package: 'presence', watchers: [] }] }))
  }

  render (aor: Aor, canonical: Uint8Array, state: RenderState): Uint8Array {
    let doc = this.#parsed.get(canonical)
    if (doc === undefined) { doc = parseWatcherInfo(canonical); this.#parsed.set(canonical, doc) }
    const list = doc.lists[0] ?? { resource: aor, package: 'presence', watchers: [] }
    const r = versioned(state, list.watchers, w => w.id, watcherXml, (w): Watcher | undefined => w.status === 'terminated' ? undefined : { ...w, status: 'terminated', event: 'timeout' })
    return Buffer.from(buildWatcherInfo({ version: r.version, state: r.full ? 'full' : 'partial', lists: [{ ...list, watchers: r.items }] }))
  }

  /** the watchers of a presentity changed (subscriptions, identities, decisions) */
  changed (aor: Aor): void { this.#changes.emit(aor) }

  onChange (listener: (aor: Aor) => void): () => void { return this.#changes.add(listener) }
}
