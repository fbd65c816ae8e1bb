// Offline IM wired into the gateway (issue 5): in-process gateways over the memory registry and
// channel, real UDP/TCP sockets. Stored on one node, delivered when the user registers on another.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { TestMesh } from '../gateway/fixtures/mesh.ts'
import { TestUa } from '../gateway/fixtures/ua.ts'
import { markerOf } from '../../../sip-gateway/im/offline-im.ts'

const meshes: TestMesh[] = []
const uas: TestUa[] = []
after(async () => {
  for (const u of uas) await u.close()
  for (const m of meshes) await m.stop()
})

async function ua (user: string, target: { host: string, port: number }, transport: 'UDP' | 'TCP' = 'UDP'): Promise<TestUa> {
  const u = await TestUa.open(user, target, transport)
  uas.push(u)
  return u
}

test('stored for a user known on another node (202), delivered in order with sender and Date where she registers next; unknown: 404', async () => {
  const mesh = await TestMesh.spawn(3)
  meshes.push(mesh)
  const [a, b, c] = mesh.nodes
  // alice registers on c and leaves: c claims her marker, so every node knows her
  const alice1 = await ua('alice', c.sip)
  assert.equal((await alice1.register(600))?.status, 200)
  await alice1.waitFor(() => undefined, 50)
  assert.ok(await a.registry.resolve(markerOf('sip:alice@example.com')) !== undefined)
  assert.equal((await alice1.register(0))?.status, 200)
  assert.equal(await a.registry.resolve('sip:alice@example.com'), undefined)

  const bob = await ua('bob', a.sip)
  const dates = ['Sun, 22 Nov 2026 01:00:00 GMT', 'Sun, 22 Nov 2026 01:00:01 GMT', 'Sun, 22 Nov 2026 01:00:02 GMT']
  for (let i = 0; i < 3; i++) {
    const r = await bob.request({ uri: 'sip:alice@example.com', body: `hello ${i}`, headers: [['Date', dates[i]]] })
    assert.equal(r?.status, 202, `message ${i}`)
  }
  assert.equal(a.gateway.im.offline.count('sip:alice@example.com'), 3)
  // a retransmission-like copy (same Call-ID, CSeq, From tag) is not stored twice
  const dup = { uri: 'sip:alice@example.com', body: 'dup', callId: 'dup-call', cseq: 7, fromTag: 'dupt' }
  assert.equal((await bob.request(dup))?.status, 202)
  assert.equal((await bob.request({ ...dup, branch: undefined }))?.status, 202)
  assert.equal(a.gateway.im.offline.count('sip:alice@example.com'), 4)

  // nobody knows carol: 404 on every node
  assert.equal((await bob.request({ uri: 'sip:carol@example.com', body: 'x' }))?.status, 404)
  const bobB = await ua('bob', b.sip)
  assert.equal((await bobB.request({ uri: 'sip:carol@example.com', body: 'x' }))?.status, 404)

  // alice comes back on b: a's backlog crosses the mesh to her, in order, once each
  const alice2 = await ua('alice', b.sip)
  assert.equal((await alice2.register(600, { callId: 'alice-2' }))?.status, 200)
  const got = await alice2.waitFor(() => { const m = alice2.received.filter(x => x.method === 'MESSAGE'); return m.length >= 4 ? m : undefined }, 5000)
  assert.ok(got !== undefined, 'backlog delivered')
  assert.deepEqual(got.map(m => Buffer.from(m.body).toString()), ['hello 0', 'hello 1', 'hello 2', 'dup'])
  for (let i = 0; i < 3; i++) {
    assert.equal(got[i].headers.get('Date'), dates[i])
    assert.match(got[i].headers.get('From') ?? '', /sip:bob@example\.com/)
    assert.equal(got[i].headers.get('P-Asserted-Identity'), '<sip:bob@example.com>')
  }
  await alice2.waitFor(() => a.gateway.im.offline.count('sip:alice@example.com') === 0 ? true : undefined, 2000)
  assert.equal(a.gateway.im.offline.count('sip:alice@example.com'), 0)
  await alice2.waitFor(() => undefined, 300)
  assert.equal(alice2.received.filter(x => x.method === 'MESSAGE').length, 4, 'nothing delivered twice')
})

