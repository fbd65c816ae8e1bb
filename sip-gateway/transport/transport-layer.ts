/**
 * The transport layer (RFC 3261 18): UDP, TCP and WebSocket listeners, parsed messages delivered
 * upward with their source, messages sent back over the connection they came on or to an
 * address, malformed input answered (or dropped), limits and timeouts enforced per connection.
 */
import { isIP, type Socket } from 'node:net'
import type { Server as TlsServer, TLSSocket } from 'node:tls'
import type { RemoteInfo } from 'node:dgram'
import type { Server as HttpServer } from 'node:http'
import type { Server as NetServer } from 'node:net'
import type { WebSocketServer } from 'ws'
import { parseMessage } from '../codec/parser.ts'
import { serializeMessage } from '../codec/serializer.ts'
import { SipRequest, isRequest, type SipMessage } from '../codec/message.ts'
import { createResponse } from '../codec/response.ts'
import { setTopVia, topVia } from '../codec/via.ts'
import { SipParseError, TransportError } from '../errors.ts'
import type { AbortOptions, Logger } from '../ports.ts'
import type { StreamConnection, StreamHost, StreamSettings } from './connection.ts'
import type { FrameEvent } from './stream-framer.ts'
import { TcpConnection, dialTcp, listenTcp } from './tcp.ts'
import { bindUdp, MAX_UDP_PAYLOAD, type UdpEndpoint } from './udp.ts'
import { bindUdpThread } from './udp-thread.ts'
import { WsConnection, listenWs } from './ws.ts'
import { dialTls, inboundVerdict, listenTls, type TlsCredentials } from './tls.ts'
import { LogSampler, SourceRateLimiter, type RateLimitInit } from './limits.ts'
import type {
  Address, ConnectionHandler, ConnectionInfo, MessageHandler, MessageSource, SendTarget, StreamKind, TransportCounters, TransportFlow,
  TransportKind
} from './types.ts'

/** TLS settings: this node's certificate, the authorities for peers, who the peers are. */
export interface TlsInit extends TlsCredentials {
  /** domains of the configured peer networks: a client certificate must name one of them */
  peers?: Iterable<string>
  /**
   * A TLS handshake must end within this, or the connection is dropped (a client that never
   * finishes cannot hold a slot).
   * @default 5000
   */
  handshakeTimeoutMs?: number
}

export interface ListenAddress {
  host: string
  /** 0 picks a free port */
  port: number
}

export interface TransportLayerInit {
  /** UDP and TCP on the same address (with port 0: one free port for both) */
  sip?: ListenAddress
  udp?: ListenAddress
  tcp?: ListenAddress
  ws?: ListenAddress
  /** SIP over TLS (RFC 3261 26.2); needs `tlsCredentials` */
  tls?: ListenAddress
  /** SIP over secure WebSocket (RFC 7118), with the same certificate; needs `tlsCredentials` */
  wss?: ListenAddress
  /** certificate, key and authorities for TLS and secure WebSocket, and dialled TLS connections */
  tlsCredentials?: TlsInit
  /**
   * Largest message on TCP and WebSocket, in bytes.
   * @default 65536
   */
  maxMessageSize?: number
  /**
   * Largest UDP datagram accepted, in bytes (at most 65,507).
   * @default 65507
   */
  maxDatagramSize?: number
  /**
   * A TCP or WebSocket connection without traffic for this long is closed. User agents keep
   * their flows alive with CRLF pings (RFC 5626) or re-registrations.
   * @default 900000 (15 minutes)
   */
  idleTimeoutMs?: number
  /**
   * Slow-peer timeout: a message (or WebSocket handshake) that started arriving must be complete
   * within this time, or the connection is closed.
   * @default 10000
   */
  messageTimeoutMs?: number
  /** @default 5000 */
  connectTimeoutMs?: number
  /**
   * Open TCP + WebSocket connections at most; more are refused.
   * @default 10000
   */
  maxConnections?: number
  /**
   * Open inbound TCP + WebSocket connections from one source address at most; more are refused
   * (TCP: closed at once; WebSocket: handshake answered 503), counted (`connectionsRefused.host`)
   * and logged (sampled). Connections this node dialled do not count.
   * @default 256
   */
  maxConnectionsPerHost?: number
  /**
   * An inbound TCP or WebSocket connection (after its WebSocket handshake) that brings no whole
   * SIP message within this time is closed and counted (`silentClosed`); CRLF keep-alives do not
   * count as a message. A user agent sends its REGISTER (or any request) at once.
   * @default 30000
   */
  firstMessageTimeoutMs?: number
  /**
   * Bytes queued for a peer that does not read before its connection is closed.
   * @default 1048576
   */
  maxWriteBuffer?: number
  /**
   * UDP socket send and receive buffer sizes, in bytes.
   * @default 4194304
   */
  udpBufferSize?: number
  /**
   * The UDP socket on a thread of its own (udp-thread.ts): its system calls use another core.
   * @default false
   */
  udpThread?: boolean
  /**
   * Per-source-address rate limit on incoming messages (all transports together); messages over
   * it are dropped and counted (`rateLimited`). Off when absent.
   */
  rateLimit?: RateLimitInit
  /**
   * Malformed-message, slow-peer and rate-limit log lines per second at most (the rest are
   * counted and reported as `suppressed`).
   * @default 20
   */
  logSamplePerSecond?: number
  /**
   * Refuse WebSocket handshakes that do not offer the `sip` subprotocol (RFC 7118).
   * @default true
   */
  requireWsSubprotocol?: boolean
}

