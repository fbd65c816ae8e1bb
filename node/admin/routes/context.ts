/**
 * What a route module of the admin API gets from the server (node/admin/server.ts): a way to
 * answer JSON or an error in the API's one shape (`{ error: { code, message } }`, counted in
 * `sipmesh_admin_requests_total`), the raw response for other bodies, and the server's shutdown
 * signal. A route module answers the paths it knows and returns false for the others.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'

export interface RouteContext {
  req: IncomingMessage
  res: ServerResponse
  path: string
  query: URLSearchParams
  /** aborted when the server stops */
  signal: AbortSignal
  send (route: string, status: number, body: unknown, headers?: Record<string, string>): void
  error (route: string, status: number, code: string, message: string, headers?: Record<string, string>): void
  /** count a request answered with a body of our own */
  count (route: string, status: number): void
}

/** Only GET and HEAD: true when the method is one of them, else answered 405. */
export function readOnly (ctx: RouteContext, route: string): boolean {
  if (ctx.req.method === 'GET' || ctx.req.method === 'HEAD') return true
  ctx.error(route, 405, 'method_not_allowed', `${String(ctx.req.method).slice(0, 20)} is not allowed here`, { allow: 'GET, HEAD' })
  return false
}
