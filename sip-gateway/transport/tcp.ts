/** SIP over TCP (RFC 3261 18): a listener and connections framed by Content-Length. */
import { Buffer } from 'node:buffer'
import { createServer, connect, type Server, type Socket } from 'node:net'
import { TransportError } from '../errors.ts'
import { StreamConnection, type StreamHost } from './connection.ts'
import { StreamFramer } from './stream-framer.ts'
import type { Address, ConnectionInfo } from './types.ts'

const PONG = Buffer.from('\r\n')

export class TcpConnection extends StreamConnection {
  private readonly socket: Socket
  private readonly framer: StreamFramer

  constructor (host: StreamHost, info: ConnectionInfo, socket: Socket) {
    super(host, info)
    this.socket = socket
    this.framer = new StreamFramer(host.settings.maxMessageSize)
    socket.setNoDelay(true)
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('error', (err) => {
      host.log.debug('tcp connection error', { connection: info.id, error: err.message })
    })
    socket.on('close', () => this.closed())
  }

  private onData (chunk: Buffer): void {
    if (!this.open) return
    this.touch()
    const events = this.framer.push(chunk)
    let completed = false
    for (const event of events) {
      if (!this.open) return
      if (event.kind === 'message') {
        completed = true
        this.spoke()
        this.host.streamMessage(this, event.data)
      } else if (event.kind === 'ping') {
        // RFC 5626 3.5.1: a double-CRLF ping is answered with a single CRLF pong
        this.tryWrite(PONG)
      } else {
        this.host.framingError(this, event)
        return
      }
    }
    if (!this.open) return
    if (this.framer.pending) this.startMessageClock(completed)
    else this.stopMessageClock()
  }

  private tryWrite (data: Uint8Array): void {
    try {
      this.write(data)
    } catch {
      // closed meanwhile
    }
  }

  write (data: Uint8Array): void {
    if (!this.open) throw new TransportError('connection closed')
    if (this.socket.destroyed || !this.socket.writable) throw new TransportError('connection closed')
    if (this.socket.writableLength > this.host.settings.maxWriteBuffer) {
      this.host.log.info('tcp peer does not read, closing', { connection: this.id })
      this.destroy()
      throw new TransportError('peer does not read')
    }
    this.touch()
    this.socket.write(data)
  }

  protected gracefulClose (): void {
    this.socket.end()
  }

  protected forceClose (): void {
    this.socket.destroy()
  }
}

/** Listen for TCP connections; resolves with the bound address. */
export async function listenTcp (address: Address, onSocket: (socket: Socket) => void): Promise<{ server: Server, address: Address }> {
  const server = createServer({ noDelay: true }, onSocket)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host: address.host, port: address.port, exclusive: true }, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const bound = server.address()
  if (bound === null || typeof bound === 'string') throw new Error('tcp server has no address')
  return { server, address: { host: bound.address, port: bound.port } }
}

/** Dial a TCP connection, failing after `timeoutMs`. */
export async function dialTcp (target: Address, timeoutMs: number, signal?: AbortSignal): Promise<Socket> {
  const socket = connect({ host: target.host, port: target.port, noDelay: true })
  await settleConnect(socket, 'connect', {
    failed: (err) => `cannot connect to ${target.host}:${target.port}: ${err.message}`,
    timedOut: `connect to ${target.host}:${target.port} timed out`
  }, timeoutMs, signal)
  return socket
}

/**
 * Wait for a dialled socket's `event` (`connect`, or `secureConnect` for TLS): rejects with a
 * TransportError and destroys the socket on an error, after `timeoutMs`, or when `signal` aborts.
 */
export async function settleConnect (socket: Socket, event: 'connect' | 'secureConnect',
  say: { failed: (err: Error) => string, timedOut: string }, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const fail = (reason: string, cause?: unknown): void => {
      cleanup()
      socket.destroy()
      reject(new TransportError(reason, { cause }))
    }
    const onError = (err: Error): void => fail(say.failed(err), err)
    const onAbort = (): void => fail('aborted')
    const timer = setTimeout(() => fail(say.timedOut), timeoutMs)
    const cleanup = (): void => {
      clearTimeout(timer)
      socket.off('error', onError)
      signal?.removeEventListener('abort', onAbort)
    }
    if (signal?.aborted === true) { fail('aborted'); return }
    signal?.addEventListener('abort', onAbort, { once: true })
    socket.once('error', onError)
    socket.once(event, () => {
      cleanup()
      resolve()
    })
  })
}
