// INVITE dialogs across two gateways: Record-Route on both nodes, the 2xx ACK and BYE follow the
// route set through the mesh; CANCEL of a pending INVITE ends it with 487 on both legs.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createSocket } from 'node:dgram'
import { TestMesh } from './fixtures/mesh.ts'
import { TestUa } from './fixtures/ua.ts'
import { parseNameAddr } from '../../../sip-gateway/codec/index.ts'

describe('dialogs across gateways', () => {
  let mesh: TestMesh
  let caller: TestUa
  let bob: TestUa

  before(async () => {
    mesh = await TestMesh.spawn(2, { proxy: { timerCMs: 400 } })
    caller = await TestUa.open('carl', mesh.nodes[0].sip)
    bob = await TestUa.open('bob', mesh.nodes[1].sip)
    assert.equal((await bob.register(600))?.status, 200)
  })
  after(async () => {
    await caller.close(); await bob.close()
    await mesh.stop()
  })

  test('INVITE / 180 / 200 / ACK / BYE through A and B with Record-Route', async () => {
    bob.answer = () => undefined
    const callId = 'dialog-1'
    const inv = caller.build({ method: 'INVITE', uri: 'sip:bob@example.com', callId, cseq: 1, fromTag: 'ft1', headers: [['Contact', caller.contact]] })
    caller.sendRaw(inv.text)
    const invite = await bob.waitFor(() => bob.received.find(m => m.method === 'INVITE' && m.headers.get('Call-ID') === callId))
    assert.ok(invite !== undefined, 'bob got the INVITE')
    const rr = invite.headers.getAll('Record-Route')
    assert.equal(rr.length, 2)
    assert.match(rr[0], /node=node-b/)
    assert.match(rr[1], /node=node-a/)
    bob.reply(invite, 180, rr.map(r => ['Record-Route', r]))
    bob.reply(invite, 200, [...rr.map(r => ['Record-Route', r] as [string, string]), ['Contact', bob.contact]])
    const ok = await caller.waitFinal(inv.branch)
    assert.equal(ok?.status, 200)
    assert.ok(caller.responses(inv.branch).some(r => r.status === 180), 'the 180 was relayed')
    const routeSet = ok.headers.getAll('Record-Route').reverse()
    const remote = parseNameAddr(ok.headers.get('Contact') ?? '').uri
    const routes = routeSet.map(r => ['Route', r] as [string, string])

    const ack = caller.build({ method: 'ACK', uri: remote, callId, cseq: 1, fromTag: 'ft1', to: '<sip:bob@example.com>;tag=uas', headers: routes })
    caller.sendRaw(ack.text)
    assert.ok(await bob.waitFor(() => bob.received.find(m => m.method === 'ACK' && m.headers.get('Call-ID') === callId)), 'the ACK reached bob')

    bob.answer = (m) => m.method === 'BYE' ? 200 : undefined
    const bye = await caller.request({ method: 'BYE', uri: remote, callId, cseq: 2, fromTag: 'ft1', to: '<sip:bob@example.com>;tag=uas', headers: routes })
    assert.equal(bye?.status, 200)
    const got = bob.received.find(m => m.method === 'BYE')
    assert.ok(got !== undefined)
    assert.equal(got.uri, remote)
    assert.equal(got.headers.getAll('Route').length, 0, 'every Route entry was consumed')
  })

  test('the callee hangs up: its BYE follows the route set back to a caller who never registered', async () => {
    bob.answer = () => undefined
    const callId = 'dialog-callee-bye'
    const inv = caller.build({ method: 'INVITE', uri: 'sip:bob@example.com', callId, cseq: 1, fromTag: 'cb1', headers: [['Contact', caller.contact]] })
    caller.sendRaw(inv.text)
    const invite = await bob.waitFor(() => bob.received.find(m => m.method === 'INVITE' && m.headers.get('Call-ID') === callId))
    assert.ok(invite !== undefined)
    const rr = invite.headers.getAll('Record-Route')
    bob.reply(invite, 200, [...rr.map(r => ['Record-Route', r] as [string, string]), ['Contact', bob.contact]])
    assert.equal((await caller.waitFinal(inv.branch))?.status, 200)
    // the UAS's route set is the Record-Route list in order (RFC 3261 12.1.1); its remote target
    // is the caller's Contact, a UDP socket the registrar knows nothing of
    const callerContact = parseNameAddr(caller.contact).uri
    caller.answer = (m) => m.method === 'BYE' ? 200 : undefined
    const bye = await bob.request({ method: 'BYE', uri: callerContact, callId, cseq: 1, fromTag: 'uas-tag', from: '<sip:bob@example.com>', to: '<sip:carl@example.com>;tag=cb1', headers: rr.map(r => ['Route', r] as [string, string]) })
    assert.equal(bye?.status, 200)
    const got = caller.received.find(m => m.method === 'BYE' && m.headers.get('Call-ID') === callId)
    assert.ok(got !== undefined, 'the caller got the BYE')
    assert.equal(got.headers.getAll('Route').length, 0)
    // a Contact naming another address: requests coming back go to where the INVITE came from
    const decoy = 'sip:carl@127.0.0.1:1'
    const inv2 = caller.build({ method: 'INVITE', uri: 'sip:bob@example.com', callId: 'decoy', cseq: 1, fromTag: 'cb2', headers: [['Contact', `<${decoy}>`]] })
    caller.sendRaw(inv2.text)
    const invite2 = await bob.waitFor(() => bob.received.find(m => m.method === 'INVITE' && m.headers.get('Call-ID') === 'decoy'))
    assert.ok(invite2 !== undefined)
    bob.reply(invite2, 200, [...rr.map(r => ['Record-Route', r] as [string, string]), ['Contact', bob.contact]])
    assert.equal((await caller.waitFinal(inv2.branch))?.status, 200)
    const bye2 = await bob.request({ method: 'BYE', uri: decoy, callId: 'decoy', cseq: 1, fromTag: 'uas-2', from: '<sip:bob@example.com>', to: '<sip:carl@example.com>;tag=cb2', headers: rr.map(r => ['Route', r] as [string, string]) })
    assert.equal(bye2?.status, 200)
    assert.ok(caller.received.some(m => m.method === 'BYE' && m.headers.get('Call-ID') === 'decoy'), 'delivered to the INVITE\'s source, not to port 1')
    // a Request-URI nobody set up a dialog from is still refused
    const stray = await bob.request({ method: 'BYE', uri: 'sip:nobody@127.0.0.1:1', callId: 'stray', fromTag: 'x', from: '<sip:bob@example.com>', to: '<sip:carl@example.com>;tag=zz', headers: rr.map(r => ['Route', r] as [string, string]) })
    assert.equal(stray?.status, 403)
  })

  test('a dialog on one node: the ACK and BYE after our Record-Route reach the callee registered there', async () => {
    const dora = await TestUa.open('dora', mesh.nodes[0].sip)
    try {
      assert.equal((await dora.register(600))?.status, 200)
      dora.answer = () => undefined
      const callId = 'dialog-local'
      const inv = caller.build({ method: 'INVITE', uri: 'sip:dora@example.com', callId, cseq: 1, fromTag: 'ftl', headers: [['Contact', caller.contact]] })
      caller.sendRaw(inv.text)
      const invite = await dora.waitFor(() => dora.received.find(m => m.method === 'INVITE' && m.headers.get('Call-ID') === callId))
      assert.ok(invite !== undefined)
      const rr = invite.headers.getAll('Record-Route')
      assert.equal(rr.length, 1)
      dora.reply(invite, 200, [['Record-Route', rr[0]], ['Contact', dora.contact]], 'dl')
      const ok = await caller.waitFinal(inv.branch)
      assert.equal(ok?.status, 200)
      const remote = parseNameAddr(ok.headers.get('Contact') ?? '').uri
      const routes = ok.headers.getAll('Record-Route').reverse().map(r => ['Route', r] as [string, string])
      const dialog = { callId, fromTag: 'ftl', to: '<sip:dora@example.com>;tag=dl', uri: remote, headers: routes }
      caller.sendRaw(caller.build({ ...dialog, method: 'ACK', cseq: 1 }).text)
      assert.ok(await dora.waitFor(() => dora.received.find(m => m.method === 'ACK' && m.headers.get('Call-ID') === callId)), 'the ACK reached dora')
      dora.answer = (m) => m.method === 'BYE' ? 200 : undefined
      assert.equal((await caller.request({ ...dialog, method: 'BYE', cseq: 2 }))?.status, 200)
      const bye = dora.received.find(m => m.method === 'BYE' && m.headers.get('Call-ID') === callId)
      assert.equal(bye?.headers.get('P-Asserted-Identity'), '<sip:carl@example.com>')
      // without our Route (not a dialog we Record-Routed) the same BYE is not delivered
      assert.equal((await caller.request({ ...dialog, method: 'BYE', cseq: 3, headers: [] }))?.status, 403)
    } finally { await dora.close() }
  })

  test('a callee answering with a Contact other than the one it registered gets the ACK and the BYE, across nodes and on one node', async () => {
    // SIPp's UAS without -s answers with Contact sip:sipp@...: not what it registered
    for (const [node, user] of [[1, 'bob'], [0, 'dora2']] as const) {
      const callee = user === 'bob' ? bob : await TestUa.open(user, mesh.nodes[node].sip)
      try {
        if (callee !== bob) assert.equal((await callee.register(600))?.status, 200)
        callee.answer = () => undefined
        const callId = `other-contact-${user}`
        const inv = caller.build({ method: 'INVITE', uri: `sip:${user}@example.com`, callId, cseq: 1, fromTag: 'oc', headers: [['Contact', caller.contact]] })
        caller.sendRaw(inv.text)
        const invite = await callee.waitFor(() => callee.received.find(m => m.method === 'INVITE' && m.headers.get('Call-ID') === callId))
        assert.ok(invite !== undefined)
        const rr = invite.headers.getAll('Record-Route')
        const dialogContact = `sip:sipp@127.0.0.1:${callee.port}`
        callee.reply(invite, 180, rr.map(r => ['Record-Route', r] as [string, string]))
        callee.reply(invite, 200, [...rr.map(r => ['Record-Route', r] as [string, string]), ['Contact', `<${dialogContact}>`]], 'oc-uas')
        const ok = await caller.waitFinal(inv.branch)
        assert.equal(ok?.status, 200)
        assert.equal(parseNameAddr(ok.headers.get('Contact') ?? '').uri, dialogContact)
        const dialog = { callId, fromTag: 'oc', to: `<sip:${user}@example.com>;tag=oc-uas`, uri: dialogContact, headers: ok.headers.getAll('Record-Route').reverse().map(r => ['Route', r] as [string, string]) }
        caller.sendRaw(caller.build({ ...dialog, method: 'ACK', cseq: 1 }).text)
        assert.ok(await callee.waitFor(() => callee.received.find(m => m.method === 'ACK' && m.headers.get('Call-ID') === callId)), `the ACK reached ${user}`)
        callee.answer = (m) => m.method === 'BYE' ? 200 : undefined
        const bye = await caller.request({ ...dialog, method: 'BYE', cseq: 2 })
        assert.equal(bye?.status, 200, `the BYE reached ${user}`)
        assert.equal(callee.received.find(m => m.method === 'BYE' && m.headers.get('Call-ID') === callId)?.uri, dialogContact)
      } finally { if (callee !== bob) await callee.close() }
    }
  })

  test('a callee\'s Contact naming a third party does not aim the node there: in-dialog requests go to the callee', async () => {
    const victim = createSocket('udp4')
    await new Promise<void>(resolve => victim.bind(0, '127.0.0.1', () => { resolve() }))
    let hits = 0
    victim.on('message', () => { hits++ })
    try {
      bob.answer = () => undefined
      const callId = 'callee-decoy'
      const inv = caller.build({ method: 'INVITE', uri: 'sip:bob@example.com', callId, cseq: 1, fromTag: 'cd', headers: [['Contact', caller.contact]] })
      caller.sendRaw(inv.text)
      const invite = await bob.waitFor(() => bob.received.find(m => m.method === 'INVITE' && m.headers.get('Call-ID') === callId))
      assert.ok(invite !== undefined)
      const rr = invite.headers.getAll('Record-Route')
      const decoy = `sip:victim@127.0.0.1:${victim.address().port}`
      bob.reply(invite, 200, [...rr.map(r => ['Record-Route', r] as [string, string]), ['Contact', `<${decoy}>`]], 'cd-uas')
      const ok = await caller.waitFinal(inv.branch)
      assert.equal(ok?.status, 200)
      bob.answer = (m) => m.method === 'BYE' ? 200 : undefined
      const routes = ok.headers.getAll('Record-Route').reverse().map(r => ['Route', r] as [string, string])
      const bye = await caller.request({ method: 'BYE', uri: decoy, callId, cseq: 2, fromTag: 'cd', to: '<sip:bob@example.com>;tag=cd-uas', headers: routes })
      assert.equal(bye?.status, 200)
      assert.ok(bob.received.some(m => m.method === 'BYE' && m.headers.get('Call-ID') === callId), 'the callee got it')
      await new Promise(resolve => setTimeout(resolve, 300))
      assert.equal(hits, 0, 'the third party got nothing')
    } finally {
      await new Promise<void>(resolve => victim.close(() => { resolve() }))
    }
  })

  test('CANCEL: 200 for the CANCEL, 487 for the INVITE, the callee sees the CANCEL', async () => {
    bob.answer = (m) => {
      if (m.method === 'CANCEL') {
        const inv = bob.received.find(x => x.method === 'INVITE' && x.headers.get('Call-ID') === 'dialog-2')
        if (inv !== undefined) bob.reply(inv, 487)
        return 200
      }
      if (m.method === 'INVITE') { bob.reply(m, 180); return undefined }
      return undefined
    }
    const inv = caller.build({ method: 'INVITE', uri: 'sip:bob@example.com', callId: 'dialog-2', cseq: 1, fromTag: 'ft2', headers: [['Contact', caller.contact]] })
    caller.sendRaw(inv.text)
    assert.ok(await caller.waitFor(() => caller.responses(inv.branch).find(r => r.status === 180)), 'ringing')
    const cancel = caller.build({ method: 'CANCEL', uri: 'sip:bob@example.com', callId: 'dialog-2', cseq: 1, fromTag: 'ft2', branch: inv.branch })
    caller.sendRaw(cancel.text)
    const final = await caller.waitFor(() => caller.responses(inv.branch).find(r => r.status >= 200 && r.headers.get('CSeq')?.includes('INVITE') === true))
    assert.equal(final?.status, 487)
    assert.ok(caller.responses(inv.branch).some(r => r.status === 200 && r.headers.get('CSeq')?.includes('CANCEL')), 'CANCEL answered 200')
    assert.ok(bob.received.some(m => m.method === 'CANCEL'))
  })

  test('timer C: an INVITE that only rings is cancelled by the proxy, the caller gets 487', async () => {
    bob.answer = (m) => {
      if (m.method === 'INVITE') { bob.reply(m, 180); return undefined }
      if (m.method === 'CANCEL') {
        const inv = bob.received.find(x => x.method === 'INVITE' && x.headers.get('Call-ID') === 'dialog-3')
        if (inv !== undefined) bob.reply(inv, 487)
        return 200
      }
      return undefined
    }
    const inv = caller.build({ method: 'INVITE', uri: 'sip:bob@example.com', callId: 'dialog-3', cseq: 1, fromTag: 'ft3', headers: [['Contact', caller.contact]] })
    const started = Date.now()
    caller.sendRaw(inv.text)
    const final = await caller.waitFor(() => caller.responses(inv.branch).find(r => r.status >= 200), 4000)
    assert.equal(final?.status, 487)
    assert.ok(Date.now() - started >= 350, 'not before timer C')
    assert.ok(bob.received.some(m => m.method === 'CANCEL' && m.headers.get('Call-ID') === 'dialog-3'), 'the proxy sent the CANCEL')
  })
})
