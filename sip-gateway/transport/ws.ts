/**
 * SIP over WebSocket (RFC 7118) with the `ws` package: one SIP message per WebSocket message,
 * subprotocol `sip` required in the handshake (a client that does not offer it is refused with
 * 400, unless configured otherwise). We only accept WebSocket connections, never dial them.
 */
import { Buffer, isUtf8 } from 'node:buffer'
import { createServer, type IncomingMessage, type RequestListener, type Server } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { Duplex } from 'node:stream'
import { WebSocketServer, type WebSocket, type RawData } from 'ws'
import { TransportError } from '../errors.ts'
import { StreamConnection, type StreamHost } from './connection.ts'
import type { Address, ConnectionInfo } from './types.ts'

function toBuffer (data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data
  if (Array.isArray(data)) return Buffer.concat(data)
  return Buffer.from(data)
}

function onlyLineEnds (data: Uint8Array): boolean {
  for (let i = 0; i < data.length; i++) {
    if (data[i] !== 13 && data[i] !== 10) return false
  }
  return true
}

export class WsConnection extends StreamConnection {
  private readonly ws: WebSocket

  constructor (host: StreamHost, info: ConnectionInfo, ws: WebSocket, socket: Duplex) {
    super(host, info)
    this.ws = ws
    // the slow-peer clock runs while bytes arrived that do not yet make a whole message; this
    // listener goes before ws's own, so a chunk that completes a message stops the clock again
    socket.prependListener('data', () => {
      if (!this.open) return
      this.touch()
      this.startMessageClock(false)
    })
    ws.on('message', (data, isBinary) => this.onMessage(toBuffer(data), isBinary))
    ws.on('ping', () => this.stopMessageClock())
    ws.on('pong', () => this.stopMessageClock())
    ws.on('error', (err) => {
      host.log.debug('websocket error', { connection: info.id, error: err.message })
    })
    ws.on('close', () => this.closed())
  }

  private onMessage (data: Buffer, _isBinary: boolean): void {
    if (!this.open) return
    this.stopMessageClock()
    this.touch()
    if (onlyLineEnds(data)) {
      // RFC 5626 keep-alive: answer a double CRLF with a single CRLF
      if (data.length >= 4) this.ws.send('\r\n')
      return
    }
    this.spoke()
    this.host.streamMessage(this, data)
  }

  write (data: Uint8Array): void {
    if (!this.open || this.ws.readyState !== this.ws.OPEN) throw new TransportError('connection closed')
    if (this.ws.bufferedAmount > this.host.settings.maxWriteBuffer) {
      this.host.log.info('websocket peer does not read, closing', { connection: this.id })
      this.destroy()
      throw new TransportError('peer does not read')
    }
    this.touch()
    // text frames when the message is UTF-8 (what browsers and SIP.js expect), binary otherwise
    this.ws.send(data, { binary: !isUtf8(data) })
  }

  protected gracefulClose (): void {
    this.ws.close(1008, 'closing')
  }

  protected forceClose (): void {
    this.ws.terminate()
  }
}

export interface WsListenOptions {
  /** secure WebSocket (`wss`, RFC 7118): the node's certificate and key; absent: plain */
  tls?: { cert: string, key: string }
  messageTimeoutMs: number
  maxMessageSize: number
  requireSubprotocol: boolean
  /** a reason refuses the handshake with 503 (too many connections, in all or from that address) */
  admit: (request: IncomingMessage) => string | undefined
  onConnection: (ws: WebSocket, request: IncomingMessage, socket: Duplex) => void
  onRefused: (reason: string, request: IncomingMessage) => void
}

function refuse (socket: Duplex, status: number, text: string): void {
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
  setTimeout(() => socket.destroy(), 1000).unref()
}

/** Listen for WebSocket connections; resolves with the bound address. */
export async function listenWs (address: Address, options: WsListenOptions): Promise<{ server: Server, wss: WebSocketServer, address: Address }> {
  const wss = new WebSocketServer({
    noServer: true,
    clientTracking: false,
    perMessageDeflate: false,
    // room to see an oversize message and answer it 513; beyond this ws closes with 1009
    maxPayload: options.maxMessageSize * 2,
    handleProtocols: (protocols) => protocols.has('sip') ? 'sip' : false
  })
  const connectionsCheckingInterval = Math.max(100, Math.min(30_000, Math.floor(options.messageTimeoutMs / 2)))
  const answer: RequestListener = (_req, res) => {
    res.writeHead(426, { Connection: 'close', 'Content-Length': '0', Upgrade: 'websocket' })
    res.end()
  }
  const server: Server = options.tls === undefined
    ? createServer({ connectionsCheckingInterval }, answer)
    : createHttpsServer({ connectionsCheckingInterval, cert: options.tls.cert, key: options.tls.key, handshakeTimeout: options.messageTimeoutMs, minVersion: 'TLSv1.2' }, answer)
  // a slow handshake is a slow peer too
  server.headersTimeout = options.messageTimeoutMs
  server.requestTimeout = options.messageTimeoutMs
  server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {})
    const offered = String(request.headers['sec-websocket-protocol'] ?? '')
      .split(',').map(p => p.trim().toLowerCase())
    if (options.requireSubprotocol && !offered.includes('sip')) {
      options.onRefused('no sip subprotocol', request)
      refuse(socket, 400, 'Bad Request')
      return
    }
    const refused = options.admit(request)
    if (refused !== undefined) {
      options.onRefused(refused, request)
      refuse(socket, 503, 'Service Unavailable')
      return
    }
    wss.handleUpgrade(request, socket, head, (ws) => options.onConnection(ws, request, socket))
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host: address.host, port: address.port, exclusive: true }, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const bound = server.address()
  if (bound === null || typeof bound === 'string') throw new Error('websocket server has no address')
  return { server, wss, address: { host: bound.address, port: bound.port } }
}
