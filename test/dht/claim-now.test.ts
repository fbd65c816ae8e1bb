// DhtRegistry.claimNow: the refresh of a live claim this node holds, answered at once from local
// state (what claim() resolves with for it, no write), and nothing for anything claim() must do.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Mesh, waitFor } from '../fixtures/mesh.ts'
import type { MeshNode } from '../../node/libp2p.ts'

let counter = 0
const uniqueAor = (): string => `sip:now${process.pid}x${counter++}@example.com`
const hour = (): number => Date.now() + 3_600_000

describe('DhtRegistry.claimNow on a 2-node loopback mesh', () => {
  let mesh: Mesh
  let n: MeshNode[]
  before(async () => {
    mesh = await Mesh.spawn(2)
    n = [...mesh.nodes]
  })
  after(async () => { await mesh?.stop() })

  test('nothing for an AoR not held or malformed; the held claim\'s route at once after claim(), counted as a refresh, no new version', async () => {
    const aor = uniqueAor()
    assert.equal(n[0].registry.claimNow(aor, { expiresAt: hour() }), undefined, 'not held: claim() must run')
    assert.equal(n[0].registry.claimNow('not an aor', { expiresAt: hour() }), undefined, 'malformed: claim() decides (and throws)')
    const first = await n[0].registry.claim(aor, { expiresAt: hour() })
    assert.equal(first.won, true)
    const refreshes = n[0].registry.stats.refreshes
    const now = n[0].registry.claimNow(aor, { expiresAt: hour() })
    assert.equal(now?.won, true)
    assert.equal(now?.route.version, first.route.version)
    assert.equal(now?.route.node, n[0].peerId.toString())
    assert.equal(n[0].registry.stats.refreshes, refreshes + 1)
    // what claim() answers for the same refresh
    const viaClaim = await n[0].registry.claim(aor, { expiresAt: hour() })
    assert.equal(viaClaim.route.version, first.route.version)
    assert.equal(n[0].registry.stats.refreshes, refreshes + 2)
    assert.equal((await n[1].registry.resolve(aor, { fresh: true }))?.node, n[0].peerId.toString())
  })

  test('nothing once another node took the AoR over, or once released', async () => {
    const aor = uniqueAor()
    await n[0].registry.claim(aor, { expiresAt: hour() })
    const taken = await n[1].registry.claim(aor, { expiresAt: hour() })
    assert.equal(taken.won, true)
    await waitFor(async () => n[0].registry.claimNow(aor, { expiresAt: hour() }) === undefined, 5_000, 'node 0 to know it was displaced')
    assert.equal(n[1].registry.claimNow(aor, { expiresAt: hour() })?.route.node, n[1].peerId.toString())
    await n[1].registry.release(aor)
    assert.equal(n[1].registry.claimNow(aor, { expiresAt: hour() }), undefined)
  })
})
