// The dialog event package (RFC 4235) in in-process gateways on real UDP sockets: a watcher on node
// A sees a call to Bob on node B (from a caller on node C) ring, connect and end; versions grow,
// full then partial state; PUBLISHed dialog-info; authorization; hostile bodies.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import type { TestUa } from '../gateway/fixtures/ua.ts'
import { subscribe, publish, notifies, waitNotify, bodyOf, stateOf, type Dialog, meshFixture } from './fixtures.ts'
import { parseDialogInfo, type DialogInfo } from '../../../sip-gateway/presence/dialog-info.ts'
import type { SipRequest, SipResponse } from '../../../sip-gateway/codec/index.ts'

const config = { presence: { minExpires: 1, decisionWaitMs: 1000, retryMs: 300, publications: { minExpires: 1, defaultExpires: 60 } } }
const ACCEPT = 'application/dialog-info+xml'

async function refreshDialog (ua: TestUa, d: Dialog, expires: number): Promise<SipResponse | undefined> {
  d.cseq++
  return (await subscribe(ua, { to: d.to, uri: d.target, callId: d.callId, fromTag: d.fromTag, toTag: d.toTag, cseq: d.cseq, expires, event: 'dialog', accept: ACCEPT })).response
}

function info (r: SipRequest): DialogInfo { return parseDialogInfo(r.body) }

/** carl's INVITE reaches bob (who answers nothing yet): the request, what bob got, its Record-Routes */
async function invite (carl: TestUa, bob: TestUa, callId: string, fromTag: string): Promise<{ inv: { branch: string }, invite: SipRequest, rr: Array<[string, string]> }> {
  bob.answer = () => undefined
  const inv = carl.build({ method: 'INVITE', uri: bob.aor, callId, cseq: 1, fromTag, headers: [['Contact', carl.contact]] })
  carl.sendRaw(inv.text)
  const got = await bob.waitFor(() => bob.received.find(m => m.method === 'INVITE' && m.headers.get('Call-ID') === callId))
  assert.ok(got !== undefined, 'the INVITE reached the callee')
  return { inv, invite: got, rr: got.headers.getAll('Record-Route').map(r => ['Record-Route', r] as [string, string]) }
}

function dialogInfo (aor: string, dialogs: string, version = 0, state = 'full'): string {
  return `<?xml version="1.0"?><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="${version}" state="${state}" entity="${aor}">${dialogs}</dialog-info>`
}

