// Record-Route names the transport of each user agent side (RFC 3261 16.6 step 4, RFC 5658): a
// caller whose INVITE came over TCP must send its ACK and BYE over TCP, so our entry facing it
// says transport=tcp; a call between two users of one node on different transports gets two
// entries (each user agent reaches the node by the one it sees first; the node consumes both);
// WebSocket included (issue 10 item 6).
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { WebSocket } from 'ws'
import { TestMesh } from './fixtures/mesh.ts'
import { TestUa } from './fixtures/ua.ts'
import { parseNameAddr, parseMessage, SipResponse, SipRequest } from '../../../sip-gateway/codec/index.ts'

describe('Record-Route and transports', () => {
  let mesh: TestMesh
  let a = ''
  let b = ''
  let wsA = 0
  const uas: TestUa[] = []
  const open = async (user: string, node: number, transport: 'UDP' | 'TCP' = 'UDP'): Promise<TestUa> => {
    const ua = await TestUa.open(user, mesh.nodes[node].sip, transport)
    uas.push(ua)
    return ua
  }

  before(async () => {
    mesh = await TestMesh.spawn(2, { ws: { host: '127.0.0.1', port: 0 } })
    a = `${mesh.nodes[0].sip.host}:${mesh.nodes[0].sip.port}`
    b = `${mesh.nodes[1].sip.host}:${mesh.nodes[1].sip.port}`
    wsA = mesh.nodes[0].gateway.addresses.ws?.port ?? 0
  })
  after(async () => {
    for (const ua of uas) await ua.close()
    await mesh.stop()
  })

  test('a TCP caller across two nodes: our entry facing it says transport=tcp, and its BYE over TCP reaches the callee', async () => {
    const carl = await open('carl', 0, 'TCP')
    const bob = await open('bob', 1)
    assert.equal((await bob.register(600))?.status, 200)
    bob.answer = () => undefined
    const callId = 'rr-tcp-mesh'
    const inv = carl.build({ method: 'INVITE', uri: 'sip:bob@example.com', callId, cseq: 1, fromTag: 'c1', headers: [['Contact', carl.contact]] })
    carl.sendRaw(inv.text)
    const invite = await bob.waitFor(() => bob.received.find(m => m.method === 'INVITE' && m.headers.get('Call-ID') === callId))
    assert.ok(invite !== undefined, 'bob got the INVITE')
    const rr = invite.headers.getAll('Record-Route')
    assert.deepEqual(rr, [`<sip:${b};lr;node=node-b>`, `<sip:${a};transport=tcp;lr;node=node-a>`])
    bob.reply(invite, 200, [...rr.map(r => ['Record-Route', r] as [string, string]), ['Contact', bob.contact]])
    const ok = await carl.waitFinal(inv.branch)
    assert.equal(ok?.status, 200)
    const routeSet = ok.headers.getAll('Record-Route').reverse()
    assert.match(routeSet[0], /transport=tcp/, 'the caller\'s first hop is TCP')
    bob.answer = (m) => m.method === 'BYE' ? 200 : undefined
    const remote = parseNameAddr(ok.headers.get('Contact') ?? '').uri
    const bye = await carl.request({ method: 'BYE', uri: remote, callId, cseq: 2, fromTag: 'c1', to: '<sip:bob@example.com>;tag=uas', headers: routeSet.map(r => ['Route', r]) })
    assert.equal(bye?.status, 200)
  })

  test('a TCP callee across two nodes: the entry of its node facing it says transport=tcp, and its BYE over TCP reaches the caller', async () => {
    const carol = await open('carol', 0)
    const tina = await open('tina', 1, 'TCP')
    assert.equal((await tina.register(600))?.status, 200)
    tina.answer = () => undefined
    const callId = 'rr-tcp-callee'
    const inv = carol.build({ method: 'INVITE', uri: 'sip:tina@example.com', callId, cseq: 1, fromTag: 't1', headers: [['Contact', carol.contact]] })
    carol.sendRaw(inv.text)
    const invite = await tina.waitFor(() => tina.received.find(m => m.method === 'INVITE' && m.headers.get('Call-ID') === callId))
    assert.ok(invite !== undefined, 'tina got the INVITE over her TCP connection')
    const rr = invite.headers.getAll('Record-Route')
    assert.deepEqual(rr, [`<sip:${b};transport=tcp;lr;node=node-b>`, `<sip:${a};lr;node=node-a>`])
    tina.reply(invite, 200, [...rr.map(r => ['Record-Route', r] as [string, string]), ['Contact', tina.contact]], 'tt')
    assert.equal((await carol.waitFinal(inv.branch))?.status, 200)
    carol.answer = (m) => m.method === 'BYE' ? 200 : undefined
    const bye = await tina.request({ method: 'BYE', uri: parseNameAddr(carol.contact).uri, callId, cseq: 1, fromTag: 'tt', from: '<sip:tina@example.com>', to: '<sip:carol@example.com>;tag=t1', headers: rr.map(r => ['Route', r]) })
    assert.equal(bye?.status, 200)
    assert.ok(carol.received.some(m => m.method === 'BYE' && m.headers.get('Call-ID') === callId))
  })

  test('one node, TCP caller and UDP callee: two entries (RFC 5658); requests both ways consume both', async () => {
    const cleo = await open('cleo', 0, 'TCP')
    const dora = await open('dora', 0)
    assert.equal((await dora.register(600))?.status, 200)
    dora.answer = () => undefined
    const callId = 'rr-double'
    const inv = cleo.build({ method: 'INVITE', uri: 'sip:dora@example.com', callId, cseq: 1, fromTag: 'd1', headers: [['Contact', cleo.contact]] })
    cleo.sendRaw(inv.text)
    const invite = await dora.waitFor(() => dora.received.find(m => m.method === 'INVITE' && m.headers.get('Call-ID') === callId))
    assert.ok(invite !== undefined)
    const rr = invite.headers.getAll('Record-Route')
    assert.deepEqual(rr, [`<sip:${a};lr;node=node-a>`, `<sip:${a};transport=tcp;lr;node=node-a>`], 'the callee\'s side (UDP) on top, the caller\'s (TCP) below')
    dora.reply(invite, 200, [...rr.map(r => ['Record-Route', r] as [string, string]), ['Contact', dora.contact]], 'dd')
    const ok = await cleo.waitFinal(inv.branch)
    assert.equal(ok?.status, 200)
    const callerRoutes = ok.headers.getAll('Record-Route').reverse().map(r => ['Route', r] as [string, string])
    const dialog = { callId, fromTag: 'd1', to: '<sip:dora@example.com>;tag=dd', uri: parseNameAddr(dora.contact).uri }
    cleo.sendRaw(cleo.build({ ...dialog, method: 'ACK', cseq: 1, headers: callerRoutes }).text)
    const ack = await dora.waitFor(() => dora.received.find(m => m.method === 'ACK' && m.headers.get('Call-ID') === callId))
    assert.ok(ack !== undefined, 'the ACK reached the callee')
    assert.equal(ack.headers.getAll('Route').length, 0, 'both entries of ours consumed')
    // the callee hangs up: its route set is the Record-Route list in order
    cleo.answer = (m) => m.method === 'BYE' ? 200 : undefined
    const bye = await dora.request({ method: 'BYE', uri: parseNameAddr(cleo.contact).uri, callId, cseq: 1, fromTag: 'dd', from: '<sip:dora@example.com>', to: '<sip:cleo@example.com>;tag=d1', headers: rr.map(r => ['Route', r]) })
    assert.equal(bye?.status, 200)
    const got = cleo.received.find(m => m.method === 'BYE' && m.headers.get('Call-ID') === callId)
    assert.ok(got !== undefined, 'the caller got the BYE over its TCP connection')
    assert.equal(got.headers.getAll('Route').length, 0)
  })

  test('a WebSocket caller and a UDP callee on one node: the entry facing the caller names the WebSocket address', async () => {
    const eve = await open('eve', 0)
    assert.equal((await eve.register(600))?.status, 200)
    eve.answer = () => undefined
    const ws = new WebSocket(`ws://127.0.0.1:${wsA}`, 'sip')
    const got: Array<SipRequest | SipResponse> = []
    ws.on('message', (data: Buffer) => { try { got.push(parseMessage(new Uint8Array(data))) } catch { /* ignored */ } })
    await new Promise<void>((resolve, reject) => { ws.once('open', () => { resolve() }); ws.once('error', reject) })
    try {
      const callId = 'rr-ws'
      ws.send([
        'INVITE sip:eve@example.com SIP/2.0',
        'Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKws1;rport',
        'Max-Forwards: 70',
        'From: <sip:walt@example.com>;tag=w1',
        'To: <sip:eve@example.com>',
        `Call-ID: ${callId}`,
        'CSeq: 1 INVITE',
        'Contact: <sip:walt@df7jal23ls0d.invalid;transport=ws>',
        'Content-Length: 0', '', ''
      ].join('\r\n'))
      const invite = await eve.waitFor(() => eve.received.find(m => m.method === 'INVITE' && m.headers.get('Call-ID') === callId))
      assert.ok(invite !== undefined, 'eve got the INVITE')
      assert.deepEqual(invite.headers.getAll('Record-Route'), [`<sip:${a};lr;node=node-a>`, `<sip:127.0.0.1:${wsA};transport=ws;lr;node=node-a>`])
      eve.reply(invite, 200, [...invite.headers.getAll('Record-Route').map(r => ['Record-Route', r] as [string, string]), ['Contact', eve.contact]], 'ee')
      const ok = await eve.waitFor(() => got.find((m): m is SipResponse => m instanceof SipResponse && m.status === 200))
      assert.ok(ok !== undefined, 'the 200 reached the WebSocket caller')
      assert.match(ok.headers.getAll('Record-Route').reverse()[0], /transport=ws/)
    } finally {
      ws.close()
    }
  })
})
