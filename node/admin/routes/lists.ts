/**
 * Resource lists (issue 12 section 4, RFC 4662; sip-gateway/presence/lists/):
 *
 *   PUT /lists/<list URI>    define or replace a list: `{ "members": [aor…], "owner"?: aor }`; this
 *                     node becomes its home (persists it, claims the URI; see lists/exchange.ts).
 *                     200 `{ uri, members, owner?, home }`
 *   GET /lists/<list URI>    the list, from this node or its home node; 404 list_not_found
 *   DELETE /lists/<list URI> remove the list, here or at its home node (the request goes there):
 *                     200 `{ deleted: true }`; 404 list_not_found; 503 home_unreachable
 *
 * The list URI is URL-encoded (`/lists/sip%3Afriends%40example.com`) and must be an address of
 * a served domain. Errors: bad_aor (400: a URI that is not an AoR, or not of our domains),
 * bad_list (400: not `{ members: [...] }`, unknown fields), nested_list (400: a member is a list,
 * or the list is a member of one), too_large (413: more than 1,000 members, more than 48 KiB as
 * JSON, a body over 256 KiB), too_many_lists (413: this node holds 10,000), registered_user (409:
 * the URI is a user registered here), bad_json (400), presence_unavailable (404).
 */
import { readJson, type RouteContext } from './context.ts'

export interface ListsBackend {
  get (uri: string): Promise<unknown>
  /** throws an error with `status` and `code` for a list refused */
  put (uri: string, body: unknown): Promise<unknown>
  delete (uri: string): Promise<boolean>
}

const MAX_BODY = 256 * 1024
const ROUTE = 'lists'

/** answers `/lists/<uri>`; false for any other path */
export async function listRoute (ctx: RouteContext, backend: ListsBackend | undefined): Promise<boolean> {
  const match = /^\/lists\/([^/]{1,1024})$/u.exec(ctx.path)
  if (match === null) return false
  if (backend === undefined) { ctx.error(ROUTE, 404, 'presence_unavailable', 'this node runs no presence agent'); return true }
  const method = ctx.req.method ?? ''
  if (!['GET', 'HEAD', 'PUT', 'DELETE'].includes(method)) {
    ctx.error(ROUTE, 405, 'method_not_allowed', `${method.slice(0, 20)} is not allowed`, { allow: 'GET, HEAD, PUT, DELETE' })
    return true
  }
  let uri: string
  try {
    uri = decodeURIComponent(match[1])
  } catch {
    ctx.error(ROUTE, 400, 'bad_aor', 'the list URI is not URL-encoded properly')
    return true
  }
  try {
    if (method === 'PUT') {
      const body = await readJson(ctx, ROUTE, MAX_BODY)
      if (body.ok) ctx.send(ROUTE, 200, await backend.put(uri, body.value))
      return true
    }
    if (method === 'DELETE') {
      if (await backend.delete(uri)) ctx.send(ROUTE, 200, { deleted: true })
      else ctx.error(ROUTE, 404, 'list_not_found', `no list ${uri.slice(0, 200)} in the mesh`)
      return true
    }
    const list = await backend.get(uri)
    if (list === undefined) ctx.error(ROUTE, 404, 'list_not_found', `no list ${uri.slice(0, 200)} in the mesh`)
    else ctx.send(ROUTE, 200, list)
  } catch (err) {
    const e = err as { status?: number, code?: string, message?: string }
    if (typeof e.status === 'number' && e.status >= 400 && e.status < 600 && typeof e.code === 'string') {
      ctx.error(ROUTE, e.status, e.code, String(e.message).slice(0, 200))
      return true
    }
    throw err
  }
  return true
}
