// The transport layer on real sockets (127.0.0.1): UDP, TCP and WebSocket, hostile input on each.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { connect, createServer, type Socket } from 'node:net'
import { TransportLayer, TransportError, StreamFramer, stampVia } from '../../../sip-gateway/transport/index.ts'
import { parseMessage, parseVia, isRequest, SipRequest, Headers } from '../../../sip-gateway/codec/index.ts'
import type { TransportLayerInit } from '../../../sip-gateway/transport/transport-layer.ts'
import { echoLayer, request, until, UdpClient, TcpClient, WsClient, type Received } from './fixtures.ts'

const ok = /SIP\/2\.0 200 OK\r\n/

/** a raw TCP connection that says nothing */
async function dial (port: number): Promise<Socket> {
  const s = connect({ host: '127.0.0.1', port })
  s.on('error', () => {})
  await new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('error', reject) })
  return s
}

/**
 * The UDP transport, on the event loop (the default) and with its socket on a thread of its own
 * (`udpThread`, transport/udp-thread.ts): the same behaviour either way.
 */
function udpSuite (name: string, init: TransportLayerInit): void {
  describe(name, () => {
    let layer: TransportLayer
    let received: Received[]
    let sipPort: number

    before(async () => {
      ({ layer, received } = await echoLayer({ maxMessageSize: 8192, maxDatagramSize: 4096, ...init }))
      sipPort = layer.addresses().udp?.port as number
    })

    after(async () => {
      await layer.stop()
    })

    test('a request is delivered with its source and answered; rport and received are stamped', async () => {
      const client = await UdpClient.open()
      try {
        await client.send(request('OPTIONS', { viaParams: ';rport' }), sipPort)
        await until(() => client.messages.length === 1)
        const last = received.at(-1) as Received
        assert.equal(last.source.transport, 'udp')
        assert.deepEqual(last.source.remote, { host: '127.0.0.1', port: client.port })
        assert.equal(last.source.local.port, sipPort)
        assert.equal(last.source.connectionId, undefined)
        const via = parseVia(last.message.headers.get('via') as string)
        assert.equal(via.rport, client.port)
        assert.equal(via.received, '127.0.0.1')
        const response = parseMessage(Buffer.from(client.messages[0]))
        assert.ok(!isRequest(response) && response.status === 200)
        assert.match(response.headers.get('x-via-seen') as string, new RegExp(`;rport=${client.port};received=127\\.0\\.0\\.1`))
      } finally {
        await client.close()
      }
    })

    test('UDP flows send to an IP address at once (no promise) and to a name through the resolver; what cannot be sent throws TransportError', async () => {
      const client = await UdpClient.open()
      try {
        const out = layer.connectUdp({ host: '127.0.0.1', port: client.port })
        const before = layer.counters().messagesOut.udp
        assert.equal(out.send(parseMessage(Buffer.from(request('OPTIONS')))), undefined, 'sent synchronously')
        assert.equal(layer.counters().messagesOut.udp, before + 1)
        // a name: resolved first, so a promise
        const named = layer.connectUdp({ host: 'localhost', port: client.port })
        const pending = named.send(parseMessage(Buffer.from(request('OPTIONS'))))
        assert.ok(pending instanceof Promise)
        await pending
        await until(() => client.messages.length === 2, 3000, 'both datagrams')
        assert.ok(client.messages.every(m => m.startsWith('OPTIONS ')))
        // too large for a datagram, a name that does not resolve, a bracketed IPv6 literal on an IPv4 socket
        assert.throws(() => layer.sendUdp(new Uint8Array(70_000), { host: '127.0.0.1', port: client.port }), TransportError)
        await assert.rejects(async () => { await out.sendBytes?.(new Uint8Array(70_000)) }, TransportError, 'a flow rejects, never throws')
        await assert.rejects(async () => { await layer.sendUdp(Buffer.from('x'), { host: 'no-such-host.invalid', port: 5060 }) }, TransportError)
        const v6 = layer.connectUdp({ host: '[::1]', port: client.port })
        assert.equal(v6.remote.host, '::1', 'brackets removed')
        const errors = layer.counters().sendErrors
        assert.equal(v6.send(parseMessage(Buffer.from(request('OPTIONS')))), undefined)
        await until(() => layer.counters().sendErrors === errors + 1, 3000, 'the IPv6 send to an IPv4 socket counted as a send error')
      } finally {
        await client.close()
      }
    })

    test('received only when sent-by differs from the source; nothing when it matches', async () => {
      const client = await UdpClient.open()
      try {
        await client.send(request('OPTIONS', { sentBy: 'client.invalid' }), sipPort)
        await until(() => client.messages.length === 1)
        let via = parseVia((received.at(-1) as Received).message.headers.get('via') as string)
        assert.equal(via.received, '127.0.0.1')
        assert.equal(via.rport, undefined)
        await client.send(request('OPTIONS', { sentBy: `127.0.0.1:${client.port}` }), sipPort)
        await until(() => client.messages.length === 2)
        via = parseVia((received.at(-1) as Received).message.headers.get('via') as string)
        assert.equal(via.received, undefined)
      } finally {
        await client.close()
      }
    })

    test('CRLF keep-alives are ignored; garbage is dropped; malformed but answerable gets 400; oversize gets 513', async () => {
      const client = await UdpClient.open()
      const before = layer.counters()
      try {
        await client.send('\r\n\r\n', sipPort)
        await client.send(Buffer.from([0, 1, 2, 255, 13, 10, 13, 10, 7]), sipPort)
        await client.send(request('OPTIONS').replace(/CSeq: (\d+) OPTIONS/, 'CSeq: $1 INVITE'), sipPort)
        await until(() => client.messages.length === 1)
        assert.match(client.messages[0], /^SIP\/2\.0 400 CSeq method does not match/)
        assert.match(client.messages[0], /\r\nTo: <sip:node@example\.com>;tag=[0-9a-f]+\r\n/)
        await client.send(request('MESSAGE', { body: 'x'.repeat(5000) }), sipPort)
        await until(() => client.messages.length === 2)
        assert.match(client.messages[1], /^SIP\/2\.0 513 Message Too Large/)
        // still serving
        await client.send(request('OPTIONS'), sipPort)
        await until(() => client.messages.length === 3)
        assert.match(client.messages[2], ok)
        const after = layer.counters()
        assert.equal(after.parseErrors.udp - before.parseErrors.udp, 3)
        assert.equal(after.oversize - before.oversize, 1)
        assert.equal(after.messagesIn.udp - before.messagesIn.udp, 1)
      } finally {
        await client.close()
      }
    })
  })
}

