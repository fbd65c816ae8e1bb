// PUBLISH is served by the presence agent (the event state compositor, RFC 3903), here or at the
// owner, never by the user's devices: by entity tag with or without a live binding (issue 10
// item 1), and while the REGISTER's claim is still in flight (item 2).
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { TestMesh } from '../gateway/fixtures/mesh.ts'
import { TestUa } from '../gateway/fixtures/ua.ts'
import { subscribe, publish, pidf, waitNotify, bodyOf, isOpen } from './fixtures.ts'
import type { MemoryRegistry } from '../../../dht/memory-registry.ts'

const config = { presence: { minExpires: 1, decisionWaitMs: 1000, retryMs: 300, publications: { minExpires: 1, defaultExpires: 60 } } }

/** hold `registry`'s claims of `aor` until `open()`; `claimed` settles once the held claim is stored */
function holdClaims (registry: MemoryRegistry, aor: string): { reached: Promise<void>, claimed: Promise<void>, open: () => void, restore: () => void } {
  const claim = registry.claim.bind(registry)
  let open!: () => void
  let reached!: () => void
  let claimed!: () => void
  const gate = new Promise<void>(resolve => { open = resolve })
  const r = new Promise<void>(resolve => { reached = resolve })
  const c = new Promise<void>(resolve => { claimed = resolve })
  registry.claim = async (a, binding, options) => {
    if (a !== aor) return await claim(a, binding, options)
    reached()
    await gate
    try { return await claim(a, binding, options) } finally { claimed() }
  }
  return { reached: r, claimed: c, open, restore: () => { registry.claim = claim } }
}

