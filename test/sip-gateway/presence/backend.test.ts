// Back-end subscriptions as another node sends them (raw SIP over the memory PeerChannel): loop
// detection (draft 7.2.1), not-owner answers, per-watcher decisions in Sipmesh-Authorization,
// hostile headers; rules persisted across a gateway restart; fetch (Expires: 0) and 423 on refresh.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { TestMesh } from '../gateway/fixtures/mesh.ts'
import { TestUa } from '../gateway/fixtures/ua.ts'
import { Gateway } from '../../../sip-gateway/gateway.ts'
import { MemoryStore } from '../../../sip-gateway/memory-store.ts'
import { MemoryRegistry } from '../../../dht/memory-registry.ts'
import { parseMessage, SipResponse, SipRequest, serializeMessage, createResponse } from '../../../sip-gateway/codec/index.ts'
import type { MemoryChannel } from '../../../sip-gateway/memory-channel.ts'
import { testLogger } from '../gateway/fixtures/log.ts'
import { subscribe, refresh, waitNotify, stateOf, notifies, bodyOf, isOpen, finalFor } from './fixtures.ts'

describe('back-end subscriptions from a (fake) mesh node', () => {
  let mesh: TestMesh
  let peer: MemoryChannel
  const got: Array<SipResponse | SipRequest> = []
  let bob: TestUa

  before(async () => {
    mesh = await TestMesh.spawn(2, { presence: { minExpires: 10 } })
    peer = mesh.hub.channel('node-z')
    peer.onMessage((from, data) => {
      const m = parseMessage(data)
      got.push(m)
      // answer NOTIFYs like a node would
      if (m instanceof SipRequest && m.method === 'NOTIFY') void peer.send(from, serializeMessage(createResponse(m, 200)))
    })
    bob = await TestUa.open('bobbe', mesh.nodes[0].sip)
    assert.equal((await bob.register(600))?.status, 200)
  })
  after(async () => {
    await bob.close()
    peer.close()
    await mesh.stop()
  })

  /** a back-end SUBSCRIBE; `omit` drops base headers by name (hostile cases), `headers` are added */
  async function backend (to: string, node: string, headers: Array<[string, string]>, callId = randomBytes(6).toString('hex'), omit: string[] = []): Promise<SipResponse | undefined> {
    const branch = 'z9hG4bK' + randomBytes(6).toString('hex')
    const text = [
      `SUBSCRIBE ${to} SIP/2.0`,
      `Via: SIP/2.0/MESH 127.0.0.1:1;branch=${branch};node=node-z`,
      'Max-Forwards: 70',
      `From: <sip:example.com>;tag=${randomBytes(4).toString('hex')}`,
      `To: <${to}>`,
      `Call-ID: ${callId}`,
      'CSeq: 1 SUBSCRIBE',
      'Contact: <sip:127.0.0.1:1;node=node-z>',
      'Event: presence',
      'Expires: 600'
    ].filter(line => !omit.some(name => line.startsWith(`${name}:`))).concat(
      headers.map(([n, v]) => `${n}: ${v}`),
      ['Content-Length: 0', '', '']
    ).join('\r\n')
    await peer.send(node, Buffer.from(text))
    return await finalFor(got, branch)
  }

  test('a path naming the receiver is a loop (482); a malformed path is 400; too many watchers 400', async () => {
    assert.equal((await backend(bob.aor, 'node-a', [['Sipmesh-Path', 'node-z, node-a']]))?.status, 482)
    assert.equal((await backend(bob.aor, 'node-a', [['Sipmesh-Path', 'node-z, node-y, node-x, node-w, node-v']]))?.status, 482)
    assert.equal((await backend(bob.aor, 'node-a', [['Sipmesh-Path', 'not a node id!']]))?.status, 400)
    const many = Array.from({ length: 201 }, (_, i) => encodeURIComponent(`sip:w${i}@example.com`)).join(' ')
    assert.equal((await backend(bob.aor, 'node-a', [['Sipmesh-Path', 'node-z'], ['Sipmesh-Watchers', many]]))?.status, 400)
    assert.equal((await backend(bob.aor, 'node-a', [['Sipmesh-Path', 'node-z'], ['Sipmesh-Watchers', '%%% \u0000 sip:x']]))?.status, 200, 'malformed identities are dropped, not fatal')
  })

  test('a back-end SUBSCRIBE without Contact or a From tag, or with a malformed Contact, is 400; an unknown package 489 with Allow-Events', async () => {
    const path: [string, string] = ['Sipmesh-Path', 'node-z']
    assert.equal((await backend(bob.aor, 'node-a', [path], undefined, ['Contact']))?.status, 400)
    assert.equal((await backend(bob.aor, 'node-a', [path, ['From', '<sip:example.com>']], undefined, ['From']))?.status, 400)
    assert.equal((await backend(bob.aor, 'node-a', [path, ['Contact', '<:::not a uri']], undefined, ['Contact']))?.status, 400)
    const r = await backend(bob.aor, 'node-a', [path, ['Event', 'no-such-package']], undefined, ['Event'])
    assert.equal(r?.status, 489)
    assert.match(r?.headers.get('Allow-Events') ?? '', /presence/)
    const ok = await backend(bob.aor, 'node-a', [path])
    assert.equal(ok?.status, 200, 'the owner still serves a well-formed one')
  })

  test('a node that does not own the presentity answers 404 Not Owner', async () => {
    const r = await backend(bob.aor, 'node-b', [['Sipmesh-Path', 'node-z']])
    assert.equal(r?.status, 404)
    assert.equal(r?.headers.get('Sipmesh-Not-Owner'), 'node-b')
  })

  test('the owner decides per watcher identity and NOTIFYs the real document only when someone is allowed', async () => {
    await mesh.nodes[0].gateway.presence.setRules(bob.aor, { watchers: { 'sip:eve@example.com': 'block', 'sip:pat@example.com': 'polite-block' } })
    const callId = 'be-decisions'
    const ids = ['sip:eve@example.com', 'sip:pat@example.com', 'sip:ann@example.com'].map(encodeURIComponent).join(' ')
    const r = await backend(bob.aor, 'node-a', [['Sipmesh-Path', 'node-z'], ['Sipmesh-Watchers', ids]], callId)
    assert.equal(r?.status, 200)
    const auth = r?.headers.get('Sipmesh-Authorization') ?? ''
    assert.match(auth, /block=sip%3Aeve%40example\.com/)
    assert.match(auth, /polite-block=sip%3Apat%40example\.com/)
    assert.match(auth, /allow=sip%3Aann%40example\.com/)
    const deadline = Date.now() + 2000
    let notify: SipRequest | undefined
    while (notify === undefined && Date.now() < deadline) {
      notify = got.find((m): m is SipRequest => m instanceof SipRequest && m.method === 'NOTIFY' && m.headers.get('Call-ID') === callId)
      await new Promise(resolve => setTimeout(resolve, 10))
    }
    assert.ok(notify !== undefined)
    assert.equal(notify.headers.get('Sipmesh-View'), 'full')
    // a second back-end dialog of the same node for the same presentity supersedes the first
    const r2 = await backend(bob.aor, 'node-a', [['Sipmesh-Path', 'node-z']], 'be-decisions-2')
    assert.equal(r2?.status, 200)
  })

  test('a move: the old owner ends the back-end subscriptions it serves with terminated;reason=deactivated', async () => {
    const dora = await TestUa.open('dorabe', mesh.nodes[0].sip)
    const dora2 = await TestUa.open('dorabe', mesh.nodes[1].sip)
    try {
      assert.equal((await dora.register(600))?.status, 200)
      const callId = 'be-move'
      assert.equal((await backend(dora.aor, 'node-a', [['Sipmesh-Path', 'node-z'], ['Sipmesh-Watchers', encodeURIComponent('sip:ann@example.com')]], callId))?.status, 200)
      assert.equal((await dora2.register(600))?.status, 200)
      const deadline = Date.now() + 2000
      let final: SipRequest | undefined
      while (final === undefined && Date.now() < deadline) {
        final = got.find((m): m is SipRequest => m instanceof SipRequest && m.method === 'NOTIFY' && m.headers.get('Call-ID') === callId && /^terminated/.test(m.headers.get('Subscription-State') ?? ''))
        await new Promise(resolve => setTimeout(resolve, 10))
      }
      assert.ok(final !== undefined, 'a final NOTIFY')
      assert.equal(final.headers.get('Subscription-State'), 'terminated;reason=deactivated')
      // and the new owner serves a back-end subscription now
      assert.equal((await backend(dora.aor, 'node-b', [['Sipmesh-Path', 'node-z']]))?.status, 200)
      assert.equal((await backend(dora.aor, 'node-a', [['Sipmesh-Path', 'node-z']]))?.status, 404)
    } finally {
      await dora.close()
      await dora2.close()
    }
  })

  test('the user unregisters: watchers are told it is offline', async () => {
    const ed = await TestUa.open('edbe', mesh.nodes[0].sip)
    const w = await TestUa.open('edwatcher', mesh.nodes[1].sip)
    try {
      assert.equal((await ed.register(600))?.status, 200)
      const s = await subscribe(w, { to: ed.aor, expires: 60 })
      assert.ok(await waitNotify(w, s.dialog!.callId, r => /<basic>open</.test(Buffer.from(r.body).toString())))
      assert.equal((await ed.register(0))?.status, 200)
      assert.ok(await waitNotify(w, s.dialog!.callId, r => /<basic>closed</.test(Buffer.from(r.body).toString())))
      assert.ok(!stateOf(notifies(w, s.dialog!.callId).at(-1)!).startsWith('terminated'), 'the subscription stays (held)')
    } finally {
      await ed.close()
      await w.close()
    }
  })

  test('rules persist in the store across a gateway restart', async () => {
    const store = new MemoryStore()
    const make = (): Gateway => new Gateway({ registry: new MemoryRegistry(mesh.mesh, { nodeId: 'node-p' }), peerChannel: mesh.hub.channel('node-p'), store, logger: testLogger() }, { domains: ['example.com'], sip: { host: '127.0.0.1', port: 0 } })
    const g1 = make()
    await g1.start()
    await g1.presence.setRules('sip:carl@example.com', { default: 'polite-block', domains: { 'evil.example.org': 'block' } })
    await assert.rejects(g1.presence.setRules('sip:carl@example.com', { watchers: { 'sip:x@example.com': 'maybe' } }), { name: 'AuthorizationRuleError' })
    await assert.rejects(g1.presence.setRules('sip:carl@example.com', { unknown: 1 }), { name: 'AuthorizationRuleError' })
    await g1.stop()
    const g2 = make()
    await g2.start()
    try {
      const rules = g2.presence.getRules('sip:carl@example.com')
      assert.equal(rules.default, 'polite-block')
      assert.equal(rules.domains['evil.example.org'], 'block')
    } finally { await g2.stop() }
  })

  test('fetch (Expires: 0 on the initial SUBSCRIBE) gets one terminated NOTIFY; a too-brief refresh is 423', async () => {
    const w = await TestUa.open('fetcher', mesh.nodes[1].sip)
    try {
      const f = await subscribe(w, { to: bob.aor, expires: 0 })
      assert.equal(f.response?.status, 200)
      const fetched = await waitNotify(w, f.dialog!.callId, r => stateOf(r).startsWith('terminated'))
      assert.ok(fetched !== undefined)
      // RFC 6665 4.4.3: the NOTIFY of a fetch carries the current state: bob is registered (open)
      assert.equal(fetched.headers.get('Content-Type'), 'application/pidf+xml')
      assert.match(bodyOf(fetched), /entity="pres:bobbe@example\.com"/)
      assert.ok(isOpen(fetched), bodyOf(fetched))
      await w.waitFor(() => undefined, 300)
      assert.equal(notifies(w, f.dialog!.callId).length, 1, 'one NOTIFY, and no other')
      const s = await subscribe(w, { to: bob.aor, expires: 60 })
      assert.equal(s.response?.status, 200)
      const r = await refresh(w, s.dialog!, 3)
      assert.equal(r?.status, 423)
      assert.equal(r?.headers.get('Min-Expires'), '10')
      // the dialog survives a refused refresh
      assert.equal((await refresh(w, s.dialog!, 60))?.status, 200)
      // an out-of-order CSeq is refused
      s.dialog!.cseq = 1
      assert.equal((await refresh(w, s.dialog!, 60))?.status, 500)
    } finally { await w.close() }
  })
})

