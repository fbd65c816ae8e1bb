/**
 * Flows as the proxy core sees them: where a message came from and how to answer. The gateway
 * adapts its transports (UDP, TCP, WebSocket) and the PeerChannel to this shape.
 */
import type { SipRequest, SipResponse } from '../codec/message.ts'
import type { MessageFlow } from '../transaction/layer.ts'

export interface Flow extends MessageFlow {
  /** Via transport token: `UDP`, `TCP`, `TLS`, `WS`, `WSS`, or `MESH` for the PeerChannel */
  readonly transport: string
  /** the peer's address (ip and port for user agents; for the mesh, the node id and 0) */
  readonly remote: { host: string, port: number }
  /** the peer node id, for mesh flows only */
  readonly node?: string
  /** TLS flows from or to a peer network: its domain, by its certificate (proxy/peering.ts) */
  readonly peerDomain?: string
  /** false once a connection-oriented flow has closed */
  readonly open: boolean
  send (message: SipRequest | SipResponse): void | Promise<void>
}

/** Opens (or reuses) a flow to an address taken from a URI or a Via. */
export interface Connector {
  /** `domain`: a peer network (TLS), whose certificate must name it */
  connect (target: { transport: string, host: string, port: number, domain?: string }): Flow | Promise<Flow>
}

/** The Via transport token of mesh hops. */
export const MESH_TRANSPORT = 'MESH'
