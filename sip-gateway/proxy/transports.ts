/**
 * The gateway's listening sockets, adapted to `Flow`s: UDP and TCP on the SIP address, WebSocket
 * (RFC 7118, subprotocol `sip`) when configured. Stream framing is by Content-Length, CRLF
 * keep-alives (RFC 5626) are answered, buffers and connection counts are bounded, idle
 * connections close.
 *
 * A stop-gap of the gateway's own: `transport/` (the codec helper's) is meant to replace it; the
 * gateway depends only on `startTransports`' small surface.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram'
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net'
import { WebSocketServer, type WebSocket } from 'ws'
import { serializeMessage } from '../codec/serializer.ts'
import type { Logger } from '../ports.ts'
import type { Flow } from './flow.ts'

export interface TransportInit {
  sip: { host: string, port: number }
  ws?: { host: string, port: number }
  /** @default 65536 */
  maxMessageSize?: number
  /** @default 10000 */
  maxConnections?: number
  /** @default 300000 */
  idleTimeoutMs?: number
  logger: Logger
  onMessage: (data: Uint8Array, flow: Flow) => void
}

export interface Address { host: string, port: number }

export interface TransportSet {
  addresses: { udp: Address, tcp: Address, ws?: Address }
  connect (target: { transport: string, host: string, port: number }): Promise<Flow>
  close (): Promise<void>
}

const CRLF2 = Buffer.from('\r\n\r\n')

