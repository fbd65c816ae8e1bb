// Presence rules follow the presentity across the mesh (agent.ts, "Authorization rules"): a move
// hands the owner's document over, a PUT at a node that is not the owner reaches the owner, versions
// decide (older copies are ignored), and the rules PUBLISH is accepted from mesh peers only
// (a user agent is refused; malformed or oversized documents are 400 and change nothing).
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { TestMesh } from '../gateway/fixtures/mesh.ts'
import { TestUa } from '../gateway/fixtures/ua.ts'
import { parseMessage, SipResponse, SipRequest, serializeMessage, createResponse } from '../../../sip-gateway/codec/index.ts'
import type { MemoryChannel } from '../../../sip-gateway/memory-channel.ts'
import { MemoryRegistry } from '../../../dht/memory-registry.ts'
import { RULES_CONTENT_TYPE, RULES_EVENT, MAX_RULES_BODY } from '../../../sip-gateway/presence/agent.ts'
import { serializeRules } from '../../../sip-gateway/presence/authorization.ts'
import { subscribe, publish, pidf, notifies, waitNotify, bodyOf, isClosed, stateOf, finalFor } from './fixtures.ts'

const config = { presence: { minExpires: 1, decisionWaitMs: 1000, retryMs: 300, publications: { minExpires: 1, defaultExpires: 60 } } }

