// The node is not an open relay (SPEC: "a request for a domain the node does not serve: 403 or
// 404, never forwarded"; RFC 3261 16.4 / 16.12): a Route a user agent puts in a request is
// followed only when it is the route set of a dialog this mesh Record-Routed. A third-party
// socket on 127.0.0.1 (UDP and TCP) stands for the victim and must receive nothing, for
// requests (refused 403) and for ACKs (dropped). In-dialog requests through our Record-Route
// entries still reach the callee, with the caller's identity asserted and a forged one stripped.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createSocket, type Socket as UdpSocket } from 'node:dgram'
import { createServer, type Server } from 'node:net'
import { TestMesh } from './fixtures/mesh.ts'
import { TestUa } from './fixtures/ua.ts'

describe('no open relay through Route', () => {
  let mesh: TestMesh
  let bob: TestUa
  let mallory: TestUa
  let malloryTcp: TestUa
  let victimUdp: UdpSocket
  let victimTcp: Server
  let udpPort = 0
  let tcpPort = 0
  let udpHits = 0
  let tcpHits = 0
  let a = ''
  let b = ''

  before(async () => {
    mesh = await TestMesh.spawn(2)
    a = `${mesh.nodes[0].sip.host}:${mesh.nodes[0].sip.port}`
    b = `${mesh.nodes[1].sip.host}:${mesh.nodes[1].sip.port}`
    bob = await TestUa.open('bob', mesh.nodes[1].sip)
    mallory = await TestUa.open('mallory', mesh.nodes[0].sip)
    malloryTcp = await TestUa.open('mallory', mesh.nodes[0].sip, 'TCP')
    assert.equal((await bob.register(600))?.status, 200)
    victimUdp = createSocket('udp4')
    await new Promise<void>(resolve => victimUdp.bind(0, '127.0.0.1', () => resolve()))
    udpPort = victimUdp.address().port
    victimUdp.on('message', () => { udpHits++ })
    victimTcp = createServer((s) => { tcpHits++; s.on('error', () => {}); s.destroy() })
    await new Promise<void>(resolve => victimTcp.listen(0, '127.0.0.1', () => resolve()))
    tcpPort = (victimTcp.address() as { port: number }).port
  })
  after(async () => {
    await bob.close(); await mallory.close(); await malloryTcp.close()
    await new Promise<void>(resolve => victimUdp.close(() => resolve()))
    await new Promise<void>(resolve => victimTcp.close(() => resolve()))
    await mesh.stop()
  })

  const victim = (): string => `<sip:127.0.0.1:${udpPort};lr>`
  const victimT = (): string => `<sip:127.0.0.1:${tcpPort};transport=tcp;lr>`
  const ourA = (): string => `<sip:${a};lr;node=node-a>`
  const ourB = (): string => `<sip:${b};lr;node=node-b>`
  const quiet = async (): Promise<void> => {
    // a forwarded request would reach the victim within milliseconds on loopback
    await new Promise(resolve => setTimeout(resolve, 400))
    assert.equal(udpHits, 0, 'the third-party UDP socket received nothing')
    assert.equal(tcpHits, 0, 'the third-party TCP listener got no connection')
  }

  test('out-of-dialog request to a foreign domain with a foreign Route: 403 over UDP and TCP, nothing sent', async () => {
    // the auditor's request, as sent
    assert.equal((await mallory.request({ uri: 'sip:someone@evil.org', headers: [['Route', victim()]], body: 'relay me' }, 2000))?.status, 403)
    assert.equal((await malloryTcp.request({ uri: 'sip:someone@evil.org', headers: [['Route', victimT()]], body: 'relay me' }, 2000))?.status, 403)
    // our own entry first, the victim next
    assert.equal((await mallory.request({ uri: 'sip:someone@evil.org', headers: [['Route', ourA()], ['Route', victim()]] }, 2000))?.status, 403)
    assert.equal((await malloryTcp.request({ uri: 'sip:someone@evil.org', headers: [['Route', `${ourA()}, ${victimT()}`]] }, 2000))?.status, 403)
    // an INVITE (100 Trying first) and an OPTIONS
    assert.equal((await mallory.request({ method: 'INVITE', uri: 'sip:someone@evil.org', headers: [['Route', victim()], ['Contact', mallory.contact]] }, 2000))?.status, 403)
    assert.equal((await mallory.request({ method: 'OPTIONS', uri: `sip:127.0.0.1:${udpPort}`, headers: [['Route', victim()]] }, 2000))?.status, 403)
    await quiet()
  })

  test('a served Request-URI or the node itself does not launder a foreign Route: 403', async () => {
    assert.equal((await mallory.request({ uri: 'sip:bob@example.com', headers: [['Route', victim()]] }, 2000))?.status, 403)
    assert.equal((await mallory.request({ method: 'OPTIONS', uri: `sip:${a}`, headers: [['Route', ourA()], ['Route', victim()]] }, 2000))?.status, 403)
    assert.equal((await malloryTcp.request({ uri: 'sip:bob@example.com', headers: [['Route', ourA()], ['Route', victimT()]] }, 2000))?.status, 403)
    // out of dialog even when every entry is a mesh node's: a UA has no route set before a dialog
    assert.equal((await mallory.request({ uri: 'sip:someone@evil.org', headers: [['Route', ourA()], ['Route', ourB()]] }, 2000))?.status, 403)
    await quiet()
  })

  test('in-dialog (To tag) requests with a foreign entry anywhere in the route set: 403', async () => {
    const dialog = { to: '<sip:bob@example.com>;tag=x1', callId: 'relay-dialog', fromTag: 'f1' }
    const target = `sip:127.0.0.1:${udpPort}`
    assert.equal((await mallory.request({ ...dialog, method: 'BYE', uri: target, headers: [['Route', victim()]] }, 2000))?.status, 403)
    assert.equal((await mallory.request({ ...dialog, method: 'BYE', uri: target, headers: [['Route', ourA()], ['Route', victim()]] }, 2000))?.status, 403)
    // through the mesh and out at node B: refused at A, where the user agent is
    assert.equal((await mallory.request({ ...dialog, method: 'BYE', uri: target, headers: [['Route', ourA()], ['Route', ourB()], ['Route', victim()]] }, 2000))?.status, 403)
    assert.equal((await mallory.request({ ...dialog, method: 'INFO', uri: target, headers: [['Route', `${ourA()}, ${ourB()}, ${victim()}`]] }, 2000))?.status, 403)
    assert.equal((await malloryTcp.request({ ...dialog, method: 'BYE', uri: `sip:127.0.0.1:${tcpPort};transport=tcp`, headers: [['Route', ourA()], ['Route', victimT()]] }, 2000))?.status, 403)
    // our route set, but the Request-URI is a stranger's socket: no node delivers to it
    assert.equal((await mallory.request({ ...dialog, method: 'BYE', uri: target, headers: [['Route', ourA()]] }, 2000))?.status, 403)
    const r = await mallory.request({ ...dialog, method: 'BYE', uri: target, headers: [['Route', ourA()], ['Route', ourB()]] }, 2000)
    assert.equal(r?.status, 403)
    await quiet()
  })

  test('ACKs are never relayed to a third-party socket (UDP and TCP)', async () => {
    const ack = { method: 'ACK', to: '<sip:bob@example.com>;tag=x2', callId: 'relay-ack', fromTag: 'f2', cseq: 1 }
    const target = `sip:127.0.0.1:${udpPort}`
    const targetT = `sip:127.0.0.1:${tcpPort};transport=tcp`
    const shapes: Array<{ uri: string, to?: string, headers: Array<[string, string]> }> = [
      { uri: 'sip:someone@evil.org', headers: [['Route', victim()]] },
      { uri: target, headers: [['Route', victim()]] },
      { uri: target, headers: [['Route', ourA()], ['Route', victim()]] },
      { uri: target, headers: [['Route', ourA()], ['Route', ourB()], ['Route', victim()]] },
      { uri: target, headers: [['Route', ourA()], ['Route', ourB()]] },
      { uri: target, headers: [] },
      { uri: 'sip:someone@evil.org', to: '<sip:someone@evil.org>', headers: [['Route', victim()]] }
    ]
    for (const o of shapes) mallory.sendRaw(mallory.build({ ...ack, ...o }).text)
    malloryTcp.sendRaw(malloryTcp.build({ ...ack, uri: targetT, headers: [['Route', victimT()]] }).text)
    malloryTcp.sendRaw(malloryTcp.build({ ...ack, uri: targetT, headers: [['Route', ourA()], ['Route', victimT()]] }).text)
    await quiet()
  })

  test('in-dialog BYE and ACK through our Record-Route entries reach the callee, identity asserted, a forged one stripped', async () => {
    const dialog = { to: '<sip:bob@example.com>;tag=x3', callId: 'relay-ok', fromTag: 'f3' }
    const remote = `sip:bob@127.0.0.1:${bob.port}`
    const headers: Array<[string, string]> = [['Route', ourA()], ['Route', ourB()], ['P-Asserted-Identity', '<sip:ceo@example.com>']]
    mallory.sendRaw(mallory.build({ ...dialog, method: 'ACK', uri: remote, cseq: 1, headers }).text)
    const ack = await bob.waitFor(() => bob.received.find(m => m.method === 'ACK' && m.headers.get('Call-ID') === 'relay-ok'))
    assert.ok(ack !== undefined, 'the ACK reached bob')
    assert.equal(ack.headers.get('P-Asserted-Identity'), '<sip:mallory@example.com>', 'ACK: the sender asserted, the forged identity gone')
    assert.equal(ack.headers.getAll('Route').length, 0)
    const bye = await mallory.request({ ...dialog, method: 'BYE', uri: remote, cseq: 2, headers }, 2000)
    assert.equal(bye?.status, 200)
    const got = bob.received.find(m => m.method === 'BYE' && m.headers.get('Call-ID') === 'relay-ok')
    assert.ok(got !== undefined)
    assert.equal(got.headers.get('P-Asserted-Identity'), '<sip:mallory@example.com>', 'BYE: the sender asserted, the forged identity gone')
    assert.equal(got.headers.getAll('Route').length, 0)
    await quiet()
  })
})
