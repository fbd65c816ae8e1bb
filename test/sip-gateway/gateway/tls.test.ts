// SIP over TLS through the gateway (in-process mesh of two nodes): a user agent without a client
// certificate registers and sends over TLS; Via and Record-Route name TLS with the TLS port; a
// sips: request is delivered only over TLS (RFC 5630), else 480.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { randomBytes } from 'node:crypto'
import { connect, type TLSSocket } from 'node:tls'
import { once } from 'node:events'
import { TestMesh } from './fixtures/mesh.ts'
import { TestUa } from './fixtures/ua.ts'
import { StreamFramer } from '../../../sip-gateway/transport/index.ts'
import { parseMessage, isRequest, type SipMessage, type SipRequest, type SipResponse } from '../../../sip-gateway/codec/index.ts'
import { makeTestPki, type TestPki } from '../../fixtures/pki.ts'

/** a user agent over TLS, without a client certificate */
class TlsUa {
  readonly received: SipRequest[] = []
  readonly responses: SipResponse[] = []
  readonly framer = new StreamFramer(65536)
  socket!: TLSSocket
  port = 0
  readonly user: string
  constructor (user: string) { this.user = user }

  async open (port: number, ca: string): Promise<void> {
    this.socket = connect({ host: '127.0.0.1', port, ca })
    this.socket.on('error', () => {})
    this.socket.on('data', (chunk: Buffer) => {
      for (const e of this.framer.push(chunk)) {
        if (e.kind !== 'message') continue
        const m: SipMessage = parseMessage(e.data)
        if (isRequest(m)) {
          this.received.push(m)
          const h = m.headers
          this.socket.write([`SIP/2.0 200 OK`, ...h.getAll('Via').map(v => `Via: ${v}`), `From: ${h.get('From') ?? ''}`, `To: ${h.get('To') ?? ''};tag=tls`,
            `Call-ID: ${h.get('Call-ID') ?? ''}`, `CSeq: ${h.get('CSeq') ?? ''}`, 'Content-Length: 0', '', ''].join('\r\n'))
        } else this.responses.push(m as SipResponse)
      }
    })
    await once(this.socket, 'secureConnect')
    this.port = this.socket.localPort ?? 0
  }

  async request (method: string, uri: string, headers: string[] = [], body = ''): Promise<SipResponse> {
    const branch = 'z9hG4bK' + randomBytes(6).toString('hex')
    this.socket.write([`${method} ${uri} SIP/2.0`, `Via: SIP/2.0/TLS 127.0.0.1:${this.port};branch=${branch}`, 'Max-Forwards: 70',
      `From: <sip:${this.user}@example.com>;tag=${randomBytes(4).toString('hex')}`, `To: <${method === 'REGISTER' ? `sip:${this.user}@example.com` : uri}>`, `Call-ID: ${randomBytes(6).toString('hex')}`,
      `CSeq: 1 ${method}`, ...headers, ...(body === '' ? [] : ['Content-Type: text/plain']), `Content-Length: ${Buffer.byteLength(body)}`, '', body].join('\r\n'))
    const end = Date.now() + 3000
    for (;;) {
      const r = this.responses.find(x => x.status >= 200 && (x.headers.get('Via') ?? '').includes(branch))
      if (r !== undefined) return r
      if (Date.now() > end) throw new Error(`no final response to ${method} ${uri}`)
      await new Promise(resolve => setTimeout(resolve, 10))
    }
  }

  close (): void { this.socket.destroy() }
}

describe('SIP over TLS through the gateway', () => {
  let pki: TestPki
  let mesh: TestMesh
  let carol: TlsUa
  let bob: TestUa
  let tlsPort = 0

  before(async () => {
    pki = await makeTestPki()
    mesh = await TestMesh.spawn(2, { tls: { listen: { host: '127.0.0.1', port: 0 }, cert: pki.com.cert, key: pki.com.key, ca: pki.ca } })
    tlsPort = mesh.nodes[0].gateway.addresses.tls?.port as number
    carol = new TlsUa('carol')
    await carol.open(tlsPort, pki.ca)
    const reg = await carol.request('REGISTER', 'sip:example.com', [`Contact: <sip:carol@127.0.0.1:${carol.port};transport=tls>`, 'Expires: 600'])
    assert.equal(reg.status, 200)
    bob = await TestUa.open('bob', mesh.nodes[1].sip)
    assert.equal((await bob.register())?.status, 200)
  })

  after(async () => {
    carol?.close()
    await bob?.close()
    await mesh?.stop()
    pki?.remove()
  })

  test('a MESSAGE over TLS crosses the mesh to a UDP user; its Via names TLS', async () => {
    const r = await carol.request('MESSAGE', 'sip:bob@example.com', [], 'over tls')
    assert.equal(r.status, 200)
    const got = bob.received.find(m => Buffer.from(m.body).toString() === 'over tls')
    assert.ok(got !== undefined)
    assert.match(got.headers.getAll('Via').join('\n'), /SIP\/2\.0\/TLS 127\.0\.0\.1/)
  })

  test('Record-Route names TLS with the TLS port on the side of the TLS user agent', async () => {
    const invite = carol.request('INVITE', 'sip:bob@example.com', [`Contact: <sip:carol@127.0.0.1:${carol.port};transport=tls>`, 'Content-Type: application/sdp'], 'v=0')
    const got = await bob.waitFor(() => bob.received.find(m => m.method === 'INVITE'))
    assert.ok(got !== undefined)
    const rr = got.headers.getAll('Record-Route').join(',')
    assert.match(rr, new RegExp(`<sip:127\\.0\\.0\\.1:${tlsPort};transport=tls;lr;node=node-a>`))
    // the test user agent answers 200 by itself
    assert.equal((await invite).status, 200)
  })

  test('sips: is delivered over TLS only (RFC 5630): to the TLS user yes, to the UDP user 480', async () => {
    const toCarol = await bob.request({ uri: 'sips:carol@example.com', body: 'secure' })
    assert.equal(toCarol?.status, 200)
    const got = carol.received.find(m => Buffer.from(m.body).toString() === 'secure')
    assert.ok(got !== undefined)
    assert.match(got.headers.get('Via') ?? '', new RegExp(`^SIP/2\\.0/TLS [^;]+:${tlsPort};`))
    const toBob = await carol.request('MESSAGE', 'sips:bob@example.com', [], 'not over udp')
    assert.equal(toBob.status, 480)
    assert.ok(!bob.received.some(m => Buffer.from(m.body).toString() === 'not over udp'))
  })
})
