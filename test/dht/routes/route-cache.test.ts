// The route cache on its own (dht/routes/route-cache.ts): a merge never goes back (P2), keeps
// another owner's claim only while its lease runs unless the registry keeps the AoR (own, watched),
// remembers a lookup that found nothing only with a negative TTL, and a route is none when its
// owner is down.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { signClaim } from '../../../dht/record/claim.ts'
import { RouteCache } from '../../../dht/routes/route-cache.ts'
import type { PeerLiveness } from '../../../dht/liveness.ts'
import type { SignedClaim } from '../../../dht/record/claim.ts'
import type { PeerId } from '@libp2p/interface'

const aor = 'sip:cache@example.com'
const selfKey = await generateKeyPair('Ed25519')
const otherKey = await generateKeyPair('Ed25519')
const self = peerIdFromPrivateKey(selfKey)

async function claim (key: typeof selfKey, version: bigint, leaseMs = 60_000): Promise<SignedClaim> {
  const now = Date.now()
  return await signClaim({ kind: 'claim', aor, owner: peerIdFromPrivateKey(key), sip: '127.0.0.1:5060', version, issuedAt: now - 120_000, expiresAt: now + leaseMs, knownUntil: now + 3_600_000 }, key)
}

function cache (options: { kept?: Set<string>, down?: Set<string>, negativeTtl?: number } = {}): RouteCache {
  const down = options.down ?? new Set()
  const liveness = { isDown: (peer: PeerId) => down.has(peer.toString()) } as unknown as PeerLiveness
  return new RouteCache({ peerId: self, liveness, keeps: (a) => options.kept?.has(a) === true }, { negativeCacheTtlMs: options.negativeTtl })
}

describe('route cache', () => {
  test('P2: an older claim merged after a newer one changes nothing; a newer one replaces it', async () => {
    const c = cache()
    const v2 = await claim(otherKey, 2n)
    assert.equal(c.merge(aor, v2, true), v2)
    assert.equal(c.merge(aor, await claim(otherKey, 1n), true), v2)
    assert.equal(c.claimOf(aor), v2)
    const v3 = await claim(selfKey, 3n)
    assert.equal(c.merge(aor, v3, false), v3)
    assert.equal(c.claimOf(aor), v3)
  })

  test('a confirmed merge of the same claim renews fetchedAt; an unconfirmed one does not', async () => {
    const c = cache()
    const v = await claim(otherKey, 1n)
    c.merge(aor, v, true)
    const first = c.entry(aor)!.fetchedAt
    await new Promise(resolve => setTimeout(resolve, 5))
    c.merge(aor, v, false)
    assert.equal(c.entry(aor)!.fetchedAt, first)
    c.merge(aor, v, true)
    assert.ok(c.entry(aor)!.fetchedAt > first)
  })

  test('a claim whose lease ended is kept only for an AoR the registry keeps', async () => {
    const ended = await claim(otherKey, 1n, -1_000)
    assert.equal(cache().merge(aor, ended, true), ended, 'still the newest known (within its retention)')
    const plain = cache()
    plain.merge(aor, ended, true)
    assert.equal(plain.entry(aor), undefined, 'not cached: asked for again when needed')
    const kept = cache({ kept: new Set([aor]) })
    kept.merge(aor, ended, true)
    assert.equal(kept.claimOf(aor), ended)
  })

  test('nothing found is remembered only with a negative TTL, and forgotten once a claim is', async () => {
    const off = cache()
    off.merge(aor, undefined, true)
    assert.equal(off.negativeSince(aor), undefined)
    const on = cache({ negativeTtl: 1_000 })
    on.merge(aor, undefined, true)
    assert.equal(typeof on.negativeSince(aor), 'number')
    on.merge(aor, await claim(otherKey, 1n), true)
    assert.equal(on.negativeSince(aor), undefined)
  })

  test('the route of a claim: none when its owner is down (not for our own), none once its lease ended', async () => {
    const other = await claim(otherKey, 1n)
    const mine = await claim(selfKey, 2n)
    const down = new Set([peerIdFromPrivateKey(otherKey).toString(), self.toString()])
    const c = cache({ down })
    assert.equal(c.routeOf(other), undefined)
    assert.equal(c.routeOf(mine)?.node, self.toString())
    assert.equal(cache().routeOf(other)?.sip, '127.0.0.1:5060')
    assert.equal(cache().routeOf(await claim(otherKey, 3n, -1_000)), undefined)
  })

  test('the sweep prunes ended claims every sixth pass only, and keeps what the registry keeps', async () => {
    const kept = new Set<string>()
    const c = cache({ kept })
    const v = await claim(otherKey, 1n, 50)
    c.merge(aor, v, true)
    const later = Date.now() + 1_000
    for (let i = 0; i < 5; i++) c.sweep(later)
    assert.equal(c.claimOf(aor), v, 'not looked at in passes 1-5')
    kept.add(aor)
    for (let i = 0; i < 6; i++) c.sweep(later)
    assert.equal(c.claimOf(aor), v, 'kept: an own or watched AoR')
    kept.delete(aor)
    for (let i = 0; i < 6; i++) c.sweep(later)
    assert.equal(c.claimOf(aor), undefined)
  })
})
