// Routing across three in-process gateways (memory registry + memory channel) on real UDP/TCP
// sockets: REGISTER on one node, MESSAGE from another reaches every device, responses come back.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { TestMesh } from './fixtures/mesh.ts'
import { TestUa } from './fixtures/ua.ts'
import { parseNameAddr } from '../../../sip-gateway/codec/index.ts'

describe('routing across gateways', () => {
  let mesh: TestMesh
  const uas: TestUa[] = []
  const ua = async (user: string, node: number, transport: 'UDP' | 'TCP' = 'UDP'): Promise<TestUa> => {
    const u = await TestUa.open(user, mesh.nodes[node].sip, transport)
    uas.push(u)
    return u
  }

  before(async () => { mesh = await TestMesh.spawn(3) })
  after(async () => {
    for (const u of uas) await u.close()
    await mesh.stop()
  })

  test('REGISTER: 200 lists the contact; the AoR resolves to that node on every node', async () => {
    const alice = await ua('alice', 0)
    const r = await alice.register(600)
    assert.equal(r?.status, 200)
    assert.match(r?.headers.get('Contact') ?? '', /expires=600/)
    for (const n of mesh.nodes) assert.equal((await n.registry.resolve('sip:alice@example.com'))?.node, 'node-a')
    assert.equal(mesh.nodes[0].gateway.registrations, 1)
  })

  test('MESSAGE from node C reaches both of bob\'s devices on node B (UDP and TCP); the sender gets 200', async () => {
    const bob1 = await ua('bob', 1, 'UDP')
    const bob2 = await ua('bob', 1, 'TCP')
    assert.equal((await bob1.register(600))?.status, 200)
    assert.equal((await bob2.register(600, { callId: 'bob-tcp' }))?.status, 200)
    bob2.answer = () => 202 // the TCP device answers later / differently: first 2xx wins
    const carol = await ua('carol', 2)
    const r = await carol.request({ method: 'MESSAGE', uri: 'sip:bob@example.com', body: 'hello bob', headers: [['P-Asserted-Identity', '<sip:mallory@example.com>']] })
    assert.ok(r !== undefined && r.status >= 200 && r.status < 300, `got ${r?.status}`)
    await bob1.waitFor(() => bob1.received.find(m => m.method === 'MESSAGE'))
    await bob2.waitFor(() => bob2.received.find(m => m.method === 'MESSAGE'))
    const m1 = bob1.received.find(m => m.method === 'MESSAGE')
    const m2 = bob2.received.find(m => m.method === 'MESSAGE')
    assert.ok(m1 !== undefined && m2 !== undefined, 'both devices got the MESSAGE')
    assert.equal(Buffer.from(m1.body).toString(), 'hello bob')
    // the forged identity was stripped at node C and replaced by the sender's AoR
    assert.deepEqual(m1.headers.getAll('P-Asserted-Identity'), ['<sip:carol@example.com>'])
    // path: carol's Via, C's mesh hop, B's hop to the device
    const vias = m1.headers.getAll('Via')
    assert.equal(vias.length, 3)
    assert.match(vias[1], /^SIP\/2\.0\/MESH .*;node=node-c/)
    assert.match(vias[0], /^SIP\/2\.0\/UDP /)
    assert.equal(m1.uri, parseNameAddr(bob1.contact).uri, 'Request-URI rewritten to the contact')
    assert.equal(m1.headers.get('Max-Forwards'), '68')
  })

  test('MESSAGE to a user on the same node is delivered locally', async () => {
    const dave = await ua('dave', 1)
    assert.equal((await dave.register(600))?.status, 200)
    const erin = await ua('erin', 1)
    const r = await erin.request({ uri: 'sip:dave@example.com', body: 'hi' })
    assert.equal(r?.status, 200)
    assert.equal(dave.received.filter(m => m.method === 'MESSAGE').length, 1)
  })

  test('the identity asserted follows each request\'s own From, for senders that come back in turn', async () => {
    const hank = await ua('hank', 1)
    assert.equal((await hank.register(600))?.status, 200)
    const sender = await ua('ivy', 1)
    const froms = ['<sip:ivy@example.com>', '"Other" <sip:JOE@Example.COM>', '<sip:x@foreign.example.org>', '<sip:example.com>', '<sip:ivy@example.com>', '<sip:x@foreign.example.org>', '"Other" <sip:JOE@Example.COM>']
    const expected = ['<sip:ivy@example.com>', '<sip:JOE@example.com>', undefined, undefined, '<sip:ivy@example.com>', undefined, '<sip:JOE@example.com>']
    for (let i = 0; i < froms.length; i++) {
      const r = await sender.request({ uri: 'sip:hank@example.com', from: froms[i], body: `m${i}`, headers: [['P-Asserted-Identity', '<sip:forged@example.com>']] })
      assert.equal(r?.status, 200, froms[i])
      const got = await hank.waitFor(() => hank.received.find(m => m.method === 'MESSAGE' && Buffer.from(m.body).toString() === `m${i}`))
      assert.deepEqual(got?.headers.getAll('P-Asserted-Identity'), expected[i] === undefined ? [] : [expected[i]], froms[i])
    }
  })

  test('the device\'s final error response comes back through the mesh', async () => {
    const frank = await ua('frank', 0)
    assert.equal((await frank.register(600))?.status, 200)
    frank.answer = () => 486
    const carol = await ua('carol2', 2)
    const r = await carol.request({ uri: 'sip:frank@example.com', body: 'busy?' })
    assert.equal(r?.status, 486)
  })

  test('unknown user: 404; known user with no live binding: 480 (a MESSAGE is stored: 202, issue 5)', async () => {
    const carol = await ua('carol3', 2)
    assert.equal((await carol.request({ uri: 'sip:nobody@example.com' }))?.status, 404)
    const gina = await ua('gina', 2)
    assert.equal((await gina.register(600))?.status, 200)
    assert.equal((await gina.register(0, { cseq: 50 }))?.status, 200)
    assert.equal((await carol.request({ method: 'OPTIONS', uri: 'sip:gina@example.com' }))?.status, 480)
    assert.equal((await carol.request({ uri: 'sip:gina@example.com' }))?.status, 202)
  })

  test('a stale route: the old owner answers "not owner", the sender re-resolves and retries once', async () => {
    const hank = await ua('hank', 1)
    assert.equal((await hank.register(600))?.status, 200)
    // node A caches B as owner; then hank moves to node C behind A's back (A's cache stays stale)
    const a = mesh.nodes[0].registry
    const stale = await a.resolve('sip:hank@example.com')
    assert.equal(stale?.node, 'node-b')
    const realResolve = a.resolve.bind(a)
    const realRouteNow = a.routeNow.bind(a)
    a.resolve = async (aor, options) => aor === 'sip:hank@example.com' && options?.fresh !== true ? stale : await realResolve(aor, options)
    a.routeNow = (aor) => aor === 'sip:hank@example.com' ? stale : realRouteNow(aor)
    const hank2 = await ua('hank', 2)
    assert.equal((await hank2.register(600, { callId: 'hank-2' }))?.status, 200)
    const sender = await ua('ivan', 0)
    const r = await sender.request({ uri: 'sip:hank@example.com', body: 'where are you' })
    assert.equal(r?.status, 200)
    assert.ok(hank2.received.some(m => m.method === 'MESSAGE'))
    assert.equal(mesh.nodes[0].gateway.stats.notOwnerRetries, 1)
    a.resolve = realResolve
    a.routeNow = realRouteNow
  })

  test('an owner node that cannot be reached: re-resolved once, then 480 (not 500)', async () => {
    const jack = await ua('jack', 2)
    assert.equal((await jack.register(600))?.status, 200)
    // node C cannot be reached any more (as if its process died); its claim is still live in the DHT
    const c = mesh.nodes[2]
    const a = mesh.nodes[0].registry
    const before = mesh.nodes[0].gateway.stats.notOwnerRetries
    // make node A's channel refuse to reach node C
    const hubAny = mesh.hub as unknown as { _deliver: (from: string, to: string, d: Uint8Array) => void }
    const deliver = hubAny._deliver.bind(mesh.hub)
    hubAny._deliver = (from, to, d) => { if (to === c.id) throw new Error('unreachable'); deliver(from, to, d) }
    try {
      const sender = await ua('kate', 0)
      const r = await sender.request({ uri: 'sip:jack@example.com', body: 'anyone?' })
      assert.equal(r?.status, 480)
      assert.equal(mesh.nodes[0].gateway.stats.notOwnerRetries, before + 1)
      assert.equal((await a.resolve('sip:jack@example.com'))?.node, 'node-c')
    } finally {
      hubAny._deliver = deliver
    }
  })

  test('a registration on another node takes over; the displaced device is redirected (302), no ping-pong', async () => {
    const first = await ua('lena', 0)
    assert.equal((await first.register(600))?.status, 200)
    const second = await ua('lena', 1)
    assert.equal((await second.register(600, { callId: 'lena-2' }))?.status, 200)
    await first.waitFor(() => mesh.nodes[0].gateway.registrar.lookup('sip:lena@example.com').length === 0 ? true : undefined, 2000)
    assert.equal(mesh.nodes[0].gateway.registrar.lookup('sip:lena@example.com').length, 0, 'node A dropped its binding')
    const refresh = await first.register(600, { cseq: 7 })
    assert.equal(refresh?.status, 302)
    assert.equal(refresh?.headers.get('Contact'), `<sip:lena@${mesh.nodes[1].sip.host}:${mesh.nodes[1].sip.port}>`)
    for (const n of mesh.nodes) assert.equal((await n.registry.resolve('sip:lena@example.com'))?.node, 'node-b')
    // a MESSAGE now reaches the device on node B only
    const sender = await ua('mona', 2)
    assert.equal((await sender.request({ uri: 'sip:lena@example.com', body: 'which one?' }))?.status, 200)
    assert.ok(second.received.some(m => m.method === 'MESSAGE'))
    assert.ok(!first.received.some(m => m.method === 'MESSAGE'))
  })
})
