/**
 * The node's side of the admin API's listings and pages (routes/listings.ts, routes/static.ts):
 * reads of libp2p, the claim registry, the peer channel and the gateway's views, assembled by
 * SipmeshNode. Every list is bounded by the caller's limit or a fixed cap.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { normalizeAor } from '../../dht/record/claim.ts'
import { MAX_LISTED_PEERS } from '../mesh-info.ts'
import type { MeshInfo, NodeSummary } from '../mesh-info.ts'
import type { MeshNode } from '../libp2p.ts'
import type { Libp2pPeerChannel } from '../peer-channel.ts'
import type { GatewayInspection } from '../../sip-gateway/inspect.ts'
import type { AorBindingsView, ClaimsView, ClaimView, ListingsBackend, PeerView, SummaryView } from './routes/listings.ts'
import type { PagesBackend } from './routes/static.ts'

/** Most peers listed by `/peers` (a node keeps far fewer connections than this). */
const MAX_PEERS_LISTED = 500

export interface ListingsParts {
  mesh: MeshNode
  channel: Libp2pPeerChannel
  meshInfo: MeshInfo
  domains: readonly string[]
  /** the gateway's views, when it runs */
  gateway: () => GatewayInspection | undefined
  /** the gateway's counters, when it runs */
  stats: () => { requests: number, forwardedMesh: number, deliveredLocal: number, meshIn: number, meshOut: number, bindings: number, presence?: { subscriptions: number, notifiesSent: number }, offline?: { messages: number, stored: number } } | undefined
  registrations: () => number
  sip: () => string
  admin: () => string
}

/** This node as it describes itself to other nodes (node/mesh-info.ts). */
export function nodeSummary (p: ListingsParts): NodeSummary {
  const ws = p.gateway()?.ws()
  return {
    peerId: p.mesh.peerId.toString(),
    sip: p.sip(),
    ...(ws !== undefined ? { ws } : {}),
    admin: p.admin(),
    domains: [...p.domains],
    registrations: p.registrations(),
    ownedClaims: p.mesh.registry.owned().length,
    peers: [...new Set(p.mesh.libp2p.getPeers().map(String))].sort().slice(0, MAX_LISTED_PEERS)
  }
}

function peers (p: ListingsParts): PeerView[] {
  const byPeer = new Map<string, PeerView>()
  for (const c of p.mesh.libp2p.getConnections()) {
    const id = c.remotePeer.toString()
    let v = byPeer.get(id)
    if (v === undefined) {
      if (byPeer.size >= MAX_PEERS_LISTED) continue
      v = { peerId: id, addresses: [], connections: [], sipStream: p.channel.linkState(id) }
      byPeer.set(id, v)
    }
    const address = c.remoteAddr.toString()
    if (!v.addresses.includes(address)) v.addresses.push(address)
    const streams: Record<string, number> = {}
    for (const s of c.streams) {
      const proto = s.protocol ?? '(negotiating)'
      streams[proto] = (streams[proto] ?? 0) + 1
    }
    v.connections.push({ direction: c.direction, status: c.status, ...(c.rtt !== undefined ? { rttMs: c.rtt } : {}), opened: new Date(c.timeline.open).toISOString(), streams })
    if (c.status === 'open' && c.rtt !== undefined && (v.latencyMs === undefined || c.rtt < v.latencyMs)) v.latencyMs = c.rtt
  }
  return [...byPeer.values()].sort((a, b) => a.peerId < b.peerId ? -1 : 1)
}

async function claims (p: ListingsParts, limit: number, signal: AbortSignal): Promise<ClaimsView> {
  const self = p.mesh.peerId.toString()
  const owned = p.mesh.registry.owned().sort()
  const items: ClaimView[] = []
  let scanned = 0
  for await (const { claim } of p.mesh.datastore.claims(limit + 1, { signal })) {
    scanned++
    if (items.length === limit) break
    items.push({ aor: claim.aor, owner: claim.owner.toString(), version: claim.version.toString(), expires: new Date(claim.expiresAt).toISOString(), own: claim.owner.toString() === self })
  }
  return { owned: { total: owned.length, aors: owned.slice(0, limit) }, stored: { items, scanned: Math.min(scanned, limit), truncated: scanned > limit } }
}

function summary (p: ListingsParts): SummaryView {
  const s = p.stats()
  const r = p.mesh.registry.stats
  let rtt = 0
  let n = 0
  for (const c of p.mesh.libp2p.getConnections()) if (c.status === 'open' && c.rtt !== undefined) { rtt += c.rtt; n++ }
  return {
    peerId: p.mesh.peerId.toString(),
    time: Date.now(),
    totals: {
      sipRequests: s?.requests ?? 0,
      claims: r.claims,
      claimsStored: r.putsReceived,
      forwardedMesh: s?.forwardedMesh ?? 0,
      deliveredLocal: s?.deliveredLocal ?? 0,
      meshIn: s?.meshIn ?? 0,
      meshOut: s?.meshOut ?? 0,
      notifies: s?.presence?.notifiesSent ?? 0,
      offlineStored: s?.offline?.stored ?? 0
    },
    now: {
      registrations: p.registrations(),
      bindings: s?.bindings ?? 0,
      peers: p.mesh.libp2p.getPeers().length,
      ownedClaims: p.mesh.registry.owned().length,
      subscriptions: s?.presence?.subscriptions ?? 0,
      offlineMessages: s?.offline?.messages ?? 0,
      ...(n > 0 ? { peerRttMs: Math.round(rtt / n * 10) / 10 } : {})
    }
  }
}

async function aorBindings (p: ListingsParts, aor: string, signal: AbortSignal): Promise<AorBindingsView | undefined> {
  const route = await p.mesh.registry.resolve(aor, { signal })
  if (route === undefined) return undefined
  const self = route.node === p.mesh.peerId.toString()
  const bindings = self
    ? p.gateway()?.bindings(aor) ?? []
    : await p.meshInfo.bindingsAt(peerIdFromString(route.node).toString(), aor, { signal })
  return { aor, owner: route.node, sip: route.sip, self, bindings }
}

export function listingsBackend (p: ListingsParts): ListingsBackend {
  return {
    get gateway () { return p.gateway() },
    peers: () => peers(p),
    mesh: async () => await p.meshInfo.mesh(),
    claims: async (limit, signal) => await claims(p, limit, signal),
    summary: () => summary(p),
    normalizeAor,
    aorBindings: async (aor, signal) => await aorBindings(p, aor, signal)
  }
}

export function pagesBackend (p: ListingsParts): PagesBackend {
  return { ws: () => p.gateway()?.ws(), domains: () => [...p.domains] }
}