test('size rules: over 1300 bytes to a UDP contact is 513, to a TCP contact it passes; body without Content-Type: 400', async () => {
  const mesh = await TestMesh.spawn(2)
  meshes.push(mesh)
  const [a, b] = mesh.nodes
  const dan = await ua('dan', b.sip)
  const erin = await ua('erin', b.sip, 'TCP')
  assert.equal((await dan.register(600))?.status, 200)
  assert.equal((await erin.register(600))?.status, 200)
  const sender = await ua('frank', a.sip, 'TCP')
  const big = 'x'.repeat(1400)
  assert.equal((await sender.request({ uri: 'sip:dan@example.com', body: big }))?.status, 513)
  assert.equal((await sender.request({ uri: 'sip:dan@example.com', body: 'small' }))?.status, 200)
  assert.equal((await sender.request({ uri: 'sip:erin@example.com', body: big }))?.status, 200)
  // Content-Length with a body but no Content-Type (RFC 3261 7.4.1): 400
  const { text } = sender.build({ uri: 'sip:dan@example.com', body: '' })
  const raw = text.replace('Content-Length: 0\r\n\r\n', 'Content-Length: 5\r\n\r\nhello')
  const branch = /branch=([^;\r\n]+)/.exec(raw)?.[1] ?? ''
  sender.sendRaw(raw)
  assert.equal((await sender.waitFinal(branch))?.status, 400)
})

test('flood for one user: the quota answers 480 Mailbox Full, others are unaffected', async () => {
  const mesh = await TestMesh.spawn(1, { offline: { store: { maxMessagesPerUser: 5 }, known: { credentials: ['sip:gina@example.com', 'sip:hank@example.com'] } } })
  meshes.push(mesh)
  const [a] = mesh.nodes
  const s = await ua('ivan', a.sip)
  for (let i = 0; i < 5; i++) assert.equal((await s.request({ uri: 'sip:gina@example.com', body: `m${i}` }))?.status, 202)
  const over = await s.request({ uri: 'sip:gina@example.com', body: 'one too many' })
  assert.equal(over?.status, 480)
  assert.equal(over?.reason, 'Mailbox Full')
  assert.equal((await s.request({ uri: 'sip:hank@example.com', body: 'fine' }))?.status, 202)
  assert.equal(a.gateway.im.offline.count('sip:gina@example.com'), 5)
})

test('a MESSAGE that times out at the device is stored (202) and delivered at the next registration', async () => {
  const mesh = await TestMesh.spawn(1, { timers: { t1: 20, t2: 80, t4: 100 } })
  meshes.push(mesh)
  const [a] = mesh.nodes
  const jo = await ua('jo', a.sip)
  assert.equal((await jo.register(600))?.status, 200)
  jo.answer = () => undefined
  const s = await ua('kim', a.sip, 'TCP')
  const r = await s.request({ uri: 'sip:jo@example.com', body: 'are you there' }, 5000)
  assert.equal(r?.status, 202)
  assert.equal(a.gateway.im.offline.count('sip:jo@example.com'), 1)
  jo.answer = () => 200
  assert.equal((await jo.register(600))?.status, 200)
  await jo.waitFor(() => a.gateway.im.offline.count('sip:jo@example.com') === 0 ? true : undefined, 3000)
  assert.equal(a.gateway.im.offline.count('sip:jo@example.com'), 0)
})

test('two devices, one silent: the other device takes the MESSAGE, nothing is stored, it is delivered once; both silent: stored once', async () => {
  const mesh = await TestMesh.spawn(1, { timers: { t1: 20, t2: 80, t4: 100 } })
  meshes.push(mesh)
  const [a] = mesh.nodes
  const live = await ua('ria', a.sip)
  const stale = await ua('ria', a.sip)
  assert.equal((await live.register(600))?.status, 200)
  assert.equal((await stale.register(600, { callId: 'ria-stale' }))?.status, 200)
  stale.answer = () => undefined
  const s = await ua('ned', a.sip, 'TCP')
  assert.equal((await s.request({ uri: 'sip:ria@example.com', body: 'only once' }, 5000))?.status, 200)
  // the stale branch times out (timer F: 64 T1 = 1.3 s here) after the live device's 200
  await live.waitFor(() => undefined, 2_000)
  assert.equal(a.gateway.im.offline.count('sip:ria@example.com'), 0, 'delivered, so not kept')
  assert.equal(live.received.filter(m => m.method === 'MESSAGE').length, 1, 'delivered once')

  live.answer = () => undefined
  assert.equal((await s.request({ uri: 'sip:ria@example.com', body: 'nobody answers' }, 5000))?.status, 202)
  assert.equal(a.gateway.im.offline.count('sip:ria@example.com'), 1, 'kept once, not once per device')
})

