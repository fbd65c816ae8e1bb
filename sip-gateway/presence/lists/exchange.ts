/**
 * Resource lists across the mesh. Design: a list lives at its home node, the node whose admin
 * API took the last PUT. That node persists it (`ListStore`, so it is back after a restart) and
 * claims the list URI in the claim registry like a registration (leases renewed by the registry),
 * so every node resolves the list URI to its home. A node that gets a list SUBSCRIBE
 * (`Supported: eventlist`) for a URI it holds no list of resolves the URI and asks the owner node
 * with a mesh `PUBLISH` to the list URI with `Event: sipmesh-list` and no body (`LIST_EVENT`,
 * accepted from mesh peers only): 200 with the list as JSON (`{ members, owner? }`), or 404. The
 * asking node keeps the answer `cacheMs` (a miss `missMs`) for new subscriptions, and serves the
 * subscription itself, its member subscriptions riding on its own back-end subscriptions like any
 * watcher's. A home restarting finds the list URI claimed by another node and deletes its copy
 * rather than reclaiming it.
 *
 * Edits reach every node at once. The home remembers which nodes fetched a copy (`holders`, in
 * memory) and, on each PUT or DELETE, pushes to them the same PUBLISH with `Sipmesh-List-Version`:
 * with the list as its body (an edit), or with `Expires: 0` and no body (a deletion, RFC 3903 4.5's
 * removal). Each list carries the version its home gave it at the PUT (list.ts); a holder takes a
 * push only when its version is above the one it holds, so a push overtaken by a later one never
 * wins, and a deletion leaves a tombstone of its version. A holder that holds nothing any more
 * answers 404 and is forgotten. A PUT at another node moves the home: the new claim displaces the
 * old home, which drops its stored copy, tells its holders where the list went (`Expires: 0` with
 * `Sipmesh-List-Home: <node>`) and, like them, fetches the new list from there (so becoming the new
 * home's holder). A DELETE at a node that is not the home is sent to the home as a deletion push
 * (`forwardDelete`); the home deletes the list as if the DELETE were its own. Each holder applies what it receives to its live subscriptions
 * (`applied`, server.ts `update`). A holder with live subscriptions asks the home again each
 * `cacheMs` (one message per list and node), which renews its place among the holders after a home
 * restart and catches up with an edit it missed; if the home died, its copies expire as before
 * (live subscriptions keep the members they have).
 *
 * Why not a DHT record of its own: the registry only stores signed claims (dht/record/claim.ts);
 * a list is operator data of one node, and the claim already gives the mesh-wide "where is it".
 * What this costs: while the home node is down, nodes without a cached copy cannot start new
 * subscriptions to its lists (404), and a user REGISTERing the list URI takes the address over.
 */
import { Buffer } from 'node:buffer'
import type { SipRequest as Request, SipResponse } from '../../codec/message.ts'
import type { Headers } from '../../codec/headers.ts'
import { createResponse } from '../../codec/response.ts'
import { parseUri, aorOf } from '../../codec/uri.ts'
import type { Aor, Logger, Registry } from '../../ports.ts'
import type { ServerTransaction } from '../../transaction/layer.ts'
import { mediaType } from '../package.ts'
import type { AgentRequests } from '../requests.ts'
import type { ListStore } from './store.ts'
import { ListError, parseResourceList, type ResourceList } from './list.ts'

export const LIST_EVENT = 'sipmesh-list'
export const LIST_CONTENT_TYPE = 'application/vnd.sipmesh.list+json'
export const LIST_VERSION_HEADER = 'Sipmesh-List-Version'
export const LIST_HOME_HEADER = 'Sipmesh-List-Home'
/** most holders remembered for one list (a holder is a node: this bounds the mesh's size it serves) */
const MAX_HOLDERS = 1024
/** largest list sent over the mesh (a SIP message is at most 64 KiB); the admin PUT refuses more */
export const MAX_LIST_BODY = 48 * 1024
/** how long a claim of a list URI is asked for (the registry renews its leases meanwhile), ms */
const CLAIM_FOR_MS = 365 * 24 * 3_600_000