udpSuite('UDP', {})
udpSuite('UDP, its socket on a thread of its own', { udpThread: true })

describe('transport layer', () => {
  let layer: TransportLayer
  let received: Received[]
  let sipPort: number
  let wsPort: number

  before(async () => {
    ({ layer, received } = await echoLayer({ maxMessageSize: 8192, maxDatagramSize: 4096 }))
    const a = layer.addresses()
    assert.equal(a.udp?.port, a.tcp?.port, 'UDP and TCP share the sip port')
    sipPort = a.tcp?.port as number
    wsPort = a.ws?.port as number
  })

  after(async () => {
    await layer.stop()
  })

  describe('TCP', () => {
    test('pipelined messages in one write are each delivered and answered over the connection', async () => {
      const client = await TcpClient.open(sipPort)
      try {
        await client.write(request('OPTIONS', { transport: 'TCP' }) + request('MESSAGE', { transport: 'TCP', body: 'hi\r\n\r\nthere' }) + '\r\n' + request('OPTIONS', { transport: 'TCP' }))
        await until(() => client.count(ok) === 3)
        const last3 = received.slice(-3)
        assert.deepEqual(last3.map(r => (r.message as SipRequest).method), ['OPTIONS', 'MESSAGE', 'OPTIONS'])
        assert.equal(Buffer.from(last3[1].message.body).toString(), 'hi\r\n\r\nthere')
        assert.equal(last3[0].source.transport, 'tcp')
        assert.ok(last3[0].source.connectionId !== undefined)
        assert.equal(last3[0].source.connectionId, last3[2].source.connectionId)
        assert.ok(layer.isOpen(last3[0].source.connectionId as string))
      } finally {
        client.close()
      }
    })

    test('one message written byte by byte', async () => {
      const client = await TcpClient.open(sipPort)
      try {
        const bytes = Buffer.from(request('MESSAGE', { transport: 'TCP', body: 'byte by byte' }))
        for (let i = 0; i < bytes.length; i++) {
          await client.write(bytes.subarray(i, i + 1))
        }
        await until(() => client.count(ok) === 1)
        assert.equal(Buffer.from((received.at(-1) as Received).message.body).toString(), 'byte by byte')
      } finally {
        client.close()
      }
    })

    test('CRLF CRLF ping gets a CRLF pong', async () => {
      const client = await TcpClient.open(sipPort)
      try {
        await client.write('\r\n\r\n')
        await until(() => client.text === '\r\n')
        await client.write(request('OPTIONS', { transport: 'TCP' }))
        await until(() => client.count(ok) === 1)
      } finally {
        client.close()
      }
    })

    test('oversize: 513 then close; missing Content-Length: 400 then close; garbage: closed', async () => {
      const big = await TcpClient.open(sipPort)
      const noLength = await TcpClient.open(sipPort)
      const garbage = await TcpClient.open(sipPort)
      try {
        await big.write(request('MESSAGE', { transport: 'TCP', body: 'y'.repeat(10_000) }))
        await until(() => big.closed, 3000, 'oversize connection closed')
        assert.match(big.text, /^SIP\/2\.0 513 Message Too Large\r\n/)
        await noLength.write(request('OPTIONS', { transport: 'TCP', contentLength: false }))
        await until(() => noLength.closed, 3000, 'no-length connection closed')
        assert.match(noLength.text, /^SIP\/2\.0 400 Missing Content-Length on a stream\r\n/)
        await garbage.write(Buffer.concat([Buffer.from([0, 255, 1, 2]), Buffer.from('\r\n\r\n')]))
        await until(() => garbage.closed, 3000, 'garbage connection closed')
        assert.equal(garbage.text, '')
      } finally {
        big.close()
        noLength.close()
        garbage.close()
      }
    })

    test('a half-sent message then silence: the slow peer is closed while other clients are served', async () => {
      const slow = await TcpClient.open(sipPort)
      const before = layer.counters()
      try {
        const started = Date.now()
        await slow.write(request('OPTIONS', { transport: 'TCP' }).slice(0, 60))
        // meanwhile other clients keep being served
        for (let i = 0; i < 5; i++) {
          const other = await TcpClient.open(sipPort)
          await other.write(request('OPTIONS', { transport: 'TCP' }))
          await until(() => other.count(ok) === 1)
          other.close()
        }
        await until(() => slow.closed, 3000, 'slow peer closed')
        assert.ok(Date.now() - started >= 300, 'closed by the message timeout, not at once')
        assert.equal(slow.text, '')
        assert.equal(layer.counters().slowPeers - before.slowPeers, 1)
      } finally {
        slow.close()
      }
    })

    test('a slow peer that keeps dribbling bytes is closed too (the clock runs per message)', async () => {
      const slow = await TcpClient.open(sipPort)
      try {
        const bytes = Buffer.from(request('OPTIONS', { transport: 'TCP' }))
        for (let i = 0; i < bytes.length && !slow.closed; i++) {
          await slow.write(bytes.subarray(i, i + 1)).catch(() => {})
          await new Promise(resolve => setTimeout(resolve, 10))
        }
        assert.equal(slow.closed, true)
        assert.equal(slow.count(ok), 0)
      } finally {
        slow.close()
      }
    })

    test('sending to a TCP address dials once and reuses the connection; its responses come back up', async () => {
      const sockets: Socket[] = []
      const got: string[] = []
      const server = createServer((socket) => {
        sockets.push(socket)
        const framer = new StreamFramer(65_536)
        socket.on('data', (d) => {
          for (const event of framer.push(d)) {
            if (event.kind !== 'message') continue
            got.push(Buffer.from(event.data).toString())
            const m = parseMessage(event.data) as SipRequest
            socket.write([
              'SIP/2.0 202 Accepted', `Via: ${m.headers.get('via')}`, `From: ${m.headers.get('from')}`, `To: ${m.headers.get('to')};tag=z`,
              `Call-ID: ${m.headers.get('call-id')}`, `CSeq: ${m.headers.get('cseq')}`, 'Content-Length: 0', '', ''
            ].join('\r\n'))
          }
        })
      })
      await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
      const port = (server.address() as { port: number }).port
      try {
        const m1 = parseMessage(Buffer.from(request('MESSAGE', { transport: 'TCP', body: 'one' })))
        const m2 = parseMessage(Buffer.from(request('MESSAGE', { transport: 'TCP', body: 'two' })))
        await Promise.all([layer.send(m1, { transport: 'tcp', host: '127.0.0.1', port }), layer.send(m2, { transport: 'tcp', host: '127.0.0.1', port })])
        await until(() => received.filter(r => !isRequest(r.message) && r.message.status === 202).length === 2)
        assert.equal(sockets.length, 1, 'one connection for both')
        assert.deepEqual(got.map(t => t.split('\r\n\r\n')[1]).sort(), ['one', 'two'])
        const response = received.at(-1) as Received
        assert.equal(response.source.transport, 'tcp')
        assert.equal(layer.connection(response.source.connectionId as string)?.outbound, true)
      } finally {
        for (const s of sockets) s.destroy()
        await new Promise(resolve => server.close(resolve))
      }
    })

    test('sending over a closed connection to an unreachable peer rejects with TransportError', async () => {
      const client = await TcpClient.open(sipPort)
      await client.write(request('OPTIONS', { transport: 'TCP' }))
      await until(() => client.count(ok) === 1)
      const source = (received.at(-1) as Received).source
      client.close()
      await until(() => !layer.isOpen(source.connectionId as string))
      const reply = new SipRequest('NOTIFY', 'sip:x@example.com', new Headers())
      // the peer's ephemeral port is not listening: dialling back fails
      await assert.rejects(layer.send(reply, layer.targetOf(source)), (err: unknown) => err instanceof TransportError && err.status === 503)
      await assert.rejects(layer.send(reply, { transport: 'ws', host: '127.0.0.1', port: 1 }), TransportError)
    })
  })

  describe('WebSocket', () => {
    test('with the sip subprotocol: request answered over the connection, CRLF ping answered', async () => {
      const client = await WsClient.open(wsPort)
      try {
        assert.equal(client.ws.protocol, 'sip')
        client.ws.send(request('MESSAGE', { transport: 'WS', sentBy: 'df7jal23ls0d.invalid', body: 'ws body', contentLength: false }))
        await until(() => client.messages.length === 1)
        assert.match(client.messages[0], ok)
        const last = received.at(-1) as Received
        assert.equal(last.source.transport, 'ws')
        assert.equal(Buffer.from(last.message.body).toString(), 'ws body')
        assert.equal(parseVia(last.message.headers.get('via') as string).received, '127.0.0.1')
        client.ws.send('\r\n\r\n')
        await until(() => client.messages.length === 2)
        assert.equal(client.messages[1], '\r\n')
      } finally {
        client.close()
      }
    })

    test('without the sip subprotocol the handshake is refused', async () => {
      await assert.rejects(WsClient.open(wsPort, []), /handshake refused: 400/)
      await assert.rejects(WsClient.open(wsPort, ['chat']), /handshake refused: 400/)
    })

    test('oversize gets 513 and the connection closes; garbage gets dropped and the connection stays', async () => {
      const big = await WsClient.open(wsPort)
      const junk = await WsClient.open(wsPort)
      try {
        big.ws.send(request('MESSAGE', { transport: 'WS', body: 'z'.repeat(9000) }))
        await until(() => big.closed, 3000, 'oversize websocket closed')
        assert.match(big.messages[0] ?? '', /^SIP\/2\.0 513 /)
        // far beyond the limit: ws itself refuses the frame (close 1009) before we buffer it all
        const huge = await WsClient.open(wsPort)
        const code = new Promise<number>(resolve => huge.ws.once('close', (c: number) => resolve(c)))
        huge.ws.send(request('MESSAGE', { transport: 'WS', body: 'z'.repeat(40_000) }))
        assert.equal(await code, 1009)
        assert.equal(huge.messages.length, 0)
        junk.ws.send(Buffer.from([1, 2, 3, 0, 255]))
        junk.ws.send('INVITE sip:x SIP/2.0\r\n\r\n')
        junk.ws.send(request('OPTIONS', { transport: 'WS' }))
        await until(() => junk.messages.length === 1)
        assert.match(junk.messages[0], ok)
        assert.equal(junk.closed, false)
      } finally {
        big.close()
        junk.close()
      }
    })

    test('a half-sent WebSocket frame then silence: closed by the slow-peer timeout', async () => {
      const client = await WsClient.open(wsPort)
      try {
        const raw = (client.ws as unknown as { _socket: Socket })._socket
        // a masked text frame header announcing 100 bytes, and only 3 of them
        raw.write(Buffer.from([0x81, 0x80 | 100, 1, 2, 3, 4, 65, 66, 67]))
        await until(() => client.closed, 3000, 'slow websocket closed')
      } finally {
        client.close()
      }
    })
  })

  test('connections stay open across pauses longer than the slow-peer timeout between messages', async () => {
    const tcp = await TcpClient.open(sipPort)
    const ws = await WsClient.open(wsPort)
    try {
      for (let round = 1; round <= 2; round++) {
        await tcp.write(request('OPTIONS', { transport: 'TCP' }))
        ws.ws.send(request('OPTIONS', { transport: 'WS' }))
        await until(() => tcp.count(ok) === round && ws.messages.length === round)
        await new Promise(resolve => setTimeout(resolve, 600)) // messageTimeoutMs is 400
      }
      assert.equal(tcp.closed, false)
      assert.equal(ws.closed, false)
    } finally {
      tcp.close()
      ws.close()
    }
  })

  test('responseTarget: the connection while open, then received/sent-by port (TCP) or received/rport (UDP)', async () => {
    const udpReq = parseMessage(Buffer.from(request('OPTIONS', { sentBy: 'ua.invalid:5070', viaParams: ';rport' }))) as SipRequest
    const udpSource = { transport: 'udp' as const, remote: { host: '127.0.0.1', port: 40000 }, local: { host: '127.0.0.1', port: sipPort } }
    stampVia(udpReq, udpSource.remote)
    assert.deepEqual(layer.responseTarget(udpReq, udpSource), { transport: 'udp', host: '127.0.0.1', port: 40000 })
    const plain = parseMessage(Buffer.from(request('OPTIONS', { sentBy: 'ua.invalid:5070' }))) as SipRequest
    stampVia(plain, udpSource.remote)
    assert.deepEqual(layer.responseTarget(plain, udpSource), { transport: 'udp', host: '127.0.0.1', port: 5070 })
    const tcpReq = parseMessage(Buffer.from(request('OPTIONS', { transport: 'TCP', sentBy: '[::1]' }))) as SipRequest
    const gone = { transport: 'tcp' as const, remote: { host: '127.0.0.1', port: 40001 }, local: { host: '127.0.0.1', port: sipPort }, connectionId: 'tcp-closed' }
    stampVia(tcpReq, gone.remote)
    assert.deepEqual(layer.responseTarget(tcpReq, gone), { transport: 'tcp', host: '127.0.0.1', port: 5060 })
    const client = await TcpClient.open(sipPort)
    try {
      await client.write(request('OPTIONS', { transport: 'TCP' }))
      await until(() => client.count(ok) === 1)
      const last = received.at(-1) as Received
      assert.equal(layer.responseTarget(last.message as SipRequest, last.source).connectionId, last.source.connectionId)
    } finally {
      client.close()
    }
  })

  test('flows: flowOf a source answers over it; connect() opens or reuses; closed flows reject', async () => {
    const udp = await UdpClient.open()
    const tcp = await TcpClient.open(sipPort)
    const ws = await WsClient.open(wsPort)
    try {
      await udp.send(request('OPTIONS'), sipPort)
      await until(() => udp.messages.length === 1)
      const udpFlow = layer.flowOf((received.at(-1) as Received).source)
      assert.deepEqual([udpFlow.transport, udpFlow.reliable, udpFlow.open], ['UDP', false, true])
      await udpFlow.send(new SipRequest('NOTIFY', 'sip:x@example.com'))
      await until(() => udp.messages.length === 2)
      assert.match(udp.messages[1], /^NOTIFY sip:x@example.com SIP\/2\.0\r\n/)

      await tcp.write(request('OPTIONS', { transport: 'TCP' }))
      await until(() => tcp.count(ok) === 1)
      const tcpFlow = layer.flowOf((received.at(-1) as Received).source)
      assert.deepEqual([tcpFlow.transport, tcpFlow.reliable, tcpFlow.open], ['TCP', true, true])
      await tcpFlow.send(new SipRequest('NOTIFY', 'sip:y@example.com'))
      await until(() => tcp.text.includes('NOTIFY sip:y@example.com'))

      ws.ws.send(request('OPTIONS', { transport: 'WS' }))
      await until(() => ws.messages.length === 1)
      const wsSource = (received.at(-1) as Received).source
      const wsFlow = await layer.connect({ transport: 'WS', host: wsSource.remote.host, port: wsSource.remote.port })
      assert.equal(wsFlow.connectionId, wsSource.connectionId)
      await wsFlow.send(new SipRequest('MESSAGE', 'sip:z@example.com'))
      await until(() => ws.messages.length === 2)

      const udpOut = await layer.connect({ transport: 'udp', host: '127.0.0.1', port: udp.port })
      await udpOut.send(new SipRequest('OPTIONS', 'sip:w@example.com'))
      await until(() => udp.messages.length === 3)

      // a flow to our own TCP listener: dialled once, reused
      const a = await layer.connect({ transport: 'TCP', host: '127.0.0.1', port: sipPort })
      const b = await layer.connect({ transport: 'tcp', host: '127.0.0.1', port: sipPort })
      assert.equal(a.connectionId, b.connectionId)

      await assert.rejects(layer.connect({ transport: 'TLS', host: '127.0.0.1', port: 5061 }), TransportError)
      await assert.rejects(layer.connect({ transport: 'WS', host: '127.0.0.1', port: 1 }), TransportError)

      tcp.close()
      ws.close()
      await until(() => !tcpFlow.open && !wsFlow.open)
      await assert.rejects(async () => { await tcpFlow.send(new SipRequest('NOTIFY', 'sip:y@example.com')) }, TransportError)
      await assert.rejects(async () => { await wsFlow.send(new SipRequest('NOTIFY', 'sip:y@example.com')) }, TransportError)
      assert.equal(layer.flowOf({ ...wsSource }).open, false)
    } finally {
      await udp.close()
      tcp.close()
      ws.close()
    }
  })

  test('many concurrent TCP and WebSocket connections are all served', async () => {
    const tcp = await Promise.all(Array.from({ length: 40 }, async () => await TcpClient.open(sipPort)))
    const ws = await Promise.all(Array.from({ length: 20 }, async () => await WsClient.open(wsPort)))
    try {
      await Promise.all(tcp.map(async c => await c.write(request('OPTIONS', { transport: 'TCP' }) + request('OPTIONS', { transport: 'TCP' }))))
      for (const c of ws) c.ws.send(request('OPTIONS', { transport: 'WS' }))
      await until(() => tcp.every(c => c.count(ok) === 2) && ws.every(c => c.messages.length === 1), 5000, 'all answered')
      assert.ok(layer.counters().connections >= 60)
    } finally {
      for (const c of tcp) c.close()
      for (const c of ws) c.close()
    }
  })
})