export interface TransportLayerComponents {
  logger?: Logger
}

export interface TransportAddresses {
  udp?: Address
  tcp?: Address
  ws?: Address
  tls?: Address
  wss?: Address
}

/** the Via transport token of a stream transport */
const TOKENS = { tcp: 'TCP', ws: 'WS', tls: 'TLS', wss: 'WSS' } as const

const NOOP_LOGGER: Logger = {
  debug () {}, info () {}, warn () {}, error () {}, child () { return NOOP_LOGGER }
}

function unbracket (host: string): string {
  return host.charCodeAt(0) === 91 ? host.slice(1, -1) : host
}

function zero (): Record<TransportKind, number> {
  return { udp: 0, tcp: 0, ws: 0, tls: 0, wss: 0 }
}

/**
 * RFC 3261 18.2.1 and RFC 3581: stamp the top Via of a request with the source address
 * (`received` when it differs from sent-by, or always when `rport` asks) and port (`rport`).
 */
export function stampVia (request: SipRequest, remote: Address): void {
  let via
  try {
    via = topVia(request.headers)
  } catch {
    return
  }
  if (via === undefined) return
  // the parsed top Via is shared (kept on the headers): a changed copy (its parameters copied
  // too) replaces it, given away to be kept as the parse
  if (via.rport === null) {
    setTopVia(request.headers, { ...via, params: { ...via.params }, rport: remote.port, received: remote.host }, true)
  } else if (unbracket(via.host) !== remote.host) {
    setTopVia(request.headers, { ...via, params: { ...via.params }, received: remote.host }, true)
  }
}

/**
 * A UDP flow: one per datagram received (a binding keeps the one of its REGISTER), so a small
 * object whose methods live on the prototype, not an object with a closure and its context. It is
 * its own remote address (host and port are its fields): a binding keeps one object, not a flow
 * and an address (40 bytes per registration at 100,000, issue 9).
 */
class UdpFlow implements TransportFlow, Address {
  readonly #layer: TransportLayer
  readonly host: string
  readonly port: number
  constructor (layer: TransportLayer, remote: Address) {
    this.#layer = layer
    this.host = remote.host
    this.port = remote.port
  }

  get remote (): Address { return this }

  get transport (): 'UDP' { return 'UDP' }
  get reliable (): boolean { return false }
  get open (): boolean { return true }
  /**
   * synchronous to an IP address (no promise per datagram); a name is resolved first; what cannot
   * be sent rejects (never throws), as every flow's send
   */
  send (message: SipMessage): void | Promise<void> { return this.sendBytes(serializeMessage(message)) }
  serialize (message: SipMessage): Uint8Array { return serializeMessage(message) }
  sendBytes (data: Uint8Array): void | Promise<void> {
    try {
      return this.#layer.sendUdp(data, this.remote)
    } catch (err) {
      return Promise.reject(err)
    }
  }
}

export class TransportLayer implements StreamHost {
  readonly settings: StreamSettings
  readonly log: Logger
  private readonly init: TransportLayerInit
  private readonly maxDatagramSize: number
  private readonly connectTimeoutMs: number
  private readonly maxConnections: number
  private readonly maxConnectionsPerHost: number
  /** open inbound connections per source address */
  private readonly inboundByHost = new Map<string, number>()
  private readonly handlers = new Set<MessageHandler>()
  private readonly closeHandlers = new Set<ConnectionHandler>()
  private readonly connections = new Map<string, StreamConnection>()
  /** `tcp|host|port` or `ws|host|port` → the open connection with that peer */
  private readonly byRemote = new Map<string, StreamConnection>()
  private readonly dialing = new Map<string, Promise<StreamConnection>>()
  /** the source address of the last datagram (its string is shared by the next from there) */
  private lastUdpHost = ''
  private readonly c: TransportCounters = {
    messagesIn: zero(), messagesOut: zero(), parseErrors: zero(), slowPeers: 0, idleClosed: 0, oversize: 0, rateLimited: 0, connections: 0,
    connectionsRefused: { host: 0, total: 0 }, silentClosed: 0, tlsHandshakeFailures: 0, tlsRefused: 0, sendErrors: 0
  }