describe('an owner that restarts (loses its presence state)', () => {
  test('the watcher node re-subscribes on 481 and its watcher sees later changes', async () => {
    const m = await TestMesh.spawn(2, { presence: { backendExpires: 2, retryMs: 300, publications: { minExpires: 1 } } })
    const bob = await TestUa.open('bobrs', m.nodes[0].sip)
    const alice = await TestUa.open('alicers', m.nodes[1].sip)
    try {
      assert.equal((await bob.register(600))?.status, 200)
      const s = await subscribe(alice, { to: bob.aor, expires: 120 })
      assert.ok(await waitNotify(alice, s.dialog!.callId, r => /<basic>open</.test(Buffer.from(r.body).toString())))
      // (let the back-end exchange that delivered it finish: a request lost in the restart would
      // only be retried after its transaction times out)
      await new Promise(resolve => setTimeout(resolve, 200))
      // node a's gateway restarts; its registrations come back from the store
      const a = m.nodes[0]
      await a.gateway.stop()
      await a.gateway.start()
      assert.equal(a.gateway.presence.stats.subscriptions, 0)
      // node b's refresh (at 80% of 2 s) gets 481 and it subscribes again
      await bob.waitFor(() => a.gateway.presence.stats.subscriptions > 0 ? true : undefined, 4000)
      assert.equal(a.gateway.presence.stats.subscriptions, 1)
      const body = '<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:bobrs@example.com"><tuple id="x"><status><basic>open</basic></status><note>after restart</note></tuple></presence>'
      const { text, branch } = bob.build({ method: 'PUBLISH', uri: bob.aor, to: `<${bob.aor}>`, headers: [['Event', 'presence']] })
      bob.sendRaw(text.replace('Content-Length: 0\r\n\r\n', `Content-Type: application/pidf+xml\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`), a.gateway.addresses.udp)
      assert.equal((await bob.waitFinal(branch))?.status, 200)
      assert.ok(await waitNotify(alice, s.dialog!.callId, r => Buffer.from(r.body).toString().includes('after restart')))
    } finally {
      await bob.close()
      await alice.close()
      await m.stop()
    }
  })
})
