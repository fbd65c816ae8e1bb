// presence.winfo (RFC 3857/3858) in in-process gateways on real UDP sockets: the presentity sees
// every watcher of her presence across the mesh with its status; nobody else may subscribe; a
// rules change made at a third node changes a watcher's status; a watcher that leaves on another
// node is shown terminated.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { subscribe, refresh, notifies, waitNotify, stateOf, meshFixture } from './fixtures.ts'
import { parseWatcherInfo, type Watcher } from '../../../sip-gateway/presence/watcherinfo.ts'
import type { SipRequest } from '../../../sip-gateway/codec/index.ts'

const config = { presence: { minExpires: 1, decisionWaitMs: 1000, retryMs: 300 } }
const ACCEPT = 'application/watcherinfo+xml'

function watchers (r: SipRequest): Watcher[] { return parseWatcherInfo(r.body).lists.flatMap(l => l.watchers) }
function statusOf (r: SipRequest, aor: string): string | undefined {
  const w = watchers(r).find(x => x.uri === aor)
  return w === undefined ? undefined : `${w.status}/${w.event}`
}

describe('presence.winfo', () => {
  const { mesh: m, ua } = meshFixture(3, config)

  test('the presentity sees watchers on every node with their status; rules changes and departures are notified', async () => {
    const bob = await ua('bobw1', 1)
    assert.equal((await bob.register(600))?.status, 200)
    await m().nodes[1].gateway.presence.setRules(bob.aor, { watchers: { 'sip:patw1@example.com': 'polite-block' } })
    const alice = await ua('alicew1', 0)
    const carol = await ua('carolw1', 1)
    const pat = await ua('patw1', 2)
    const dave = await ua('davew1', 2)
    const a = await subscribe(alice, { to: bob.aor, expires: 120 })
    assert.equal(a.response?.status, 200)
    assert.equal((await subscribe(carol, { to: bob.aor, expires: 120 })).response?.status, 200)
    assert.equal((await subscribe(pat, { to: bob.aor, expires: 120 })).response?.status, 200)
    const d = await subscribe(dave, { to: bob.aor, expires: 120 })
    assert.ok(d.dialog !== undefined)

    const { response, dialog } = await subscribe(bob, { to: bob.aor, event: 'presence.winfo', accept: ACCEPT, expires: 120 })
    assert.equal(response?.status, 200)
    assert.ok(dialog !== undefined)
    const first = await waitNotify(bob, dialog.callId, r => watchers(r).length >= 4, 4000)
    assert.ok(first !== undefined, 'every watcher listed')
    assert.equal(first.headers.get('Content-Type'), ACCEPT)
    assert.equal(parseWatcherInfo(first.body).state, 'full')
    assert.equal(statusOf(first, alice.aor), 'active/subscribe')
    assert.equal(statusOf(first, carol.aor), 'active/subscribe')
    assert.equal(statusOf(first, pat.aor), 'pending/subscribe')
    assert.equal(statusOf(first, dave.aor), 'active/subscribe')

    // the admin API of a third node blocks alice: her status becomes terminated, her subscription ends
    const put = await m().nodes[2].gateway.presence.setRules(bob.aor, { watchers: { 'sip:patw1@example.com': 'polite-block', 'sip:alicew1@example.com': 'block' } })
    assert.equal(put.delivered, true)
    const blocked = await waitNotify(bob, dialog.callId, r => statusOf(r, alice.aor) === 'terminated/rejected', 4000)
    assert.ok(blocked !== undefined, 'alice shown rejected')
    assert.equal(parseWatcherInfo(blocked.body).state, 'partial')
    assert.ok(await waitNotify(alice, a.dialog!.callId, r => stateOf(r).startsWith('terminated'), 4000), 'alice\'s subscription ended')

    // pat approved: pending -> active
    await m().nodes[1].gateway.presence.setRules(bob.aor, { watchers: { 'sip:alicew1@example.com': 'block' } })
    assert.ok(await waitNotify(bob, dialog.callId, r => statusOf(r, pat.aor) === 'active/subscribe', 4000), 'pat shown active')

    // dave (node C) unsubscribes: the owner is told, bob sees him go
    assert.equal((await refresh(dave, d.dialog, 0))?.status, 200)
    assert.ok(await waitNotify(bob, dialog.callId, r => statusOf(r, dave.aor) === 'terminated/timeout', 4000), 'dave shown gone')
    const versions = [...new Map(notifies(bob, dialog.callId).map(r => [r.headers.get('CSeq'), parseWatcherInfo(r.body).version])).values()]
    for (let i = 1; i < versions.length; i++) assert.equal(versions[i], versions[i - 1] + 1)
  })

  test('only the presentity may subscribe; from another node she may, and sees the same list', async () => {
    const bob = await ua('bobw2', 1)
    assert.equal((await bob.register(600))?.status, 200)
    const mal = await ua('malw2', 0)
    assert.equal((await subscribe(mal, { to: bob.aor, event: 'presence.winfo', accept: ACCEPT })).response?.status, 403)
    const mal1 = await ua('malw2b', 1)
    assert.equal((await subscribe(mal1, { to: bob.aor, event: 'presence.winfo', accept: ACCEPT })).response?.status, 403)
    const alice = await ua('alicew2', 2)
    assert.equal((await subscribe(alice, { to: bob.aor, expires: 60 })).response?.status, 200)
    // bob's second device talks to node A, where he is not registered
    const bobAway = await ua('bobw2', 0)
    const { response, dialog } = await subscribe(bobAway, { to: bob.aor, event: 'presence.winfo', accept: ACCEPT, expires: 60 })
    assert.equal(response?.status, 200)
    assert.ok(dialog !== undefined)
    assert.ok(await waitNotify(bobAway, dialog.callId, r => statusOf(r, alice.aor) === 'active/subscribe', 4000))
    assert.equal((await subscribe(bobAway, { to: bob.aor, event: 'presence.winfo', accept: 'application/pidf+xml' })).response?.status, 406)
  })

  test('watchers refused outright (blocked at the node that took them, here or elsewhere) are listed terminated/rejected (RFC 3857 3.2)', async () => {
    const bob = await ua('bobw5', 1)
    assert.equal((await bob.register(600))?.status, 200)
    await m().nodes[1].gateway.presence.setRules(bob.aor, { watchers: { 'sip:malw5@example.com': 'block', 'sip:monw5@example.com': 'block' } })
    const { dialog } = await subscribe(bob, { to: bob.aor, event: 'presence.winfo', accept: ACCEPT, expires: 120 })
    assert.ok(dialog !== undefined)
    assert.ok(await waitNotify(bob, dialog.callId, () => true, 4000))
    // mal subscribes through the owner node itself, mon through another node: both 403
    const mal = await ua('malw5', 1)
    const mon = await ua('monw5', 0)
    assert.equal((await subscribe(mal, { to: bob.aor, expires: 120 })).response?.status, 403)
    assert.equal((await subscribe(mon, { to: bob.aor, expires: 120 })).response?.status, 403)
    const told = (aor: string): boolean => notifies(bob, dialog.callId).some(r => statusOf(r, aor) === 'terminated/rejected')
    await bob.waitFor(() => told(mal.aor) && told(mon.aor) ? true : undefined, 4000)
    assert.ok(told(mal.aor), 'mal (refused at the owner) told rejected')
    assert.ok(told(mon.aor), 'mon (refused at another node) told rejected')
    // a new winfo subscription meanwhile gets both in its full state (RFC 3857 3.2: init -> terminated)
    const again = await subscribe(bob, { to: bob.aor, event: 'presence.winfo', accept: ACCEPT, expires: 60 })
    const full = await waitNotify(bob, again.dialog!.callId, () => true, 4000)
    assert.equal(parseWatcherInfo(full!.body).state, 'full')
    assert.equal(statusOf(full!, mal.aor), 'terminated/rejected')
    assert.equal(statusOf(full!, mon.aor), 'terminated/rejected')
    // a watcher allowed later shows active once she subscribes
    await m().nodes[1].gateway.presence.setRules(bob.aor, { watchers: { 'sip:monw5@example.com': 'block' } })
    assert.equal((await subscribe(mal, { to: bob.aor, expires: 120 })).response?.status, 200)
    assert.ok(await waitNotify(bob, dialog.callId, r => statusOf(r, mal.aor) === 'active/subscribe', 4000), 'mal active after the rules allow her')
  })
})
