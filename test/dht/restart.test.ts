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
import { claimKey } from '../../dht/record/claim.ts'

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