describe('PUBLISH at the presence agent', () => {
  let mesh: TestMesh
  const uas: TestUa[] = []
  const ua = async (user: string, node: number): Promise<TestUa> => {
    const u = await TestUa.open(user, mesh.nodes[node].sip)
    uas.push(u)
    return u
  }

  before(async () => { mesh = await TestMesh.spawn(2, config) })
  after(async () => {
    for (const u of uas) await u.close()
    await mesh.stop()
  })

  test('after the user unregisters, her publication is refreshed, modified and removed by its entity tag (RFC 3903 6)', async () => {
    const bob = await ua('bob1', 0)
    assert.equal((await bob.register(600))?.status, 200)
    const alice = await ua('alice1', 1)
    const { dialog } = await subscribe(alice, { to: bob.aor, expires: 120 })
    assert.ok(dialog !== undefined)
    const pub = await publish(bob, { body: pidf(bob.aor, 'open', 'in a meeting'), expires: 60 })
    assert.equal(pub?.status, 200)
    assert.ok(await waitNotify(alice, dialog.callId, r => bodyOf(r).includes('in a meeting')))

    assert.equal((await bob.register(0))?.status, 200, 'un-REGISTER')
    const refreshed = await publish(bob, { etag: pub?.headers.get('SIP-ETag'), expires: 60 })
    assert.equal(refreshed?.status, 200, `refresh without a binding: ${refreshed?.status} ${refreshed?.reason}`)
    const etag = refreshed?.headers.get('SIP-ETag')
    assert.ok(etag !== undefined && etag !== pub?.headers.get('SIP-ETag'), 'a new entity tag')
    const modified = await publish(bob, { etag, body: pidf(bob.aor, 'closed', 'modified offline'), expires: 60 })
    assert.equal(modified?.status, 200, `modify without a binding: ${modified?.status} ${modified?.reason}`)
    const removed = await publish(bob, { etag: modified?.headers.get('SIP-ETag'), expires: 0 })
    assert.equal(removed?.status, 200, `remove without a binding: ${removed?.status} ${removed?.reason}`)
    assert.equal(mesh.nodes[0].gateway.presence.publications.get(bob.aor, 'presence').length, 0, 'nothing left to follow the user')
    assert.equal((await publish(bob, { etag: modified?.headers.get('SIP-ETag'), expires: 60 }))?.status, 412, 'a removed tag is unknown')
    assert.ok(bob.received.every(r => r.method !== 'PUBLISH'), 'never sent to a device')

    // she comes back: her registration alone is shown, not the publication she removed
    assert.equal((await bob.register(600))?.status, 200)
    const back = await waitNotify(alice, dialog.callId, r => isOpen(r) && !bodyOf(r).includes('in a meeting') && !bodyOf(r).includes('modified offline'))
    assert.ok(back !== undefined, 'open from the registration, without the removed note')
  })

  test('a publication expires by its own Expires, binding or not', async () => {
    const carol = await ua('carol2', 0)
    assert.equal((await carol.register(600))?.status, 200)
    assert.equal((await publish(carol, { body: pidf(carol.aor, 'open', 'brief'), expires: 1 }))?.status, 200)
    assert.equal((await carol.register(0))?.status, 200)
    assert.equal(mesh.nodes[0].gateway.presence.publications.get(carol.aor, 'presence').length, 1)
    await carol.waitFor(() => mesh.nodes[0].gateway.presence.publications.get(carol.aor, 'presence').length === 0 ? true : undefined, 3000)
    assert.equal(mesh.nodes[0].gateway.presence.publications.get(carol.aor, 'presence').length, 0)
  })

  test('a PUBLISH that arrives while the REGISTER\'s claim is in flight is served by the agent, never proxied to the phone', async () => {
    const dave = await ua('dave3', 0)
    dave.answer = (req) => req.method === 'PUBLISH' ? 501 : 200
    const registry = mesh.nodes[0].registry
    const held = holdClaims(registry, dave.aor)
    // a route lookup slower than the claim (a DHT walk): it answers once the claim is stored
    const resolve = registry.resolve.bind(registry)
    registry.resolve = async (a, options) => {
      if (a === dave.aor) await held.claimed
      return await resolve(a, options)
    }
    try {
      const registering = dave.register(600)
      await held.reached
      const publishing = publish(dave, { body: pidf(dave.aor, 'open', 'racing'), expires: 60 })
      await new Promise(resolve => setTimeout(resolve, 50))
      held.open()
      assert.equal((await registering)?.status, 200)
      const r = await publishing
      assert.equal(r?.status, 200, `${r?.status} ${r?.reason}`)
      assert.ok((r?.headers.get('SIP-ETag') ?? '') !== '', 'answered by the compositor (SIP-ETag)')
      assert.ok(dave.received.every(m => m.method !== 'PUBLISH'), 'the phone never got its own PUBLISH')
      assert.ok(mesh.nodes[0].gateway.presence.publications.get(dave.aor, 'presence').some(p => JSON.stringify(p.body).includes('racing')))
    } finally {
      held.restore()
      registry.resolve = resolve
    }
  })

  test('a PUBLISH racing the REGISTER whose route lookup finds nobody yet waits for that registration', async () => {
    const erin = await ua('erin4', 0)
    erin.answer = (req) => req.method === 'PUBLISH' ? 501 : 200
    const held = holdClaims(mesh.nodes[0].registry, erin.aor)
    try {
      const registering = erin.register(600)
      await held.reached
      const publishing = publish(erin, { body: pidf(erin.aor, 'open', 'early'), expires: 60 })
      await new Promise(resolve => setTimeout(resolve, 50))
      held.open()
      assert.equal((await registering)?.status, 200)
      const r = await publishing
      assert.equal(r?.status, 200, `${r?.status} ${r?.reason}`)
      assert.ok(erin.received.every(m => m.method !== 'PUBLISH'))
      // and the watcher of the new registration sees the publication
      const alice = await ua('alice4', 1)
      const { dialog } = await subscribe(alice, { to: erin.aor, expires: 60 })
      assert.ok(await waitNotify(alice, dialog!.callId, r => bodyOf(r).includes('early')))
    } finally {
      held.restore()
    }
  })

  test('an initial PUBLISH for a user registered nowhere is still refused (480 known, 404 unknown); a conditional one gets 412', async () => {
    const frank = await ua('frank5', 1)
    assert.equal((await frank.register(600))?.status, 200)
    assert.equal((await frank.register(0))?.status, 200)
    assert.equal((await publish(frank, { body: pidf(frank.aor, 'open') }))?.status, 480)
    assert.equal((await publish(frank, { etag: 'no-such-tag', expires: 60 }))?.status, 412)
    const nobody = await ua('nobody5', 0)
    assert.equal((await publish(nobody, { body: pidf(nobody.aor, 'open') }))?.status, 404)
  })
})
