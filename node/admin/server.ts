/**
 * The admin HTTP API (JSON). Every request first passes the guard of auth.ts (one place, before
 * routing, so every route gets it): the `Host` header must name this API (else 421 bad_host), and
 * anything but a read from loopback needs `Authorization: Bearer <token>` (else 401 unauthorized,
 * with `WWW-Authenticate: Bearer`).
 *
 *   GET /status       { peerId, multiaddrs, sip, domains, peers, registrations, bootstrap, joinErrors }
 *                     peers: peer ids (strings) of the mesh nodes this node is connected to
 *   GET /aor/<aor>    the claim of an AoR as this node resolves it (the AoR URL-encoded, e.g.
 *                     /aor/sip%3Aalice%40example.com):
 *                     { aor, owner, version, sip, expires }
 *                     owner: peer id; version: decimal string (a 64-bit integer does not fit a
 *                     JSON number); expires: ISO 8601 UTC time after which the claim is void.
 *                     `?fresh=1` skips this node's cache and asks the DHT.
 *   GET /metrics      Prometheus text format
 *   GET /             the live mesh dashboard, and `/phone`, the browser phone (routes/static.ts)
 *   GET /registrations, /bindings/<aor>, /peers, /subscriptions, /offline, /claims, /mesh,
 *                     /summary: listings (routes/listings.ts; errors add bad_query (400),
 *                     gateway_unavailable (404), phone_unavailable (404))
 *   GET /presence/<aor>/rules   the presence authorization rules document this node holds for a
 *                     presentity: { default?, watchers: { <aor>: decision }, domains: { <domain>:
 *                     decision }, version } with decision one of allow, block, polite-block
 *   PUT /presence/<aor>/rules   replace them (same JSON; a new version; persisted; applied to live
 *                     subscriptions; sent to the presentity's owner node: see sip-gateway/presence/agent.ts);
 *                     a presentity of a domain the mesh does not serve is refused (403 foreign_domain),
 *                     and so is a document beyond the node's total of stored rules (403 rules_limit)
 *   PUT|GET|DELETE /lists/<list URI>   resource lists (routes/lists.ts; errors add list_not_found,
 *                     nested_list, too_many_lists, registered_user)
 *
 * Errors are `{ error: { code, message } }` with stable codes: not_found (unknown path, 404),
 * method_not_allowed (405, with Allow), bad_aor (400), aor_not_found (404: nobody holds a live
 * claim), resolve_timeout (504), registry_unavailable (503), bad_rules (400), bad_json (400),
 * too_large (413), presence_unavailable (404: no presence agent), bad_host (421), unauthorized
 * (401), foreign_domain (403), rules_limit (403), internal (500).
 *
 * It listens on loopback by default; anything else is logged as a warning: reads from other hosts
 * need the token then, but the API is plain HTTP, so the token crosses the network in clear.
 */
import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger, Route } from '../../sip-gateway/ports.ts'
import type { NodeMetrics } from '../metrics.ts'
import { AdminGuard } from './auth.ts'
import { listingRoute, type ListingsBackend } from './routes/listings.ts'
import { pageRoute, type PagesBackend } from './routes/static.ts'
import { readJson, type RouteContext } from './routes/context.ts'
import { listRoute, type ListsBackend } from './routes/lists.ts'

export interface AdminStatus {
  peerId: string
  multiaddrs: string[]
  sip: string
  domains: string[]
  peers: string[]
  registrations: number
  /** each bootstrap address: connected yet, dial attempts, the last error */
  bootstrap?: Array<{ address: string, connected: boolean, attempts: number, error?: string }>
  /** recent peer connections that failed or were refused, newest first */
  joinErrors?: Array<{ direction: 'inbound' | 'outbound', address?: string, peer?: string, reason: string, count: number, first: string, last: string }>
}

