// Session IM forking (issue 5 item 3): an INVITE from node A to a user with two devices on node B
// rings both; the first 2xx goes back to the caller and the other device gets a CANCEL.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { TestMesh } from '../gateway/fixtures/mesh.ts'
import { TestUa } from '../gateway/fixtures/ua.ts'

const uas: TestUa[] = []
let mesh: TestMesh | undefined
after(async () => {
  for (const u of uas) await u.close()
  await mesh?.stop()
})

const SDP = 'v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=message 7654 TCP/MSRP *\r\na=path:msrp://127.0.0.1:7654/abc;tcp\r\n'

test('forking: both devices ring, the first 2xx wins, the other device is CANCELled, the SDP arrives intact', async () => {
  mesh = await TestMesh.spawn(2)
  const [a, b] = mesh.nodes
  const d1 = await TestUa.open('lena', b.sip)
  const d2 = await TestUa.open('lena', b.sip, 'TCP')
  const caller = await TestUa.open('mo', a.sip)
  uas.push(d1, d2, caller)
  assert.equal((await d1.register(600))?.status, 200)
  assert.equal((await d2.register(600, { callId: 'lena-tcp' }))?.status, 200)
  // d1 rings then answers once d2 rang too; d2 only rings
  d1.answer = (m) => m.method === 'INVITE' ? 180 : 200
  d2.answer = (m) => m.method === 'INVITE' ? 180 : 200
  const { text, branch } = caller.build({ method: 'INVITE', uri: 'sip:lena@example.com', headers: [['Contact', caller.contact], ['Content-Type', 'application/sdp']], body: '' })
  const withSdp = text.replace('Content-Length: 0\r\n\r\n', `Content-Length: ${Buffer.byteLength(SDP)}\r\n\r\n${SDP}`)
  caller.sendRaw(withSdp)
  const inv1 = await d1.waitFor(() => d1.received.find(m => m.method === 'INVITE'))
  const inv2 = await d2.waitFor(() => d2.received.find(m => m.method === 'INVITE'))
  assert.ok(inv1 !== undefined && inv2 !== undefined, 'both devices rang')
  assert.equal(Buffer.from(inv1.body).toString(), SDP)
  assert.equal(Buffer.from(inv2.body).toString(), SDP)
  assert.equal(inv1.headers.getAll('Record-Route').length, 2)
  await caller.waitFor(() => caller.responses(branch).find(r => r.status === 180))
  d1.reply(inv1, 200, [['Contact', '<sip:lena@127.0.0.1:' + String(d1.port) + '>'], ['Content-Type', 'application/sdp']], 'd1')
  const final = await caller.waitFinal(branch)
  assert.equal(final?.status, 200)
  const cancel = await d2.waitFor(() => d2.received.find(m => m.method === 'CANCEL'))
  assert.ok(cancel !== undefined, 'the losing device is CANCELled')
  d2.reply(inv2, 487, [], 'd2')
  await caller.waitFor(() => undefined, 300)
  assert.deepEqual(caller.responses(branch).filter(r => r.status >= 200).map(r => r.status), [200], 'only the winning 2xx reaches the caller')
  assert.equal(d1.received.filter(m => m.method === 'CANCEL').length, 0)
})
