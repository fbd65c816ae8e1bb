// Gateway.deliver: a request the node originates (a stored MESSAGE, issue 5) reaches every live
// contact of a local AoR; the first 2xx wins, otherwise the best final response comes back.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { TestMesh } from './fixtures/mesh.ts'
import { TestUa } from './fixtures/ua.ts'
import { SipRequest, Headers } from '../../../sip-gateway/codec/index.ts'

let mesh: TestMesh | undefined
const uas: TestUa[] = []
after(async () => {
  for (const u of uas) await u.close()
  await mesh?.stop()
})

function message (to: string, body: string): SipRequest {
  const h = new Headers()
  h.append('From', '<sip:offline-sender@example.com>;tag=stored1')
  h.append('To', `<${to}>`)
  h.append('Call-ID', 'stored-' + Math.random().toString(36).slice(2))
  h.append('CSeq', '1 MESSAGE')
  h.append('Content-Type', 'text/plain')
  h.append('Content-Length', String(Buffer.byteLength(body)))
  return new SipRequest('MESSAGE', to, h, Buffer.from(body))
}

test('deliver: to every device, first 2xx wins; all refuse: best failure; nobody here: undefined', async () => {
  mesh = await TestMesh.spawn(1)
  const gw = mesh.nodes[0].gateway
  const d1 = await TestUa.open('nina', mesh.nodes[0].sip)
  const d2 = await TestUa.open('nina', mesh.nodes[0].sip, 'TCP')
  uas.push(d1, d2)
  assert.equal((await d1.register(600))?.status, 200)
  assert.equal((await d2.register(600, { callId: 'nina-tcp' }))?.status, 200)
  d2.answer = () => 486
  const r = await gw.deliver('sip:nina@example.com', message('sip:nina@example.com', 'kept for you'))
  assert.equal(r?.status, 200)
  await d2.waitFor(() => d2.received.find(m => m.method === 'MESSAGE'))
  for (const d of [d1, d2]) {
    const m = d.received.find(x => x.method === 'MESSAGE')
    assert.ok(m !== undefined)
    assert.equal(Buffer.from(m.body).toString(), 'kept for you')
    assert.equal(m.headers.getAll('Via').length, 1)
  }
  d1.answer = () => 480
  assert.equal((await gw.deliver('sip:nina@example.com', message('sip:nina@example.com', 'again')))?.status, 480)
  assert.equal(await gw.deliver('sip:nobody@example.com', message('sip:nobody@example.com', 'x')), undefined)
})
