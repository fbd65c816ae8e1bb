/**
 * The admin API's listings (issue 14), read-only JSON, like Kamailio's `kamcmd ul.dump`:
 *
 *   GET /registrations?prefix=&after=&limit=   this node's AoRs and their bindings, in code-unit
 *                     order: `{ items: [{ aor, bindings: [{ contact, expires, params, transport?, source? }] }],
 *                     total, limit, next? }`. `prefix` filters (`sip:al` or `al`), `after` is the
 *                     cursor (the `next` of the page before), `limit` 1-1000 (default 100).
 *   GET /bindings/<aor>   who owns an AoR and its bindings there (asked over the mesh when another
 *                     node owns it): `{ aor, owner, sip, self, bindings }`, 404 aor_not_found
 *   GET /peers        the mesh peers this node is connected to: `[{ peerId, addresses,
 *                     latencyMs?, connections: [{ direction, status, rttMs?, opened, streams:
 *                     { <protocol>: count } }], sipStream: { open, queued } }]`
 *   GET /subscriptions?limit=   presentities the presence agent tracks, their watchers and how
 *                     each is served (see sip-gateway/inspect.ts)
 *   GET /offline?limit=  users with stored MESSAGEs waiting here and how many
 *   GET /claims?limit=   claims this node owns, and the claim records it stores (own and
 *                     replicated for other owners; at most `limit` read from the store)
 *   GET /mesh         this node, the peers it is connected to and theirs, and who is connected to
 *                     whom (node/mesh-info.ts)
 *   GET /summary      running totals and current values for the dashboard's plots
 *
 * Bad input answers 400 with code bad_query (a limit that is not a whole number in range, a prefix
 * or cursor too long or with control characters) or bad_aor.
 */
import { readOnly, type RouteContext } from './context.ts'
import type { BindingView, GatewayInspection } from '../../../sip-gateway/inspect.ts'
import type { MeshView } from '../../mesh-info.ts'

export const MAX_LIMIT = 1000
export const DEFAULT_LIMIT = 100
const MAX_FILTER_CHARS = 512

export interface PeerView {
  peerId: string
  addresses: string[]
  /** the lowest round-trip time libp2p's connection monitor measured on an open connection, ms */
  latencyMs?: number
  connections: Array<{ direction: string, status: string, rttMs?: number, opened: string, streams: Record<string, number> }>
  /** the SIP peer channel's stream to this peer (node/peer-channel.ts) */
  sipStream: { open: boolean, queued: number }
}

export interface ClaimView { aor: string, owner: string, version: string, expires: string, own: boolean }

export interface ClaimsView {
  owned: { total: number, aors: string[] }
  stored: { items: ClaimView[], scanned: number, truncated: boolean }
}

export interface SummaryView {
  peerId: string
  /** ms since the epoch */
  time: number
  /** running totals since start */
  totals: { sipRequests: number, claims: number, claimsStored: number, forwardedMesh: number, deliveredLocal: number, meshIn: number, meshOut: number, notifies: number, offlineStored: number }
  /** current values */
  now: { registrations: number, bindings: number, peers: number, ownedClaims: number, subscriptions: number, offlineMessages: number, peerRttMs?: number }
}

export interface AorBindingsView { aor: string, owner: string, sip: string, self: boolean, bindings: BindingView[] }

export interface ListingsBackend {
  /** absent when the node runs no SIP gateway */
  gateway?: GatewayInspection
  peers (): PeerView[]
  mesh (): Promise<MeshView>
  claims (limit: number, signal: AbortSignal): Promise<ClaimsView>
  summary (): SummaryView
  /** throws an error named InvalidAorError for something that is not an AoR */
  normalizeAor (aor: string): string
  /** the AoR's owner and its bindings there; undefined when nobody holds a live claim */
  aorBindings (aor: string, signal: AbortSignal): Promise<AorBindingsView | undefined>
}

export class BadQueryError extends Error {
  static readonly NAME = 'BadQueryError'
  override readonly name = BadQueryError.NAME
}

/** `?limit=`: absent → the default; else a whole number from 1 to `max`. */
export function parseLimit (query: URLSearchParams, fallback = DEFAULT_LIMIT, max = MAX_LIMIT): number {
  const raw = query.get('limit')
  if (raw === null) return fallback
  if (!/^\d{1,7}$/.test(raw) || Number(raw) < 1 || Number(raw) > max) throw new BadQueryError(`limit: expected a whole number from 1 to ${max}`)
  return Number(raw)
}

