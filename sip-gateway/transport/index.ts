/**
 * SIP transports (RFC 3261 18, RFC 7118, RFC 5626 keep-alives, RFC 3581 rport).
 *
 * `TransportLayer` listens on UDP, TCP and WebSocket, delivers each parsed message upward with
 * its source (transport, remote and local address, connection id for TCP and WebSocket), stamps
 * `received`/`rport` on the top Via of requests, answers malformed requests with 400 (or the
 * parse error's status: 505, 416, 513) when they can be answered and drops them otherwise, and
 * sends messages back over the connection they came on or to an address (reusing or opening
 * TCP connections).
 *
 * Limits, so that one bad peer cannot hold up the others: a size limit per message (64 KiB on
 * streams, 65,507 bytes on UDP by default), an idle timeout per connection, a slow-peer timeout
 * (a message must complete within `messageTimeoutMs` of its first byte), a first-message timeout
 * (an inbound connection that says nothing is closed), a cap on connections in all and per source
 * address, and on bytes queued for a peer that does not read.
 *
 * ```ts
 * const transports = new TransportLayer({ logger }, { sip: { host: '127.0.0.1', port: 5060 }, ws: { host: '127.0.0.1', port: 5066 } })
 * transports.onMessage((message, source) => { ... transports.send(response, transports.targetOf(source)) })
 * await transports.start()
 * ```
 */
export {
  TransportLayer, stampVia,
  type TransportLayerInit, type TransportLayerComponents, type ListenAddress, type TransportAddresses
} from './transport-layer.ts'
export { StreamFramer, type FrameEvent } from './stream-framer.ts'
export { MAX_UDP_PAYLOAD } from './udp.ts'
export { SourceRateLimiter, LogSampler, type RateLimitInit } from './limits.ts'
export type {
  TransportKind, Address, MessageSource, TransportFlow, SendTarget, MessageHandler, ConnectionInfo, ConnectionHandler, TransportCounters
} from './types.ts'
export { TransportError } from '../errors.ts'