export interface ListExchangeComponents {
  lists: ListStore
  registry: Registry
  requests: AgentRequests
  logger: Logger
  domains: ReadonlySet<string>
  respond: (tx: ServerTransaction, response: SipResponse) => void
  /** a list this node serves subscriptions of was edited (or deleted: undefined) */
  applied: (uri: Aor, list: ResourceList | undefined) => void
  /** delete a list this node is the home of (a DELETE another node forwarded); false: none here */
  remove: (uri: Aor) => Promise<boolean>
  /** whether live subscriptions here use the list at `uri` */
  inUse: (uri: Aor) => boolean
}

export interface ListExchangeInit {
  /** how long a list fetched from its home is used for new subscriptions, ms @default 30000 */
  cacheMs?: number
  /** how long "no list there" is remembered, ms @default 10000 */
  missMs?: number
  /** most lists of other nodes cached @default 1000 */
  maxCached?: number
}

/** the JSON a list travels as (over the mesh, and persisted) */
export function serializeList (list: ResourceList): string {
  return JSON.stringify({ members: list.members, ...(list.owner !== undefined ? { owner: list.owner } : {}) })
}

export class ListExchange {
  readonly #c: ListExchangeComponents
  readonly #log: Logger
  readonly #cacheMs: number
  readonly #missMs: number
  readonly #maxCached: number
  readonly #cache = new Map<Aor, { list?: ResourceList, version: number, until: number }>()
  readonly #inflight = new Map<Aor, Promise<ResourceList | undefined>>()
  /** list URI → nodes holding a copy of our list (we are its home) */
  readonly #holders = new Map<Aor, Set<string>>()
  #sweep?: ReturnType<typeof setInterval>
  pushesSent = 0

  constructor (components: ListExchangeComponents, init: ListExchangeInit = {}) {
    this.#c = components
    this.#log = components.logger
    this.#cacheMs = init.cacheMs ?? 30_000
    this.#missMs = init.missMs ?? 10_000
    this.#maxCached = init.maxCached ?? 1000
  }

  /** re-ask the home for the lists live subscriptions here use (see the header) */
  start (): void {
    this.#sweep = setInterval(() => { this.#refresh() }, this.#cacheMs)
    this.#sweep.unref?.()
  }

