// Resource list subscriptions (RFC 4662) in in-process gateways on real UDP sockets: a list whose
// members are registered on other nodes (and one registered nowhere) is served as one
// subscription with multipart/related NOTIFYs, full state first, then partial state as a member
// publishes; the SUBSCRIBE requirements (421, 406), personal lists (403), and list changes.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { subscribe, publish, pidf, notifies, waitNotify, stateOf, meshFixture, refresh } from './fixtures.ts'
import { parseXmlRoot, type XmlElement } from '../../../sip-gateway/presence/pidf.ts'
import type { SipRequest, SipResponse } from '../../../sip-gateway/codec/index.ts'
import type { TestUa } from '../gateway/fixtures/ua.ts'
import { parseMultipart } from './lists/multipart.ts'

const config = { presence: { minExpires: 1, decisionWaitMs: 1000, retryMs: 300, lists: { throttleMs: 300 } } }
const ACCEPT = 'multipart/related, application/rlmi+xml, application/pidf+xml'
const EVENTLIST: Array<[string, string]> = [['Supported', 'eventlist']]

interface Rlmi { version: number, fullState: boolean, resources: Map<string, { state: string, reason?: string, body?: string }> }
const attr = (el: XmlElement, n: string): string | undefined => el.attrs.find(a => a.name === n)?.value
const kids = (el: XmlElement, n: string): XmlElement[] => el.children.filter((c): c is XmlElement => typeof c !== 'string' && c.name === n)

function rlmi (r: SipRequest): Rlmi {
  const ct = r.headers.get('Content-Type') ?? ''
  assert.match(ct, /^multipart\/related;type="application\/rlmi\+xml";start="<[^>]+>";boundary=/u)
  const parts = parseMultipart(ct, r.body)
  const root = parseXmlRoot(parts[0].body)
  const byCid = new Map(parts.slice(1).map(p => [p.headers.get('content-id') ?? '', p.body.toString()]))
  const resources = new Map<string, { state: string, reason?: string, body?: string }>()
  for (const res of kids(root, 'resource')) {
    const i = kids(res, 'instance')[0]
    const cid = attr(i, 'cid')
    resources.set(attr(res, 'uri') ?? '', { state: attr(i, 'state') ?? '', reason: attr(i, 'reason'), body: cid === undefined ? undefined : byCid.get(`<${cid}>`) })
  }
  return { version: Number(attr(root, 'version')), fullState: attr(root, 'fullState') === 'true', resources }
}

/** an ad hoc list SUBSCRIBE (RFC 5367): the members in a resource-lists body */
async function adHoc (u: TestUa, body: string, o: { contentType?: string, require?: string } = {}): Promise<{ response?: SipResponse, callId: string }> {
  const callId = `adhoc-${Math.random().toString(36).slice(2)}`
  const headers: Array<[string, string]> = [['Contact', u.contact], ['Event', 'presence'], ['Expires', '120'], ['Accept', ACCEPT], ['Supported', 'eventlist'],
    ['Require', o.require ?? 'recipient-list-subscribe'], ['Content-Disposition', 'recipient-list']]
  const { text, branch } = u.build({ method: 'SUBSCRIBE', uri: 'sip:rls@example.com', callId, headers })
  u.sendRaw(text.replace('Content-Length: 0\r\n\r\n', `Content-Type: ${o.contentType ?? 'application/resource-lists+xml'}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`))
  return { response: await u.waitFinal(branch, 4000), callId }
}

const RL = (inner: string): string => `<?xml version="1.0" encoding="UTF-8"?><resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list>${inner}</list></resource-lists>`

