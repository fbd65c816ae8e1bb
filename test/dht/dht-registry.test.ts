/**
 * The registry properties of SPEC.md on real libp2p nodes over loopback TCP (one shared mesh of
 * 5 nodes; node 4 uses kad-dht's own walks instead of direct one-round queries).
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Libp2pRecord } from '@libp2p/record'
import { Key } from 'interface-datastore'
import { encode } from 'cborg'
import { concat } from 'uint8arrays/concat'
import { toString } from 'uint8arrays/to-string'
import { fromString } from 'uint8arrays/from-string'
import { Mesh, waitFor } from '../fixtures/mesh.ts'
import { CLAIM_SIGNING_DOMAIN, claimKey, decodeClaim, signClaim } from '../../dht/record/claim.ts'
import { CLAIM_NOTICE_PROTOCOL, sendNotice } from '../../dht/notices/protocol.ts'
import type { MeshNode } from '../../node/libp2p.ts'
import type { SignedClaim } from '../../dht/record/claim.ts'

let counter = 0
const uniqueAor = (): string => `sip:p${process.pid}x${counter++}@example.com`
const hour = (): number => Date.now() + 3_600_000

function recordKey (aor: string): Key {
  return new Key(`/dht/record/${toString(claimKey(aor), 'base32')}`, false)
}

/** the claim a node's datastore holds for an AoR (what kad-dht serves), or undefined */
async function storedClaim (node: MeshNode, aor: string): Promise<SignedClaim | undefined> {
  try {
    return decodeClaim(Libp2pRecord.deserialize(await node.datastore.inner.get(recordKey(aor))).value)
  } catch {
    return undefined
  }
}

/** put raw bytes under a key through kad-dht's own put (a walk), counting acknowledgements */
async function rawPut (node: MeshNode, key: Uint8Array, value: Uint8Array): Promise<number> {
  let acks = 0
  try {
    for await (const ev of node.libp2p.services.dht.put(key, value, { signal: AbortSignal.timeout(5_000) })) {
      if (ev.name === 'PEER_RESPONSE' && ev.messageName === 'PUT_VALUE') acks++
    }
  } catch {
    // our own guard may refuse it locally: then nothing was sent
  }
  return acks
}

