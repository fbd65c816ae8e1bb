// The presence agent in in-process gateways on real UDP sockets (memory registry + memory channel):
// local and cross-node subscriptions, PUBLISH, held subscriptions, moves, authorization, bad input.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { TestMesh } from '../gateway/fixtures/mesh.ts'
import { TestUa } from '../gateway/fixtures/ua.ts'
import { subscribe, refresh, publish, pidf, notifies, waitNotify, bodyOf, isOpen, isClosed, stateOf } from './fixtures.ts'
import { parseMessage, type SipRequest, type SipResponse } from '../../../sip-gateway/codec/index.ts'
import type { Flow } from '../../../sip-gateway/proxy/flow.ts'
import type { ServerTransaction } from '../../../sip-gateway/transaction/layer.ts'

const config = { presence: { minExpires: 1, decisionWaitMs: 1000, retryMs: 300, publications: { minExpires: 1, defaultExpires: 60 } } }

describe('presence agent', () => {
  let mesh: TestMesh
  const uas: TestUa[] = []
  const ua = async (user: string, node: number): Promise<TestUa> => {
    const u = await TestUa.open(user, mesh.nodes[node].sip)
    uas.push(u)
    return u
  }

  before(async () => { mesh = await TestMesh.spawn(3, config) })
  after(async () => {
    for (const u of uas) await u.close()
    await mesh.stop()
  })

  test('local presentity: registration gives open, PUBLISH is notified, unsubscribe ends with a final NOTIFY', async () => {
    const bob = await ua('bob1', 0)
    assert.equal((await bob.register(600))?.status, 200)
    const alice = await ua('alice1', 0)
    const { response, dialog } = await subscribe(alice, { to: bob.aor, expires: 120 })
    assert.equal(response?.status, 200)
    assert.ok(dialog !== undefined)
    assert.equal(response?.headers.get('Expires'), '120')
    const first = await waitNotify(alice, dialog.callId, () => true)
    assert.ok(first !== undefined, 'immediate NOTIFY')
    assert.match(stateOf(first), /^active;expires=\d+/)
    assert.ok(isOpen(first), bodyOf(first))

    const pub = await publish(bob, { body: pidf(bob.aor, 'open', 'in a meeting'), expires: 60 })
    assert.equal(pub?.status, 200)
    const etag = pub?.headers.get('SIP-ETag')
    assert.ok(etag !== undefined && etag.length > 0)
    assert.ok(await waitNotify(alice, dialog.callId, r => bodyOf(r).includes('in a meeting')))

    // refresh without a body (SIP-If-Match) keeps the state; a modification is notified
    const refreshed = await publish(bob, { etag, expires: 60 })
    assert.equal(refreshed?.status, 200)
    const etag2 = refreshed?.headers.get('SIP-ETag')
    assert.notEqual(etag2, etag, 'a new entity tag on every refresh (RFC 3903)')
    assert.equal((await publish(bob, { etag, expires: 60 }))?.status, 412, 'the old tag is spent')
    assert.equal((await publish(bob, { etag: etag2, body: pidf(bob.aor, 'closed', 'gone home') }))?.status, 200)
    assert.ok(await waitNotify(alice, dialog.callId, r => bodyOf(r).includes('gone home') && isClosed(r)))

    // a refresh gets an immediate NOTIFY
    const before = notifies(alice, dialog.callId).length
    assert.equal((await refresh(alice, dialog, 100))?.status, 200)
    assert.ok(await waitNotify(alice, dialog.callId, () => true, 3000, before))

    // unsubscribe
    const n = notifies(alice, dialog.callId).length
    assert.equal((await refresh(alice, dialog, 0))?.status, 200)
    const final = await waitNotify(alice, dialog.callId, r => stateOf(r).startsWith('terminated'), 3000, n)
    assert.ok(final !== undefined)
    // the dialog is gone: a refresh now is 481
    assert.equal((await refresh(alice, dialog, 100))?.status, 481)
  })

  test('bad input: unknown event 489, short expiry 423, malformed PIDF 400, wrong ETag 412, wrong publisher 403, wrong type 415', async () => {
    const bob = await ua('bob2', 0)
    assert.equal((await bob.register(600))?.status, 200)
    const alice = await ua('alice2', 1)
    const r489 = await subscribe(alice, { to: bob.aor, event: 'message-summary' })
    assert.equal(r489.response?.status, 489)
    assert.match(r489.response?.headers.get('Allow-Events') ?? '', /presence/)
    assert.equal((await subscribe(alice, { to: bob.aor, event: '' })).response?.status, 489)
    assert.equal((await subscribe(alice, { to: bob.aor, event: 'presence;;;=' })).response?.status, 200)
    const mesh2 = await TestMesh.spawn(1, { presence: { minExpires: 30 } })
    try {
      const u = await TestUa.open('x', mesh2.nodes[0].sip)
      const r = (await subscribe(u, { to: 'sip:y@example.com', expires: 5 })).response
      assert.equal(r?.status, 423)
      assert.equal(r?.headers.get('Min-Expires'), '30')
      assert.equal((await subscribe(u, { to: 'sip:y@example.com', expires: 'x' as unknown as number })).response?.status, 400)
      await u.close()
    } finally { await mesh2.stop() }
    assert.equal((await subscribe(alice, { to: bob.aor, accept: 'text/html' })).response?.status, 406)

    assert.equal((await publish(bob, { body: '<presence><unclosed>' }))?.status, 400)
    assert.equal((await publish(bob, { body: '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:x@example.com"/>' }))?.status, 400)
    // a message over the 64 KiB limit cannot be a UDP datagram: sent over TCP, it is answered 513
    const bobTcp = await TestUa.open('bob2', mesh.nodes[0].sip, 'TCP')
    uas.push(bobTcp)
    const oversize = await publish(bobTcp, { body: 'x'.repeat(70_000) })
    assert.ok(oversize !== undefined, 'answered, not dropped')
    assert.equal(oversize.status, 513)
    assert.equal((await publish(bob, { etag: 'no-such-etag', expires: 60 }))?.status, 412)
    assert.equal((await publish(bob, { body: pidf(bob.aor, 'open'), contentType: 'text/plain' }))?.status, 415)
    assert.equal((await publish(bob, {}))?.status, 400)
    assert.equal((await publish(bob, { body: pidf(bob.aor, 'open'), event: 'message-summary' }))?.status, 489)
    // dialog is a package of ours now: a PIDF body is the wrong type for it
    assert.equal((await publish(bob, { body: pidf(bob.aor, 'open'), event: 'dialog' }))?.status, 415)
    assert.equal((await publish(bob, { body: pidf(bob.aor, 'open'), from: '<sip:mallory@example.com>' }))?.status, 403)
    // the publisher is compared by AoR, not by the From URI's text (the agent keeps the last URI's
    // AoR): another spelling of bob is bob, mallory after bob is still refused
    const bobAgain = bob.aor.replace('@example.com', '@EXAMPLE.com;transport=udp')
    const spelled = await publish(bob, { body: pidf(bob.aor, 'open', 'spelled'), from: `"Bob" <${bobAgain}>` })
    assert.equal(spelled?.status, 200)
    assert.equal((await publish(bob, { etag: spelled?.headers.get('SIP-ETag'), expires: 0, from: '<sip:mallory@example.com>' }))?.status, 403)
    assert.equal((await publish(bob, { etag: spelled?.headers.get('SIP-ETag'), expires: 0 }))?.status, 200)
    // a Content-Type with parameters and another case is still PIDF
    const typed = await publish(bob, { body: pidf(bob.aor, 'open'), contentType: 'Application/PIDF+XML; charset=UTF-8' })
    assert.equal(typed?.status, 200)
    assert.equal((await publish(bob, { etag: typed?.headers.get('SIP-ETag'), expires: 0 }))?.status, 200)
    // a NOTIFY / SUBSCRIBE for a dialog nobody has
    const stray = await alice.request({ method: 'NOTIFY', uri: `sip:127.0.0.1:${mesh.nodes[1].sip.port}`, to: '<sip:alice2@example.com>;tag=nope', headers: [['Event', 'presence'], ['Subscription-State', 'active']] })
    assert.equal(stray?.status, 481)
  })

  test('across nodes: one shared back-end subscription, NOTIFYs flow to every watcher', async () => {
    const bob = await ua('bob3', 0)
    assert.equal((await bob.register(600))?.status, 200)
    const alice = await ua('alice3', 1)
    const carol = await ua('carol3', 1)
    const a = await subscribe(alice, { to: bob.aor, expires: 120 })
    const c = await subscribe(carol, { to: bob.aor, expires: 120 })
    assert.equal(a.response?.status, 200)
    assert.equal(c.response?.status, 200)
    assert.ok(await waitNotify(alice, a.dialog!.callId, isOpen))
    assert.ok(await waitNotify(carol, c.dialog!.callId, isOpen))
    // two watchers on node b, one back-end subscription: node b holds exactly one, to node a,
    // and node a serves exactly one for bob3, from node b (and none from anywhere else)
    const [nodeA, nodeB, nodeC] = mesh.nodes.map(n => n.gateway.presence)
    assert.deepEqual(nodeB.backendsOf(bob.aor), { holding: 1, to: 'node-a', serving: {} })
    assert.deepEqual(nodeA.backendsOf(bob.aor), { holding: 0, to: undefined, serving: { 'node-b': 1 } })
    assert.deepEqual(nodeC.backendsOf(bob.aor), { holding: 0, to: undefined, serving: {} })
    assert.equal((await publish(bob, { body: pidf(bob.aor, 'open', 'across') }))?.status, 200)
    assert.ok(await waitNotify(alice, a.dialog!.callId, r => bodyOf(r).includes('across')))
    assert.ok(await waitNotify(carol, c.dialog!.callId, r => bodyOf(r).includes('across')))
    // a PUBLISH from a UA on another node is routed to the owner
    const bob2 = await TestUa.open('bob3', mesh.nodes[2].sip)
    uas.push(bob2)
    assert.equal((await publish(bob2, { body: pidf(bob.aor, 'open', 'via c', 't2') }))?.status, 200)
    assert.ok(await waitNotify(alice, a.dialog!.callId, r => bodyOf(r).includes('via c') && bodyOf(r).includes('across')))
    // still one back-end subscription after all that traffic
    assert.deepEqual(nodeA.backendsOf(bob.aor).serving, { 'node-b': 1 })
    assert.equal(nodeB.backendsOf(bob.aor).holding, 1)
  })

  test('held subscription: accepted offline, extended within 1 s of the user registering', async () => {
    const alice = await ua('alice4', 1)
    const { response, dialog } = await subscribe(alice, { to: 'sip:dave4@example.com', expires: 120 })
    assert.equal(response?.status, 200)
    const first = await waitNotify(alice, dialog!.callId, () => true)
    assert.ok(first !== undefined && isClosed(first))
    const dave = await ua('dave4', 2)
    const t0 = Date.now()
    assert.equal((await dave.register(600))?.status, 200)
    const open = await waitNotify(alice, dialog!.callId, isOpen, 2000)
    assert.ok(open !== undefined, 'the watcher sees the user online')
    assert.ok(Date.now() - t0 < 1000, `took ${Date.now() - t0} ms`)
  })

  test('move: the old owner deactivates, the watcher node re-subscribes at the new owner, the watcher keeps its dialog', async () => {
    const erin = await ua('erin5', 0)
    assert.equal((await erin.register(600))?.status, 200)
    assert.equal((await publish(erin, { body: pidf(erin.aor, 'open', 'on node a') }))?.status, 200)
    const alice = await ua('alice5', 1)
    const { dialog } = await subscribe(alice, { to: erin.aor, expires: 120 })
    assert.ok(await waitNotify(alice, dialog!.callId, r => bodyOf(r).includes('on node a')))
    // erin moves to node c
    const erinC = await TestUa.open('erin5', mesh.nodes[2].sip)
    uas.push(erinC)
    assert.equal((await erinC.register(600))?.status, 200)
    assert.equal((await publish(erinC, { body: pidf(erin.aor, 'open', 'on node c') }))?.status, 200)
    const moved = await waitNotify(alice, dialog!.callId, r => bodyOf(r).includes('on node c'), 3000)
    assert.ok(moved !== undefined, 'the watcher sees the state at the new owner')
    assert.ok(notifies(alice, dialog!.callId).every(r => !stateOf(r).startsWith('terminated')), 'the watcher dialog never ended')
    assert.ok(notifies(alice, dialog!.callId).every(r => !stateOf(r).startsWith('pending') && !isClosed(r)), 'no transient offline or pending state during the move')
    // node a no longer serves erin's back-end subscription
    assert.equal(mesh.nodes[0].gateway.presence.publications.get(erin.aor, 'presence').length, 0)
  })

  test('authorization: polite-block gets the neutral document, block is refused (also at the watcher node)', async () => {
    const fred = await ua('fred6', 0)
    assert.equal((await fred.register(600))?.status, 200)
    assert.equal((await publish(fred, { body: pidf(fred.aor, 'open', 'secret note') }))?.status, 200)
    await mesh.nodes[0].gateway.presence.setRules(fred.aor, { watchers: { 'sip:alice6@example.com': 'polite-block', 'sip:mallory6@example.com': 'block' } })
    assert.deepEqual(mesh.nodes[0].gateway.presence.getRules(fred.aor).watchers['sip:alice6@example.com'], 'polite-block')
    const alice = await ua('alice6', 1)
    const a = await subscribe(alice, { to: fred.aor, expires: 120 })
    assert.equal(a.response?.status, 200)
    const n = await waitNotify(alice, a.dialog!.callId, () => true)
    assert.ok(n !== undefined && isClosed(n) && !bodyOf(n).includes('secret'), n === undefined ? 'none' : bodyOf(n))
    const mallory = await ua('mallory6', 1)
    assert.equal((await subscribe(mallory, { to: fred.aor, expires: 120 })).response?.status, 403)
    // an allowed watcher on the same node sees the real state
    const gina = await ua('gina6', 1)
    const g = await subscribe(gina, { to: fred.aor, expires: 120 })
    assert.ok(await waitNotify(gina, g.dialog!.callId, r => bodyOf(r).includes('secret note')))
    // the rule changes to block for gina: her subscription ends (rejected)
    await mesh.nodes[0].gateway.presence.setRules(fred.aor, { watchers: { 'sip:gina6@example.com': 'block' } })
    assert.ok(await waitNotify(gina, g.dialog!.callId, r => /terminated;reason=rejected/.test(stateOf(r))))
    // a local block at the watcher's node refuses too
    await mesh.nodes[1].gateway.presence.setRules(fred.aor, { default: 'block' })
    const hank = await ua('hank6', 1)
    assert.equal((await subscribe(hank, { to: fred.aor, expires: 120 })).response?.status, 403)
    // rules persisted in the node's store
    const keys: string[] = []
    for await (const [k] of mesh.nodes[0].store.list('presence-auth/')) keys.push(k)
    assert.ok(keys.length >= 1)
  })

  test('publication expiry and subscription timeout are notified', async () => {
    const ivy = await ua('ivy7', 0)
    assert.equal((await ivy.register(600))?.status, 200)
    const alice = await ua('alice7', 1)
    const { dialog } = await subscribe(alice, { to: ivy.aor, expires: 2 })
    assert.equal((await publish(ivy, { body: pidf(ivy.aor, 'closed', 'short lived'), expires: 1 }))?.status, 200)
    assert.ok(await waitNotify(alice, dialog!.callId, r => bodyOf(r).includes('short lived')))
    // after expiry the registration-derived state is back
    assert.ok(await waitNotify(alice, dialog!.callId, r => isOpen(r) && !bodyOf(r).includes('short lived'), 3000))
    // the subscription times out after 2 s
    assert.ok(await waitNotify(alice, dialog!.callId, r => /terminated;reason=timeout/.test(stateOf(r)), 3000))
  })

  test('presentities and subscriptions are capped (503)', async () => {
    const m = await TestMesh.spawn(1, { presence: { maxPresentities: 3, maxSubscriptions: 5 } })
    const u = await TestUa.open('capper', m.nodes[0].sip)
    try {
      const statuses: Array<number | undefined> = []
      for (let i = 0; i < 4; i++) statuses.push((await subscribe(u, { to: `sip:cap${i}@example.com`, expires: 60 })).response?.status)
      assert.deepEqual(statuses, [200, 200, 200, 503])
      const more: Array<number | undefined> = []
      for (let i = 0; i < 3; i++) more.push((await subscribe(u, { to: 'sip:cap0@example.com', expires: 60 })).response?.status)
      assert.deepEqual(more, [200, 200, 503])
    } finally {
      await u.close()
      await m.stop()
    }
  })

  test('a flood of SUBSCRIBEs from one host is limited across all its ports and connections; another host is unaffected', async () => {
    const m = await TestMesh.spawn(1, { presence: { rateLimit: { burst: 20, perSecond: 10 } } })
    // one host (127.0.0.1), 30 UDP ports and 5 TCP connections, 10 SUBSCRIBEs each: every source
    // port alone would stay under the burst, so a limit keyed by port would let all 350 in
    const flooders: TestUa[] = []
    for (let i = 0; i < 35; i++) flooders.push(await TestUa.open(`flood${i}`, m.nodes[0].sip, i < 30 ? 'UDP' : 'TCP'))
    try {
      const sent: Array<{ ua: TestUa, branch: string }> = []
      for (let round = 0; round < 10; round++) {
        for (const [i, ua] of flooders.entries()) {
          const { text, branch } = ua.build({ method: 'SUBSCRIBE', uri: `sip:target${i}x${round}@example.com`, headers: [['Event', 'presence'], ['Contact', ua.contact], ['Expires', '60']] })
          ua.sendRaw(text)
          sent.push({ ua, branch })
        }
      }
      const final = (x: { ua: TestUa, branch: string }): number | undefined => x.ua.responses(x.branch).find(r => r.status >= 200)?.status
      await flooders[0].waitFor(() => sent.every(x => final(x) !== undefined) ? true : undefined, 8000)
      const statuses = sent.map(final)
      const ok = statuses.filter(s => s === 200).length
      const limited = statuses.filter(s => s === 503).length
      assert.ok(ok >= 15 && ok <= 60, `accepted ${ok}`)
      assert.ok(limited >= 280, `limited ${limited}`)
      assert.equal(ok + limited, 350, 'every one answered')
      assert.ok(flooders.slice(30).some(ua => sent.some(x => x.ua === ua && final(x) === 503)), 'the TCP connections share the bucket')
      assert.ok(m.nodes[0].gateway.presence.stats.presentities <= 60, 'refused SUBSCRIBEs leave no presentity behind')

      // another host (an in-process flow from 192.0.2.7: tests bind to 127.0.0.1 only), right
      // after the flood: its own 10 SUBSCRIBEs all pass (the flooder's bucket is still empty)
      const answers = new Map<string, SipResponse>()
      const elsewhere = { transport: 'TCP', remote: { host: '192.0.2.7', port: 5060 }, open: true, reliable: true, send: () => {} } as unknown as Flow
      for (let i = 0; i < 10; i++) {
        const tx = { respond: (r: SipResponse) => { if (r.status >= 200) answers.set(`e${i}`, r) } } as unknown as ServerTransaction
        const request = parseMessage(Buffer.from([
          `SUBSCRIBE sip:target${i}x0@example.com SIP/2.0`,
          `Via: SIP/2.0/TCP 192.0.2.7:5060;branch=z9hG4bKelsewhere${i}`,
          'Max-Forwards: 70',
          `From: <sip:calm@example.com>;tag=c${i}`,
          `To: <sip:target${i}x0@example.com>`,
          `Call-ID: elsewhere-${i}`,
          'CSeq: 1 SUBSCRIBE',
          'Contact: <sip:calm@192.0.2.7:5060;transport=tcp>',
          'Event: presence',
          'Expires: 60',
          'Content-Length: 0', '', ''
        ].join('\r\n'))) as SipRequest
        assert.equal(m.nodes[0].gateway.presence.intercept(request, tx, elsewhere, false), true)
      }
      await flooders[0].waitFor(() => answers.size === 10 ? true : undefined, 2000)
      assert.deepEqual([...answers.values()].map(r => r.status), Array(10).fill(200))
    } finally {
      for (const ua of flooders) await ua.close()
      await m.stop()
    }
  })
})
