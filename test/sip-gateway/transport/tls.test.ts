import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { connect as tlsConnect } from 'node:tls'
import { connect as netConnect } from 'node:net'
import { once } from 'node:events'
import { WebSocket } from 'ws'
import { TransportLayer, type MessageSource } from '../../../sip-gateway/transport/index.ts'
import { createResponse, isRequest, type SipMessage } from '../../../sip-gateway/codec/index.ts'
import { memoryLogger, request } from './fixtures.ts'
import { makeTestPki, type TestPki, type Pem } from '../../fixtures/pki.ts'

async function waitUntil (check: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

describe('SIP over TLS and secure WebSocket', () => {
  let pki: TestPki
  let layer: TransportLayer
  const received: Array<{ message: SipMessage, source: MessageSource }> = []
  const logger = memoryLogger()

  before(async () => {
    pki = await makeTestPki()
    // example.com's node, peered with example.net
    layer = new TransportLayer({ logger }, {
      tls: { host: '127.0.0.1', port: 0 },
      wss: { host: '127.0.0.1', port: 0 },
      tlsCredentials: { cert: pki.com.cert, key: pki.com.key, ca: pki.ca, peers: ['example.net'], handshakeTimeoutMs: 300 },
      messageTimeoutMs: 400
    })
    layer.onMessage((message, source) => {
      received.push({ message, source })
      if (isRequest(message) && message.method !== 'ACK') layer.send(createResponse(message, 200), layer.targetOf(source)).catch(() => {})
    })
    await layer.start()
  })

  after(async () => {
    await layer.stop()
    pki.remove()
  })

  function tlsClient (client?: Pem): ReturnType<typeof tlsConnect> {
    const port = layer.addresses().tls?.port as number
    return tlsConnect({ host: '127.0.0.1', port, ca: pki.ca, cert: client?.cert, key: client?.key, servername: 'example.com' })
  }

  async function exchange (client?: Pem): Promise<{ answer: string, source: MessageSource | undefined, closed: boolean }> {
    const socket = tlsClient(client)
    socket.on('error', () => {})
    let answer = ''
    socket.on('data', (d: Buffer) => { answer += d.toString() })
    const closed = once(socket, 'close').then(() => true)
    try {
      await Promise.race([once(socket, 'secureConnect'), closed])
      const before = received.length
      socket.write(request('OPTIONS', { transport: 'TLS' }))
      const done = await Promise.race([
        waitUntil(() => answer.includes('SIP/2.0 200'), 2000).then(() => false, () => false),
        closed
      ])
      return { answer, source: received.slice(before)[0]?.source, closed: done }
    } finally {
      socket.destroy()
    }
  }

  test('a user agent without a certificate is served over TLS', async () => {
    const r = await exchange()
    assert.match(r.answer, /^SIP\/2\.0 200/)
    assert.equal(r.source?.transport, 'tls')
    const conn = layer.connection(r.source?.connectionId as string)
    assert.equal(conn?.peerDomain, undefined)
  })

  test('a trusted peer certificate makes the connection that peer', async () => {
    const r = await exchange(pki.net)
    assert.match(r.answer, /^SIP\/2\.0 200/)
    assert.equal(layer.flowOf(r.source as MessageSource).peerDomain, 'example.net')
    assert.equal(layer.flowOf(r.source as MessageSource).transport, 'TLS')
  })

  for (const [name, pem] of [['untrusted', 'rogueNet'], ['expired', 'expiredNet'], ['wrong-domain', 'org']] as const) {
    test(`a client certificate that is ${name} is refused and logged at warn`, async () => {
      const refused = layer.counters().tlsRefused
      const r = await exchange(pki[pem])
      assert.equal(r.answer, '')
      assert.equal(r.closed, true)
      assert.equal(layer.counters().tlsRefused, refused + 1)
      assert.ok(logger.lines.some(l => l.level === 'warn' && l.msg === 'tls connection refused'))
    })
  }

  test('plain SIP sent to the TLS port is dropped', async () => {
    const failures = layer.counters().tlsHandshakeFailures
    const socket = netConnect({ host: '127.0.0.1', port: layer.addresses().tls?.port as number })
    socket.on('error', () => {})
    let answer = ''
    socket.on('data', (d: Buffer) => { answer += d.toString() })
    await once(socket, 'connect')
    socket.write(request('OPTIONS', { transport: 'TCP' }))
    await Promise.race([once(socket, 'close'), new Promise(resolve => setTimeout(resolve, 3000))])
    assert.equal(socket.destroyed || socket.readyState === 'closed', true)
    assert.doesNotMatch(answer, /SIP\/2\.0/)
    await waitUntil(() => layer.counters().tlsHandshakeFailures > failures)
  })

  test('a client that never finishes its handshake is dropped after the timeout', async () => {
    const failures = layer.counters().tlsHandshakeFailures
    const socket = netConnect({ host: '127.0.0.1', port: layer.addresses().tls?.port as number })
    socket.on('error', () => {})
    await once(socket, 'connect')
    const t0 = Date.now()
    // a ClientHello that stops after its record header: the server waits for the rest
    socket.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff]))
    await Promise.race([once(socket, 'close'), new Promise(resolve => setTimeout(resolve, 3000))])
    const took = Date.now() - t0
    assert.ok(socket.destroyed, 'closed by the server')
    assert.ok(took >= 250 && took < 2500, `closed after ${took} ms`)
    await waitUntil(() => layer.counters().tlsHandshakeFailures > failures)
  })

  test('dialling a peer checks that its certificate names the peer domain', async () => {
    // example.net's layer, peered with example.com
    const net = new TransportLayer({ logger: memoryLogger() }, {
      tls: { host: '127.0.0.1', port: 0 },
      tlsCredentials: { cert: pki.net.cert, key: pki.net.key, ca: pki.ca, peers: ['example.com'] }
    })
    await net.start()
    try {
      const target = { transport: 'TLS', host: '127.0.0.1', port: layer.addresses().tls?.port as number }
      const flow = await net.connect({ ...target, domain: 'example.com' })
      assert.equal(flow.peerDomain, 'example.com')
      await assert.rejects(net.connect({ ...target, domain: 'example.org' }), /does not name example.org/)
      // the far side knows us as example.net, by our client certificate
      const before = received.length
      await flow.send((await import('../../../sip-gateway/codec/index.ts')).parseMessage(Buffer.from(request('OPTIONS', { transport: 'TLS' }))))
      await waitUntil(() => received.length > before)
      assert.equal(layer.flowOf(received[received.length - 1].source).peerDomain, 'example.net')
    } finally {
      await net.stop()
    }
  })

  test('a peer presenting an untrusted certificate cannot be dialled', async () => {
    const rogue = new TransportLayer({ logger: memoryLogger() }, {
      tls: { host: '127.0.0.1', port: 0 },
      tlsCredentials: { cert: pki.rogueNet.cert, key: pki.rogueNet.key, ca: pki.ca, peers: ['example.com'] }
    })
    await rogue.start()
    try {
      const log = memoryLogger()
      const dialler = new TransportLayer({ logger: log }, { tls: { host: '127.0.0.1', port: 0 }, tlsCredentials: { cert: pki.com.cert, key: pki.com.key, ca: pki.ca, peers: ['example.net'] } })
      await dialler.start()
      try {
        await assert.rejects(dialler.connect({ transport: 'TLS', host: '127.0.0.1', port: rogue.addresses().tls?.port as number, domain: 'example.net' }), /tls to .* failed/)
        assert.ok(log.lines.some(l => l.level === 'warn' && l.msg === 'tls connection failed'))
      } finally {
        await dialler.stop()
      }
    } finally {
      await rogue.stop()
    }
  })

  test('secure WebSocket with the same certificate', async () => {
    const port = layer.addresses().wss?.port as number
    const ws = new WebSocket(`wss://127.0.0.1:${port}`, 'sip', { ca: pki.ca })
    try {
      await once(ws, 'open')
      const answer = once(ws, 'message')
      ws.send(request('OPTIONS', { transport: 'WSS' }))
      const [data] = await answer as [Buffer]
      assert.match(data.toString(), /^SIP\/2\.0 200/)
      assert.equal(received[received.length - 1].source.transport, 'wss')
    } finally {
      ws.close()
    }
  })
})