  stop (): void {
    clearInterval(this.#sweep)
    this.#sweep = undefined
  }

  /** the version a new edit of `uri` gets here: above every version this node has seen of it */
  nextVersion (uri: Aor): number {
    const seen = Math.max(this.#c.lists.get(uri)?.version ?? 0, this.#cache.get(uri)?.version ?? 0)
    return Math.max(Date.now(), seen + 1)
  }

  /** claim the list URI for this node (after a PUT) and push the edit to the nodes holding it */
  async home (list: ResourceList): Promise<void> {
    const uri = list.uri
    this.#cache.delete(uri)
    this.#c.applied(uri, list)
    this.#push(uri, list.version ?? 0, list)
    const r = await this.#c.registry.claim(uri, { expiresAt: Date.now() + CLAIM_FOR_MS })
    if (!r.won) this.#log.warn('list URI claimed by another node at the same time', { list: uri, node: r.route.node })
  }

  /** give the list URI up (after a DELETE): its subscriptions here and at its holders end */
  async unhome (uri: Aor, version: number): Promise<void> {
    this.#tombstone(uri, version)
    this.#c.applied(uri, undefined)
    this.#push(uri, version, undefined)
    this.#holders.delete(uri)
    await this.#c.registry.release(uri)
  }

  /**
   * A DELETE for a list homed elsewhere: sent to its home as a deletion push; true once the home
   * deleted it, false when no node holds a list at `uri`.
   */
  async forwardDelete (uri: Aor): Promise<boolean> {
    const route = await this.#c.registry.resolve(uri, { fresh: true })
    if (route === undefined || route.node === this.#c.registry.nodeId || !this.#c.requests.attached) return false
    let r: SipResponse
    try {
      r = await this.#request(route.node, uri, [[LIST_VERSION_HEADER, String(this.nextVersion(uri))], ['Expires', '0']])
    } catch (err) {
      throw new ListError(503, 'home_unreachable', `the list's home node could not be reached: ${String(err)}`)
    }
    if (r.status >= 200 && r.status < 300) {
      this.#cache.delete(uri)
      this.#tombstone(uri, this.nextVersion(uri))
      return true
    }
    if (r.status === 404) return false
    throw new ListError(503, 'home_unreachable', `the list's home node answered ${r.status}`)
  }

  /** after a restart: claim our lists again, unless another node has become their home meanwhile */
  async rehome (): Promise<void> {
    for (const uri of this.#c.lists.uris()) {
      try {
        const route = await this.#c.registry.resolve(uri, { fresh: true })
        if (route !== undefined && route.node !== this.#c.registry.nodeId) {
          this.#log.info('list moved to another node while we were away: our copy is dropped', { list: uri, node: route.node })
          await this.#c.lists.delete(uri)
          this.#c.applied(uri, undefined)
          continue
        }
        const list = this.#c.lists.get(uri)
        if (list !== undefined) await this.home(list)
      } catch (err) {
        this.#log.warn('list URI not claimed', { list: uri, err: String(err) })
      }
    }
  }

  /**
   * Another node claimed a list URI of ours (a PUT there): our stored copy goes; our holders and
   * our own subscriptions get the list from the new home.
   */
  displaced (uri: Aor, node: string): void {
    const own = this.#c.lists.get(uri)
    if (own === undefined) return
    this.#cache.set(uri, { version: own.version ?? 0, until: 0 })
    this.#c.lists.delete(uri).catch((err: unknown) => { this.#log.warn('displaced list not deleted', { list: uri, err: String(err) }) })
    this.#push(uri, own.version ?? 0, undefined, node)
    this.#holders.delete(uri)
    this.#refetch(uri, node)
  }

  /** the list at `uri`: ours, or fetched from the node the URI resolves to (undefined: none) */
  async find (uri: Aor): Promise<ResourceList | undefined> {
    const own = this.#c.lists.get(uri)
    if (own !== undefined) return own
    const hit = this.#cache.get(uri)
    if (hit !== undefined && hit.until > Date.now()) return hit.list
    let pending = this.#inflight.get(uri)
    if (pending === undefined) {
      pending = this.#fetch(uri).finally(() => { this.#inflight.delete(uri) })
      this.#inflight.set(uri, pending)
    }
    return await pending
  }

  /** fetch from the node the URI resolves to (`node`: from that node) and cache the answer */
  async #fetch (uri: Aor, node?: string): Promise<ResourceList | undefined> {
    let list: ResourceList | undefined
    try {
      const home = node ?? (await this.#c.registry.resolve(uri))?.node
      if (home !== undefined && home !== this.#c.registry.nodeId && this.#c.requests.attached) {
        const r = await this.#request(home, uri)
        if (r.status === 200 && mediaType(r.headers.get('Content-Type')) === LIST_CONTENT_TYPE) list = this.#parse(uri, r)
      }
    } catch (err) {
      this.#log.debug('list not fetched', { list: uri, err: String(err) })
    }
    const held = this.#cache.get(uri)
    // a fetch answered after a newer push (or deletion) keeps what the push brought; a new home's
    // answer after a move (`node`) is the list, whatever its clock stamped on it
    if (node === undefined && held !== undefined && list !== undefined && (list.version ?? 0) < held.version) return held.list
    this.#remember(uri, list, list?.version ?? held?.version ?? 0)
    return list
  }

  /** the list a response or push carries (body and version), or throws */
  #parse (uri: Aor, m: { headers: Headers, body: Uint8Array }): ResourceList {
    if (m.body.length > MAX_LIST_BODY) throw new ListError(413, 'too_large', 'list too large')
    const list = parseResourceList(uri, JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(m.body)), this.#c.domains)
    const v = parseListVersion(m.headers.get(LIST_VERSION_HEADER))
    if (v !== undefined && v > 0) list.version = v
    return list
  }

  #remember (uri: Aor, list: ResourceList | undefined, version: number): void {
    if (!this.#cache.has(uri) && this.#cache.size >= this.#maxCached) {
      const now = Date.now()
      for (const [k, v] of this.#cache) if (v.until <= now) this.#cache.delete(k)
      if (this.#cache.size >= this.#maxCached) this.#cache.delete(this.#cache.keys().next().value as Aor)
    }
    this.#cache.set(uri, { list, version, until: Date.now() + (list === undefined ? this.#missMs : this.#cacheMs) })
  }

  #tombstone (uri: Aor, version: number): void {
    this.#remember(uri, undefined, version)
  }

  /** the list from `node` (or its home), applied to live subscriptions here when it changed */
  #refetch (uri: Aor, node?: string): void {
    const before = this.#cache.get(uri)
    if (before !== undefined) before.until = 0
    void this.#fetch(uri, node).then((list) => {
      if (list === undefined) {
        // gone at the home (or the home is unreachable: then the copy stays until the next ask)
        if (node !== undefined || before?.list !== undefined) this.#log.debug('list not refreshed', { list: uri, node })
        return
      }
      if (before?.list === undefined || (list.version ?? 0) > before.version || node !== undefined) this.#c.applied(uri, list)
    })
  }

  /** each `cacheMs`: ask the home again for the copies live subscriptions here use */
  #refresh (): void {
    const now = Date.now()
    for (const [uri, entry] of this.#cache) {
      if (entry.list !== undefined && entry.until <= now + this.#cacheMs / 2 && this.#c.inUse(uri)) this.#refetch(uri)
    }
  }

  /** send an edit (`list`), a deletion, or a move to `movedTo` to the nodes holding a copy */
  #push (uri: Aor, version: number, list: ResourceList | undefined, movedTo?: string): void {
    const holders = this.#holders.get(uri)
    if (holders === undefined || holders.size === 0 || !this.#c.requests.attached) return
    for (const node of holders) {
      if (node === movedTo) continue
      this.pushesSent++
      const extra: Array<[string, string]> = [[LIST_VERSION_HEADER, String(version)]]
      if (list === undefined) extra.push(['Expires', '0'])
      else extra.push(['Content-Type', LIST_CONTENT_TYPE])
      if (movedTo !== undefined) extra.push([LIST_HOME_HEADER, movedTo])
      const body = list === undefined ? new Uint8Array(0) : Buffer.from(serializeList(list))
      void this.#request(node, uri, extra, body).then((r) => {
        if (r.status === 404) this.#holders.get(uri)?.delete(node)
      }, (err: unknown) => { this.#log.debug('list push not sent', { list: uri, node, err: String(err) }) })
    }
  }

  async #request (node: string, uri: Aor, extra: ReadonlyArray<[string, string]> = [], body?: Uint8Array): Promise<SipResponse> {
    return await this.#c.requests.publishTo(node, uri, LIST_EVENT, extra, body)
  }

  /**
   * A PUBLISH of the list event, from mesh peers only: without a body a fetch (our list of the
   * Request-URI; the asker becomes a holder), otherwise a push from the list's home (see the header)
   */
  handle (request: Request, tx: ServerTransaction, fromMesh: boolean, node: string | undefined): void {
    if (!fromMesh) { this.#c.respond(tx, createResponse(request, 403, 'Forbidden (lists are exchanged between mesh nodes only)')); return }
    let uri: Aor
    try { uri = aorOf(parseUri(request.uri)) } catch { this.#c.respond(tx, createResponse(request, 400, 'Bad Request (list URI)')); return }
    const h = request.headers
    if (request.body.length > 0 || h.get('Expires')?.trim() === '0') { this.#pushed(request, tx, uri); return }
    const list = this.#c.lists.get(uri)
    if (list === undefined) { this.#c.respond(tx, createResponse(request, 404, 'Not Found (no such list here)')); return }
    if (node !== undefined && node !== this.#c.registry.nodeId) {
      let holders = this.#holders.get(uri)
      if (holders === undefined) this.#holders.set(uri, holders = new Set())
      if (holders.size < MAX_HOLDERS) holders.add(node)
    }
    const r = createResponse(request, 200, undefined, [['Content-Type', LIST_CONTENT_TYPE], [LIST_VERSION_HEADER, String(list.version ?? 0)]])
    r.body = Buffer.from(serializeList(list))
    this.#c.respond(tx, r)
  }

  /** a push from a list's home: an edit, a deletion or a move (see the header) */
  #pushed (request: Request, tx: ServerTransaction, uri: Aor): void {
    const h = request.headers
    const held = this.#cache.get(uri)
    if (this.#c.lists.has(uri)) {
      // we are its home: a deletion newer than our list is a DELETE made at another node
      const own = this.#c.lists.get(uri)
      const v = parseListVersion(h.get(LIST_VERSION_HEADER))
      if (request.body.length === 0 && h.get(LIST_HOME_HEADER) === undefined && v !== undefined && v > (own?.version ?? 0)) {
        void this.#c.remove(uri).then((done) => {
          this.#c.respond(tx, createResponse(request, done ? 200 : 404))
        }, (err: unknown) => {
          this.#log.warn('forwarded list deletion failed', { list: uri, err: String(err) })
          this.#c.respond(tx, createResponse(request, 500))
        })
        return
      }
      this.#c.respond(tx, createResponse(request, 200))
      return
    }
    if (held?.list === undefined && !this.#c.inUse(uri)) { this.#c.respond(tx, createResponse(request, 404, 'Not Found (no copy of this list here)')); return }
    const version = parseListVersion(h.get(LIST_VERSION_HEADER))
    if (version === undefined) { this.#c.respond(tx, createResponse(request, 400, `Bad Request (${LIST_VERSION_HEADER})`)); return }
    const movedTo = h.get(LIST_HOME_HEADER)?.trim()
    if (movedTo !== undefined) {
      if (movedTo.length === 0 || movedTo.length > 128 || movedTo === this.#c.registry.nodeId) { this.#c.respond(tx, createResponse(request, 400, `Bad Request (${LIST_HOME_HEADER})`)); return }
      this.#c.respond(tx, createResponse(request, 200))
      this.#refetch(uri, movedTo)
      return
    }
    if (held !== undefined && version <= held.version) { this.#c.respond(tx, createResponse(request, 200, 'OK (already newer here)')); return }
    let list: ResourceList | undefined
    if (request.body.length > 0) {
      if (mediaType(h.get('Content-Type')) !== LIST_CONTENT_TYPE) { this.#c.respond(tx, createResponse(request, 415, undefined, [['Accept', LIST_CONTENT_TYPE]])); return }
      try {
        list = this.#parse(uri, request)
      } catch (err) {
        this.#c.respond(tx, createResponse(request, err instanceof ListError && err.status === 413 ? 413 : 400, 'Bad Request (not a list)'))
        return
      }
      list.version = version
    }
    this.#remember(uri, list, version)
    this.#c.respond(tx, createResponse(request, 200))
    this.#c.applied(uri, list)
  }
}

/** a `Sipmesh-List-Version` value: decimal digits, a safe integer (undefined: anything else) */
export function parseListVersion (value: string | undefined): number | undefined {
  const v = value?.trim()
  if (v === undefined || !/^[0-9]{1,16}$/u.test(v)) return undefined
  const n = Number(v)
  return Number.isSafeInteger(n) ? n : undefined
}

/** a list that does not fit a mesh message is refused at the admin API (413) */
export function checkListSize (list: ResourceList): void {
  if (Buffer.byteLength(serializeList(list)) > MAX_LIST_BODY) throw new ListError(413, 'too_large', `the list is larger than ${MAX_LIST_BODY} bytes as JSON`)
}