describe('presence rules across the mesh', () => {
  let mesh: TestMesh
  let peer: MemoryChannel
  const got: Array<SipResponse | SipRequest> = []
  /** how the fake node answers a request (default: 200 at once) */
  let answer: (m: SipRequest, reply: (r: SipResponse) => void) => void = (m, reply) => { reply(createResponse(m, 200)) }
  const uas: TestUa[] = []
  const ua = async (user: string, node: number): Promise<TestUa> => {
    const u = await TestUa.open(user, mesh.nodes[node].sip)
    uas.push(u)
    return u
  }
  const presence = (node: number): TestMesh['nodes'][number]['gateway']['presence'] => mesh.nodes[node].gateway.presence

  before(async () => {
    mesh = await TestMesh.spawn(3, config)
    // a fake mesh node that sends rules requests as another node would
    peer = mesh.hub.channel('node-z')
    peer.onMessage((from, data) => {
      const m = parseMessage(data)
      got.push(m)
      if (m instanceof SipRequest && m.method !== 'ACK') answer(m, (r) => { void peer.send(from, serializeMessage(r)) })
    })
  })
  after(async () => {
    for (const u of uas) await u.close()
    peer.close()
    await mesh.stop()
  })

  /** a rules PUBLISH from the fake mesh node; body undefined: a fetch */
  async function rulesRequest (node: string, aor: string, body?: string | Buffer, headers: Array<[string, string]> = []): Promise<SipResponse | undefined> {
    const branch = 'z9hG4bK' + randomBytes(6).toString('hex')
    const payload = body === undefined ? Buffer.alloc(0) : Buffer.from(body)
    const head = [
      `PUBLISH ${aor} SIP/2.0`,
      `Via: SIP/2.0/MESH 127.0.0.1:1;branch=${branch};node=node-z`,
      'Max-Forwards: 70',
      `From: <sip:example.com>;tag=${randomBytes(4).toString('hex')}`,
      `To: <${aor}>`,
      `Call-ID: ${randomBytes(6).toString('hex')}`,
      'CSeq: 1 PUBLISH',
      `Event: ${RULES_EVENT}`,
      ...(body === undefined ? [] : [`Content-Type: ${RULES_CONTENT_TYPE}`]),
      ...headers.map(([n, v]) => `${n}: ${v}`),
      `Content-Length: ${payload.length}`, '', ''
    ].join('\r\n')
    await peer.send(node, Buffer.concat([Buffer.from(head), payload]))
    return await finalFor(got, branch)
  }

  const doc = (version: bigint, watchers: Record<string, 'allow' | 'block' | 'polite-block'>): string => serializeRules({ watchers, domains: {} }, version)

  test('a move: a watcher polite-blocked at the old owner never sees the state at the new owner; a blocked one stays blocked', async () => {
    const erin = await ua('erin1', 0)
    assert.equal((await erin.register(600))?.status, 200)
    assert.equal((await publish(erin, { body: pidf(erin.aor, 'open', 'secret on a') }))?.status, 200)
    const put = await presence(0).setRules(erin.aor, { watchers: { 'sip:pat1@example.com': 'polite-block', 'sip:mal1@example.com': 'block' } })
    assert.equal(put.owner, 'node-a')
    assert.equal(put.delivered, true)
    // pat watches erin from node c: offline only
    const pat = await ua('pat1', 2)
    const s = await subscribe(pat, { to: erin.aor, expires: 120 })
    assert.equal(s.response?.status, 200)
    assert.ok(await waitNotify(pat, s.dialog!.callId, isClosed))
    // erin moves to node b and publishes there
    const erinB = await ua('erin1', 1)
    assert.equal((await erinB.register(600))?.status, 200)
    assert.equal((await publish(erinB, { body: pidf(erin.aor, 'open', 'secret on b') }))?.status, 200)
    // the new owner holds the document set at the old owner, with its version
    const atB = await pat.waitFor(() => presence(1).getRulesDocument(erin.aor).version === put.version ? true : undefined, 3000)
    assert.ok(atB, `node b holds version ${presence(1).getRulesDocument(erin.aor).version}, not ${put.version}`)
    assert.equal(presence(1).getRulesDocument(erin.aor).watchers['sip:mal1@example.com'], 'block')
    // pat's watcher node re-subscribed at b (its back-end subscription goes there) and pat still sees nothing real
    assert.ok(await pat.waitFor(() => presence(2).backendsOf(erin.aor).to === 'node-b' ? true : undefined, 3000), 'the back-end subscription moved to b')
    await new Promise(resolve => setTimeout(resolve, 300))
    assert.ok(notifies(pat, s.dialog!.callId).every(r => !bodyOf(r).includes('secret')), notifies(pat, s.dialog!.callId).map(bodyOf).join('\n'))
    // a blocked watcher subscribing after the move is refused (at its node, by b's decision)
    const mal = await ua('mal1', 2)
    assert.equal((await subscribe(mal, { to: erin.aor, expires: 120 })).response?.status, 403)
    // and on b itself too
    const mal2 = await ua('mal1', 1)
    assert.equal((await subscribe(mal2, { to: erin.aor, expires: 120 })).response?.status, 403)
  })

  test('a rule change PUT at a third node reaches the owner and takes effect for watchers', async () => {
    const fay = await ua('fay2', 0)
    assert.equal((await fay.register(600))?.status, 200)
    assert.equal((await publish(fay, { body: pidf(fay.aor, 'open', 'fay here') }))?.status, 200)
    const gil = await ua('gil2', 1)
    const s = await subscribe(gil, { to: fay.aor, expires: 120 })
    assert.ok(await waitNotify(gil, s.dialog!.callId, r => bodyOf(r).includes('fay here')))
    // set at node c, which neither serves fay nor has her watcher
    const put = await presence(2).setRules(fay.aor, { watchers: { 'sip:gil2@example.com': 'block' } })
    assert.equal(put.owner, 'node-a')
    assert.equal(put.delivered, true)
    assert.equal(presence(0).getRulesDocument(fay.aor).version, put.version, 'the owner holds the document made at c')
    assert.equal(presence(2).getRulesDocument(fay.aor).version, put.version, 'and the node that took the PUT keeps it')
    assert.ok(await waitNotify(gil, s.dialog!.callId, r => /terminated;reason=rejected/.test(stateOf(r))), 'the owner ended the blocked watcher')
  })

  test('versions: an older document arriving later does not replace a newer one (412); the same one is 200', async () => {
    const aor = 'sip:hal3@example.com'
    const newer = await presence(0).setRules(aor, { watchers: { 'sip:ivy3@example.com': 'block' } })
    const v = BigInt(newer.version)
    const older = await rulesRequest('node-a', aor, doc(v - 1n, { 'sip:ivy3@example.com': 'allow' }))
    assert.equal(older?.status, 412)
    assert.equal(older?.headers.get('Sipmesh-Rules-Version'), newer.version)
    assert.equal(presence(0).authorization.decide(aor, 'sip:ivy3@example.com'), 'block')
    assert.equal((await rulesRequest('node-a', aor, doc(v, { 'sip:ivy3@example.com': 'block' })))?.status, 200)
    assert.equal((await rulesRequest('node-a', aor, doc(v + 5n, { 'sip:ivy3@example.com': 'polite-block' })))?.status, 200)
    assert.equal(presence(0).authorization.decide(aor, 'sip:ivy3@example.com'), 'polite-block')
    assert.equal(presence(0).getRulesDocument(aor).version, String(v + 5n))
    // a fetch gets the document when the asker's is older, nothing when it is as new
    const fetched = await rulesRequest('node-a', aor, undefined, [['Sipmesh-Rules-Version', String(v)]])
    assert.equal(fetched?.status, 200)
    assert.match(Buffer.from(fetched!.body).toString(), new RegExp(`"version":"${v + 5n}"`))
    const none = await rulesRequest('node-a', aor, undefined, [['Sipmesh-Rules-Version', String(v + 5n)]])
    assert.equal(none?.status, 200)
    assert.equal(none?.body.length, 0)
  })

  test('malformed or oversized rules over the mesh: 400 and nothing stored', async () => {
    const aor = 'sip:jo4@example.com'
    const before = presence(0).getRulesDocument(aor)
    assert.equal(before.version, '0')
    for (const bad of ['{not json', JSON.stringify({ watchers: { 'sip:x@example.com': 'maybe' }, version: '5' }), JSON.stringify({ watchers: { 'not an aor': 'block' }, version: '5' }),
      JSON.stringify({ watchers: {}, bogus: 1, version: '5' }), JSON.stringify({ default: 'block' }), JSON.stringify({ default: 'block', version: 5 }), '[]']) {
      assert.equal((await rulesRequest('node-a', aor, bad))?.status, 400, bad)
    }
    const big = doc(7n, Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`sip:watcher-with-a-long-name-${i}@example.com`, 'block' as const])))
    assert.ok(big.length > MAX_RULES_BODY && big.length < 60_000, String(big.length))
    assert.equal((await rulesRequest('node-a', aor, big))?.status, 400)
    assert.deepEqual(presence(0).getRulesDocument(aor), before)
    assert.equal(presence(0).authorization.document(aor), undefined)
  })

  test('a rules PUBLISH from a user agent is refused and changes nothing, whichever AoR it names', async () => {
    const kim = await ua('kim5', 0)
    assert.equal((await kim.register(600))?.status, 200)
    await presence(0).setRules(kim.aor, { watchers: { 'sip:lee5@example.com': 'block' } })
    const before = presence(0).getRulesDocument(kim.aor)
    const forged = doc(BigInt(before.version) + 1000n, { 'sip:lee5@example.com': 'allow' })
    // at the owner
    assert.equal((await publish(kim, { event: RULES_EVENT, contentType: RULES_CONTENT_TYPE, body: forged }))?.status, 403)
    // at another node, which would otherwise route a PUBLISH to the owner over the mesh
    const kimC = await ua('kim5', 2)
    assert.equal((await publish(kimC, { event: RULES_EVENT, contentType: RULES_CONTENT_TYPE, body: forged }))?.status, 403)
    // a fetch from a user agent is refused too
    assert.equal((await publish(kimC, { event: RULES_EVENT }))?.status, 403)
    assert.deepEqual(presence(0).getRulesDocument(kim.aor), before)
    assert.equal(presence(2).authorization.document(kim.aor), undefined)
    assert.equal(presence(0).authorization.decide(kim.aor, 'sip:lee5@example.com'), 'block')
  })

  test('the new owner fetches the rules from the previous owner and holds decisions until they come', async () => {
    const aor = 'sip:max6@example.com'
    // the fake node owned max before (it claimed the AoR), with rules that polite-block ned
    const z = new MemoryRegistry(mesh.mesh, { nodeId: 'node-z' })
    try {
      await z.claim(aor, { expiresAt: Date.now() + 60_000 })
      let fetchedWith: string | undefined
      answer = (m, reply) => {
        if (m.method === 'PUBLISH' && m.headers.get('Event') === RULES_EVENT && m.body.length === 0) {
          fetchedWith = m.headers.get('Sipmesh-Rules-Version')
          const r = createResponse(m, 200, undefined, [['Content-Type', RULES_CONTENT_TYPE]])
          r.body = Buffer.from(doc(10n, { 'sip:ned6@example.com': 'polite-block' }))
          setTimeout(() => { reply(r) }, 500)
          return
        }
        reply(createResponse(m, 200))
      }
      // ned already watches max at node a (which subscribes at the fake owner meanwhile)
      const nedA = await ua('ned6', 0)
      const sa = await subscribe(nedA, { to: aor, expires: 120 })
      assert.equal(sa.response?.status, 200)
      const max = await ua('max6', 0)
      assert.equal((await max.register(600))?.status, 200)
      assert.equal((await publish(max, { body: pidf(aor, 'open', 'secret max') }))?.status, 200)
      // ned subscribes from node b while node a is still waiting for the previous owner's answer
      const ned = await ua('ned6', 1)
      const s = await subscribe(ned, { to: aor, expires: 120 })
      assert.equal(s.response?.status, 200)
      assert.equal(fetchedWith, '0', 'node a asked the previous owner, saying it has no document')
      assert.ok(await waitNotify(ned, s.dialog!.callId, isClosed))
      await new Promise(resolve => setTimeout(resolve, 300))
      assert.equal(presence(0).getRulesDocument(aor).version, '10')
      assert.ok(notifies(ned, s.dialog!.callId).every(r => !bodyOf(r).includes('secret')), notifies(ned, s.dialog!.callId).map(bodyOf).join('\n'))
      // the watcher at the new owner itself was shown nothing real either, before or after the rules came
      assert.ok(await waitNotify(nedA, sa.dialog!.callId, r => stateOf(r).startsWith('active') && isClosed(r)))
      assert.ok(notifies(nedA, sa.dialog!.callId).every(r => !bodyOf(r).includes('secret') && !bodyOf(r).includes('<basic>open</basic>')), notifies(nedA, sa.dialog!.callId).map(bodyOf).join('\n'))
    } finally {
      answer = (m, reply) => { reply(createResponse(m, 200)) }
      await z.stop()
    }
  })

  test('the old owner, displaced by a move, pushes its document to the new owner', async () => {
    const oz = await ua('oz7', 0)
    assert.equal((await oz.register(600))?.status, 200)
    const put = await presence(0).setRules(oz.aor, { default: 'block' })
    // the fake node takes oz over
    const z = new MemoryRegistry(mesh.mesh, { nodeId: 'node-z' })
    try {
      await z.claim(oz.aor, { expiresAt: Date.now() + 60_000 })
      const push = await oz.waitFor(() => got.find((m): m is SipRequest => m instanceof SipRequest && m.method === 'PUBLISH' && m.uri === oz.aor && m.body.length > 0), 3000)
      assert.ok(push !== undefined, 'a push reached the new owner')
      assert.equal(push.headers.get('Event'), RULES_EVENT)
      assert.equal(push.headers.get('Content-Type'), RULES_CONTENT_TYPE)
      assert.deepEqual(JSON.parse(Buffer.from(push.body).toString()), { v: 1, version: put.version, default: 'block', watchers: {}, domains: {} })
    } finally {
      await z.stop()
    }
  })
})