export interface AdminBackend {
  status (): AdminStatus
  /** throws an error named InvalidAorError for something that is not an AoR */
  normalizeAor (aor: string): string
  resolve (aor: string, options: { signal: AbortSignal, fresh: boolean }): Promise<Route | undefined>
  metrics (): Promise<{ contentType: string, body: string }>
  /** presence authorization rules (issue 4); absent when the node runs no gateway */
  presenceRules?: {
    get (aor: string): unknown
    /** throws an error with `status: 400` (and a `code`) for bad rules */
    set (aor: string, rules: unknown): Promise<unknown>
  }
  /** resource lists (routes/lists.ts); absent when the node runs no gateway */
  lists?: ListsBackend
  /** the listings (`/registrations`, `/peers`, `/mesh`...: routes/listings.ts) */
  listings?: ListingsBackend
  /** the dashboard and the browser phone (routes/static.ts) */
  pages?: PagesBackend
}

export interface AdminServerInit {
  host: string
  port: number
  /** how long GET /aor may take, ms @default 10000 */
  resolveTimeout?: number
  /** the bearer token of mutating requests (auth.ts); absent: they are all refused */
  token?: string
  /** the SIP domains the mesh serves: rules of presentities elsewhere are refused; absent: any */
  domains?: readonly string[]
}

export const ErrorCode = {
  notFound: 'not_found',
  methodNotAllowed: 'method_not_allowed',
  badAor: 'bad_aor',
  aorNotFound: 'aor_not_found',
  resolveTimeout: 'resolve_timeout',
  registryUnavailable: 'registry_unavailable',
  badRules: 'bad_rules',
  badJson: 'bad_json',
  tooLarge: 'too_large',
  presenceUnavailable: 'presence_unavailable',
  badHost: 'bad_host',
  unauthorized: 'unauthorized',
  foreignDomain: 'foreign_domain',
  rulesLimit: 'rules_limit',
  internal: 'internal'
} as const

const MAX_URL = 2048

export function isLoopback (host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host)
}

export function routeToJson (route: Route): { aor: string, owner: string, version: string, sip: string, expires: string } {
  return {
    aor: route.aor,
    owner: route.node,
    version: route.version.toString(),
    sip: route.sip,
    expires: new Date(route.expiresAt).toISOString()
  }
}

export class AdminServer {
  private readonly backend: AdminBackend
  private readonly log: Logger
  private readonly metrics?: NodeMetrics
  private readonly init: AdminServerInit
  private server?: Server
  private shutdown?: AbortController
  private readonly guard: AdminGuard

  constructor (components: { backend: AdminBackend, logger: Logger, metrics?: NodeMetrics }, init: AdminServerInit) {
    this.backend = components.backend
    this.log = components.logger.child({ component: 'admin' })
    this.metrics = components.metrics
    this.init = init
    this.guard = new AdminGuard({ host: init.host, token: init.token })
  }

