/**
 * Resource lists across the mesh. Design: a list lives at its home node, the node whose admin
 * API took the last PUT. That node persists it (`ListStore`, so it is back after a restart) and
 * claims the list URI in the claim registry like a registration (leases renewed by the registry),
 * so every node resolves the list URI to its home. A node that gets a list SUBSCRIBE
 * (`Supported: eventlist`) for a URI it holds no list of resolves the URI and asks the owner node
 * with a mesh `PUBLISH` to the list URI with `Event: sipmesh-list` and no body (`LIST_EVENT`,
 * accepted from mesh peers only): 200 with the list as JSON (`{ members, owner? }`), or 404. The
 * asking node keeps the answer `cacheMs` (a miss `missMs`), and serves the subscription itself,
 * its member subscriptions riding on its own back-end subscriptions like any watcher's. A PUT at
 * another node moves the home: the new claim displaces the old home, which deletes its copy (its
 * subscriptions end `noresource`, subscribers come back and reach the new home's list). A home
 * restarting finds the list URI claimed by another node and deletes its copy rather than
 * reclaiming it.
 *
 * Why not a DHT record of its own: the registry only stores signed claims (dht/record/claim.ts);
 * a list is operator data of one node, and the claim already gives the mesh-wide "where is it".
 * What this costs: while the home node is down, nodes without a cached copy cannot start new
 * subscriptions to its lists (404), and a user REGISTERing the list URI takes the address over.
 */
import { randomBytes } from 'node:crypto'
import { Buffer } from 'node:buffer'
import { SipRequest, type SipRequest as Request, type SipResponse } from '../../codec/message.ts'
import { Headers } from '../../codec/headers.ts'
import { createResponse, generateTag } from '../../codec/response.ts'
import { parseUri, aorOf } from '../../codec/uri.ts'
import type { Aor, Logger, Registry } from '../../ports.ts'
import type { ServerTransaction } from '../../transaction/layer.ts'
import { mediaType } from '../package.ts'
import type { AgentRequests } from '../requests.ts'
import type { ListStore } from './store.ts'
import { ListError, parseResourceList, type ResourceList } from './list.ts'

export const LIST_EVENT = 'sipmesh-list'
export const LIST_CONTENT_TYPE = 'application/vnd.sipmesh.list+json'
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
  readonly #cache = new Map<Aor, { list?: ResourceList, until: number }>()
  readonly #inflight = new Map<Aor, Promise<ResourceList | undefined>>()

  constructor (components: ListExchangeComponents, init: ListExchangeInit = {}) {
    this.#c = components
    this.#log = components.logger
    this.#cacheMs = init.cacheMs ?? 30_000
    this.#missMs = init.missMs ?? 10_000
    this.#maxCached = init.maxCached ?? 1000
  }

  /** claim the list URI for this node (after a PUT) */
  async home (uri: Aor): Promise<void> {
    this.#cache.delete(uri)
    const r = await this.#c.registry.claim(uri, { expiresAt: Date.now() + CLAIM_FOR_MS })
    if (!r.won) this.#log.warn('list URI claimed by another node at the same time', { list: uri, node: r.route.node })
  }

  /** give the list URI up (after a DELETE) */
  async unhome (uri: Aor): Promise<void> {
    this.#cache.delete(uri)
    await this.#c.registry.release(uri)
  }

  /** after a restart: claim our lists again, unless another node has become their home meanwhile */
  async rehome (): Promise<void> {
    for (const uri of this.#c.lists.uris()) {
      try {
        const route = await this.#c.registry.resolve(uri, { fresh: true })
        if (route !== undefined && route.node !== this.#c.registry.nodeId) {
          this.#log.info('list moved to another node while we were away: our copy is dropped', { list: uri, node: route.node })
          await this.#c.lists.delete(uri)
          continue
        }
        await this.home(uri)
      } catch (err) {
        this.#log.warn('list URI not claimed', { list: uri, err: String(err) })
      }
    }
  }

  /** another node claimed a list URI of ours (a PUT there): our copy goes */
  displaced (uri: Aor): void {
    if (!this.#c.lists.has(uri)) return
    this.#c.lists.delete(uri).catch((err: unknown) => { this.#log.warn('displaced list not deleted', { list: uri, err: String(err) }) })
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

  async #fetch (uri: Aor): Promise<ResourceList | undefined> {
    let list: ResourceList | undefined
    try {
      const route = await this.#c.registry.resolve(uri)
      if (route !== undefined && route.node !== this.#c.registry.nodeId && this.#c.requests.attached) {
        const r = await this.#request(route.node, uri)
        if (r.status === 200 && mediaType(r.headers.get('Content-Type')) === LIST_CONTENT_TYPE && r.body.length <= MAX_LIST_BODY) {
          list = parseResourceList(uri, JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(r.body)), this.#c.domains)
        }
      }
    } catch (err) {
      this.#log.debug('list not fetched', { list: uri, err: String(err) })
    }
    if (this.#cache.size >= this.#maxCached) {
      const now = Date.now()
      for (const [k, v] of this.#cache) if (v.until <= now) this.#cache.delete(k)
      if (this.#cache.size >= this.#maxCached) this.#cache.delete(this.#cache.keys().next().value as Aor)
    }
    this.#cache.set(uri, { list, until: Date.now() + (list === undefined ? this.#missMs : this.#cacheMs) })
    return list
  }

  async #request (node: string, uri: Aor): Promise<SipResponse> {
    const domain = uri.slice(uri.lastIndexOf('@') + 1)
    const h = new Headers()
    h.append('Max-Forwards', '70')
    h.append('From', `<sip:${domain}>;tag=${generateTag()}`)
    h.append('To', `<${uri}>`)
    h.append('Call-ID', randomBytes(12).toString('base64url') + '@sipmesh')
    h.append('CSeq', '1 PUBLISH')
    h.append('Event', LIST_EVENT)
    return await this.#c.requests.send(new SipRequest('PUBLISH', uri, h, new Uint8Array(0)), this.#c.requests.mesh(node))
  }

  /** a PUBLISH of the list event: mesh peers only; answers with our list of the Request-URI */
  handle (request: Request, tx: ServerTransaction, fromMesh: boolean): void {
    if (!fromMesh) { this.#c.respond(tx, createResponse(request, 403, 'Forbidden (lists are exchanged between mesh nodes only)')); return }
    let list: ResourceList | undefined
    try { list = this.#c.lists.get(aorOf(parseUri(request.uri))) } catch { list = undefined }
    if (list === undefined) { this.#c.respond(tx, createResponse(request, 404, 'Not Found (no such list here)')); return }
    const r = createResponse(request, 200, undefined, [['Content-Type', LIST_CONTENT_TYPE]])
    r.body = Buffer.from(serializeList(list))
    this.#c.respond(tx, r)
  }
}

/** a list that does not fit a mesh message is refused at the admin API (413) */
export function checkListSize (list: ResourceList): void {
  if (Buffer.byteLength(serializeList(list)) > MAX_LIST_BODY) throw new ListError(413, 'too_large', `the list is larger than ${MAX_LIST_BODY} bytes as JSON`)
}
