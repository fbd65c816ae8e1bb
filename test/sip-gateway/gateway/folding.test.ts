// Folded header lines (RFC 3261 7.3.1; RFC 4475 3.1.1.1) and compact header names reach the
// gateway over every transport and are routed like any request: a MESSAGE whose Via, From, To,
// CSeq and Content-Length are continued on the next line with leading whitespace gets its 200.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { TestMesh } from './fixtures/mesh.ts'
import { TestUa } from './fixtures/ua.ts'
import { TcpClient, UdpClient, WsClient, until } from '../transport/fixtures.ts'

/** a MESSAGE to bob with most header lines folded, some names compact */
function folded (transport: 'UDP' | 'TCP' | 'WS', sentBy: string, body: string): { text: string, branch: string } {
  const branch = 'z9hG4bK' + randomBytes(6).toString('hex')
  const lines = [
    'MESSAGE sip:bob@example.com SIP/2.0',
    `Via  : SIP  /   2.0\r\n /${transport}\r\n    ${sentBy};branch=${branch}`,
    'Max-Forwards:\r\n 70',
    `f: "Alice"\r\n   <sip:alice@example.com>\r\n  ;\r\n  tag = ${randomBytes(4).toString('hex')}`,
    't:\r\n\t<sip:bob@example.com>',
    `i: ${randomBytes(8).toString('hex')}`,
    'CSeq: 0009\r\n  MESSAGE',
    'NewFangledHeader:   newfangled value\r\n continued newfangled value',
    'c: text/plain',
    `l:\r\n ${Buffer.byteLength(body)}`,
    '', body
  ]
  return { text: lines.join('\r\n'), branch }
}

describe('folded and compact header lines', () => {
  let mesh: TestMesh
  let bob: TestUa

  before(async () => {
    mesh = await TestMesh.spawn(1, { ws: { host: '127.0.0.1', port: 0 } })
    bob = await TestUa.open('bob', mesh.nodes[0].sip)
    assert.equal((await bob.register(600))?.status, 200)
  })
  after(async () => {
    await bob.close()
    await mesh.stop()
  })

  const delivered = async (body: string): Promise<void> => {
    await until(() => bob.received.some(m => Buffer.from(m.body).toString() === body), 3000, `bob receives ${body}`)
  }

  test('over UDP', async () => {
    const c = await UdpClient.open()
    try {
      const { text } = folded('UDP', `127.0.0.1:${c.port}`, 'folded over udp')
      await c.send(text, mesh.nodes[0].sip.port)
      await until(() => c.messages.some(m => /^SIP\/2\.0 [2-6]\d\d/.test(m)), 3000, 'a final response')
      assert.match(c.messages.find(m => /^SIP\/2\.0 [2-6]\d\d/.test(m)) ?? '', /^SIP\/2\.0 200 /)
      await delivered('folded over udp')
    } finally {
      await c.close()
    }
  })

  test('over TCP (the stream is framed by a folded Content-Length)', async () => {
    const c = await TcpClient.open(mesh.nodes[0].gateway.addresses.tcp.port)
    try {
      const { text } = folded('TCP', `127.0.0.1:${c.socket.localPort ?? 0}`, 'folded over tcp')
      await c.write(text)
      await until(() => /SIP\/2\.0 [2-6]\d\d/.test(c.text), 3000, 'a final response')
      assert.match(c.text, /^SIP\/2\.0 200 /)
      await delivered('folded over tcp')
      // the connection is still framed: a second folded request on it is answered too
      await c.write(folded('TCP', `127.0.0.1:${c.socket.localPort ?? 0}`, 'again over tcp').text)
      await until(() => c.count(/SIP\/2\.0 200 /) === 2, 3000, 'the second 200')
      assert.equal(c.closed, false)
    } finally {
      c.close()
    }
  })

  test('over WebSocket', async () => {
    const c = await WsClient.open(mesh.nodes[0].gateway.addresses.ws?.port ?? 0)
    try {
      const { text } = folded('WS', 'client.invalid', 'folded over ws')
      c.ws.send(text)
      await until(() => c.messages.some(m => /^SIP\/2\.0 [2-6]\d\d/.test(m)), 3000, 'a final response')
      assert.match(c.messages.find(m => /^SIP\/2\.0 [2-6]\d\d/.test(m)) ?? '', /^SIP\/2\.0 200 /)
      await delivered('folded over ws')
    } finally {
      c.close()
    }
  })
})
