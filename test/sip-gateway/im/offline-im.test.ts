// Offline IM wired into the gateway (issue 5): in-process gateways over the memory registry and
// channel, real UDP/TCP sockets. Stored on one node, delivered when the user registers on another.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, type Server, type Socket } from 'node:net'
import { TestMesh } from '../gateway/fixtures/mesh.ts'
import { TestUa } from '../gateway/fixtures/ua.ts'
import { parseMessage, serializeMessage, createResponse, SipRequest, parseVia } from '../../../sip-gateway/codec/index.ts'

const meshes: TestMesh[] = []
const uas: TestUa[] = []
const servers: Array<() => Promise<void>> = []
after(async () => {
  for (const u of uas) await u.close()
  for (const close of servers) await close()
  for (const m of meshes) await m.stop()
})

async function ua (user: string, target: { host: string, port: number }, transport: 'UDP' | 'TCP' = 'UDP'): Promise<TestUa> {
  const u = await TestUa.open(user, target, transport)
  uas.push(u)
  return u
}

/**
 * The TCP side of a device registered over UDP: a listener on 127.0.0.1 at the UDP UA's port
 * that records each request it gets in `into` and answers 200 over the same connection.
 */
async function tcpSide (port: number, into: string[]): Promise<Server> {
  const sockets = new Set<Socket>()
  const server = createServer((sock) => {
    sockets.add(sock)
    sock.on('close', () => { sockets.delete(sock) })
    let buf = Buffer.alloc(0)
    sock.on('error', () => {})
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk])
      for (;;) {
        while (buf.length > 0 && (buf[0] === 13 || buf[0] === 10)) buf = buf.subarray(1)
        const end = buf.indexOf('\r\n\r\n')
        if (end === -1) return
        const total = end + 4 + Number(/content-length\s*:\s*(\d+)/i.exec(buf.subarray(0, end).toString())?.[1] ?? 0)
        if (buf.length < total) return
        const m = parseMessage(buf.subarray(0, total))
        buf = buf.subarray(total)
        if (!(m instanceof SipRequest)) continue
        into.push(`tcp:${Buffer.from(m.body).toString().slice(0, 8)}`)
        sock.write(serializeMessage(createResponse(m, 200, undefined, undefined, { toTag: true })))
      }
    })
  })
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(port, '127.0.0.1', () => { resolve() }) })
  servers.push(async () => {
    for (const sock of sockets) sock.destroy()
    await new Promise<void>(resolve => server.close(() => { resolve() }))
  })
  return server
}

// One body per MESSAGE transaction (top Via branch): with T1 at 20 ms a loaded machine lets timer E
// retransmit before the device's 200 is back, so the device may see a datagram twice; a second
// delivery of a message is a new transaction and still shows as a second body.
const bodiesOf = (u: TestUa): string[] => {
  const seen = new Set<string>()
  return u.received.filter(m => m.method === 'MESSAGE').filter(m => {
    const branch = parseVia(m.headers.get('Via') ?? '').branch ?? ''
    if (seen.has(branch)) return false
    seen.add(branch)
    return true
  }).map(m => Buffer.from(m.body).toString())
}