  /** `host:port` actually bound (the port is known after start when 0 was asked for). */
  get address (): string {
    const a = this.server?.address() as AddressInfo | null | undefined
    if (a == null) return `${this.init.host}:${this.init.port}`
    return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`
  }

  async start (): Promise<void> {
    this.shutdown = new AbortController()
    const server = createServer({ maxHeaderSize: 8192 }, (req, res) => { void this.handle(req, res) })
    server.headersTimeout = 10_000
    server.requestTimeout = 15_000
    server.keepAliveTimeout = 5_000
    server.maxHeadersCount = 50
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.init.port, this.init.host, () => {
        server.off('error', reject)
        resolve()
      })
    })
    server.on('error', (err) => { this.log.error('admin server error', { error: err.message }) })
    this.server = server
    this.guard.listening((server.address() as AddressInfo).port)
    if (!isLoopback(this.init.host)) {
      this.log.warn('ADMIN API IS NOT ON LOOPBACK: every request from another host needs the bearer token, which plain HTTP sends in clear; bind it to 127.0.0.1 (or put TLS in front) unless the network is trusted', { admin: this.address })
    }
    this.log.info('admin API listening', { admin: this.address })
  }

  async stop (): Promise<void> {
    this.shutdown?.abort()
    const server = this.server
    this.server = undefined
    if (server == null) return
    await new Promise<void>((resolve) => {
      server.close(() => { resolve() })
      server.closeAllConnections()
    })
  }

  private send (res: ServerResponse, route: string, status: number, body: unknown, headers: Record<string, string> = {}): void {
    this.metrics?.adminRequests.inc({ route, status: String(status) })
    const text = JSON.stringify(body)
    res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(text),
      'cache-control': 'no-store',
      ...headers
    })
    res.end(text)
  }

  private error (res: ServerResponse, route: string, status: number, code: string, message: string, headers?: Record<string, string>): void {
    this.send(res, route, status, { error: { code, message } }, headers)
  }

  private async handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      await this.route(req, res)
    } catch (err) {
      this.log.error('admin request failed', { url: req.url?.slice(0, 200), error: (err as Error).message })
      if (!res.headersSent) this.error(res, 'error', 500, ErrorCode.internal, 'internal error')
      else res.destroy()
    }
  }

  private async route (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const refusal = this.guard.check(req)
    if (refusal !== undefined) {
      this.error(res, 'guard', refusal.status, refusal.code, refusal.message, refusal.headers)
      return
    }
    const raw = req.url ?? '/'
    if (raw.length > MAX_URL) {
      this.error(res, 'unknown', 404, ErrorCode.notFound, 'no such resource')
      return
    }
    const q = raw.indexOf('?')
    const path = q >= 0 ? raw.slice(0, q) : raw
    const query = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : '')

    let route: 'status' | 'aor' | 'metrics'
    const ctx: RouteContext = {
      req,
      res,
      path,
      query,
      signal: this.shutdown?.signal ?? AbortSignal.abort(),
      send: (r, status, body, headers) => { this.send(res, r, status, body, headers) },
      error: (r, status, code, message, headers) => { this.error(res, r, status, code, message, headers) },
      count: (r, status) => { this.metrics?.adminRequests.inc({ route: r, status: String(status) }) }
    }
    const rules = /^\/presence\/([^/]{1,512})\/rules$/u.exec(path)
    if (rules !== null) {
      await this.presenceRules(ctx, rules[1])
      return
    }
    if (await listRoute(ctx, this.backend.lists) || await pageRoute(ctx, this.backend.pages) || await listingRoute(ctx, this.backend.listings)) return
    if (path === '/status') route = 'status'
    else if (path === '/metrics') route = 'metrics'
    else if (path.startsWith('/aor/') && path.length > 5) route = 'aor'
    else {
      this.error(res, 'unknown', 404, ErrorCode.notFound, 'no such resource; try GET /, /status, /aor/<aor>, /registrations, /peers, /mesh or /metrics')
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      this.error(res, route, 405, ErrorCode.methodNotAllowed, `${String(req.method).slice(0, 20)} is not allowed; the admin API is read-only`, { allow: 'GET, HEAD' })
      return
    }

    switch (route) {
      case 'status':
        this.send(res, route, 200, this.backend.status())
        return
      case 'metrics': {
        const { contentType, body } = await this.backend.metrics()
        this.metrics?.adminRequests.inc({ route, status: '200' })
        res.writeHead(200, { 'content-type': contentType, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' })
        res.end(body)
        return
      }
      case 'aor':
        await this.aor(res, path.slice(5), query.get('fresh') === '1' || query.get('fresh') === 'true')
    }
  }

  private async aor (res: ServerResponse, encoded: string, fresh: boolean): Promise<void> {
    let aor: string
    try {
      aor = this.backend.normalizeAor(decodeURIComponent(encoded))
    } catch (err) {
      const message = (err as Error).name === 'URIError' ? 'the AoR is not valid URL encoding' : (err as Error).message
      this.error(res, 'aor', 400, ErrorCode.badAor, message)
      return
    }
    const started = performance.now()
    const signals = [AbortSignal.timeout(this.init.resolveTimeout ?? 10_000)]
    if (this.shutdown != null) signals.push(this.shutdown.signal)
    let route: Route | undefined
    try {
      route = await this.backend.resolve(aor, { signal: AbortSignal.any(signals), fresh })
    } catch (err) {
      const e = err as Error
      this.metrics?.aorLookups.observe({ result: 'error' }, (performance.now() - started) / 1000)
      if (e.name === 'TimeoutError' || e.name === 'AbortError') {
        this.error(res, 'aor', 504, ErrorCode.resolveTimeout, `resolving ${aor} took too long`)
      } else if (e.name === 'InvalidAorError') {
        this.error(res, 'aor', 400, ErrorCode.badAor, e.message)
      } else {
        this.log.warn('resolve failed', { aor, error: e.message })
        this.error(res, 'aor', 503, ErrorCode.registryUnavailable, `cannot resolve ${aor}: ${e.message}`)
      }
      return
    }
    this.metrics?.aorLookups.observe({ result: route == null ? 'not_found' : 'found' }, (performance.now() - started) / 1000)
    if (route == null) {
      this.error(res, 'aor', 404, ErrorCode.aorNotFound, `nobody holds a live claim of ${aor}`)
      return
    }
    this.send(res, 'aor', 200, routeToJson(route))
  }

  private async presenceRules (ctx: RouteContext, encoded: string): Promise<void> {
    const { req, res } = ctx
    const route = 'presence_rules'
    const api = this.backend.presenceRules
    if (api === undefined) { this.error(res, route, 404, ErrorCode.presenceUnavailable, 'this node runs no presence agent'); return }
    if (req.method !== 'GET' && req.method !== 'HEAD' && req.method !== 'PUT') {
      this.error(res, route, 405, ErrorCode.methodNotAllowed, `${String(req.method).slice(0, 20)} is not allowed`, { allow: 'GET, HEAD, PUT' })
      return
    }
    let aor: string
    try {
      aor = decodeURIComponent(encoded)
    } catch {
      this.error(res, route, 400, ErrorCode.badAor, 'the AoR is not URL-encoded properly')
      return
    }
    try {
      if (req.method !== 'PUT') { this.send(res, route, 200, api.get(aor)); return }
      const foreign = this.foreignDomain(aor)
      if (foreign !== undefined) { this.error(res, route, 403, ErrorCode.foreignDomain, foreign); return }
      const body = await readJson(ctx, route, 256 * 1024)
      if (body.ok) this.send(res, route, 200, await api.set(aor, body.value))
    } catch (err) {
      const e = err as { status?: number, message?: string, code?: string }
      if (e.status === 400 && e.code === 'bad-aor') { this.error(res, route, 400, ErrorCode.badAor, String(e.message).slice(0, 200)); return }
      if (e.code === 'rules-limit') { this.error(res, route, 403, ErrorCode.rulesLimit, String(e.message).slice(0, 200)); return }
      if (e.status === 400) { this.error(res, route, 400, ErrorCode.badRules, String(e.message).slice(0, 200)); return }
      throw err
    }
  }

  /** why a presentity's rules may not be set here (its domain is not the mesh's), or undefined */
  private foreignDomain (aor: string): string | undefined {
    const domains = this.init.domains
    if (domains === undefined) return undefined
    // the domain as any lenient parser would read it (a trailing dot, a port, parameters): a
    // string that has none is left to the rules module, which answers bad_aor
    const at = aor.lastIndexOf('@')
    if (at < 0) return undefined
    const host = aor.slice(at + 1).trim().replace(/[;?>].*$/su, '').replace(/:\d*$/u, '').replace(/\.$/u, '').toLowerCase()
    if (domains.includes(host)) return undefined
    return `${host.slice(0, 100)} is not a domain this mesh serves (${domains.join(', ')}); its users' rules belong to their own servers`
  }
}