describe('transport layer lifecycle and limits', () => {
  test('idle connections are closed; stop closes everything and sending afterwards fails', async () => {
    const { layer } = await echoLayer({ idleTimeoutMs: 200 })
    const { tcp, ws } = layer.addresses()
    const idle = await TcpClient.open(tcp?.port as number)
    const wsIdle = await WsClient.open(ws?.port as number)
    await until(() => idle.closed && wsIdle.closed, 3000, 'idle connections closed')
    assert.equal(layer.counters().idleClosed, 2)
    const live = await TcpClient.open(tcp?.port as number)
    const wsLive = await WsClient.open(ws?.port as number)
    await layer.stop()
    await until(() => live.closed && wsLive.closed, 3000, 'connections closed by stop')
    await assert.rejects(layer.send(new SipRequest('OPTIONS', 'sip:x'), { transport: 'udp', host: '127.0.0.1', port: 9 }), TransportError)
    await layer.stop()
  })

  test('connections beyond maxConnections are refused while existing ones are served', async () => {
    const { layer } = await echoLayer({ maxConnections: 2 })
    try {
      const port = layer.addresses().tcp?.port as number
      const a = await TcpClient.open(port)
      const b = await TcpClient.open(port)
      await until(() => layer.counters().connections === 2)
      const c = await TcpClient.open(port).catch(() => undefined)
      if (c !== undefined) await until(() => c.closed, 3000, 'third connection refused')
      await assert.rejects(WsClient.open(layer.addresses().ws?.port as number), /handshake refused: 503/)
      await a.write(request('OPTIONS', { transport: 'TCP' }))
      await until(() => a.count(ok) === 1)
      a.close()
      b.close()
    } finally {
      await layer.stop()
    }
  })

  test('idle connections from one address beyond the per-address cap (256 by default) are refused; other addresses are still served', async () => {
    const { layer } = await echoLayer({ firstMessageTimeoutMs: 60_000 })
    const port = layer.addresses().tcp?.port as number
    const idle: Socket[] = []
    try {
      // 300 idle connections from 127.0.0.1 (the report had 5,000 all accepted)
      for (let i = 0; i < 300; i++) idle.push(await dial(port))
      await until(() => idle.filter(s => !s.destroyed && !s.readableEnded).length === 256 && layer.counters().connections === 256, 5000, '256 left open')
      assert.deepEqual(layer.counters().connectionsRefused, { host: 44, total: 0 })
      // another source address is admitted and served
      const other = await TcpClient.open(port, '127.0.0.2')
      await other.write(request('OPTIONS', { transport: 'TCP' }))
      await until(() => other.count(ok) === 1, 3000, 'served from 127.0.0.2')
      other.close()
      // a slot freed from the crowded address is taken again
      idle[0].destroy()
      await until(() => layer.counters().connections === 255, 3000, 'slot freed')
      const again = await TcpClient.open(port)
      await again.write(request('OPTIONS', { transport: 'TCP' }))
      await until(() => again.count(ok) === 1, 3000, 'served again')
      again.close()
    } finally {
      for (const s of idle) s.destroy()
      await layer.stop()
    }
  })

  test('maxConnectionsPerHost holds for TCP and WebSocket together; refusals are counted by cap', async () => {
    const { layer } = await echoLayer({ maxConnectionsPerHost: 2 })
    const { tcp, ws } = layer.addresses()
    try {
      const a = await TcpClient.open(tcp?.port as number)
      const w = await WsClient.open(ws?.port as number)
      await until(() => layer.counters().connections === 2)
      const c = await TcpClient.open(tcp?.port as number).catch(() => undefined)
      if (c !== undefined) await until(() => c.closed, 3000, 'third connection refused')
      await assert.rejects(WsClient.open(ws?.port as number), /handshake refused: 503/)
      assert.deepEqual(layer.counters().connectionsRefused, { host: 2, total: 0 })
      // the admitted ones are served
      await a.write(request('OPTIONS', { transport: 'TCP' }))
      w.ws.send(request('OPTIONS', { transport: 'WS' }))
      await until(() => a.count(ok) === 1 && w.messages.length === 1)
      a.close()
      w.close()
    } finally {
      await layer.stop()
    }
  })

  test('an inbound connection that brings no whole message within firstMessageTimeoutMs is closed; pings do not count; one that spoke stays', async () => {
    const { layer } = await echoLayer({ firstMessageTimeoutMs: 300 })
    const { tcp, ws } = layer.addresses()
    try {
      const silent = await TcpClient.open(tcp?.port as number)
      const pinging = await TcpClient.open(tcp?.port as number)
      const wsSilent = await WsClient.open(ws?.port as number)
      const talker = await TcpClient.open(tcp?.port as number)
      const wsTalker = await WsClient.open(ws?.port as number)
      await talker.write(request('OPTIONS', { transport: 'TCP' }))
      wsTalker.ws.send(request('OPTIONS', { transport: 'WS' }))
      const pings = setInterval(() => { pinging.write('\r\n\r\n').catch(() => {}) }, 50)
      try {
        await until(() => silent.closed && pinging.closed && wsSilent.closed, 3000, 'silent connections closed')
      } finally {
        clearInterval(pings)
      }
      assert.equal(layer.counters().silentClosed, 3)
      await new Promise(resolve => setTimeout(resolve, 400))
      assert.equal(talker.closed || wsTalker.closed, false, 'connections that sent a message stay open')
      talker.close()
      wsTalker.close()
    } finally {
      await layer.stop()
    }
  })

  test('a handler that throws does not break the layer', async () => {
    const { layer } = await echoLayer()
    layer.onMessage(() => { throw new Error('boom') })
    const client = await UdpClient.open()
    try {
      const port = layer.addresses().udp?.port as number
      await client.send(request('OPTIONS'), port)
      await client.send(request('OPTIONS'), port)
      await until(() => client.messages.length === 2)
    } finally {
      await client.close()
      await layer.stop()
    }
  })
})
