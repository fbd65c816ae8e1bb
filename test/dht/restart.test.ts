/**
 * A node restarted with the same key and datastore comes back as itself and re-asserts its
 * still-valid claims (even where the other nodes lost the records, as after kad-dht's 48 h
 * deletion), drops expired ones, and learns when it was displaced while away.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { toString } from 'uint8arrays/to-string'
import { Mesh, waitFor } from '../fixtures/mesh.ts'
import { Libp2pRecord } from '@libp2p/record'
import { ClaimSigner, claimKey, claimKeyId, decodeClaim } from '../../dht/record/claim.ts'
import { recordTime, storedRecord } from '../../dht/record/stored-record.ts'
import type { SignedClaim } from '../../dht/record/claim.ts'

const recordKey = (aor: string): Key => new Key(`/dht/record/${toString(claimKey(aor), 'base32')}`, false)

test('restart with the same key and datastore re-asserts still-valid claims', async () => {
  const mesh = await Mesh.spawn(3, { registry: { expiryGraceMs: 100 } })
  try {
    const privateKey = await generateKeyPair('Ed25519')
    const store = new MemoryDatastore()
    const first = await mesh.add({ privateKey, datastore: store, registry: { expiryGraceMs: 100 } })
    await mesh.connect([first])
    const kept = 'sip:kept@example.com'
    const short = 'sip:short@example.com'
    const moved = 'sip:moved@example.com'
    await first.registry.claim(kept, { expiresAt: Date.now() + 3_600_000 })
    await first.registry.claim(short, { expiresAt: Date.now() + 200 })
    await first.registry.claim(moved, { expiresAt: Date.now() + 3_600_000 })
    await first.stop()

    // while it is away: the others forget its records, and someone else takes one AoR over
    for (const node of mesh.nodes.slice(0, 3)) {
      await node.datastore.inner.delete(recordKey(kept))
    }
    const taker = mesh.nodes[0]
    const took = await taker.registry.claim(moved, { expiresAt: Date.now() + 3_600_000 })
    assert.ok(took.won)
    await new Promise(resolve => setTimeout(resolve, 400)) // `short` expires

    const again = await mesh.add({ privateKey, datastore: store, registry: { expiryGraceMs: 100 } })
    assert.ok(again.peerId.equals(first.peerId), 'same peer id')
    let displaced = ''
    again.registry.onDisplaced((aor) => { displaced = aor })
    await mesh.connect([again])
    // re-asserted: the others store the record again and resolve it
    await waitFor(async () => {
      try { await mesh.nodes[1].datastore.inner.get(recordKey(kept)); return true } catch { return false }
    }, 5_000, 'record re-put')
    assert.equal((await mesh.nodes[2].registry.resolve(kept, { fresh: true }))?.node, again.peerId.toString())
    assert.equal(await mesh.nodes[2].registry.resolve(short, { fresh: true }), undefined)
    await waitFor(() => displaced === moved, 3_000, 'told it was displaced while away')
    assert.deepEqual(again.registry.owned(), [kept])
    assert.equal((await mesh.nodes[1].registry.resolve(moved, { fresh: true }))?.node, taker.peerId.toString())
  } finally {
    await mesh.stop()
  }
})

const legacyKey = (aor: string): Key => new Key(`/sipmesh/own/${claimKeyId(aor)}`, false)

async function keysUnder (store: MemoryDatastore, prefix: string): Promise<string[]> {
  const out: string[] = []
  for await (const key of store.queryKeys({ prefix })) out.push(key.toString())
  return out
}

test('an own claim is stored once (its DHT record); a restart finds its own records among the others by owner', async () => {
  const mesh = await Mesh.spawn(2)
  try {
    const privateKey = await generateKeyPair('Ed25519')
    const store = new MemoryDatastore()
    const first = await mesh.add({ privateKey, datastore: store })
    await mesh.connect([first])
    const hour = Date.now() + 3_600_000
    await first.registry.claim('sip:a@example.com', { expiresAt: hour })
    await first.registry.claim('sip:b@example.com', { expiresAt: hour })
    await first.registry.claim('sip:gone@example.com', { expiresAt: hour })
    await first.registry.release('sip:gone@example.com')
    // the others' claims it holds as a replica (a 3-node mesh: every node is a replica)
    await mesh.nodes[0].registry.claim('sip:other@example.com', { expiresAt: hour })
    await waitFor(async () => {
      try { await store.get(recordKey('sip:other@example.com')); return true } catch { return false }
    }, 5_000, 'replica record stored')
    assert.deepEqual(await keysUnder(store, '/sipmesh/own'), [], 'no second copy of an own record')
    assert.equal((await keysUnder(store, '/dht/record')).length, 4)
    await first.stop()

    const again = await mesh.add({ privateKey, datastore: store })
    assert.deepEqual(again.registry.owned().sort(), ['sip:a@example.com', 'sip:b@example.com'])
    assert.equal(again.registry.ownRecords, 3, 'the release is kept and re-put too')
    assert.equal(again.registry.newest('sip:gone@example.com')?.kind, 'release')
    await mesh.connect([again])
    assert.equal((await mesh.nodes[1].registry.resolve('sip:a@example.com', { fresh: true }))?.node, again.peerId.toString())
    assert.equal((await mesh.nodes[1].registry.resolve('sip:other@example.com', { fresh: true }))?.node, mesh.nodes[0].peerId.toString())
  } finally {
    await mesh.stop()
  }
})

test('a data directory of the older layout (own copies under /sipmesh/own/) starts, re-asserts them and is moved over once', async () => {
  const mesh = await Mesh.spawn(2)
  try {
    const privateKey = await generateKeyPair('Ed25519')
    const signer = new ClaimSigner(privateKey)
    const stranger = new ClaimSigner(await generateKeyPair('Ed25519'))
    const store = new MemoryDatastore()
    const now = Date.now()
    const claimOf = (s: ClaimSigner, aor: string, version: number, expiresAt = now + 600_000): SignedClaim =>
      s.sign({ kind: 'claim', aor, sip: '127.0.0.1:5060', version: BigInt(version), issuedAt: now - 1_000, expiresAt, knownUntil: now + 86_400_000 })
    const record = (c: SignedClaim): Uint8Array => storedRecord(claimKey(c.aor), c.bytes, recordTime(now - 1_000))
    // only: the older layout's copy, whose DHT record kad-dht dropped
    const only = claimOf(signer, 'sip:only@example.com', now - 5_000)
    await store.put(legacyKey(only.aor), only.bytes)
    // newer: the copy is newer than the record the store holds
    const older = claimOf(signer, 'sip:newer@example.com', now - 5_000)
    const newer = claimOf(signer, 'sip:newer@example.com', now - 4_000)
    await store.put(recordKey(older.aor), record(older))
    await store.put(legacyKey(newer.aor), newer.bytes)
    // taken: another node's newer claim stands in the store
    const mine = claimOf(signer, 'sip:taken@example.com', now - 5_000)
    const theirs = claimOf(stranger, 'sip:taken@example.com', now - 3_000)
    await store.put(recordKey(mine.aor), record(theirs))
    await store.put(legacyKey(mine.aor), mine.bytes)
    // ended: its lease ran out while the node was away
    const ended = claimOf(signer, 'sip:ended@example.com', now - 5_000, now - 500)
    await store.put(legacyKey(ended.aor), ended.bytes)
    // garbage under the old prefix
    await store.put(new Key('/sipmesh/own/junk', false), new Uint8Array([1, 2, 3]))

    const node = await mesh.add({ privateKey, datastore: store })
    assert.deepEqual(node.registry.owned().sort(), ['sip:newer@example.com', 'sip:only@example.com'])
    assert.equal(node.registry.newest('sip:newer@example.com')?.version, newer.version)
    assert.ok(node.registry.newest('sip:taken@example.com')?.owner.equals(stranger.owner), 'the newer claim of another owner stands')
    assert.deepEqual(await keysUnder(store, '/sipmesh/own'), [], 'the older layout\'s copies are gone')
    assert.deepEqual(Libp2pRecord.deserialize(await store.get(recordKey(only.aor))).value, only.bytes)
    assert.deepEqual(Libp2pRecord.deserialize(await store.get(recordKey(newer.aor))).value, newer.bytes)
    assert.deepEqual(Libp2pRecord.deserialize(await store.get(recordKey(mine.aor))).value, theirs.bytes)

    // re-asserted to the mesh
    await mesh.connect([node])
    await waitFor(async () => (await mesh.nodes[0].registry.resolve(only.aor, { fresh: true }))?.node === node.peerId.toString(), 5_000, 'older-layout claim re-asserted')
    assert.equal((await mesh.nodes[1].registry.resolve(newer.aor, { fresh: true }))?.version, newer.version)

    // and the next start finds them as DHT records
    await node.stop()
    const again = await mesh.add({ privateKey, datastore: store })
    assert.deepEqual(again.registry.owned().sort(), ['sip:newer@example.com', 'sip:only@example.com'])
  } finally {
    await mesh.stop()
  }
})

test('an own claim lost while the node runs is not taken for its own at the next start (its store is no replica of the new claim)', async () => {
  // one replica per claim: the new owner's put does not reach the old owner's store
  const registry = { replicas: 1 }
  const mesh = await Mesh.spawn(3, { registry })
  try {
    const privateKey = await generateKeyPair('Ed25519')
    const store = new MemoryDatastore()
    const first = await mesh.add({ privateKey, datastore: store, registry })
    await mesh.connect([first])
    const taker = mesh.nodes[0]
    // an AoR whose replica, as the taker sees it, is neither node
    let aor = ''
    for (let i = 0; aor === ''; i++) {
      const candidate = `sip:taken${i}@example.com`
      const [replica] = taker.registry.replicas.closestKnown(claimKey(candidate), 1)
      if (replica != null && !replica.equals(first.peerId) && !replica.equals(taker.peerId)) aor = candidate
    }
    const hour = Date.now() + 3_600_000
    await first.registry.claim(aor, { expiresAt: hour })
    await first.registry.claim('sip:kept@example.com', { expiresAt: hour })
    let displaced = ''
    first.registry.onDisplaced((a) => { displaced = a })
    assert.ok((await taker.registry.claim(aor, { expiresAt: hour })).won)
    await waitFor(() => displaced === aor, 3_000, 'told it was displaced')
    // its store holds the taker's claim now (the only copy of an own record is the DHT record)
    await waitFor(async () => {
      try { return decodeClaim(Libp2pRecord.deserialize(await store.get(recordKey(aor))).value).owner.equals(taker.peerId) } catch { return false }
    }, 3_000, 'the newer claim stored here')
    await first.stop()

    const again = await mesh.add({ privateKey, datastore: store, registry })
    // before it hears from any other node
    assert.deepEqual(again.registry.owned(), ['sip:kept@example.com'])
    assert.equal(again.registry.newest(aor), undefined, 'not known as its own')
    await mesh.connect([again])
    assert.equal((await again.registry.resolve(aor, { fresh: true }))?.node, taker.peerId.toString())
  } finally {
    await mesh.stop()
  }
})
