import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import { Libp2pRecord } from '@libp2p/record'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { toString } from 'uint8arrays/to-string'
import { fromString } from 'uint8arrays/from-string'
import { ClaimGuardDatastore } from '../../dht/datastore-guard.ts'
import { claimKey, signClaim } from '../../dht/record/claim.ts'
import type { SignedClaim } from '../../dht/record/claim.ts'
import type { PrivateKey } from '@libp2p/interface'

const a = await generateKeyPair('Ed25519')
const b = await generateKeyPair('Ed25519')
const aor = 'sip:alice@example.com'
const dsKey = new Key(`/dht/record/${toString(claimKey(aor), 'base32')}`, false)

async function claim (k: PrivateKey, version: bigint, expiresIn = 60_000): Promise<SignedClaim> {
  const now = Date.now()
  return signClaim({ kind: 'claim', aor, owner: peerIdFromPrivateKey(k), sip: '127.0.0.1:5060', version, issuedAt: now, expiresAt: now + expiresIn }, k)
}
const rec = (c: SignedClaim): Uint8Array => new Libp2pRecord(claimKey(aor), c.bytes, new Date()).serialize()
const stored = async (ds: ClaimGuardDatastore): Promise<bigint> => {
  const { decodeClaim } = await import('../../dht/record/claim.ts')
  return decodeClaim(Libp2pRecord.deserialize(await ds.get(dsKey)).value).version
}

describe('ClaimGuardDatastore', () => {
  test('refuses an older claim over a newer one, accepts newer and identical ones', async () => {
    const ds = new ClaimGuardDatastore(new MemoryDatastore())
    const v1 = await claim(a, 1n)
    const v2 = await claim(b, 2n)
    await ds.put(dsKey, rec(v1))
    await ds.put(dsKey, rec(v2))
    assert.equal(await stored(ds), 2n)
    await assert.rejects(ds.put(dsKey, rec(v1)), { name: 'StaleClaimError' })
    assert.equal(await stored(ds), 2n)
    assert.equal(ds.refused, 1)
    await ds.put(dsKey, rec(v2)) // republishing the same claim refreshes it
    assert.equal(await stored(ds), 2n)
  })

  test('reports every accepted claim write with the claim it replaced', async () => {
    const seen: Array<[string, string]> = []
    const ds = new ClaimGuardDatastore(new MemoryDatastore(), { onStore: (p, n) => { seen.push([p?.owner.toString() ?? '-', n.owner.toString()]) } })
    const [ia, ib] = [peerIdFromPrivateKey(a).toString(), peerIdFromPrivateKey(b).toString()]
    await ds.put(dsKey, rec(await claim(a, 1n)))
    await ds.put(dsKey, rec(await claim(a, 2n)))
    await ds.put(dsKey, rec(await claim(b, 3n)))
    await assert.rejects(ds.put(dsKey, rec(await claim(a, 1n))))
    assert.deepEqual(seen, [['-', ia], [ia, ia], [ia, ib]])
  })

  test('an expired stored claim blocks nothing', async () => {
    const ds = new ClaimGuardDatastore(new MemoryDatastore())
    await ds.put(dsKey, rec(await claim(a, 10n, 1)))
    await new Promise(resolve => setTimeout(resolve, 5))
    await ds.put(dsKey, rec(await claim(b, 1n)))
    assert.equal(await stored(ds), 1n)
  })

  test('concurrent writes are ordered: the newest always ends up stored', async () => {
    const ds = new ClaimGuardDatastore(new MemoryDatastore())
    const claims = await Promise.all(Array.from({ length: 20 }, async (_, i) => claim(i % 2 === 0 ? a : b, BigInt(i + 1))))
    await Promise.allSettled(claims.reverse().map(async c => ds.put(dsKey, rec(c))))
    assert.equal(await stored(ds), 20n)
  })

  test('guards batches too, and passes other keys and undecodable values through', async () => {
    const ds = new ClaimGuardDatastore(new MemoryDatastore())
    await ds.put(dsKey, rec(await claim(a, 5n)))
    const batch = ds.batch()
    batch.put(dsKey, rec(await claim(b, 4n)))
    await assert.rejects(Promise.resolve(batch.commit()), { name: 'StaleClaimError' })
    assert.equal(await stored(ds), 5n)
    await ds.put(new Key('/peers/x'), fromString('anything'))
    assert.equal(toString(await ds.get(new Key('/peers/x'))), 'anything')
    const other = new Key('/dht/record/other')
    await ds.put(other, fromString('not a record'))
    assert.equal(toString(await ds.get(other)), 'not a record')
  })
})