describe('DHT registry on a 5-node loopback mesh', () => {
  let mesh: Mesh
  let n: MeshNode[]

  before(async () => {
    mesh = await Mesh.spawn(5, {
      registry: { expiryGraceMs: 200, watchIntervalMs: 1_000 },
      perNode: (i) => i === 4 ? { registry: { expiryGraceMs: 200, watchIntervalMs: 1_000, directQueries: false } } : {}
    })
    n = [...mesh.nodes]
  })
  after(async () => { await mesh?.stop() })

  for (const racers of [2, 3]) {
    test(`P1: ${racers} nodes claim one AoR at once, 12 rounds: every node resolves the same owner`, async () => {
      for (let round = 0; round < 12; round++) {
        const aor = uniqueAor()
        const claimers = n.slice(round % 2, (round % 2) + racers)
        const results = await Promise.all(claimers.map(async node => node.registry.claim(aor, { expiresAt: hour() })))
        const owners = await Promise.all(n.map(async node => (await node.registry.resolve(aor, { fresh: true }))?.node))
        assert.equal(new Set(owners).size, 1, `round ${round}: ${owners.join(' ')}`)
        const owner = owners[0]
        const i = claimers.findIndex(c => c.peerId.toString() === owner)
        assert.ok(i >= 0, 'the owner is one of the claimers')
        assert.equal(results[i].won, true)
        // every replica stores the winner: a later lookup cannot disagree
        for (const node of n) assert.equal((await storedClaim(node, aor))?.owner.toString(), owner)
        // and the cached answers agree once the losers' caches settled
        for (const node of n) assert.equal((await node.registry.resolve(aor))?.node, owner)
      }
    })
  }

  test('P2: a stale put replaces nothing, and no node resolves the older claim', async () => {
    const aor = uniqueAor()
    const v1 = await n[0].registry.claim(aor, { expiresAt: hour() })
    const oldBytes = (await storedClaim(n[0], aor))!.bytes
    const v2 = await n[1].registry.claim(aor, { expiresAt: hour() })
    assert.ok(v2.route.version > v1.route.version)
    // node 3 replays the old, validly signed claim through kad-dht's own put
    const acks = await rawPut(n[3], claimKey(aor), oldBytes)
    assert.equal(acks, 0, 'no node accepted the stale put')
    for (const node of n) {
      assert.equal((await storedClaim(node, aor))?.version, v2.route.version, 'the newer record is still stored')
      assert.equal((await node.registry.resolve(aor, { fresh: true }))?.version, v2.route.version)
    }
    // a node whose store went back (bypassing the guard) still never resolves older (P2) ...
    await n[2].datastore.inner.put(recordKey(aor), new Libp2pRecord(claimKey(aor), oldBytes, new Date()).serialize())
    assert.equal((await n[2].registry.resolve(aor, { fresh: true }))?.version, v2.route.version)
    // ... and heals its store with the newer claim it knows
    await waitFor(async () => (await storedClaim(n[2], aor))?.version === v2.route.version, 2_000, 'healed store')
  })

  test('P3: the displaced owner is told within 1 s, by a verified newer claim', async () => {
    for (const [from, to] of [[0, 1], [1, 4], [4, 2]]) {
      const aor = uniqueAor()
      await n[from].registry.claim(aor, { expiresAt: hour() })
      let toldAt = 0
      let by = ''
      const un = n[from].registry.onDisplaced((a, route) => { if (a === aor) { toldAt = Date.now(); by = route.node } })
      try {
        const start = Date.now()
        await n[to].registry.claim(aor, { expiresAt: hour() })
        await waitFor(() => toldAt > 0, 1_000, `move notice ${from} -> ${to}`)
        assert.ok(toldAt - start < 1_000)
        assert.equal(by, n[to].peerId.toString())
        assert.ok(!n[from].registry.owned().includes(aor))
        assert.equal((await n[from].registry.resolve(aor))?.node, n[to].peerId.toString(), 'cache follows the notice')
      } finally { un() }
    }
  })

  test('P3: forged, altered, older, oversized and garbage notices are ignored', async () => {
    const aor = uniqueAor()
    const owner = n[0]
    const mine = await owner.registry.claim(aor, { expiresAt: hour() })
    let displaced = 0
    const un = owner.registry.onDisplaced(() => { displaced++ })
    const attacker = n[3]
    try {
      const rejectedBefore = owner.registry.stats.noticesRejected
      // a claim naming node 1 as owner, signed by the attacker
      const now = Date.now()
      const payload = encode([1, 'claim', aor, n[1].peerId.toMultihash().bytes, '127.0.0.1:6000', BigInt(now + 10_000), now, now + 60_000])
      const forged = encode([payload, await attacker.privateKey.sign(concat([CLAIM_SIGNING_DOMAIN, payload]))])
      // a real newer claim by the attacker, altered in transit
      const real = await signClaim({ kind: 'claim', aor, owner: attacker.peerId, sip: '127.0.0.1:6001', version: mine.route.version + 5n, issuedAt: now, expiresAt: now + 60_000 }, attacker.privateKey)
      const altered = real.bytes.slice()
      altered[altered.length - 70] ^= 0x20
      // an older (valid) claim of the attacker
      const older = await signClaim({ kind: 'claim', aor, owner: attacker.peerId, sip: '127.0.0.1:6001', version: mine.route.version - 1n, issuedAt: now - 1, expiresAt: now + 60_000 }, attacker.privateKey)
      for (const bytes of [forged, altered, older.bytes, fromString('garbage'), new Uint8Array(0)]) {
        await sendNotice(attacker.libp2p, CLAIM_NOTICE_PROTOCOL, owner.peerId, bytes)
      }
      await sendNotice(attacker.libp2p, CLAIM_NOTICE_PROTOCOL, owner.peerId, new Uint8Array(5_000)).catch(() => {})
      // a raw stream that never sends anything must not hold the handler up
      const idle = await attacker.libp2p.dialProtocol(owner.peerId, CLAIM_NOTICE_PROTOCOL)
      await new Promise(resolve => setTimeout(resolve, 200))
      idle.abort(new Error('done'))
      assert.equal(displaced, 0)
      assert.ok(owner.registry.owned().includes(aor))
      assert.equal((await owner.registry.resolve(aor))?.node, owner.peerId.toString())
      assert.ok(owner.registry.stats.noticesRejected >= rejectedBefore + 4)
    } finally { un() }
  })

  test('P4: a forged or altered claim put into the DHT is refused by every node', async () => {
    const aor = uniqueAor()
    const real = await n[0].registry.claim(aor, { expiresAt: hour() })
    const attacker = n[3]
    const now = Date.now()
    const payload = encode([1, 'claim', aor, n[1].peerId.toMultihash().bytes, '127.0.0.1:6000', real.route.version + 100n, now, now + 60_000])
    const forged = encode([payload, await attacker.privateKey.sign(concat([CLAIM_SIGNING_DOMAIN, payload]))])
    const honest = await signClaim({ kind: 'claim', aor, owner: attacker.peerId, sip: '127.0.0.1:6001', version: real.route.version + 200n, issuedAt: now, expiresAt: now + 60_000 }, attacker.privateKey)
    const altered = honest.bytes.slice()
    altered[altered.length - 70] ^= 0x20
    const unsigned = encode([decodeClaim(honest.bytes).payload, new Uint8Array(0)])
    for (const bytes of [forged, altered, unsigned, new Uint8Array(2_000), fromString('junk')]) {
      assert.equal(await rawPut(attacker, claimKey(aor), bytes), 0)
    }
    // wrong namespace: no validator, refused
    assert.equal(await rawPut(attacker, fromString('/other/abc'), real.route.sip === '' ? new Uint8Array(1) : fromString('x')), 0)
    // a valid claim under another AoR's key: refused
    assert.equal(await rawPut(attacker, claimKey(uniqueAor()), honest.bytes), 0)
    for (const node of n) {
      if (node !== attacker) assert.equal((await storedClaim(node, aor))?.version, real.route.version)
      assert.equal((await node.registry.resolve(aor, { fresh: true }))?.node, n[0].peerId.toString())
    }
  })

  test('P5: no node routes to a node that stopped, long before its lease ends; the user stays known', async () => {
    const extra = await mesh.add({ registry: { expiryGraceMs: 200 } })
    await mesh.connect([extra])
    const aor = uniqueAor()
    const res = await extra.registry.claim(aor, { expiresAt: hour() })
    assert.ok(res.replicas >= 3)
    assert.ok(res.route.expiresAt > Date.now() + 60_000, 'a lease of minutes')
    let lastSeen: string | undefined = 'unset'
    const un = n[2].registry.watch(aor, (route) => { lastSeen = route?.node })
    try {
      assert.equal((await n[1].registry.resolve(aor, { fresh: true }))?.node, extra.peerId.toString())
      await waitFor(() => lastSeen === extra.peerId.toString(), 5_000, 'watcher told of the claim')
      const stoppedAt = Date.now()
      await extra.stop() // gone without releasing
      await waitFor(async () => (await n[1].registry.resolve(aor, { fresh: true })) === undefined, 10_000, 'the dead owner to be dropped')
      for (const node of n) {
        assert.equal(await node.registry.resolve(aor), undefined)
        assert.equal(node.registry.routeNow(aor), undefined)
      }
      await waitFor(() => lastSeen === undefined, 10_000, 'watcher told the owner is gone')
      assert.ok(Date.now() - stoppedAt < 20_000)
      // its claim is still stored (the lease runs on) and says the user is known to the mesh
      assert.equal(await n[3].registry.known(aor), true)
      // and the user registering elsewhere takes over at once
      const moved = await n[0].registry.claim(aor, { expiresAt: hour() })
      assert.equal(moved.won, true)
      assert.equal((await n[1].registry.resolve(aor, { fresh: true }))?.node, n[0].peerId.toString())
    } finally { un() }
  })

  test('interest: a watcher of an unclaimed AoR is told within 1 s of the claim', async () => {
    for (const [watcher, claimer] of [[2, 0], [4, 1], [0, 4]]) {
      const aor = uniqueAor()
      let toldAt = 0
      const un = n[watcher].registry.watch(aor, (route) => { if (route?.node === n[claimer].peerId.toString()) toldAt = Date.now() })
      try {
        await new Promise(resolve => setTimeout(resolve, 300)) // the interest record is out
        const start = Date.now()
        await n[claimer].registry.claim(aor, { expiresAt: hour() })
        await waitFor(() => toldAt > 0, 1_000, `watcher ${watcher} told of claim by ${claimer}`)
        assert.ok(toldAt - start < 1_000)
      } finally { un() }
    }
  })

  test('join: a node started with one bootstrap address claims at once; every node resolves it as soon as the claim returns', async () => {
    const boot = `${n[2].libp2p.getMultiaddrs()[0].toString()}`
    for (let round = 0; round < 3; round++) {
      const joiner = await mesh.add({ bootstrap: [boot], registry: { expiryGraceMs: 200 } })
      try {
        const aor = uniqueAor()
        // right after start(): the routing table is still empty, so the claim waits for a peer
        const result = await joiner.registry.claim(aor, { expiresAt: hour() })
        assert.equal(result.won, true)
        assert.ok(result.replicas > 0, `round ${round}: the claim reached ${result.replicas} replicas`)
        for (const node of n) {
          assert.equal((await node.registry.resolve(aor, { fresh: true }))?.node, joiner.peerId.toString(), `round ${round}: resolved on an existing node`)
        }
      } finally {
        await joiner.stop()
      }
    }
  })

  test('a node started alone (no bootstrap, no mDNS) claims without waiting for peers', async () => {
    const alone = await mesh.add({ registry: { expiryGraceMs: 200 } })
    try {
      const start = Date.now()
      const result = await alone.registry.claim(uniqueAor(), { expiresAt: hour() })
      assert.equal(result.won, true)
      assert.equal(result.replicas, 0)
      assert.ok(Date.now() - start < 1_000, `took ${Date.now() - start} ms`)
    } finally {
      await alone.stop()
    }
  })

  test('release by the owner is a signed tombstone every node resolves as nothing', async () => {
    const aor = uniqueAor()
    await n[1].registry.claim(aor, { expiresAt: hour() })
    // which of these nodes store the claim: the claimer and those of its replicas among them (the
    // nodes that joined in the tests above and stopped may still be in routing tables, so the
    // replica set need not be all of these five)
    const held: MeshNode[] = []
    for (const node of n) if ((await storedClaim(node, aor))?.kind === 'claim') held.push(node)
    assert.ok(held.includes(n[1]) && held.length >= 2, `${held.length} copies of the claim`)
    await n[1].registry.release(aor)
    for (const node of n) {
      // every node that stored the claim holds the tombstone in its place; none keeps a claim
      const stored = await storedClaim(node, aor)
      if (held.includes(node)) assert.equal(stored?.kind, 'release', 'the tombstone replaced the claim')
      else if (stored != null) assert.equal(stored.kind, 'release')
      assert.equal(await node.registry.resolve(aor, { fresh: true }), undefined)
    }
  })
})
