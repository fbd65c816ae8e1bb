/**
 * The resource lists a node knows (issue 12 section 4), persisted through the node's
 * `DurableStore` under `lists/` so that they survive a restart. Bounded (`maxLists`, 413 above).
 * Nested lists are refused (`nested_list`, 400): no member may name a list, and a list may not be
 * defined under a URI that is already some list's member, so lists cannot point at each other.
 */
import type { Aor, DurableStore, Logger } from '../../ports.ts'
import { ListError, listAor, type ResourceList } from './list.ts'

export const LIST_STORE_PREFIX = 'lists/'

export interface ListStoreComponents {
  store?: DurableStore
  logger: Logger
}

export interface ListStoreInit {
  /** most lists held @default 10000 */
  maxLists?: number
  /** most members of one list @default MAX_LIST_MEMBERS (list.ts) */
  maxMembers?: number
}

export class ListStore {
  readonly #store?: DurableStore
  readonly #log: Logger
  readonly #max: number
  readonly #lists = new Map<Aor, ResourceList>()
  /** member → how many lists name it (for the nesting check) */
  readonly #memberOf = new Map<Aor, number>()
  readonly #listeners = new Set<(uri: Aor) => void>()

  constructor (components: ListStoreComponents, init: ListStoreInit = {}) {
    this.#store = components.store
    this.#log = components.logger
    this.#max = init.maxLists ?? 10_000
    this.limits = { maxMembers: init.maxMembers }
  }

  get size (): number { return this.#lists.size }

  /** the member limit lists are validated with */
  readonly limits: { maxMembers?: number }

  /** read the persisted lists (before use); unreadable entries are skipped and counted */
  async load (): Promise<{ loaded: number, skipped: number }> {
    let loaded = 0
    let skipped = 0
    if (this.#store === undefined) return { loaded, skipped }
    for await (const [key, value] of this.#store.list(LIST_STORE_PREFIX)) {
      try {
        const raw = JSON.parse(new TextDecoder().decode(value)) as { uri?: unknown, members?: unknown, owner?: unknown, version?: unknown }
        if (!Array.isArray(raw.members)) throw new Error('no members')
        const list: ResourceList = { uri: listAor(raw.uri, 'uri'), members: raw.members.map((m, i) => listAor(m, `member ${i}`)) }
        if (raw.owner !== undefined) list.owner = listAor(raw.owner, 'owner')
        if (typeof raw.version === 'number' && Number.isSafeInteger(raw.version) && raw.version > 0) list.version = raw.version
        this.#set(list)
        loaded++
      } catch (err) {
        skipped++
        this.#log.warn('stored resource list skipped', { key: key.slice(0, 200), err: String(err) })
      }
    }
    return { loaded, skipped }
  }

  get (uri: Aor): ResourceList | undefined { return this.#lists.get(uri) }

  has (uri: Aor): boolean { return this.#lists.has(uri) }

  /** the list URIs held */
  uris (): Aor[] { return [...this.#lists.keys()] }

  /** listen for a list defined, replaced or removed; returns the unsubscribe */
  onChange (listener: (uri: Aor) => void): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  /** define or replace a list (persisted before it is used) */
  async put (list: ResourceList): Promise<void> {
    const replacing = this.#lists.has(list.uri)
    for (const m of list.members) {
      if (this.#lists.has(m)) throw new ListError(400, 'nested_list', `member ${m} is itself a list; nested lists are not supported`)
    }
    if ((this.#memberOf.get(list.uri) ?? 0) > 0) throw new ListError(400, 'nested_list', `${list.uri} is a member of another list; nested lists are not supported`)
    if (!replacing && this.#lists.size >= this.#max) throw new ListError(413, 'too_many_lists', `this node holds at most ${this.#max} lists`)
    await this.#store?.put(LIST_STORE_PREFIX + list.uri, new TextEncoder().encode(JSON.stringify(list)))
    this.#set(list)
    this.#emit(list.uri)
  }

  /** remove a list; false when there was none */
  async delete (uri: Aor): Promise<boolean> {
    if (!this.#lists.has(uri)) return false
    await this.#store?.delete(LIST_STORE_PREFIX + uri)
    this.#unset(uri)
    this.#emit(uri)
    return true
  }

  #set (list: ResourceList): void {
    this.#unset(list.uri)
    this.#lists.set(list.uri, list)
    for (const m of list.members) this.#memberOf.set(m, (this.#memberOf.get(m) ?? 0) + 1)
  }

  #unset (uri: Aor): void {
    const old = this.#lists.get(uri)
    if (old === undefined) return
    this.#lists.delete(uri)
    for (const m of old.members) {
      const n = (this.#memberOf.get(m) ?? 1) - 1
      if (n <= 0) this.#memberOf.delete(m)
      else this.#memberOf.set(m, n)
    }
  }

  #emit (uri: Aor): void {
    for (const l of this.#listeners) {
      try { l(uri) } catch (err) { this.#log.warn('list listener failed', { err: String(err) }) }
    }
  }
}
