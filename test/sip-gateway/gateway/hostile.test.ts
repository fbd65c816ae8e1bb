// Hostile and odd input at the gateway level: every request gets the right answer (or is
// dropped when unanswerable), and other clients keep being served throughout.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createSocket } from 'node:dgram'
import { TestMesh } from './fixtures/mesh.ts'
import { TestUa, type RequestOptions } from './fixtures/ua.ts'
import type { SipRequest, SipResponse } from '../../../sip-gateway/codec/index.ts'
import { parseMessage } from '../../../sip-gateway/codec/parser.ts'
import { loopHashOf } from '../../../sip-gateway/proxy/core.ts'

describe('hostile input', () => {
  let mesh: TestMesh
  let bob: TestUa
  let alice: TestUa
  let mallory: TestUa

  before(async () => {
    mesh = await TestMesh.spawn(2)
    bob = await TestUa.open('bob', mesh.nodes[1].sip)
    alice = await TestUa.open('alice', mesh.nodes[0].sip)
    mallory = await TestUa.open('mallory', mesh.nodes[0].sip)
    assert.equal((await bob.register(600))?.status, 200)
  })
  after(async () => {
    await bob.close(); await alice.close(); await mallory.close()
    await mesh.stop()
  })

  const works = async (): Promise<void> => {
    const r = await alice.request({ uri: 'sip:bob@example.com', body: 'still there?' })
    assert.equal(r?.status, 200, 'a well-behaved client is still served')
  }

  test('OPTIONS to the node: 200 with Allow; to the domain too', async () => {
    const r = await mallory.request({ method: 'OPTIONS', uri: `sip:${mesh.nodes[0].sip.host}:${mesh.nodes[0].sip.port}` })
    assert.equal(r?.status, 200)
    assert.match(r?.headers.getAll('Allow').join(', ') ?? '', /MESSAGE/)
    assert.equal((await mallory.request({ method: 'OPTIONS', uri: 'sip:example.com' }))?.status, 200)
    assert.equal((await mallory.request({ method: 'OPTIONS', uri: 'sip:example.com', maxForwards: 0 }))?.status, 200, 'Max-Forwards 0 for the node itself is fine')
  })

  test('unknown method: 501; method not allowed for the node: 405 with Allow', async () => {
    assert.equal((await mallory.request({ method: 'FROBNICATE', uri: 'sip:bob@example.com' }))?.status, 501)
    const r = await mallory.request({ method: 'MESSAGE', uri: 'sip:example.com' })
    assert.equal(r?.status, 405)
    assert.match(r?.headers.getAll('Allow').join(', ') ?? '', /REGISTER/)
    // RFC 3261 20.5: the 405's Allow is the list OPTIONS advertises (ACK and CANCEL included)
    const o = await mallory.request({ method: 'OPTIONS', uri: 'sip:example.com' })
    const allow = (m: SipResponse | undefined): string[] => (m?.headers.getAll('Allow') ?? []).map(x => x.trim().toUpperCase()).sort()
    assert.deepEqual(allow(r), allow(o))
    assert.ok(allow(r).includes('ACK') && allow(r).includes('CANCEL'))
  })

  test('Max-Forwards 0: 483; malformed Max-Forwards: 400', async () => {
    assert.equal((await mallory.request({ uri: 'sip:bob@example.com', maxForwards: 0 }))?.status, 483)
    assert.equal((await mallory.request({ uri: 'sip:bob@example.com', headers: [['Max-Forwards', 'lots']], maxForwards: null }))?.status, 400)
    assert.equal(bob.received.filter(m => m.headers.get('Max-Forwards') === '-1').length, 0)
  })

  test('foreign domain: 403, never forwarded', async () => {
    const before = bob.received.length
    assert.equal((await mallory.request({ uri: 'sip:bob@evil.org' }))?.status, 403)
    assert.equal((await mallory.request({ method: 'REGISTER', uri: 'sip:evil.org', headers: [['Contact', mallory.contact]] }))?.status, 403)
    assert.equal(bob.received.length, before)
  })

  test('loop: a request carrying our own Via with the same loop hash gets 482', async () => {
    // node B forwards to bob; bob's UA bounces the very request back to node A as if it were a new hop
    let bounced: Promise<unknown> | undefined
    bob.answer = (req) => {
      if (req.method !== 'MESSAGE' || bounced !== undefined) return 200
      // send the received request (all its Vias) back to node A, with an extra Via of ours
      const copy = req.headers.clone()
      copy.prepend('Via', `SIP/2.0/UDP 127.0.0.1:${bob.port};branch=z9hG4bK${randomBytes(4).toString('hex')};rport`)
      const lines = [`MESSAGE sip:bob@example.com SIP/2.0`, ...[...copy.entries()].map(([n, v]) => `${n}: ${v}`), '', '']
      bob.sendRaw(lines.join('\r\n').replace(/Content-Length: \d+/i, 'Content-Length: 0'), mesh.nodes[0].sip)
      bounced = Promise.resolve()
      return 200
    }
    const r = await mallory.request({ uri: 'sip:bob@example.com', body: 'loop me' })
    assert.equal(r?.status, 200)
    const loop = await bob.waitFor(() => mesh.nodes[0].gateway.stats.loops > 0 || mesh.nodes[1].gateway.stats.loops > 0 ? true : undefined, 2000)
    assert.equal(loop, true, 'the loop was detected')
    bob.answer = () => 200
  })

  test('loop: a REGISTER carrying our own Via with its loop hash gets 482 (hashed when needed, not up front)', async () => {
    const node = mesh.nodes[0].sip
    const loops = mesh.nodes[0].gateway.stats.loops
    const branch = 'z9hG4bK' + randomBytes(6).toString('hex')
    const built = mallory.build({ method: 'REGISTER', uri: 'sip:example.com', to: `<${mallory.aor}>`, branch, headers: [['Contact', mallory.contact], ['Expires', '60']] }).text
    const hash = loopHashOf(parseMessage(Buffer.from(built)) as SipRequest)
    // our Via below the client's, as if the request had left this node once already
    const looped = built.replace(/^(Via: [^\r\n]*\r\n)/m, `$1Via: SIP/2.0/UDP ${node.host}:${node.port};branch=z9hG4bK${randomBytes(4).toString('hex')}.${hash}\r\n`)
    assert.notEqual(looped, built)
    mallory.sendRaw(looped)
    assert.equal((await mallory.waitFinal(branch, 3000))?.status, 482)
    assert.equal(mesh.nodes[0].gateway.stats.loops, loops + 1)
    // the same REGISTER with a Via of ours but another hash is no loop
    const b2 = 'z9hG4bK' + randomBytes(6).toString('hex')
    const other = mallory.build({ method: 'REGISTER', uri: 'sip:example.com', to: `<${mallory.aor}>`, branch: b2, headers: [['Contact', mallory.contact], ['Expires', '60']] }).text
      .replace(/^(Via: [^\r\n]*\r\n)/m, `$1Via: SIP/2.0/UDP ${node.host}:${node.port};branch=z9hG4bKab12.${hash}\r\n`)
    mallory.sendRaw(other)
    assert.equal((await mallory.waitFinal(b2, 3000))?.status, 200)
    assert.equal(mesh.nodes[0].gateway.stats.loops, loops + 1)
  })

  test('loop: a PUBLISH carrying our own Via with its loop hash gets 482 (hashed after the presence agent, when it is not taken)', async () => {
    const node = mesh.nodes[0].sip
    const loops = mesh.nodes[0].gateway.stats.loops
    const branch = 'z9hG4bK' + randomBytes(6).toString('hex')
    const built = mallory.build({ method: 'PUBLISH', uri: mallory.aor, to: `<${mallory.aor}>`, branch, headers: [['Event', 'presence'], ['Expires', '60']] }).text
    const hash = loopHashOf(parseMessage(Buffer.from(built)) as SipRequest)
    mallory.sendRaw(built.replace(/^(Via: [^\r\n]*\r\n)/m, `$1Via: SIP/2.0/UDP ${node.host}:${node.port};branch=z9hG4bK${randomBytes(4).toString('hex')}.${hash}\r\n`))
    assert.equal((await mallory.waitFinal(branch, 3000))?.status, 482)
    assert.equal(mesh.nodes[0].gateway.stats.loops, loops + 1)
  })

  test('loop check below the top Via: ours with the hash in a list gets 482; a malformed Via of someone else is forwarded unchanged (16.3 item 1)', async () => {
    const node = mesh.nodes[0].sip
    const loops = mesh.nodes[0].gateway.stats.loops
    // our Via with the hash as the third element, in a comma-separated line under the client's
    const branch = 'z9hG4bK' + randomBytes(6).toString('hex')
    const built = mallory.build({ uri: 'sip:bob@example.com', branch, body: 'loop in a list' }).text
    const hash = loopHashOf(parseMessage(Buffer.from(built)) as SipRequest)
    const looped = built.replace(/^(Via: [^\r\n]*\r\n)/m, `$1Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKother1 , SIP/2.0/UDP ${node.host}:${node.port};branch=z9hG4bK${randomBytes(4).toString('hex')}.${hash}\r\n`)
    assert.notEqual(looped, built)
    mallory.sendRaw(looped)
    assert.equal((await mallory.waitFinal(branch, 3000))?.status, 482)
    assert.equal(mesh.nodes[0].gateway.stats.loops, loops + 1)

    // a malformed Via below the top one, not ours and without the hash: no validation step
    // involves it, so the request is relayed and the Via reaches bob as it was written
    const b2 = 'z9hG4bK' + randomBytes(6).toString('hex')
    const odd = 'SIP/2.0/UDP bad host name;;branch'
    const withOdd = mallory.build({ uri: 'sip:bob@example.com', branch: b2, body: 'odd via below' }).text
      .replace(/^(Via: [^\r\n]*\r\n)/m, `$1Via: ${odd}\r\n`)
    const before = bob.received.length
    mallory.sendRaw(withOdd)
    assert.equal((await mallory.waitFinal(b2, 3000))?.status, 200)
    const got = bob.received.slice(before).find(m => m.method === 'MESSAGE' && m.headers.getAll('Via').includes(odd))
    assert.ok(got !== undefined, 'the odd Via reached bob unchanged')
    assert.equal(mesh.nodes[0].gateway.stats.loops, loops + 1)
    // the same odd Via carrying the hash text could be a loop: it is parsed, and malformed is 400
    const b3 = 'z9hG4bK' + randomBytes(6).toString('hex')
    const built3 = mallory.build({ uri: 'sip:bob@example.com', branch: b3, body: 'odd via with the hash' }).text
    const hash3 = loopHashOf(parseMessage(Buffer.from(built3)) as SipRequest)
    mallory.sendRaw(built3.replace(/^(Via: [^\r\n]*\r\n)/m, `$1Via: SIP/2.0/UDP bad host;branch=z9hG4bKx.${hash3}\r\n`))
    assert.equal((await mallory.waitFinal(b3, 3000))?.status, 400)
    await works()
  })

  test('missing headers and garbage: 400 when answerable, dropped otherwise, no crash', async () => {
    const branch = 'z9hG4bK' + randomBytes(6).toString('hex')
    // no Call-ID / CSeq: not answerable (a response must copy both, RFC 3261 8.2.6.2, and a
    // client matches it by CSeq method, 17.1.3), so dropped; with a CSeq of another method: 400
    // (sent from a raw socket: any datagram back counts, even one a UA's parser would reject)
    const raw = createSocket('udp4')
    await new Promise<void>(resolve => raw.bind(0, '127.0.0.1', () => resolve()))
    let rawReplies = 0
    raw.on('message', () => { rawReplies++ })
    raw.send(`MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${raw.address().port};branch=${branch}\r\nFrom: <sip:m@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nContent-Length: 0\r\n\r\n`, mesh.nodes[0].sip.port, mesh.nodes[0].sip.host)
    const b1 = 'z9hG4bK' + randomBytes(6).toString('hex')
    mallory.sendRaw(mallory.build({ branch: b1 }).text.replace(/^CSeq: (\d+) MESSAGE/m, 'CSeq: $1 INVITE'))
    const r1 = await mallory.waitFinal(b1, 1000)
    assert.equal(r1?.status, 400, 'CSeq method not the request method: 400')
    await new Promise(resolve => setTimeout(resolve, 200))
    await new Promise<void>(resolve => raw.close(() => resolve()))
    assert.equal(rawReplies, 0, 'no Call-ID or CSeq: dropped')
    // bad version, bad URI scheme, binary garbage, huge datagram
    const b2 = 'z9hG4bK' + randomBytes(6).toString('hex')
    mallory.sendRaw(mallory.build({ branch: b2 }).text.replace('SIP/2.0\r\n', 'SIP/3.0\r\n'))
    const r2 = await mallory.waitFinal(b2, 1000)
    assert.equal(r2?.status, 505, 'SIP/3.0: 505 Version Not Supported')
    const b3 = 'z9hG4bK' + randomBytes(6).toString('hex')
    mallory.sendRaw(mallory.build({ branch: b3, uri: 'http://example.com/x', to: '<sip:bob@example.com>' }).text)
    const r3 = await mallory.waitFinal(b3, 1000)
    assert.equal(r3?.status, 416, 'an http: Request-URI: 416 Unsupported URI Scheme')
    mallory.sendRaw(randomBytes(1200))
    mallory.sendRaw('\r\n\r\n')
    mallory.sendRaw('INVITE\r\n\r\n')
    mallory.sendRaw(Buffer.alloc(60_000, 65))
    const b4 = 'z9hG4bK' + randomBytes(6).toString('hex')
    mallory.sendRaw(mallory.build({ branch: b4, uri: 'sip:bob@example.com', headers: [['Via', 'garbage garbage']] }).text)
    await works()
  })

  test('an AoR too long or too odd for the registry, in any request, gets a 4xx logged at info, never a 5xx', async () => {
    const long = 'x'.repeat(60_000)
    const odd = 'y'.repeat(300) // a SIP user part, over the registry's 256-character AoR
    const contact: [string, string] = ['Contact', '<sip:m@127.0.0.1:5999>']
    const cases: Array<{ o: RequestOptions, status: number }> = [
      { o: { uri: `sip:${long}@example.com`, to: '<sip:bob@example.com>', body: 'hi' }, status: 414 },
      { o: { method: 'PUBLISH', uri: `sip:${long}@example.com`, to: '<sip:bob@example.com>', headers: [['Event', 'presence']] }, status: 414 },
      { o: { method: 'REGISTER', uri: 'sip:example.com', to: `<sip:${long}@example.com>`, headers: [contact] }, status: 400 },
      { o: { uri: `sip:${odd}@example.com`, body: 'hi' }, status: 400 },
      { o: { method: 'PUBLISH', uri: `sip:${odd}@example.com`, headers: [['Event', 'presence']] }, status: 400 },
      { o: { method: 'SUBSCRIBE', uri: `sip:${odd}@example.com`, headers: [['Event', 'presence'], contact] }, status: 400 },
      { o: { method: 'INVITE', uri: `sip:${odd}@example.com`, headers: [contact] }, status: 400 },
      { o: { method: 'OPTIONS', uri: `sip:${odd}@example.com` }, status: 400 },
      { o: { method: 'REGISTER', uri: 'sip:example.com', to: `<sip:${odd}@example.com>`, headers: [contact] }, status: 400 }
    ]
    const errorsBefore = mesh.lines.filter(l => l.level === 'error').length
    for (const { o, status } of cases) {
      // over TCP: a 60 KB Request-URI echoed in To does not fit a datagram
      const ua = await TestUa.open('mallory', mesh.nodes[0].sip, 'TCP')
      try {
        const r = await ua.request(o)
        assert.equal(r?.status, status, `${o.method ?? 'MESSAGE'} ${o.uri?.slice(0, 24)} To ${o.to?.slice(0, 24)}: ${r?.status} ${r?.reason}`)
      } finally {
        await ua.close()
      }
    }
    assert.deepEqual(mesh.lines.slice(errorsBefore).filter(l => l.level === 'error').map(l => l.msg), [], 'nothing logged at error')
    assert.ok(mesh.lines.some(l => l.level === 'info' && l.msg === 'request refused' && l.fields?.status === 400), 'the refusals are logged at info')
    await works()
  })

  test('a flood of requests with missing Max-Forwards and odd headers does not stop service', async () => {
    const results = await Promise.all(Array.from({ length: 30 }, async (_, i) =>
      await mallory.request({ uri: i % 2 === 0 ? 'sip:nobody@example.com' : 'sip:bob@elsewhere.net', maxForwards: null }, 2000)))
    assert.deepEqual(new Set(results.map(r => r?.status)), new Set([404, 403]))
    await works()
  })

  test('retransmissions are absorbed: the same request twice reaches bob once and both get the same answer', async () => {
    const before = bob.received.filter(m => m.method === 'MESSAGE').length
    const { text, branch } = alice.build({ uri: 'sip:bob@example.com', body: 'once' })
    alice.sendRaw(text)
    alice.sendRaw(text)
    const r = await alice.waitFinal(branch)
    assert.equal(r?.status, 200)
    await new Promise(resolve => setTimeout(resolve, 200))
    alice.sendRaw(text) // after the final: the stored final response is sent again
    await alice.waitFor(() => alice.responses(branch).filter(x => x.status === 200).length >= 2 ? true : undefined, 1000)
    assert.equal(bob.received.filter(m => m.method === 'MESSAGE').length - before, 1)
    assert.ok(alice.responses(branch).filter(x => x.status === 200).length >= 2)
  })

  test('CANCEL of an unknown transaction: 481', async () => {
    assert.equal((await mallory.request({ method: 'CANCEL', uri: 'sip:bob@example.com' }))?.status, 481)
  })
})