export async function startTransports (init: TransportInit): Promise<TransportSet> {
  const maxSize = init.maxMessageSize ?? 65_536
  const maxConns = init.maxConnections ?? 10_000
  const idle = init.idleTimeoutMs ?? 300_000
  const log = init.logger

  // UDP and TCP on the same port (port 0: pick one free for both)
  let udp: UdpSocket | undefined
  let tcp: Server | undefined
  for (let attempt = 0; attempt < 10 && tcp === undefined; attempt++) {
    const u = createSocket({ type: init.sip.host.includes(':') ? 'udp6' : 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 })
    await new Promise<void>((resolve, reject) => { u.once('error', reject); u.bind(init.sip.port, init.sip.host, () => { u.off('error', reject); resolve() }) })
    const port = u.address().port
    const s = createServer()
    try {
      await new Promise<void>((resolve, reject) => { s.once('error', reject); s.listen(port, init.sip.host, () => { s.off('error', reject); resolve() }) })
      udp = u
      tcp = s
    } catch (err) {
      u.close()
      if (init.sip.port !== 0) throw err
    }
  }
  if (udp === undefined || tcp === undefined) throw new Error('could not bind UDP and TCP on one port')
  const udpSocket = udp
  const tcpServer = tcp
  const udpFlows = new Map<string, Flow>()
  const udpFlow = (host: string, port: number): Flow => {
    const key = `${host}:${port}`
    let f = udpFlows.get(key)
    if (f === undefined) {
      f = {
        transport: 'UDP',
        reliable: false,
        remote: { host, port },
        open: true,
        send (m) {
          const data = serializeMessage(m)
          udpSocket.send(data, port, host)
        }
      }
      if (udpFlows.size >= 50_000) udpFlows.clear()
      udpFlows.set(key, f)
    }
    return f
  }
  udpSocket.on('message', (msg, rinfo) => {
    if (msg.length === 0 || (msg.length <= 4 && msg.every(b => b === 13 || b === 10 || b === 0))) return // keep-alive
    init.onMessage(msg, udpFlow(rinfo.address, rinfo.port))
  })
  udpSocket.on('error', (err) => { log.warn('udp socket error', { err: String(err) }) })

  // TCP: framing by Content-Length
  const conns = new Map<string, { socket: Socket, flow: Flow }>()
  const attach = (socket: Socket): Flow => {
    const remote = { host: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 }
    const key = `${remote.host}:${remote.port}`
    let open = true
    const flow: Flow = {
      transport: 'TCP',
      reliable: true,
      remote,
      get open () { return open },
      send (m) {
        if (!open) throw new Error('connection closed')
        socket.write(serializeMessage(m))
      }
    }
    conns.set(key, { socket, flow })
    socket.setNoDelay(true)
    socket.setTimeout(idle, () => socket.destroy())
    let buf = Buffer.alloc(0)
    socket.on('data', (chunk) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
      for (;;) {
        // CRLF keep-alives between messages (RFC 5626 4.4.1: a double CRLF gets a single CRLF)
        let skip = 0
        while (skip < buf.length && (buf[skip] === 13 || buf[skip] === 10)) skip++
        if (skip > 0) {
          if (skip >= 4) socket.write('\r\n')
          buf = buf.subarray(skip)
        }
        if (buf.length === 0) return
        const end = buf.indexOf(CRLF2)
        if (end === -1) {
          if (buf.length > maxSize) { log.info('tcp header too large, closing', { remote }); socket.destroy(); return }
          return
        }
        const head = buf.subarray(0, end).toString('latin1')
        const m = /(?:^|\r\n)(?:content-length|l)[ \t]*:[ \t]*(\d{1,9})[ \t]*(?=\r\n|$)/i.exec(head)
        if (m === null) { log.info('tcp message without Content-Length, closing', { remote }); socket.destroy(); return }
        const total = end + 4 + Number(m[1])
        if (total > maxSize) { log.info('tcp message too large, closing', { remote }); socket.destroy(); return }
        if (buf.length < total) return
        const message = buf.subarray(0, total)
        buf = buf.subarray(total)
        try { init.onMessage(message, flow) } catch (err) { log.error('message handler threw', { err: String(err) }) }
      }
    })
    socket.on('error', () => {})
    socket.on('close', () => { open = false; if (conns.get(key)?.socket === socket) conns.delete(key) })
    return flow
  }
  tcpServer.on('connection', (socket) => {
    if (conns.size >= maxConns) { socket.destroy(); return }
    attach(socket)
  })

  // WebSocket (RFC 7118)
  let wss: WebSocketServer | undefined
  let wsAddress: Address | undefined
  if (init.ws !== undefined) {
    const server = new WebSocketServer({
      host: init.ws.host,
      port: init.ws.port,
      maxPayload: maxSize,
      handleProtocols: (protocols) => protocols.has('sip') ? 'sip' : false
    })
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.once('listening', () => { server.off('error', reject); resolve() }) })
    const a = server.address()
    wsAddress = typeof a === 'string' || a === null ? { host: init.ws.host, port: init.ws.port } : { host: a.address, port: a.port }
    server.on('connection', (ws: WebSocket, req) => {
      if (server.clients.size > maxConns) { ws.terminate(); return }
      const remote = { host: req.socket.remoteAddress ?? '', port: req.socket.remotePort ?? 0 }
      let open = true
      const flow: Flow = {
        transport: 'WS',
        reliable: true,
        remote,
        get open () { return open },
        send (m) {
          if (!open) throw new Error('websocket closed')
          ws.send(Buffer.from(serializeMessage(m)).toString('utf8'))
        }
      }
      let timer = setTimeout(() => ws.terminate(), idle)
      ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
        clearTimeout(timer)
        timer = setTimeout(() => ws.terminate(), idle)
        const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer)
        if (bytes.length <= 4 && bytes.every(b => b === 13 || b === 10)) return
        try { init.onMessage(bytes, flow) } catch (err) { log.error('message handler threw', { err: String(err) }) }
      })
      ws.on('error', () => {})
      ws.on('close', () => { open = false; clearTimeout(timer) })
    })
    wss = server
  }

  const uaddr = udpSocket.address()
  const taddr = tcpServer.address()
  return {
    addresses: {
      udp: { host: uaddr.address, port: uaddr.port },
      tcp: typeof taddr === 'object' && taddr !== null ? { host: taddr.address, port: taddr.port } : { host: init.sip.host, port: uaddr.port },
      ws: wsAddress
    },
    async connect (target) {
      if (target.transport === 'UDP') return udpFlow(target.host, target.port)
      if (target.transport !== 'TCP') throw new Error(`cannot open a ${target.transport} flow`)
      const existing = conns.get(`${target.host}:${target.port}`)
      if (existing !== undefined && existing.flow.open) return existing.flow
      const socket = tcpConnect({ host: target.host, port: target.port })
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => { socket.destroy(); reject(new Error('connect timeout')) }, 5000)
        socket.once('connect', () => { clearTimeout(t); resolve() })
        socket.once('error', (err) => { clearTimeout(t); reject(err) })
      })
      return attach(socket)
    },
    async close () {
      for (const { socket } of conns.values()) socket.destroy()
      conns.clear()
      await new Promise<void>(resolve => tcpServer.close(() => resolve()))
      await new Promise<void>(resolve => udpSocket.close(() => resolve()))
      if (wss !== undefined) {
        for (const c of wss.clients) c.terminate()
        await new Promise<void>(resolve => wss.close(() => resolve()))
      }
    }
  }
}
