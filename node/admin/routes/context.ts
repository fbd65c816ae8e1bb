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

/**
 * The request's JSON body, at most `max` bytes; on failure the error is answered (413 too_large,
 * 400 bad_json) and `undefined` returned, so `{ ok: false }` means "already answered".
 */
export async function readJson (ctx: RouteContext, route: string, max: number): Promise<{ ok: true, value: unknown } | { ok: false }> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > max) {
      ctx.error(route, 413, 'too_large', `the body is larger than ${Math.round(max / 1024)} KiB`)
      ctx.req.destroy()
      return { ok: false }
    }
    chunks.push(chunk)
  }
  try {
    return { ok: true, value: JSON.parse(Buffer.concat(chunks).toString('utf8')) }
  } catch {
    ctx.error(route, 400, 'bad_json', 'the body is not JSON')
    return { ok: false }
  }
}