test('a backlog delivery stopped by a refusing device is tried again later, in order, nothing lost', async () => {
  const mesh = await TestMesh.spawn(1, { offline: { retryIntervalMs: 200, known: { credentials: ['sip:lou@example.com'] } } })
  meshes.push(mesh)
  const [a] = mesh.nodes
  const s = await ua('max', a.sip, 'TCP')
  for (const body of ['one', 'two']) assert.equal((await s.request({ uri: 'sip:lou@example.com', body }))?.status, 202)
  const lou = await ua('lou', a.sip)
  lou.answer = (m) => m.method === 'MESSAGE' ? 486 : 200
  assert.equal((await lou.register(600))?.status, 200)
  // the runs the registration started are over (each stopped at the refusal); nothing else happens
  await lou.waitFor(() => undefined, 400)
  assert.ok(lou.received.some(m => m.method === 'MESSAGE'), 'tried once at least')
  assert.equal(a.gateway.im.offline.count('sip:lou@example.com'), 2)
  lou.received.length = 0
  lou.answer = () => 200
  // well before the node's own re-watch 3 s after start: only the retry interval can do it
  await lou.waitFor(() => a.gateway.im.offline.count('sip:lou@example.com') === 0 ? true : undefined, 1500)
  assert.equal(a.gateway.im.offline.count('sip:lou@example.com'), 0)
  const bodies = lou.received.filter(m => m.method === 'MESSAGE').map(m => Buffer.from(m.body).toString())
  assert.deepEqual(bodies, ['one', 'two'], 'in order, once each')
})

test('hostile: a UA cannot choose the stored id (Sipmesh-Message-Id is trusted from the mesh only); oversized offline body: 513', async () => {
  const mesh = await TestMesh.spawn(1, { offline: { store: { maxBodyBytes: 2000 }, known: { credentials: ['sip:nell@example.com'] } } })
  meshes.push(mesh)
  const [a] = mesh.nodes
  const s = await ua('oz', a.sip, 'TCP')
  const forged: Array<[string, string]> = [['Sipmesh-Message-Id', '0123456789abcdef0123456789abcdef']]
  assert.equal((await s.request({ uri: 'sip:nell@example.com', body: 'first', headers: forged }))?.status, 202)
  assert.equal((await s.request({ uri: 'sip:nell@example.com', body: 'second', headers: forged }))?.status, 202)
  assert.equal(a.gateway.im.offline.count('sip:nell@example.com'), 2, 'the forged id deduped nothing')
  assert.equal((await s.request({ uri: 'sip:nell@example.com', body: 'z'.repeat(3000) }))?.status, 513)
  assert.equal(a.gateway.im.offline.count('sip:nell@example.com'), 2)
})

test('restart: the node claims again the markers of users who last registered there (nobody else holds them)', async () => {
  const mesh = await TestMesh.spawn(2, { offline: { reclaimDelayMs: 100 } })
  meshes.push(mesh)
  const [a, b] = mesh.nodes
  const pia = await ua('pia', a.sip)
  assert.equal((await pia.register(600))?.status, 200)
  assert.equal((await pia.register(0))?.status, 200)
  await pia.waitFor(() => undefined, 50)
  const marker = markerOf('sip:pia@example.com')
  assert.equal((await b.registry.resolve(marker))?.node, 'node-a')
  // node a goes away and its marker with it (as if its claims had aged out of the DHT)
  await a.gateway.stop()
  await a.registry.release(marker)
  assert.equal(await b.registry.resolve(marker), undefined)
  const s = await ua('quin', b.sip)
  assert.equal((await s.request({ uri: 'sip:pia@example.com', body: 'x' }))?.status, 404)
  // back on the same store: it remembers pia registered there and claims her marker again
  await a.gateway.start()
  await s.waitFor(() => undefined, 400)
  assert.equal((await b.registry.resolve(marker))?.node, 'node-a')
  assert.equal((await s.request({ uri: 'sip:pia@example.com', body: 'y' }))?.status, 202)
})
