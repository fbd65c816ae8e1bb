// Helpers for transport tests: a layer on 127.0.0.1 that answers every request 200, and small
// UDP / TCP / WebSocket clients with bounded waits.
import { Buffer } from 'node:buffer'
import { createSocket, type Socket as UdpSocket } from 'node:dgram'
import { connect, type Socket } from 'node:net'
import { WebSocket } from 'ws'
import { TransportLayer, type TransportLayerInit, type MessageSource } from '../../../sip-gateway/transport/index.ts'
import { createResponse, isRequest, type SipMessage } from '../../../sip-gateway/codec/index.ts'
import type { Logger } from '../../../sip-gateway/ports.ts'

export interface LogLine { level: string, msg: string, fields?: Record<string, unknown> }

export function memoryLogger (lines: LogLine[] = []): Logger & { lines: LogLine[] } {
  const make = (): Logger & { lines: LogLine[] } => ({
    lines,
    debug (msg, fields) { lines.push({ level: 'debug', msg, fields }) },
    info (msg, fields) { lines.push({ level: 'info', msg, fields }) },
    warn (msg, fields) { lines.push({ level: 'warn', msg, fields }) },
    error (msg, fields) { lines.push({ level: 'error', msg, fields }) },
    child () { return make() }
  })
  return make()
}

export interface Received { message: SipMessage, source: MessageSource }

/** A started layer on UDP+TCP (one port) and WebSocket that answers every request but ACK with 200. */
export async function echoLayer (init: TransportLayerInit = {}): Promise<{ layer: TransportLayer, received: Received[], logger: Logger & { lines: LogLine[] } }> {
  const logger = memoryLogger()
  const layer = new TransportLayer({ logger }, {
    sip: { host: '127.0.0.1', port: 0 },
    ws: { host: '127.0.0.1', port: 0 },
    messageTimeoutMs: 400,
    ...init
  })
  const received: Received[] = []
  layer.onMessage((message, source) => {
    received.push({ message, source })
    if (isRequest(message) && message.method !== 'ACK') {
      layer.send(createResponse(message, 200, 'OK', { 'X-Via-Seen': message.headers.get('via') ?? '' }), layer.targetOf(source)).catch(() => {})
    }
  })
  await layer.start()
  return { layer, received, logger }
}

let counter = 0

export function request (method = 'OPTIONS', options: { transport?: string, sentBy?: string, body?: string, viaParams?: string, contentLength?: boolean, extra?: string[] } = {}): string {
  const n = ++counter
  const body = options.body ?? ''
  const lines = [
    `${method} sip:node@example.com SIP/2.0`,
    `Via: SIP/2.0/${options.transport ?? 'UDP'} ${options.sentBy ?? 'client.invalid:5999'};branch=z9hG4bKt${n}x${Date.now()}${options.viaParams ?? ''}`,
    'Max-Forwards: 70',
    `From: <sip:alice@example.com>;tag=f${n}`,
    '<sip:node@example.com>'.replace(/^/, 'To: '),
    `Call-ID: call-${n}@test`,
    `CSeq: ${n} ${method}`,
    ...(options.extra ?? [])
  ]
  if (options.contentLength !== false) lines.push(`Content-Length: ${Buffer.byteLength(body)}`)
  return lines.join('\r\n') + '\r\n\r\n' + body
}

/** Wait until `check` holds, polling; fails after `ms`. */
export async function until (check: () => boolean, ms = 3000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 5))
  }
}

export class UdpClient {
  readonly socket: UdpSocket
  readonly messages: string[] = []

  private constructor (socket: UdpSocket) {
    this.socket = socket
    socket.on('message', (data) => this.messages.push(data.toString('utf8')))
  }

  static async open (): Promise<UdpClient> {
    const socket = createSocket('udp4')
    await new Promise<void>(resolve => socket.bind(0, '127.0.0.1', () => resolve()))
    return new UdpClient(socket)
  }

  get port (): number {
    return this.socket.address().port
  }

  async send (data: string | Uint8Array, port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => this.socket.send(typeof data === 'string' ? Buffer.from(data) : data, port, '127.0.0.1', (err) => err == null ? resolve() : reject(err)))
  }

  async close (): Promise<void> {
    await new Promise<void>(resolve => this.socket.close(() => resolve()))
  }
}

export class TcpClient {
  readonly socket: Socket
  text = ''
  closed = false

  private constructor (socket: Socket) {
    this.socket = socket
    socket.on('data', (d) => { this.text += d.toString('utf8') })
    socket.on('close', () => { this.closed = true })
    socket.on('error', () => {})
  }

  static async open (port: number, localAddress?: string): Promise<TcpClient> {
    const socket = connect({ host: '127.0.0.1', port, localAddress })
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
    return new TcpClient(socket)
  }

  count (pattern: RegExp): number {
    return (this.text.match(new RegExp(pattern.source, 'g')) ?? []).length
  }

  async write (data: string | Uint8Array): Promise<void> {
    await new Promise<void>((resolve, reject) => this.socket.write(data, (err) => err == null ? resolve() : reject(err)))
  }

  close (): void {
    this.socket.destroy()
  }
}

export class WsClient {
  readonly ws: WebSocket
  readonly messages: string[] = []
  closed = false

  private constructor (ws: WebSocket) {
    this.ws = ws
    ws.on('message', (d) => this.messages.push(Buffer.isBuffer(d) ? d.toString('utf8') : String(d)))
    ws.on('close', () => { this.closed = true })
    ws.on('error', () => {})
  }

  static async open (port: number, protocols: string[] = ['sip']): Promise<WsClient> {
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, protocols)
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve())
      ws.once('error', reject)
      ws.once('unexpected-response', (_req, res) => reject(new Error(`handshake refused: ${res.statusCode}`)))
    })
    return new WsClient(ws)
  }

  close (): void {
    this.ws.terminate()
  }
}