/** A text filter (`prefix`, `after`): at most 512 characters, no control characters. */
export function parseFilter (query: URLSearchParams, name: string): string | undefined {
  const raw = query.get(name)
  if (raw === null || raw === '') return undefined
  // eslint-disable-next-line no-control-regex
  if (raw.length > MAX_FILTER_CHARS || /[\u0000-\u001f\u007f]/u.test(raw)) throw new BadQueryError(`${name}: at most ${MAX_FILTER_CHARS} characters, none of them control characters`)
  return raw
}

const LISTINGS = new Set(['/registrations', '/peers', '/subscriptions', '/offline', '/claims', '/mesh', '/summary'])

/** Answers the listing paths; false for any other path. */
export async function listingRoute (ctx: RouteContext, backend: ListingsBackend | undefined): Promise<boolean> {
  const { path } = ctx
  const isBindings = path.startsWith('/bindings/') && path.length > 10
  if (!LISTINGS.has(path) && !isBindings) return false
  const route = isBindings ? 'bindings' : path.slice(1)
  if (!readOnly(ctx, route)) return true
  if (backend === undefined) { ctx.error(route, 404, 'not_found', 'this node lists nothing'); return true }
  try {
    await answer(ctx, backend, route)
  } catch (err) {
    if ((err as Error).name === BadQueryError.NAME) { ctx.error(route, 400, 'bad_query', (err as Error).message); return true }
    throw err
  }
  return true
}

function needGateway (ctx: RouteContext, route: string, backend: ListingsBackend): GatewayInspection | undefined {
  if (backend.gateway === undefined) ctx.error(route, 404, 'gateway_unavailable', 'this node runs no SIP gateway')
  return backend.gateway
}

async function answer (ctx: RouteContext, backend: ListingsBackend, route: string): Promise<void> {
  const { query } = ctx
  switch (route) {
    case 'registrations': {
      const limit = parseLimit(query)
      const prefix = parseFilter(query, 'prefix')
      const after = parseFilter(query, 'after')
      const gw = needGateway(ctx, route, backend)
      if (gw === undefined) return
      ctx.send(route, 200, { ...gw.registrations({ prefix: prefix === undefined || prefix.startsWith('sip:') ? prefix : `sip:${prefix}`, after, limit }), limit })
      return
    }
    case 'subscriptions': {
      const limit = parseLimit(query)
      const gw = needGateway(ctx, route, backend)
      if (gw !== undefined) ctx.send(route, 200, gw.subscriptions(limit))
      return
    }
    case 'offline': {
      const limit = parseLimit(query)
      const gw = needGateway(ctx, route, backend)
      if (gw !== undefined) ctx.send(route, 200, gw.offline(limit))
      return
    }
    case 'peers':
      ctx.send(route, 200, backend.peers())
      return
    case 'claims': {
      const limit = parseLimit(query)
      ctx.send(route, 200, await backend.claims(limit, AbortSignal.any([ctx.signal, AbortSignal.timeout(10_000)])))
      return
    }
    case 'mesh':
      ctx.send(route, 200, await backend.mesh())
      return
    case 'summary':
      ctx.send(route, 200, backend.summary())
      return
    case 'bindings':
      await bindings(ctx, backend, route)
  }
}

async function bindings (ctx: RouteContext, backend: ListingsBackend, route: string): Promise<void> {
  let aor: string
  try {
    aor = backend.normalizeAor(decodeURIComponent(ctx.path.slice('/bindings/'.length)))
  } catch (err) {
    const e = err as Error
    ctx.error(route, 400, 'bad_aor', e.name === 'URIError' ? 'the AoR is not valid URL encoding' : e.message.slice(0, 200))
    return
  }
  let view: AorBindingsView | undefined
  try {
    view = await backend.aorBindings(aor, AbortSignal.any([ctx.signal, AbortSignal.timeout(10_000)]))
  } catch (err) {
    const e = err as Error
    if (e.name === 'InvalidAorError') { ctx.error(route, 400, 'bad_aor', e.message.slice(0, 200)); return }
    if (e.name === 'TimeoutError' || e.name === 'AbortError') { ctx.error(route, 504, 'resolve_timeout', `asking for ${aor} took too long`); return }
    ctx.error(route, 503, 'registry_unavailable', `cannot get the bindings of ${aor}: ${e.message.slice(0, 200)}`)
    return
  }
  if (view === undefined) { ctx.error(route, 404, 'aor_not_found', `nobody holds a live claim of ${aor}`); return }
  ctx.send(route, 200, view)
}
