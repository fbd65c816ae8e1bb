import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import { Libp2pRecord } from '@libp2p/record'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { toString } from 'uint8arrays/to-string'
import { fromString } from 'uint8arrays/from-string'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ClaimGuardDatastore } from '../../dht/datastore-guard.ts'
import { openDatastore } from '../../node/persistence.ts'
import { claimKey, signClaim } from '../../dht/record/claim.ts'
import type { SignedClaim } from '../../dht/record/claim.ts'
import type { ClaimWrite } from '../../dht/datastore-guard.ts'
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

  describe('putClaims and the key filter', () => {
    const recKey = (c: SignedClaim): string => `/dht/record/${toString(claimKey(c.aor), 'base32')}`
    const write = (c: SignedClaim): ClaimWrite => ({ key: recKey(c), record: rec(c), claim: c })
    async function claimOf (k: PrivateKey, who: string, version: bigint): Promise<SignedClaim> {
      const now = Date.now()
      return signClaim({ kind: 'claim', aor: who, owner: peerIdFromPrivateKey(k), sip: '127.0.0.1:5060', version, issuedAt: now, expiresAt: now + 60_000 }, k)
    }

    test('a new key is written without reading the store; a stored one is still read and guarded', async () => {
      const inner = new MemoryDatastore()
      let reads = 0
      const get = inner.get.bind(inner)
      inner.get = async (k, o) => { reads++; return await get(k, o) }
      const ds = new ClaimGuardDatastore(inner)
      assert.equal(await ds.filterLoaded(), true)
      const fresh = await Promise.all(Array.from({ length: 50 }, async (_, i) => claimOf(a, `sip:new${i}@example.com`, 10n)))
      const r1 = await ds.putClaims(fresh.map(write))
      assert.ok(r1.every(r => r.stored))
      // about 1% of absent keys are a false "maybe" of the filter (then read)
      assert.ok(ds.unread >= 45, `${ds.unread} of 50 new keys not read`)
      assert.equal(reads, 50 - ds.unread)
      // the same keys again: each one read, an older claim refused, a newer one accepted
      const older = await claimOf(b, 'sip:new0@example.com', 9n)
      const newer = await claimOf(b, 'sip:new1@example.com', 11n)
      const r2 = await ds.putClaims([write(older), write(newer)])
      assert.equal(r2[0].stored, false)
      assert.equal(r2[0].other?.version, 10n)
      assert.equal(r2[1].stored, true)
      assert.equal(r2[1].other?.version, 10n)
      assert.equal(ds.refused, 1)
    })

    test('records stored before the guard existed, or written through put, are read and guarded', async () => {
      const inner = new MemoryDatastore()
      const before = await claimOf(a, 'sip:before@example.com', 20n)
      await inner.put(new Key(recKey(before), false), rec(before))
      const ds = new ClaimGuardDatastore(inner)
      const viaPut = await claimOf(a, 'sip:viaput@example.com', 30n)
      await ds.put(new Key(recKey(viaPut), false), rec(viaPut))
      assert.equal(await ds.filterLoaded(), true)
      const r = await ds.putClaims([write(await claimOf(b, before.aor, 19n)), write(await claimOf(b, viaPut.aor, 29n))])
      assert.deepEqual(r.map(x => x.stored), [false, false])
      assert.deepEqual(r.map(x => x.other?.version), [20n, 30n])
    })

    test('a store whose keys cannot be listed: every write reads its record, nothing stale passes', async () => {
      const inner = new MemoryDatastore()
      inner.queryKeys = () => { throw new Error('no listing here') }
      const ds = new ClaimGuardDatastore(inner)
      assert.equal(await ds.filterLoaded(), false)
      const c = await claimOf(a, 'sip:x@example.com', 5n)
      await ds.putClaims([write(c)])
      const r = await ds.putClaims([write(await claimOf(b, c.aor, 4n))])
      assert.equal(r[0].stored, false)
      assert.equal(ds.unread, 0)
    })
  })

  for (const kind of ['memory', 'LevelDB'] as const) {
    test(`claimsOf and claims: an owner's claim records and no other, the records under the prefix only (${kind}: hostile and foreign values)`, async () => {
      const dir = kind === 'LevelDB' ? await mkdtemp(join(tmpdir(), 'sipmesh-guard-')) : undefined
      const level = dir != null ? await openDatastore(dir) : undefined
      const inner = level ?? new MemoryDatastore()
      try {
        const ds = new ClaimGuardDatastore(inner)
        const owner = peerIdFromPrivateKey(a)
        const idBytes = owner.toMultihash().bytes
        const now = Date.now()
        const put = async (k: PrivateKey, who: string): Promise<SignedClaim> => {
          const c = await signClaim({ kind: 'claim', aor: `sip:${who}@example.com`, owner: peerIdFromPrivateKey(k), sip: '127.0.0.1:5060', version: 1n, issuedAt: now, expiresAt: now + 60_000 }, k)
          await ds.put(new Key(`/dht/record/${toString(claimKey(c.aor), 'base32')}`, false), new Libp2pRecord(claimKey(c.aor), c.bytes, new Date()).serialize())
          return c
        }
        const mine = [await put(a, 'a1'), await put(a, 'a2')]
        await put(b, 'b1')
        // the owner's id in values that are no claim record of its own: raw, in a foreign record, a truncated claim
        await inner.put(new Key('/dht/record/zzraw', false), idBytes)
        await inner.put(new Key('/dht/record/zzforeign', false), new Libp2pRecord(fromString('/other/x'), idBytes, new Date()).serialize())
        await inner.put(new Key('/dht/record/zztrunc', false), new Libp2pRecord(claimKey('sip:t@example.com'), mine[0].bytes.subarray(0, 80), new Date()).serialize())
        await inner.put(new Key('/dht/record/zzempty', false), new Uint8Array(0))
        // its claim outside the record prefix
        await inner.put(new Key('/dht/recordz', false), new Libp2pRecord(claimKey(mine[0].aor), mine[0].bytes, new Date()).serialize())
        await inner.put(new Key('/sipmesh/own/x', false), mine[0].bytes)
        const got: string[] = []
        for await (const c of ds.claimsOf(owner)) got.push(c.aor)
        assert.deepEqual(got.sort(), mine.map(c => c.aor).sort())
        const others: string[] = []
        for await (const c of ds.claimsOf(peerIdFromPrivateKey(b))) others.push(c.aor)
        assert.deepEqual(others, ['sip:b1@example.com'])
        // the admin listing: the records under the prefix only (not '/dht/recordz'), each once
        const listed: string[] = []
        for await (const { claim } of ds.claims(100)) listed.push(claim.aor)
        assert.deepEqual(listed.sort(), [...mine.map(c => c.aor), 'sip:b1@example.com'].sort())
      } finally {
        if (dir != null) {
          await level?.close()
          await rm(dir, { recursive: true, force: true })
        }
      }
    })
  }
})

