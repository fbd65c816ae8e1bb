/**
 * Record-Route and Route (RFC 3261 16.4, 16.6 step 4, 16.12; RFC 5658): the entries this node
 * inserts, the top Route entries naming it that it consumes, and whether a request from a user
 * agent may follow the Route entries left. Pure functions: who "we" are comes from NodeAddress.
 */
import type { SipRequest } from '../codec/message.ts'
import { parseUri, type SipUri } from '../codec/uri.ts'
import { parseNameAddr } from '../codec/name-addr.ts'
import { MESH_TRANSPORT, type Flow } from './flow.ts'
import type { NodeAddress } from './address.ts'
import { hasToTag, safeUri } from './message-reading.ts'

/**
 * RFC 3261 16.6 step 4 and RFC 5658: our Record-Route entries for a branch from `inbound` to
 * `outbound`, top first. Each user agent side gets an entry naming its transport; two sides on
 * different transports get one each (the outgoing side's on top); a mesh side needs none.
 */
export function recordRoute (us: NodeAddress, inbound: Pick<Flow, 'transport' | 'peerDomain'>, outbound: Pick<Flow, 'transport' | 'peerDomain'>): string[] {
  // a side is its transport, and whether it faces a peer network (no `node` parameter then)
  const sides = [outbound, inbound].filter(f => f.transport !== MESH_TRANSPORT).map(f => ({ transport: f.transport, peer: f.peerDomain !== undefined }))
  if (sides.length === 2 && sides[0].transport === sides[1].transport && sides[0].peer === sides[1].peer) sides.pop()
  if (sides.length === 0) sides.push({ transport: 'UDP', peer: false })
  return sides.map(s => recordRouteEntry(us, s.transport, s.peer))
}

/** one entry of ours for a side on `transport`; `peer`: it faces a peer network (no `node` parameter) */
export function recordRouteEntry (us: NodeAddress, transport: string, peer: boolean): string {
  const node = peer ? '' : `;node=${us.nodeId}`
  switch (transport) {
    case 'UDP': return `<sip:${us.host}:${us.port};lr${node}>`
    default: return `<sip:${us.host}:${us.portFor(transport)};transport=${transport.toLowerCase()};lr${node}>`
  }
}

/**
 * 16.4: the top Route entries naming this node are removed (two when we Record-Routed both sides
 * of a dialog, RFC 5658); true when one was
 */
export function consumeOurRoute (request: SipRequest, us: NodeAddress): boolean {
  let consumed = false
  for (;;) {
    const top = request.headers.get('Route')
    if (top === undefined || !us.isOurUri(safeUri(parseNameAddr(top).uri))) return consumed
    request.headers.shift('Route')
    consumed = true
  }
}

/**
 * RFC 3261 16.4 / 16.12, and the SPEC's "a request for a domain the node does not serve is
 * never forwarded": may this request follow the Route entries left once ours was consumed?
 *
 * - From a mesh peer: yes. The node that took the request from its user agent checked it.
 * - From a user agent: only an in-dialog request (To tag) that named this node in its top
 *   Route (so we Record-Routed its dialog), and whose remaining entries are all mesh
 *   Record-Route entries (`node=`), the only ones this mesh inserts. Those are followed over
 *   the PeerChannel, never to an address, and the last node delivers by the Request-URI only
 *   to a contact registered there. Anything else (an out-of-dialog request with a Route left,
 *   a foreign proxy in the route set) would make the node a relay to any socket: refused.
 *   Gap: a foreign Record-Routing proxy between a user agent and the mesh is not supported.
 */
export function mayFollowRoute (request: SipRequest, fromMesh: boolean, consumedOurs: boolean): boolean {
  if (fromMesh) return true
  if (!consumedOurs || !hasToTag(request)) return false
  // every entry, whether on its own line or comma-separated (getAll splits list headers)
  for (const entry of request.headers.getAll('Route')) {
    let u: SipUri
    try { u = parseUri(parseNameAddr(entry).uri) } catch { return false }
    if (typeof u.params.node !== 'string' || u.params.node === '') return false
  }
  return true
}