test('stored for a user known on another node (202), delivered in order with sender and Date where she registers next; unknown: 404', async () => {
  const mesh = await TestMesh.spawn(3)
  meshes.push(mesh)
  const [a, b, c] = mesh.nodes
  // alice registers on c and leaves: her AoR's record stays in the mesh, so every node knows her
  const alice1 = await ua('alice', c.sip)
  assert.equal((await alice1.register(600))?.status, 200)
  await alice1.waitFor(() => undefined, 50)
  assert.equal(await a.registry.known('sip:alice@example.com'), true)
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

test('flood for one user: the quota answers 480 Mailbox Full with Retry-After (RFC 3261 20.33), others are unaffected', async () => {
  const mesh = await TestMesh.spawn(1, { offline: { store: { maxMessagesPerUser: 5, retryAfter: 120 }, known: { credentials: ['sip:gina@example.com', 'sip:hank@example.com'] } } })
  meshes.push(mesh)
  const [a] = mesh.nodes
  const s = await ua('ivan', a.sip)
  for (let i = 0; i < 5; i++) assert.equal((await s.request({ uri: 'sip:gina@example.com', body: `m${i}` }))?.status, 202)
  const over = await s.request({ uri: 'sip:gina@example.com', body: 'one too many' })
  assert.equal(over?.status, 480)
  assert.equal(over?.reason, 'Mailbox Full')
  assert.equal(over?.headers.get('Retry-After'), '120', 'the configured hint, in seconds')
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
  // one transaction: with T1 at 20 ms a loaded machine can make the node retransmit it (timer E)
  // before the device's 200 is back, and the device sees the same branch twice; a second delivery
  // would be a new transaction
  const branches = new Set(live.received.filter(m => m.method === 'MESSAGE').map(m => parseVia(m.headers.get('Via') ?? '').branch))
  assert.equal(branches.size, 1, 'delivered once')

  live.answer = () => undefined
  assert.equal((await s.request({ uri: 'sip:ria@example.com', body: 'nobody answers' }, 5000))?.status, 202)
  assert.equal(a.gateway.im.offline.count('sip:ria@example.com'), 1, 'kept once, not once per device')
})

for (const status of [486, 480]) {
  test(`a backlog delivery stopped by a device answering ${status} (transient) keeps everything and is tried again later, in order, nothing lost`, async () => {
    const user = `lou${status}`
    const aor = `sip:${user}@example.com`
    const mesh = await TestMesh.spawn(1, { offline: { retryIntervalMs: 200, known: { credentials: [aor] } } })
    meshes.push(mesh)
    const [a] = mesh.nodes
    const s = await ua('max', a.sip, 'TCP')
    for (const body of ['one', 'two', 'three']) assert.equal((await s.request({ uri: aor, body }))?.status, 202)
    const lou = await ua(user, a.sip)
    lou.answer = (m) => m.method === 'MESSAGE' ? status : 200
    assert.equal((await lou.register(600))?.status, 200)
    // the runs the registration started are over (each stopped at the first message); nothing else happens
    await lou.waitFor(() => undefined, 400)
    assert.ok(bodiesOf(lou).length > 0, 'tried once at least')
    assert.ok(bodiesOf(lou).every(b => b === 'one'), 'nothing after the first was tried')
    assert.equal(a.gateway.im.offline.count(aor), 3, 'all kept')
    assert.equal(a.gateway.im.offline.stats().refused, 0)
    lou.received.length = 0
    lou.answer = () => 200
    // well before the node's own re-watch 3 s after start: only the retry interval can do it
    await lou.waitFor(() => a.gateway.im.offline.count(aor) === 0 ? true : undefined, 1500)
    assert.equal(a.gateway.im.offline.count(aor), 0)
    assert.deepEqual(bodiesOf(lou), ['one', 'two', 'three'], 'in order, once each')
  })
}

test('a device that refuses one message for good (415) gets the others, in order; the refused one is dropped, logged and counted', async () => {
  const mesh = await TestMesh.spawn(1, { offline: { known: { credentials: ['sip:liv@example.com'] } } })
  meshes.push(mesh)
  const [a] = mesh.nodes
  const s = await ua('mo', a.sip, 'TCP')
  for (const body of ['one', '<b>html</b>', 'two', 'three']) assert.equal((await s.request({ uri: 'sip:liv@example.com', body }))?.status, 202)
  const liv = await ua('liv', a.sip)
  liv.answer = (m) => m.method === 'MESSAGE' && Buffer.from(m.body).toString().startsWith('<b>') ? 415 : 200
  assert.equal((await liv.register(600))?.status, 200)
  await liv.waitFor(() => a.gateway.im.offline.count('sip:liv@example.com') === 0 ? true : undefined, 2000)
  assert.equal(a.gateway.im.offline.count('sip:liv@example.com'), 0)
  assert.deepEqual(bodiesOf(liv), ['one', '<b>html</b>', 'two', 'three'], 'each tried once, in order')
  assert.equal(a.gateway.im.offline.stats().refused, 1)
  const warn = mesh.lines.find(l => l.level === 'warn' && /refused/.test(l.msg))
  assert.equal(warn?.fields?.status, 415)
  assert.match(String(warn?.fields?.from), /sip:mo@example\.com/)
  assert.match(String(warn?.fields?.id), /^[0-9a-f]{32}$/)
  // nothing more arrives later (no retry of the refused one, nothing twice)
  await liv.waitFor(() => undefined, 300)
  assert.equal(bodiesOf(liv).length, 4)
})

test('two devices, one refusing (415), one busy (480): the message is kept for the busy one, delivered once it accepts', async () => {
  const mesh = await TestMesh.spawn(1, { offline: { retryIntervalMs: 200, known: { credentials: ['sip:uma@example.com'] } } })
  meshes.push(mesh)
  const [a] = mesh.nodes
  const s = await ua('mo', a.sip, 'TCP')
  assert.equal((await s.request({ uri: 'sip:uma@example.com', body: 'for whoever can' }))?.status, 202)
  const picky = await ua('uma', a.sip)
  const busy = await ua('uma', a.sip)
  picky.answer = (m) => m.method === 'MESSAGE' ? 415 : 200
  busy.answer = (m) => m.method === 'MESSAGE' ? 480 : 200
  // busy first (so the first run, to her alone, keeps it), then the picky one: every run after
  // that asks both
  assert.equal((await busy.register(600, { callId: 'uma-busy' }))?.status, 200)
  assert.equal((await picky.register(600))?.status, 200)
  await picky.waitFor(() => bodiesOf(picky).length >= 2 ? true : undefined, 2000)
  assert.ok(bodiesOf(picky).length >= 2, 'the picky device was asked, more than once')
  assert.equal(a.gateway.im.offline.count('sip:uma@example.com'), 1, 'kept: the busy device may take it')
  assert.equal(a.gateway.im.offline.stats().refused, 0)
  busy.answer = () => 200
  await busy.waitFor(() => a.gateway.im.offline.count('sip:uma@example.com') === 0 ? true : undefined, 2000)
  assert.equal(a.gateway.im.offline.count('sip:uma@example.com'), 0)
})

for (const where of ['the same node', 'another node']) {
  test(`a 1400-byte MESSAGE stored from TCP for a user back over UDP with no TCP path (${where}): 513 drops it, the small ones behind it arrive in order`, async () => {
    const mesh = await TestMesh.spawn(2, { offline: { known: { credentials: ['sip:sue@example.com'] } } })
    meshes.push(mesh)
    const [a, b] = mesh.nodes
    const s = await ua('ray', a.sip, 'TCP')
    const big = 'x'.repeat(1400)
    for (const body of ['one', big, 'two', 'three']) assert.equal((await s.request({ uri: 'sip:sue@example.com', body }))?.status, 202)
    assert.equal(a.gateway.im.offline.count('sip:sue@example.com'), 4)
    const sue = await ua('sue', where === 'the same node' ? a.sip : b.sip)
    assert.equal((await sue.register(600))?.status, 200)
    await sue.waitFor(() => a.gateway.im.offline.count('sip:sue@example.com') === 0 ? true : undefined, 3000)
    assert.equal(a.gateway.im.offline.count('sip:sue@example.com'), 0, 'nothing stuck')
    assert.deepEqual(bodiesOf(sue), ['one', 'two', 'three'], 'the later small messages, in order, once each')
    assert.equal(a.gateway.im.offline.stats().refused, 1)
    const warn = mesh.lines.find(l => l.level === 'warn' && /refused/.test(l.msg))
    assert.equal(warn?.fields?.status, 513)
    assert.match(String(warn?.fields?.from), /sip:ray@example\.com/)
    // and new small messages reach her directly
    assert.equal((await s.request({ uri: 'sip:sue@example.com', body: 'four' }))?.status, 200)
  })
}

test('a 1400-byte MESSAGE for a device registered over UDP that also listens on TCP goes over TCP (RFC 3261 18.1.1), in order with the rest', async () => {
  const mesh = await TestMesh.spawn(2, { offline: { known: { credentials: ['sip:tia@example.com'] } } })
  meshes.push(mesh)
  const [a, b] = mesh.nodes
  const s = await ua('ray', a.sip, 'TCP')
  const big = 'y'.repeat(1400)
  for (const body of ['one', big, 'two']) assert.equal((await s.request({ uri: 'sip:tia@example.com', body }))?.status, 202)
  const tia = await ua('tia', b.sip)
  const order: string[] = []
  tia.answer = (m) => { if (m.method === 'MESSAGE') order.push(`udp:${Buffer.from(m.body).toString()}`); return 200 }
  await tcpSide(tia.port, order)
  assert.equal((await tia.register(600))?.status, 200)
  await tia.waitFor(() => a.gateway.im.offline.count('sip:tia@example.com') === 0 ? true : undefined, 3000)
  assert.equal(a.gateway.im.offline.count('sip:tia@example.com'), 0)
  assert.deepEqual(order, ['udp:one', 'tcp:yyyyyyyy', 'udp:two'])
  assert.equal(a.gateway.im.offline.stats().refused, 0)
  // a live one over 1300 bytes takes the same path
  assert.equal((await s.request({ uri: 'sip:tia@example.com', body: big }))?.status, 200)
  assert.deepEqual(order.slice(3), ['tcp:yyyyyyyy'])
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