  private readonly limiter: SourceRateLimiter | undefined
  private readonly sampler: LogSampler

  private udp: UdpEndpoint | undefined
  private tcpServer: NetServer | undefined
  private wsServer: HttpServer | undefined
  private wss: WebSocketServer | undefined
  private tlsServer: TlsServer | undefined
  private secureWsServer: HttpServer | undefined
  private secureWss: WebSocketServer | undefined
  private readonly peers: ReadonlySet<string>
  private bound: TransportAddresses = {}
  private nextId = 1
  private running = false
  private shutdown = new AbortController()

  constructor (components: TransportLayerComponents = {}, init: TransportLayerInit = {}) {
    this.log = components.logger ?? NOOP_LOGGER
    this.init = init
    this.settings = {
      maxMessageSize: init.maxMessageSize ?? 65_536,
      idleTimeoutMs: init.idleTimeoutMs ?? 900_000,
      messageTimeoutMs: init.messageTimeoutMs ?? 10_000,
      firstMessageTimeoutMs: init.firstMessageTimeoutMs ?? 30_000,
      maxWriteBuffer: init.maxWriteBuffer ?? 1_048_576
    }
    this.maxDatagramSize = Math.min(init.maxDatagramSize ?? MAX_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
    this.connectTimeoutMs = init.connectTimeoutMs ?? 5000
    this.maxConnections = init.maxConnections ?? 10_000
    this.maxConnectionsPerHost = init.maxConnectionsPerHost ?? 256
    if (!(this.maxConnectionsPerHost >= 1)) throw new RangeError('maxConnectionsPerHost must be at least 1')
    this.limiter = init.rateLimit === undefined ? undefined : new SourceRateLimiter(init.rateLimit)
    this.sampler = new LogSampler(init.logSamplePerSecond ?? 20)
    this.peers = new Set([...init.tlsCredentials?.peers ?? []].map(d => d.toLowerCase()))
    if ((init.tls !== undefined || init.wss !== undefined) && init.tlsCredentials === undefined) throw new RangeError('tls and wss need tlsCredentials')
  }

  /** Log a line about hostile or broken input, sampled so that a flood cannot flood the log. */
  private sampledInfo (msg: string, fields: Record<string, unknown>): void {
    const { log, suppressed } = this.sampler.allow()
    if (!log) return
    this.log.info(msg, suppressed > 0 ? { ...fields, suppressed } : fields)
  }

  // ---- lifecycle ---------------------------------------------------------------------------

  async start (): Promise<void> {
    if (this.running) return
    this.shutdown = new AbortController()
    this.running = true
    try {
      const { sip, udp, tcp, ws, tls, wss } = this.init
      if (sip !== undefined) await this.listenSip(sip)
      if (tcp !== undefined) await this.listenTcp(tcp)
      if (udp !== undefined) await this.listenUdp(udp)
      if (ws !== undefined) await this.listenWebSocket(ws, 'ws')
      if (tls !== undefined) await this.listenTls(tls)
      if (wss !== undefined) await this.listenWebSocket(wss, 'wss')
    } catch (err) {
      await this.stop()
      throw err
    }
    this.log.info('sip transports listening', { ...this.bound })
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    this.shutdown.abort()
    for (const conn of [...this.connections.values()]) conn.destroy()
    const waits: Array<Promise<unknown>> = []
    if (this.udp !== undefined) waits.push(this.udp.close())
    const tcpServer = this.tcpServer
    if (tcpServer !== undefined) waits.push(new Promise(resolve => tcpServer.close(resolve)))
    const tlsServer = this.tlsServer
    if (tlsServer !== undefined) waits.push(new Promise(resolve => tlsServer.close(resolve)))
    for (const wss of [this.wss, this.secureWss]) if (wss !== undefined) waits.push(new Promise(resolve => wss.close(resolve)))
    for (const wsServer of [this.wsServer, this.secureWsServer]) {
      if (wsServer === undefined) continue
      wsServer.closeAllConnections()
      waits.push(new Promise(resolve => wsServer.close(resolve)))
    }
    await Promise.all(waits)
    this.udp = undefined
    this.tcpServer = undefined
    this.tlsServer = undefined
    this.wss = undefined
    this.wsServer = undefined
    this.secureWss = undefined
    this.secureWsServer = undefined
    this.bound = {}
    this.connections.clear()
    this.inboundByHost.clear()
    this.byRemote.clear()
    this.dialing.clear()
  }

  /** The addresses actually bound (ports filled in when 0 was asked). */
  addresses (): TransportAddresses {
    return { ...this.bound }
  }

  private async listenSip (address: ListenAddress): Promise<void> {
    // one port for UDP and TCP; with port 0 take TCP's free port and retry if UDP has it taken
    for (let attempt = 0; ; attempt++) {
      await this.listenTcp(address)
      const port = (this.bound.tcp as Address).port
      try {
        await this.listenUdp({ host: address.host, port })
        return
      } catch (err) {
        if (address.port !== 0 || attempt >= 4 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err
        const server = this.tcpServer as NetServer
        await new Promise(resolve => server.close(resolve))
        this.tcpServer = undefined
      }
    }
  }

  private async listenTcp (address: ListenAddress): Promise<void> {
    const { server, address: bound } = await listenTcp(address, (socket) => this.accept(socket, 'tcp'))
    server.maxConnections = this.maxConnections
    this.tcpServer = server
    this.bound.tcp = bound
  }

  private async listenUdp (address: ListenAddress): Promise<void> {
    this.udp = await (this.init.udpThread === true ? bindUdpThread : bindUdp)(address, (data, rinfo) => this.onDatagram(data, rinfo), (err) => {
      this.log.warn('udp socket error', { error: err.message })
    }, this.init.udpBufferSize ?? 4 << 20, (err) => {
      this.c.sendErrors++
      this.sampledInfo('udp send failed', { error: err.message })
    })
    this.bound.udp = this.udp.address
    // a burst the event loop cannot take at once waits in the kernel's receive buffer, and what
    // overflows it is dropped unseen: Linux caps the size asked at net.core.rmem_max (often
    // 208 KiB, ~300 REGISTERs, 15 ms at 20,000/s)
    const asked = this.init.udpBufferSize ?? 4 << 20
    const granted = this.udp.receiveBufferSize
    if (granted !== undefined && granted < asked) {
      this.log.warn('SIP UDP receive buffer smaller than asked: bursts beyond it are dropped by the kernel; raise net.core.rmem_max (sysctl) to at least the size asked', { asked, granted })
    }
  }

  private async listenTls (address: ListenAddress): Promise<void> {
    const credentials = this.init.tlsCredentials as TlsInit
    const { server, address: bound } = await listenTls(address, credentials, {
      handshakeTimeoutMs: credentials.handshakeTimeoutMs ?? 5000,
      onSecure: (socket) => { this.acceptTls(socket) },
      onHandshakeError: (err, remote) => {
        this.c.tlsHandshakeFailures++
        this.sampledInfo('tls handshake failed, connection dropped', { remote, error: err.message })
      }
    })
    server.maxConnections = this.maxConnections
    this.tlsServer = server
    this.bound.tls = bound
  }

  /** A TLS handshake is done: a user agent (no certificate), a configured peer, or refused. */
  private acceptTls (socket: TLSSocket): void {
    socket.on('error', () => {})
    const verdict = inboundVerdict(socket, this.peers)
    if ('refused' in verdict) {
      this.c.tlsRefused++
      this.log.warn('tls connection refused', { remote: socket.remoteAddress, reason: verdict.refused })
      socket.destroy()
      return
    }
    this.accept(socket, 'tls', verdict.peerDomain)
  }

  private async listenWebSocket (address: ListenAddress, kind: 'ws' | 'wss'): Promise<void> {
    const { server, wss, address: bound } = await listenWs(address, {
      tls: kind === 'wss' ? this.init.tlsCredentials : undefined,
      messageTimeoutMs: this.settings.messageTimeoutMs,
      maxMessageSize: this.settings.maxMessageSize,
      requireSubprotocol: this.init.requireWsSubprotocol ?? true,
      admit: (request) => this.running ? this.refusal(request.socket.remoteAddress ?? '') : 'stopping',
      onRefused: (reason, request) => {
        this.sampledInfo('websocket handshake refused', { reason, remote: request.socket.remoteAddress })
      },
      onConnection: (ws, request, socket) => {
        const info = this.connectionInfo(kind, request.socket as Socket, false)
        const conn = new WsConnection(this, info, ws, socket)
        this.register(conn)
      }
    })
    if (kind === 'ws') {
      this.wsServer = server
      this.wss = wss
    } else {
      this.secureWsServer = server
      this.secureWss = wss
    }
    this.bound[kind] = bound
  }

  // ---- subscriptions -----------------------------------------------------------------------

  /** Every parsed message, with its source. Handlers must not throw (they are guarded). */
  onMessage (handler: MessageHandler): () => void {
    this.handlers.add(handler)
    return () => { this.handlers.delete(handler) }
  }

  /** A TCP or WebSocket connection closed (flows bound to it are gone). */
  onConnectionClose (handler: ConnectionHandler): () => void {
    this.closeHandlers.add(handler)
    return () => { this.closeHandlers.delete(handler) }
  }

  /** A snapshot of the counters, for metrics. */
  counters (): TransportCounters {
    return {
      messagesIn: { ...this.c.messagesIn },
      messagesOut: { ...this.c.messagesOut },
      parseErrors: { ...this.c.parseErrors },
      slowPeers: this.c.slowPeers,
      idleClosed: this.c.idleClosed,
      oversize: this.c.oversize,
      rateLimited: this.c.rateLimited,
      connections: this.connections.size,
      connectionsRefused: { ...this.c.connectionsRefused },
      silentClosed: this.c.silentClosed,
      tlsHandshakeFailures: this.c.tlsHandshakeFailures,
      tlsRefused: this.c.tlsRefused,
      sendErrors: this.c.sendErrors
    }
  }

  isOpen (connectionId: string): boolean {
    return this.connections.get(connectionId)?.open === true
  }

  connection (connectionId: string): ConnectionInfo | undefined {
    return this.connections.get(connectionId)?.info
  }

  closeConnection (connectionId: string): void {
    this.connections.get(connectionId)?.destroy()
  }

  /** Where answers to a message from `source` go: back over its connection, or to its address. */
  targetOf (source: MessageSource): SendTarget {
    return { transport: source.transport, host: source.remote.host, port: source.remote.port, connectionId: source.connectionId }
  }

  /**
   * Where a response to `request` (which came from `source`) goes, RFC 3261 18.2.2 with
   * RFC 3581: over the connection it came on while that is open; else, for TCP, a new
   * connection to the `received` address and the sent-by port (5060 by default); for UDP, the
   * `received` address and the `rport` port (or the sent-by port). WebSocket answers need the
   * connection: when it is gone the send fails.
   */
  responseTarget (request: SipRequest, source: MessageSource): SendTarget {
    if (source.connectionId !== undefined && this.isOpen(source.connectionId)) return this.targetOf(source)
    if (source.transport === 'ws' || source.transport === 'wss') return this.targetOf(source)
    let via
    try {
      via = topVia(request.headers)
    } catch {
      return this.targetOf(source)
    }
    if (via === undefined) return this.targetOf(source)
    const host = unbracket(via.received ?? via.host)
    if (source.transport === 'udp' && typeof via.rport === 'number') return { transport: 'udp', host, port: via.rport }
    return { transport: source.transport, host, port: via.port ?? (source.transport === 'tls' ? 5061 : 5060) }
  }

  /** The flow a message from `source` came on: answers and in-dialog requests go back over it. */
  flowOf (source: MessageSource): TransportFlow {
    if (source.transport === 'udp') return this.udpFlow(source.remote)
    const conn = source.connectionId === undefined ? undefined : this.connections.get(source.connectionId)
    if (conn === undefined) {
      // the connection is already gone: a flow that is closed
      return {
        transport: TOKENS[source.transport],
        reliable: true,
        remote: source.remote,
        connectionId: source.connectionId,
        open: false,
        send: async () => { throw new TransportError('connection closed') }
      }
    }
    return this.streamFlow(conn)
  }

  /**
   * A flow to a target taken from a URI or a Via (transport token `UDP`, `TCP`, `WS`...): UDP at
   * once, TCP over an open connection to that address or a new one, WebSocket only over an open
   * connection from that address. Rejects with TransportError otherwise.
   */
  async connect (target: { transport: string, host: string, port: number, domain?: string }, options: AbortOptions = {}): Promise<TransportFlow> {
    if (!this.running) throw new TransportError('transport layer stopped')
    const host = unbracket(target.host)
    switch (target.transport.toUpperCase()) {
      case 'UDP':
        if (this.udp === undefined) throw new TransportError('no UDP transport')
        return this.udpFlow({ host, port: target.port })
      case 'TCP':
        return this.streamFlow(await this.tcpConnection({ host, port: target.port }, options.signal))
      case 'TLS':
        return this.streamFlow(await this.tlsConnection({ host, port: target.port }, target.domain, options.signal))
      case 'WS':
      case 'WSS': {
        const conn = this.byRemote.get(`ws|${host}|${target.port}`) ?? this.byRemote.get(`wss|${host}|${target.port}`)
        if (conn?.open !== true) throw new TransportError(`no WebSocket connection from ${host}:${target.port}`)
        return this.streamFlow(conn)
      }
      default:
        throw new TransportError(`unsupported transport ${target.transport}`)
    }
  }

  /** `connect` for UDP, without a promise: a flow to host:port (throws TransportError without UDP) */
  connectUdp (target: { host: string, port: number }): TransportFlow {
    if (!this.running) throw new TransportError('transport layer stopped')
    if (this.udp === undefined) throw new TransportError('no UDP transport')
    return this.udpFlow({ host: unbracket(target.host), port: target.port })
  }

  private udpFlow (remote: Address): TransportFlow {
    return new UdpFlow(this, remote)
  }

  private streamFlow (conn: StreamConnection): TransportFlow {
    const counters = this.c
    return {
      transport: TOKENS[conn.info.transport],
      reliable: true,
      remote: conn.remote,
      connectionId: conn.id,
      peerDomain: conn.info.peerDomain,
      get open () { return conn.open },
      send: async (message) => {
        if (!conn.open) throw new TransportError('connection closed')
        conn.write(serializeMessage(message))
        counters.messagesOut[conn.info.transport]++
      }
    }
  }

  // ---- sending -----------------------------------------------------------------------------

  /**
   * Send a message (or bytes already serialized). Rejects with TransportError when it cannot be
   * sent (closed connection, refused dial, no WebSocket connection to that peer, too large).
   */
  async send (message: SipMessage | Uint8Array, target: SendTarget, options: AbortOptions = {}): Promise<void> {
    if (!this.running) throw new TransportError('transport layer stopped')
    const data = message instanceof Uint8Array ? message : serializeMessage(message)
    if (target.connectionId !== undefined) {
      const conn = this.connections.get(target.connectionId)
      if (conn?.open === true) {
        conn.write(data)
        this.c.messagesOut[conn.info.transport]++
        return
      }
    }
    switch (target.transport) {
      case 'udp': {
        if (this.udp === undefined) throw new TransportError('no UDP transport')
        await this.udp.send(data, target)
        this.c.messagesOut.udp++
        return
      }
      case 'tcp': {
        if (data.length > this.settings.maxMessageSize) throw new TransportError('message too large')
        const conn = await this.tcpConnection(target, options.signal)
        conn.write(data)
        this.c.messagesOut.tcp++
        return
      }
      case 'tls': {
        if (data.length > this.settings.maxMessageSize) throw new TransportError('message too large')
        const conn = await this.tlsConnection(target, undefined, options.signal)
        conn.write(data)
        this.c.messagesOut.tls++
        return
      }
      case 'ws':
      case 'wss': {
        const conn = this.byRemote.get(`${target.transport}|${unbracket(target.host)}|${target.port}`)
        if (conn?.open !== true) throw new TransportError(`no WebSocket connection from ${target.host}:${target.port}`)
        conn.write(data)
        this.c.messagesOut[target.transport]++
        return
      }
      default:
        throw new TransportError(`unknown transport ${String(target.transport)}`)
    }
  }

  /**
   * UDP to `remote`: at once when it is an IP address (the relay's hot path: no promise, no
   * closure per datagram; a later send error is counted and logged, not returned), else through
   * `send` (the name resolved first). Throws TransportError when it cannot be sent at all.
   */
  sendUdp (data: Uint8Array, remote: Address): void | Promise<void> {
    const udp = this.udp
    if (!this.running || udp === undefined) throw new TransportError(this.running ? 'no UDP transport' : 'transport layer stopped')
    if (isIP(remote.host) === 0) return this.send(data, { transport: 'udp', host: remote.host, port: remote.port })
    udp.sendNow(data, remote)
    this.c.messagesOut.udp++
  }

  private async tcpConnection (target: Address, signal?: AbortSignal): Promise<StreamConnection> {
    const key = `tcp|${unbracket(target.host)}|${target.port}`
    const existing = this.byRemote.get(key)
    if (existing?.open === true) return existing
    let pending = this.dialing.get(key)
    if (pending === undefined) {
      pending = (async () => {
        const signals = [this.shutdown.signal]
        if (signal !== undefined) signals.push(signal)
        const socket = await dialTcp({ host: unbracket(target.host), port: target.port }, this.connectTimeoutMs, AbortSignal.any(signals))
        if (!this.running) {
          socket.destroy()
          throw new TransportError('transport layer stopped')
        }
        const info = this.connectionInfo('tcp', socket, true)
        const conn = new TcpConnection(this, info, socket)
        this.register(conn)
        return conn
      })()
      this.dialing.set(key, pending)
      pending.then(() => this.dialing.delete(key), () => this.dialing.delete(key))
    }
    return await pending
  }

  /**
   * A TLS connection to `target`: an open one (for a peer `domain`, one whose certificate named
   * it), or a new one, mutually authenticated. A certificate the authorities do not trust, or that
   * does not name `domain`, fails the dial (logged at warn).
   */
  private async tlsConnection (target: Address, domain: string | undefined, signal?: AbortSignal): Promise<StreamConnection> {
    const credentials = this.init.tlsCredentials
    if (credentials === undefined) throw new TransportError('no TLS transport')
    const key = `tls|${unbracket(target.host)}|${target.port}`
    const existing = this.byRemote.get(key)
    if (existing?.open === true && (domain === undefined || existing.info.peerDomain === domain)) return existing
    const dialKey = `${key}|${domain ?? ''}`
    let pending = this.dialing.get(dialKey)
    if (pending === undefined) {
      pending = (async () => {
        const signals = [this.shutdown.signal]
        if (signal !== undefined) signals.push(signal)
        let dialled
        try {
          dialled = await dialTls({ host: unbracket(target.host), port: target.port }, credentials, this.peers, this.connectTimeoutMs, domain, AbortSignal.any(signals))
        } catch (err) {
          this.c.tlsRefused++
          this.log.warn('tls connection failed', { remote: target, domain, error: (err as Error).message })
          throw err
        }
        const { socket, peerDomain } = dialled
        if (!this.running) {
          socket.destroy()
          throw new TransportError('transport layer stopped')
        }
        const info = this.connectionInfo('tls', socket, true, peerDomain)
        const conn = new TcpConnection(this, info, socket)
        this.register(conn)
        return conn
      })()
      this.dialing.set(dialKey, pending)
      pending.then(() => this.dialing.delete(dialKey), () => this.dialing.delete(dialKey))
    }
    return await pending
  }

  // ---- receiving ---------------------------------------------------------------------------

  private accept (socket: Socket, transport: 'tcp' | 'tls', peerDomain?: string): void {
    const refused = this.running ? this.refusal(socket.remoteAddress ?? '') : 'stopping'
    if (refused !== undefined) {
      this.sampledInfo('connection refused', { transport, reason: refused, remote: socket.remoteAddress })
      socket.destroy()
      return
    }
    const info = this.connectionInfo(transport, socket, false, peerDomain)
    this.register(new TcpConnection(this, info, socket))
  }

  private connectionInfo (transport: StreamKind, socket: Socket, outbound: boolean, peerDomain?: string): ConnectionInfo {
    const info: ConnectionInfo = {
      id: `${transport}-${this.nextId++}`,
      transport,
      remote: { host: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 },
      local: { host: socket.localAddress ?? '', port: socket.localPort ?? 0 },
      outbound
    }
    if (peerDomain !== undefined) info.peerDomain = peerDomain
    return info
  }

  /**
   * Why a new inbound connection from `host` is refused (and counted), or undefined to admit it:
   * the cap on all connections, then the cap per source address.
   */
  private refusal (host: string): string | undefined {
    if (this.connections.size >= this.maxConnections) {
      this.c.connectionsRefused.total++
      return 'too many connections'
    }
    if ((this.inboundByHost.get(host) ?? 0) >= this.maxConnectionsPerHost) {
      this.c.connectionsRefused.host++
      return 'too many connections from this address'
    }
    return undefined
  }

  private register (conn: StreamConnection): void {
    if (!conn.info.outbound) this.inboundByHost.set(conn.remote.host, (this.inboundByHost.get(conn.remote.host) ?? 0) + 1)
    this.connections.set(conn.id, conn)
    this.byRemote.set(`${conn.info.transport}|${conn.remote.host}|${conn.remote.port}`, conn)
    this.log.debug('connection open', { connection: conn.id, remote: conn.remote, outbound: conn.info.outbound })
  }

  connectionClosed (conn: StreamConnection): void {
    if (this.connections.get(conn.id) !== conn) return
    this.connections.delete(conn.id)
    if (!conn.info.outbound) {
      const n = (this.inboundByHost.get(conn.remote.host) ?? 1) - 1
      if (n > 0) this.inboundByHost.set(conn.remote.host, n)
      else this.inboundByHost.delete(conn.remote.host)
    }
    const key = `${conn.info.transport}|${conn.remote.host}|${conn.remote.port}`
    if (this.byRemote.get(key) === conn) this.byRemote.delete(key)
    this.log.debug('connection closed', { connection: conn.id })
    for (const handler of this.closeHandlers) {
      try {
        handler(conn.info)
      } catch (err) {
        this.log.error('connection close handler failed', { error: (err as Error).message })
      }
    }
  }

  slowPeer (conn: StreamConnection): void {
    this.c.slowPeers++
    this.sampledInfo('slow peer: message incomplete in time, closing', { connection: conn.id, remote: conn.remote })
  }

  silent (conn: StreamConnection): void {
    this.c.silentClosed++
    this.sampledInfo('connection closed: no SIP message in time', { connection: conn.id, transport: conn.info.transport, remote: conn.remote })
  }

  idle (conn: StreamConnection): void {
    this.c.idleClosed++
    this.log.debug('idle connection closed', { connection: conn.id, remote: conn.remote })
  }

  private sourceOf (conn: StreamConnection): MessageSource {
    return { transport: conn.info.transport, remote: conn.remote, local: conn.info.local, connectionId: conn.id }
  }

  streamMessage (conn: StreamConnection, data: Uint8Array): void {
    this.receive(data, this.sourceOf(conn), conn, this.settings.maxMessageSize)
  }

  framingError (conn: StreamConnection, event: Extract<FrameEvent, { kind: 'error' }>): void {
    let request: SipRequest | undefined
    if (event.head !== undefined) {
      // the header section alone, to answer when it is readable
      try {
        const m = parseMessage(event.head, { maxSize: Number.MAX_SAFE_INTEGER })
        if (isRequest(m) && m.method !== 'ACK') request = m
      } catch (err) {
        if (err instanceof SipParseError) request = err.request
      }
    }
    this.reject(new SipParseError(event.reason, { status: event.status, request }), this.sourceOf(conn), conn, true)
  }

  private onDatagram (data: Buffer, rinfo: RemoteInfo): void {
    // RFC 5626 keep-alives and stray line ends on UDP are ignored (RFC 3261 7.5)
    let i = 0
    while (i < data.length && (data[i] === 13 || data[i] === 10)) i++
    if (i === data.length) return
    const local = this.bound.udp as Address
    // the source's address string shared with the datagram before when it is the same (an edge
    // proxy, NAT, a load generator): what a binding keeps of it is then one string, not one each
    let host = rinfo.address
    if (host === this.lastUdpHost) host = this.lastUdpHost
    else this.lastUdpHost = host
    const source: MessageSource = { transport: 'udp', remote: { host, port: rinfo.port }, local }
    this.receive(data, source, undefined, this.maxDatagramSize)
  }

  private receive (data: Uint8Array, source: MessageSource, conn: StreamConnection | undefined, maxSize: number): void {
    if (this.limiter !== undefined && !this.limiter.take(source.remote.host)) {
      this.c.rateLimited++
      this.sampledInfo('source over its rate limit, message dropped', { transport: source.transport, remote: source.remote })
      return
    }
    let message: SipMessage
    try {
      message = parseMessage(data, { maxSize })
    } catch (err) {
      this.reject(err, source, conn, false)
      return
    }
    this.c.messagesIn[source.transport]++
    if (isRequest(message)) stampVia(message, source.remote)
    for (const handler of this.handlers) {
      try {
        handler(message, source)
      } catch (err) {
        this.log.error('message handler failed', { error: (err as Error).message, transport: source.transport })
      }
    }
  }

  /** Malformed input: answer with the error's status when possible, else drop; log at info. */
  private reject (err: unknown, source: MessageSource, conn: StreamConnection | undefined, close: boolean): void {
    const error = err instanceof SipParseError
      ? err
      : new SipParseError('Bad Request', { cause: err })
    if (!(err instanceof SipParseError)) this.log.error('codec failure', { error: String(err) })
    this.c.parseErrors[source.transport]++
    if (error.status === 513) this.c.oversize++
    this.sampledInfo('malformed SIP message', {
      transport: source.transport,
      remote: source.remote,
      status: error.status,
      reason: error.reason,
      answered: error.answerable
    })
    if (error.request !== undefined) {
      // RFC 3261 8.2.6.2: a To tag on every final response we generate
      const response = createResponse(error.request, error.status, error.reason, undefined, { toTag: true })
      const data = serializeMessage(response)
      if (conn !== undefined) {
        try {
          conn.write(data)
          this.c.messagesOut[source.transport]++
        } catch {
          // closed meanwhile
        }
      } else if (this.udp !== undefined) {
        this.udp.send(data, source.remote).then(() => { this.c.messagesOut.udp++ }, () => {})
      }
    }
    // a stream that lost its framing (or carried an oversize message) cannot go on
    if (conn !== undefined && (close || error.status === 513)) conn.closeAfterFlush()
  }
}