describe('dialog event package', () => {
  const { mesh: m, ua } = meshFixture(3, config)

  /** bob registered on node `b`, alice on node `a` watching his dialogs, carl on node `c` to call him */
  async function watchedCallee (tag: string, b: number, a: number, c: number): Promise<{ bob: TestUa, alice: TestUa, carl: TestUa, dialog: Dialog }> {
    const bob = await ua(`bob${tag}`, b)
    assert.equal((await bob.register(600))?.status, 200)
    const alice = await ua(`alice${tag}`, a)
    const carl = await ua(`carl${tag}`, c)
    const { dialog } = await subscribe(alice, { to: bob.aor, event: 'dialog', accept: ACCEPT, expires: 120 })
    assert.ok(dialog !== undefined)
    return { bob, alice, carl, dialog }
  }

  test('a watcher on A sees Bob\'s call on B ring, connect and end (full, then partial with the version growing)', async () => {
    const bob = await ua('bobd1', 1)
    assert.equal((await bob.register(600))?.status, 200)
    const alice = await ua('aliced1', 0)
    const carl = await ua('carld1', 2)
    const { response, dialog } = await subscribe(alice, { to: bob.aor, event: 'dialog', accept: ACCEPT, expires: 120 })
    assert.equal(response?.status, 200)
    assert.ok(dialog !== undefined)
    const first = await waitNotify(alice, dialog.callId, r => stateOf(r).startsWith('active'))
    assert.ok(first !== undefined, 'the first NOTIFY')
    assert.equal(first.headers.get('Event'), 'dialog')
    assert.equal(first.headers.get('Content-Type'), ACCEPT)
    const d0 = info(first)
    assert.equal(d0.state, 'full')
    assert.equal(d0.entity, bob.aor)
    assert.equal(d0.dialogs.length, 0)

    const callId = 'busy-lamp-1'
    const { inv, invite: got, rr } = await invite(carl, bob, callId, 'cf1')
    bob.reply(got, 180, rr)
    const early = await waitNotify(alice, dialog.callId, r => info(r).dialogs.some(d => d.state === 'early'), 4000)
    assert.ok(early !== undefined, 'ringing seen on A')
    const e = info(early)
    assert.equal(e.state, 'partial')
    assert.equal(e.dialogs[0].callId, callId)
    assert.equal(e.dialogs[0].direction, 'recipient')
    assert.equal(e.dialogs[0].remote?.identity, carl.aor)

    bob.reply(got, 200, [...rr, ['Contact', bob.contact]])
    assert.equal((await carl.waitFinal(inv.branch))?.status, 200)
    const confirmed = await waitNotify(alice, dialog.callId, r => info(r).dialogs.some(d => d.state === 'confirmed'), 4000)
    assert.ok(confirmed !== undefined, 'answered seen on A')

    // Bob hangs up: his BYE follows the route set through B and C
    bob.answer = () => 200
    carl.answer = () => 200
    const remoteTarget = carl.contact.slice(1, -1)
    const routes = got.headers.getAll('Record-Route').map(r => ['Route', r] as [string, string])
    const bye = await bob.request({ method: 'BYE', uri: remoteTarget, callId, cseq: 1, fromTag: 'uas', to: `<${carl.aor}>;tag=cf1`, from: `<${bob.aor}>`, headers: routes })
    assert.equal(bye?.status, 200)
    const ended = await waitNotify(alice, dialog.callId, r => info(r).dialogs.some(d => d.state === 'terminated'), 4000)
    assert.ok(ended !== undefined, 'the end seen on A')
    // one version per NOTIFY (a retransmission over UDP under load carries the same CSeq)
    const unique = [...new Map(notifies(alice, dialog.callId).map(r => [r.headers.get('CSeq'), r])).values()]
    const versions = unique.map(r => info(r).version)
    for (let i = 1; i < versions.length; i++) assert.equal(versions[i], versions[i - 1] + 1, `versions grow by one: ${versions.join(',')}`)

    // a refresh gets the full state again, with the next version
    const n = notifies(alice, dialog.callId).length
    assert.equal((await refreshDialog(alice, dialog, 60))?.status, 200)
    const again = await waitNotify(alice, dialog.callId, () => true, 3000, n)
    assert.ok(again !== undefined)
    assert.equal(info(again).version, versions[versions.length - 1] + 1)
    assert.equal((await refreshDialog(alice, dialog, 0))?.status, 200)
  })

  test('a failed call (486) ends as terminated with its code; a CANCELled one as cancelled', async () => {
    const { bob, alice, carl, dialog } = await watchedCallee('d2', 1, 0, 2)
    bob.answer = (m) => m.method === 'INVITE' ? 486 : 200
    const r = await carl.request({ method: 'INVITE', uri: bob.aor, callId: 'busy-2', headers: [['Contact', carl.contact]] })
    assert.equal(r?.status, 486)
    const ended = await waitNotify(alice, dialog.callId, r => info(r).dialogs.some(d => d.state === 'terminated'), 4000)
    assert.ok(ended !== undefined)
    const d = info(ended).dialogs.find(x => x.callId === 'busy-2')
    assert.equal(d?.code, 486)
    assert.equal(d?.event, 'rejected')

    bob.answer = (m) => m.method === 'CANCEL' ? 200 : undefined
    const inv = carl.build({ method: 'INVITE', uri: bob.aor, callId: 'busy-3', cseq: 1, fromTag: 'cf3', headers: [['Contact', carl.contact]] })
    carl.sendRaw(inv.text)
    const invite = await bob.waitFor(() => bob.received.find(m => m.method === 'INVITE' && m.headers.get('Call-ID') === 'busy-3'))
    assert.ok(invite !== undefined)
    bob.reply(invite, 180)
    assert.ok(await waitNotify(alice, dialog.callId, r => info(r).dialogs.some(d => d.callId === 'busy-3' && d.state === 'early'), 4000))
    carl.sendRaw(carl.build({ method: 'CANCEL', uri: bob.aor, callId: 'busy-3', cseq: 1, fromTag: 'cf3', branch: inv.branch }).text)
    assert.ok(await bob.waitFor(() => bob.received.find(m => m.method === 'CANCEL' && m.headers.get('Call-ID') === 'busy-3')))
    bob.reply(invite, 487)
    assert.ok(await carl.waitFor(() => carl.responses(inv.branch).find(r => r.status === 487)), 'the INVITE ended 487')
    const cancelled = await waitNotify(alice, dialog.callId, r => info(r).dialogs.some(d => d.callId === 'busy-3' && d.state === 'terminated'), 4000)
    assert.equal(cancelled !== undefined ? info(cancelled).dialogs.find(d => d.callId === 'busy-3')?.event : undefined, 'cancelled')
  })

  test('PUBLISHed dialog-info reaches a watcher on another node; the dialog package is listed in Allow-Events', async () => {
    const bob = await ua('bobd3', 1)
    assert.equal((await bob.register(600))?.status, 200)
    const alice = await ua('aliced3', 0)
    const { dialog } = await subscribe(alice, { to: bob.aor, event: 'dialog', accept: ACCEPT, expires: 120 })
    assert.ok(dialog !== undefined)
    const body = dialogInfo(bob.aor, '<dialog id="d1" direction="initiator"><state>confirmed</state></dialog>')
    const pub = await publish(bob, { event: 'dialog', body, contentType: ACCEPT, expires: 60 })
    assert.equal(pub?.status, 200)
    assert.ok(await waitNotify(alice, dialog.callId, r => info(r).dialogs.some(d => d.id === 'd1' && d.state === 'confirmed'), 4000))
    const bad = await subscribe(alice, { to: bob.aor, event: 'no-such-package' })
    assert.equal(bad.response?.status, 489)
    assert.match(bad.response?.headers.getAll('Allow-Events').join(', ') ?? '', /dialog/)
    assert.equal((await subscribe(alice, { to: bob.aor, event: 'dialog', accept: 'application/pidf+xml' })).response?.status, 406)
  })

  test('authorization as for presence: a blocked watcher gets 403, a polite-blocked one no dialogs', async () => {
    const bob = await ua('bobd4', 1)
    assert.equal((await bob.register(600))?.status, 200)
    await m().nodes[1].gateway.presence.setRules(bob.aor, { watchers: { 'sip:maldd4@example.com': 'block', 'sip:patd4@example.com': 'polite-block' } })
    const mal = await ua('maldd4', 0)
    assert.equal((await subscribe(mal, { to: bob.aor, event: 'dialog', accept: ACCEPT })).response?.status, 403)
    const pat = await ua('patd4', 0)
    const { dialog } = await subscribe(pat, { to: bob.aor, event: 'dialog', accept: ACCEPT, expires: 60 })
    assert.ok(dialog !== undefined)
    const body = dialogInfo(bob.aor, '<dialog id="secret"><state>confirmed</state></dialog>')
    assert.equal((await publish(bob, { event: 'dialog', body, contentType: ACCEPT, expires: 60 }))?.status, 200)
    await new Promise(resolve => setTimeout(resolve, 300))
    for (const n of notifies(pat, dialog.callId)) assert.doesNotMatch(bodyOf(n), /secret/)
  })

  test('hostile dialog-info PUBLISH bodies: 400 (or 415), nothing stored, the node still serves', async () => {
    const bob = await ua('bobd5', 1)
    assert.equal((await bob.register(600))?.status, 200)
    const stored = m().nodes[1].gateway.presence.stats.publications
    const bodies = [
      '<dialog-info',
      '<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="sip:x@example.com">&b;</dialog-info>',
      dialogInfo(bob.aor, Array.from({ length: 10_000 }, (_, i) => `<dialog id="${i}"><state>early</state></dialog>`).join('')).slice(0, 60_000),
      dialogInfo(bob.aor, '<dialog id="x"><state>ringing</state></dialog>'),
      dialogInfo(bob.aor, '<dialog><state>early</state></dialog>'),
      '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="-1" state="full" entity="sip:x@example.com"/>',
      '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:x@example.com"/>'
    ]
    for (const body of bodies) {
      const r = await publish(bob, { event: 'dialog', body, contentType: ACCEPT, expires: 60 })
      assert.ok(r !== undefined && r.status >= 400 && r.status < 500, `${r?.status} for ${body.slice(0, 60)}`)
    }
    assert.equal((await publish(bob, { event: 'dialog', body: '<x/>', contentType: 'application/pidf+xml', expires: 60 }))?.status, 415)
    assert.equal(m().nodes[1].gateway.presence.stats.publications, stored)
    assert.equal((await publish(bob, { event: 'dialog', body: dialogInfo(bob.aor, ''), contentType: ACCEPT, expires: 60 }))?.status, 200)
  })

  test('partial dialog-info PUBLISH (RFC 4235 4.1): merged by dialog id, terminated ones removed; version gaps 412; no prior full 400', async () => {
    const bob = await ua('bobd6', 1)
    assert.equal((await bob.register(600))?.status, 200)
    const alice = await ua('aliced6', 0)
    const { dialog } = await subscribe(alice, { to: bob.aor, event: 'dialog', accept: ACCEPT, expires: 120 })
    assert.ok(dialog !== undefined)
    const pub = async (body: string, etag?: string): Promise<SipResponse | undefined> => await publish(bob, { event: 'dialog', body, contentType: ACCEPT, expires: 60, etag })
    // a partial document first: nothing to merge it into
    assert.equal((await pub(dialogInfo(bob.aor, '<dialog id="p1"><state>early</state></dialog>', 0, 'partial')))?.status, 400)
    const full = await pub(dialogInfo(bob.aor, '<dialog id="d1"><state>confirmed</state></dialog><dialog id="d2"><state>early</state></dialog>', 4))
    assert.equal(full?.status, 200)
    let etag = full?.headers.get('SIP-ETag') ?? ''
    assert.ok(await waitNotify(alice, dialog.callId, r => info(r).dialogs.some(d => d.id === 'd2'), 4000))
    // version 5 follows 4: d1 ends (removed), d2 connects, d3 rings; the watcher's partial NOTIFY says so
    const partial = await pub(dialogInfo(bob.aor, '<dialog id="d1"><state event="remote-bye">terminated</state></dialog><dialog id="d2"><state>confirmed</state></dialog><dialog id="d3"><state>early</state></dialog>', 5, 'partial'), etag)
    assert.equal(partial?.status, 200)
    etag = partial?.headers.get('SIP-ETag') ?? ''
    const merged = await waitNotify(alice, dialog.callId, r => info(r).dialogs.some(d => d.id === 'd3'), 4000)
    assert.ok(merged !== undefined)
    const byId = new Map(info(merged).dialogs.map(d => [d.id, d.state]))
    assert.deepEqual([byId.get('d1'), byId.get('d2'), byId.get('d3')], ['terminated', 'confirmed', 'early'])
    // the stored document is the merge: a new watcher gets d2 and d3 only, in full state
    const carol = await ua('carold6', 2)
    const c = await subscribe(carol, { to: bob.aor, event: 'dialog', accept: ACCEPT, expires: 60 })
    const first = await waitNotify(carol, c.dialog!.callId, r => info(r).dialogs.length > 0, 4000)
    assert.equal(info(first!).state, 'full')
    assert.deepEqual(info(first!).dialogs.map(d => `${d.id}:${d.state}`).sort(), ['d2:confirmed', 'd3:early'])
    // version rules: a gap (7 after 5), a repeat (5) and an older one (2) are refused 412, nothing changes
    for (const v of [7, 5, 2]) {
      assert.equal((await pub(dialogInfo(bob.aor, '<dialog id="d9"><state>early</state></dialog>', v, 'partial'), etag))?.status, 412, `version ${v}`)
    }
    // an unknown entity tag: 412 (RFC 3903 6 step 4)
    assert.equal((await pub(dialogInfo(bob.aor, '<dialog id="d9"><state>early</state></dialog>', 6, 'partial'), 'no-such-tag'))?.status, 412)
    // hostile partial documents: 400, the publication keeps its state
    const hostile = [
      dialogInfo(bob.aor, '<dialog id="x"><state>early</state></dialog><dialog id="x"><state>confirmed</state></dialog>', 6, 'partial'),
      '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="6" state="partial" entity="sip:x@example.com">&a;</dialog-info>',
      dialogInfo(bob.aor, '<dialog id="y"><state>ringing</state></dialog>', 6, 'partial'),
      dialogInfo(bob.aor, '<dialog id="y"><state>early</state></dialog>', 6, 'half')
    ]
    for (const body of hostile) assert.equal((await pub(body, etag))?.status, 400, body.slice(0, 80))
    // a partial that would grow the document past 256 dialogs, in two steps
    const many = (from: number, n: number): string => Array.from({ length: n }, (_, i) => `<dialog id="m${from + i}"><state>early</state></dialog>`).join('')
    const p6 = await pub(dialogInfo(bob.aor, many(0, 200), 6, 'partial'), etag)
    assert.equal(p6?.status, 200)
    etag = p6?.headers.get('SIP-ETag') ?? ''
    assert.equal((await pub(dialogInfo(bob.aor, many(200, 100), 7, 'partial'), etag))?.status, 400)
    // the next version still merges; a full document (modify) replaces everything
    const p7 = await pub(dialogInfo(bob.aor, '<dialog id="d2"><state>terminated</state></dialog>', 7, 'partial'), etag)
    assert.equal(p7?.status, 200)
    const reset = await pub(dialogInfo(bob.aor, '<dialog id="z"><state>trying</state></dialog>', 0), p7?.headers.get('SIP-ETag') ?? '')
    assert.equal(reset?.status, 200)
    const dave = await ua('daved6', 0)
    const d = await subscribe(dave, { to: bob.aor, event: 'dialog', accept: ACCEPT, expires: 60 })
    const now = await waitNotify(dave, d.dialog!.callId, r => info(r).dialogs.length > 0, 4000)
    assert.deepEqual(info(now!).dialogs.map(x => x.id), ['z'])
  })

  test('a callee who moves to another node mid-call: the new owner serves the call still up, then its end', async () => {
    const { bob, alice, carl, dialog } = await watchedCallee('d7', 1, 2, 2)
    const callId = 'moving-call-7'
    const { inv, invite: got, rr } = await invite(carl, bob, callId, 'cf7')
    bob.reply(got, 200, [...rr, ['Contact', bob.contact]])
    assert.equal((await carl.waitFinal(inv.branch))?.status, 200)
    assert.ok(await waitNotify(alice, dialog.callId, r => info(r).dialogs.some(d => d.callId === callId && d.state === 'confirmed'), 4000))

    // bob registers on node 0 (his desk phone moved): node 0 takes his AoR over mid-call
    const n = notifies(alice, dialog.callId).length
    const moved = await ua('bobd7', 0)
    assert.equal((await moved.register(600))?.status, 200)
    const stateOfCall = (r: SipRequest): string | undefined => info(r).dialogs.find(d => d.callId === callId)?.state
    // node 0 (the owner now) serves the call confirmed, handed over by node 1 which proxied it: a
    // new watcher (through node 2's back-end subscription to node 0) gets it in its full state,
    // and alice's subscription never saw the call disappear
    const dave = await ua('daved7', 2)
    const d = await subscribe(dave, { to: bob.aor, event: 'dialog', accept: ACCEPT, expires: 120 })
    assert.ok(d.dialog !== undefined)
    const full = await waitNotify(dave, d.dialog.callId, r => info(r).state === 'full', 4000)
    assert.equal(stateOfCall(full!), 'confirmed', 'the new owner shows the call up')
    for (const r of notifies(alice, dialog.callId).slice(n)) assert.equal(stateOfCall(r), 'confirmed', `alice after the move: ${info(r).state}`)

    // bob hangs up from the phone in the call: the BYE crosses node 1 (route set), not node 0
    bob.answer = () => 200
    carl.answer = () => 200
    const routes = got.headers.getAll('Record-Route').map(r => ['Route', r] as [string, string])
    const bye = await bob.request({ method: 'BYE', uri: carl.contact.slice(1, -1), callId, cseq: 1, fromTag: 'uas', to: `<${carl.aor}>;tag=cf7`, from: `<${bob.aor}>`, headers: routes })
    assert.equal(bye?.status, 200)
    assert.ok(await waitNotify(alice, dialog.callId, r => stateOfCall(r) === 'terminated', 4000), 'the end, relayed by node 1 to node 0')
    assert.ok(await waitNotify(dave, d.dialog.callId, r => stateOfCall(r) === 'terminated', 4000), 'the end, to the watcher that came after the move')
    process.stdout.write(`# after the move: ${notifies(alice, dialog.callId).slice(n).map(r => `${info(r).state}:${stateOfCall(r) ?? '-'}`).join(', ')}\n`)
  })
})
