/** Shapes shared by the transports and the transport layer. */
import type { SipMessage } from '../codec/message.ts'

export type TransportKind = 'udp' | 'tcp' | 'ws' | 'tls' | 'wss'
/** transports that run over a connection */
export type StreamKind = Exclude<TransportKind, 'udp'>

export interface Address {
  host: string
  port: number
}

/** Where a message came from. */
export interface MessageSource {
  transport: TransportKind
  /** the peer's address as the socket sees it (the source of the datagram or connection) */
  remote: Address
  /** our address the message arrived on */
  local: Address
  /** the connection it arrived on, for TCP and WebSocket; answers go back over it */
  connectionId?: string
}

/**
 * Where to send a message. With `connectionId`, over that connection while it is open; else
 * UDP to host:port, TCP over a connection to host:port (reused, or opened), WebSocket over an
 * open connection from host:port (we never dial WebSocket).
 */
export interface SendTarget {
  transport: TransportKind
  host: string
  port: number
  connectionId?: string
}

export type MessageHandler = (message: SipMessage, source: MessageSource) => void

export interface ConnectionInfo {
  id: string
  transport: StreamKind
  remote: Address
  local: Address
  /** true when we dialled it */
  outbound: boolean
  /**
   * TLS: the peer network at the other end, by its certificate (RFC 5922); absent for a user
   * agent (no client certificate) and on other transports
   */
  peerDomain?: string
}

export type ConnectionHandler = (connection: ConnectionInfo) => void

export interface TransportCounters {
  messagesIn: Record<TransportKind, number>
  messagesOut: Record<TransportKind, number>
  parseErrors: Record<TransportKind, number>
  /** connections closed by the slow-peer timeout */
  slowPeers: number
  /** connections closed by the idle timeout */
  idleClosed: number
  /** messages refused for their size */
  oversize: number
  /** messages dropped by the per-source rate limit */
  rateLimited: number
  /** open TCP and WebSocket connections */
  connections: number
  /**
   * connections refused at accept (TCP) or handshake (WebSocket): over the per-source-address cap
   * (`host`), or over the cap on all connections (`total`)
   */
  connectionsRefused: { host: number, total: number }
  /** inbound connections closed because no whole SIP message came within the first-message timeout */
  silentClosed: number
  /** TLS handshakes that failed or timed out (plain SIP to the TLS port, a client that never finishes) */
  tlsHandshakeFailures: number
  /** TLS connections refused for their certificate (untrusted, expired, naming no configured peer) */
  tlsRefused: number
  /** UDP datagrams to an IP address that the socket failed to send after `send` returned (see `sendUdp`) */
  sendErrors: number
}

/**
 * A flow: the peer a message came from (or one we opened), as the transaction and proxy layers
 * see it. Structurally what `proxy/flow.ts` asks of a transport flow.
 */
export interface TransportFlow {
  /** the Via transport token: `UDP`, `TCP`, `WS`, `TLS` or `WSS` */
  readonly transport: 'UDP' | 'TCP' | 'WS' | 'TLS' | 'WSS'
  /** TCP and WebSocket: no retransmissions (RFC 3261 17.1.1.2, 17.1.2.2) */
  readonly reliable: boolean
  readonly remote: Address
  /** the connection, for TCP and WebSocket flows */
  readonly connectionId?: string
  /** TLS: the peer network whose certificate the other end showed (ConnectionInfo.peerDomain) */
  readonly peerDomain?: string
  /** false once the connection of a TCP or WebSocket flow has closed (UDP flows stay open) */
  readonly open: boolean
  /**
   * throws or rejects with TransportError when it cannot be sent (a closed connection is never
   * re-dialled); UDP to an IP address returns at once (see TransportLayer.sendUdp)
   */
  send (message: SipMessage): void | Promise<void>
  /** UDP flows: serialize, and send serialized bytes (a lingering transaction keeps only those) */
  serialize? (message: SipMessage): Uint8Array
  sendBytes? (data: Uint8Array): void | Promise<void>
}