describe('resource list subscriptions', () => {
  const { mesh: m, ua } = meshFixture(3, config)

  test('members on other nodes and nowhere: full state, then partial NOTIFYs as a member publishes', async () => {
    const bob = await ua('bobl1', 1)
    const carol = await ua('caroll1', 2)
    assert.equal((await bob.register(600))?.status, 200)
    assert.equal((await carol.register(600))?.status, 200)
    const list = 'sip:friends-l1@example.com'
    await m().nodes[0].gateway.presence.putList(list, { members: [bob.aor, carol.aor, 'sip:nobody-l1@example.com'] })
    const alice = await ua('alicel1', 0)

    const { response, dialog } = await subscribe(alice, { to: list, accept: ACCEPT, expires: 120, headers: EVENTLIST })
    assert.equal(response?.status, 200)
    assert.match(response?.headers.get('Require') ?? '', /eventlist/u)
    assert.ok(dialog !== undefined)
    const first = await waitNotify(alice, dialog.callId, () => true, 4000)
    assert.ok(first !== undefined, 'a NOTIFY')
    assert.equal(first.headers.get('Event'), 'presence')
    assert.match(first.headers.get('Require') ?? '', /eventlist/u)
    const full = rlmi(first)
    assert.equal(full.fullState, true)
    assert.equal(full.version, 0)
    assert.deepEqual([...full.resources.keys()], [bob.aor, carol.aor, 'sip:nobody-l1@example.com'])
    assert.equal(full.resources.get(bob.aor)?.state, 'active')
    assert.match(full.resources.get(bob.aor)?.body ?? '', /<basic>open<\/basic>/u)
    assert.equal(full.resources.get(carol.aor)?.state, 'active')
    // registered nowhere: held, shown with the neutral (closed) document
    assert.match(full.resources.get('sip:nobody-l1@example.com')?.body ?? '', /<basic>closed<\/basic>/u)
    // one back-end subscription per member at the list's node, none for the member registered nowhere
    assert.equal(m().nodes[0].gateway.presence.backendsOf(bob.aor).holding, 1)
    assert.equal(m().nodes[0].gateway.presence.backendsOf(carol.aor).holding, 1)

    // carol publishes: a partial NOTIFY with carol only, version + 1
    assert.equal((await publish(carol, { body: pidf(carol.aor, 'open', 'in a meeting') }))?.status, 200)
    const partial = await waitNotify(alice, dialog.callId, r => rlmi(r).resources.get(carol.aor)?.body?.includes('in a meeting') === true, 4000)
    assert.ok(partial !== undefined, 'carol\'s change notified')
    const p = rlmi(partial)
    assert.equal(p.fullState, false)
    assert.ok(p.version >= 1)
    assert.deepEqual([...p.resources.keys()], [carol.aor])

    // a burst of changes is throttled (here 300 ms between NOTIFYs); the last state arrives
    const burst = notifies(alice, dialog.callId).length
    const started = Date.now()
    for (let i = 0; i < 6; i++) assert.equal((await publish(carol, { body: pidf(carol.aor, 'open', `step ${i}`) }))?.status, 200)
    const last = await waitNotify(alice, dialog.callId, r => rlmi(r).resources.get(carol.aor)?.body?.includes('step 5') === true, 4000, burst)
    assert.ok(last !== undefined, 'the last of the burst notified')
    // NOTIFY transactions, not datagrams: on a loaded machine a NOTIFY whose 200 came late is
    // retransmitted (same CSeq), and the throttle bounds the former
    const sent = new Set(notifies(alice, dialog.callId).slice(burst).map(r => r.headers.get('CSeq'))).size
    assert.ok(sent <= Math.ceil((Date.now() - started) / 300) + 1, `${sent} NOTIFYs in ${Date.now() - started} ms`)

    // bob moves to node 2 (registers there; his node-1 binding ends): his changes still arrive
    const bob2 = await ua('bobl1', 2)
    assert.equal((await bob2.register(600))?.status, 200)
    assert.equal((await bob.register(0))?.status, 200)
    await new Promise(resolve => setTimeout(resolve, 300))
    const moved = notifies(alice, dialog.callId).length
    assert.equal((await publish(bob2, { body: pidf(bob.aor, 'open', 'moved to n2') }))?.status, 200)
    assert.ok(await waitNotify(alice, dialog.callId, r => rlmi(r).resources.get(bob.aor)?.body?.includes('moved to n2') === true, 5000, moved), 'the moved member keeps updating')

    // an ordinary watcher of bob on the list's node shares the back-end subscription
    const dave = await ua('davel1', 0)
    assert.equal((await subscribe(dave, { to: bob.aor, expires: 120 })).response?.status, 200)
    assert.equal(m().nodes[0].gateway.presence.backendsOf(bob.aor).holding, 1)

    // a refresh brings full state again; unsubscribing ends it
    const before = notifies(alice, dialog.callId).length
    assert.equal((await refresh(alice, dialog, 120))?.status, 200)
    const again = await waitNotify(alice, dialog.callId, r => rlmi(r).fullState, 4000, before)
    assert.ok(again !== undefined, 'full state after a refresh')
    assert.equal(rlmi(again).resources.size, 3)
    const n = notifies(alice, dialog.callId).length
    assert.equal((await refresh(alice, dialog, 0))?.status, 200)
    assert.ok(await waitNotify(alice, dialog.callId, r => stateOf(r).startsWith('terminated'), 4000, n))
  })

  test('SUBSCRIBE requirements: 421 without eventlist, 406 without rlmi in Accept, 403 for a personal list of someone else', async () => {
    const list = 'sip:team-l2@example.com'
    await m().nodes[1].gateway.presence.putList(list, { members: ['sip:x-l2@example.com'], owner: 'sip:owner-l2@example.com' })
    const owner = await ua('owner-l2', 1)
    const other = await ua('other-l2', 1)
    const r421 = (await subscribe(owner, { to: list, accept: ACCEPT, expires: 60 })).response
    assert.equal(r421?.status, 421)
    assert.equal(r421?.headers.get('Require'), 'eventlist')
    assert.equal((await subscribe(owner, { to: list, accept: 'application/pidf+xml', expires: 60, headers: EVENTLIST })).response?.status, 406)
    assert.equal((await subscribe(other, { to: list, accept: ACCEPT, expires: 60, headers: EVENTLIST })).response?.status, 403)
    assert.equal((await subscribe(owner, { to: list, accept: ACCEPT, expires: 60, headers: EVENTLIST, event: 'presence.winfo' })).response?.status, 489)
    const ok = await subscribe(owner, { to: list, accept: ACCEPT, expires: 60, headers: EVENTLIST })
    assert.equal(ok.response?.status, 200)
    assert.ok(ok.dialog !== undefined)
    assert.ok(await waitNotify(owner, ok.dialog.callId, r => rlmi(r).fullState, 4000))
    // the list is replaced: the subscription follows the edit (RFC 4662 5.2 partial state): the
    // member added appears, the one removed is told terminated (noresource) once, then forgotten
    await m().nodes[1].gateway.presence.putList(list, { members: ['sip:y-l2@example.com'], owner: 'sip:owner-l2@example.com' })
    const edit = await waitNotify(owner, ok.dialog.callId, r => !rlmi(r).fullState && rlmi(r).resources.has('sip:y-l2@example.com'), 4000)
    assert.ok(edit !== undefined)
    assert.match(stateOf(edit), /^active/u)
    const removed = rlmi(edit).resources.get('sip:x-l2@example.com')
    assert.deepEqual([removed?.state, removed?.reason], ['terminated', 'noresource'])
    const refreshed = await refresh(owner, ok.dialog, 60)
    assert.equal(refreshed?.status, 200)
    const full = await waitNotify(owner, ok.dialog.callId, r => rlmi(r).fullState && rlmi(r).version > rlmi(edit).version, 4000)
    assert.deepEqual([...rlmi(full!).resources.keys()], ['sip:y-l2@example.com'])
    // and a deleted list ends its subscriptions with noresource (RFC 6665 4.2.2)
    assert.equal(await m().nodes[1].gateway.presence.deleteList(list), true)
    assert.ok(await waitNotify(owner, ok.dialog.callId, r => stateOf(r).startsWith('terminated') && stateOf(r).includes('noresource'), 4000))
  })

  test('a list is served through any node: fetched from its home, which a PUT elsewhere moves', async () => {
    const bob = await ua('bobl3', 0)
    assert.equal((await bob.register(600))?.status, 200)
    const list = 'sip:group-l3@example.com'
    const put = await m().nodes[1].gateway.presence.putList(list, { members: [bob.aor, 'sip:zed-l3@example.com'] })
    assert.equal(put.home, m().nodes[1].gateway.presence.nodeId)
    // a SUBSCRIBE through node 2, which holds no list: it asks node 1 and serves the list itself
    const erin = await ua('erinl3', 2)
    const { response, dialog } = await subscribe(erin, { to: list, accept: ACCEPT, expires: 120, headers: EVENTLIST })
    assert.equal(response?.status, 200)
    assert.ok(dialog !== undefined)
    const first = await waitNotify(erin, dialog.callId, r => rlmi(r).fullState, 4000)
    assert.ok(first !== undefined)
    assert.deepEqual([...rlmi(first).resources.keys()], [bob.aor, 'sip:zed-l3@example.com'])
    assert.match(rlmi(first).resources.get(bob.aor)?.body ?? '', /<basic>open<\/basic>/u)
    assert.equal((await m().nodes[2].gateway.presence.getList(list))?.home, m().nodes[1].gateway.presence.nodeId)
    // bob publishes at node 0: erin (node 2) gets a partial NOTIFY through node 2's back-end subscription
    assert.equal((await publish(bob, { body: pidf(bob.aor, 'open', 'coffee') }))?.status, 200)
    assert.ok(await waitNotify(erin, dialog.callId, r => rlmi(r).resources.get(bob.aor)?.body?.includes('coffee') === true, 4000))
    // a PUT at node 0 moves the home: node 1 drops its copy
    await m().nodes[0].gateway.presence.putList(list, { members: [bob.aor] })
    await erin.waitFor(() => m().nodes[1].gateway.presence.lists.has(list) ? undefined : true, 4000)
    assert.equal(m().nodes[1].gateway.presence.lists.has(list), false)
    assert.equal((await m().nodes[0].gateway.presence.getList(list))?.members.length, 1)
    // an eventlist SUBSCRIBE to a user (no list anywhere) is an ordinary subscription
    const u = await subscribe(erin, { to: bob.aor, expires: 60, headers: EVENTLIST })
    assert.equal(u.response?.status, 200)
    assert.ok(await waitNotify(erin, u.dialog!.callId, r => r.headers.get('Content-Type') === 'application/pidf+xml', 4000))
    // the mesh's list exchange is not open to user agents
    assert.equal((await publish(erin, { event: 'sipmesh-list' }))?.status, 403)
    // hostile and oversized lists at the API
    await assert.rejects(m().nodes[0].gateway.presence.putList('sip:big-l3@example.com', { members: Array.from({ length: 10_000 }, (_, i) => `sip:u${i}@example.com`) }), (e: Error & { status?: number }) => e.status === 413)
    await assert.rejects(m().nodes[0].gateway.presence.putList('sip:nest-l3@example.com', { members: [list] }), (e: Error & { code?: string }) => e.code === 'nested_list')
    await assert.rejects(m().nodes[0].gateway.presence.putList(bob.aor, { members: [] }), (e: Error & { status?: number }) => e.status === 409)
    // erin's subscription at node 2 (a copy from node 1) follows the edit made at node 0 promptly:
    // node 1 tells node 2 where the list went, node 2 fetches it from node 0
    const t0 = Date.now()
    const moved = await waitNotify(erin, dialog.callId, r => rlmi(r).resources.get('sip:zed-l3@example.com')?.state === 'terminated', 4000)
    assert.ok(moved !== undefined, 'the removal reached the subscription at node 2')
    assert.ok(Date.now() - t0 < 2500, `in ${Date.now() - t0} ms`)
    assert.equal(rlmi(moved).resources.get('sip:zed-l3@example.com')?.reason, 'noresource')
    // node 2 is now node 0's holder: an edit there is pushed (a member added appears with state)
    await m().nodes[0].gateway.presence.putList(list, { members: [bob.aor, 'sip:yan-l3@example.com'] })
    assert.ok(await waitNotify(erin, dialog.callId, r => rlmi(r).resources.has('sip:yan-l3@example.com'), 2500), 'the member added')
    assert.deepEqual((await m().nodes[2].gateway.presence.getList(list))?.members, [bob.aor, 'sip:yan-l3@example.com'], 'node 2 serves new subscriptions the new list at once')
    // deleted at its home: the subscription at node 2 ends (noresource)
    assert.equal(await m().nodes[0].gateway.presence.deleteList(list), true)
    assert.ok(await waitNotify(erin, dialog.callId, r => stateOf(r).startsWith('terminated') && stateOf(r).includes('noresource'), 2500), 'ended by the deletion')
    assert.equal(await m().nodes[2].gateway.presence.getList(list), undefined, 'no copy served after the deletion')
  })

  test('ad hoc lists (RFC 5367): the members in the SUBSCRIBE body; hostile bodies refused', async () => {
    const bob = await ua('bobl4', 1)
    assert.equal((await bob.register(600))?.status, 200)
    const frank = await ua('frankl4', 0)
    const ok = await adHoc(frank, RL(`<entry uri="${bob.aor}"/><list name="more"><entry uri="sip:gone-l4@example.com"/></list>`))
    assert.equal(ok.response?.status, 200)
    const n = await waitNotify(frank, ok.callId, r => rlmi(r).fullState, 4000)
    assert.ok(n !== undefined)
    assert.deepEqual([...rlmi(n).resources.keys()], [bob.aor, 'sip:gone-l4@example.com'])
    assert.match(rlmi(n).resources.get(bob.aor)?.body ?? '', /<basic>open<\/basic>/u)

    const bomb = `<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>${RL('<entry uri="sip:&c;@example.com"/>')}`
    assert.equal((await adHoc(frank, bomb)).response?.status, 400)
    assert.equal((await adHoc(frank, RL('<entry uri="sip:a@example.com">'))).response?.status, 400)
    assert.equal((await adHoc(frank, RL('<entry-ref ref="lists/x"/>'))).response?.status, 400)
    assert.equal((await adHoc(frank, RL('<external anchor="http://127.0.0.1:1/x"/>'))).response?.status, 400)
    // 10,000 entries: bigger than a UDP datagram, so over TCP it would be refused by size; here 1,100 short ones
    assert.equal((await adHoc(frank, RL(Array.from({ length: 1100 }, (_, i) => `<entry uri="sip:${i}@x"/>`).join('')))).response?.status, 413)
    assert.equal((await adHoc(frank, RL(''), { contentType: 'text/plain' })).response?.status, 415)
    assert.equal((await adHoc(frank, 'not xml at all')).response?.status, 400)
    // the gateway is still serving
    assert.equal((await adHoc(frank, RL(`<entry uri="${bob.aor}"/>`))).response?.status, 200)
  })
})
