import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { sha256 as mfSha256 } from 'multiformats/hashes/sha2'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { toString } from 'uint8arrays/to-string'
import { fromString } from 'uint8arrays/from-string'
import { base32, sha256 } from '../../../dht/record/digest.ts'
import { claimKey, claimKeyId, interestCid } from '../../../dht/record/claim.ts'
import { kadId } from '../../../dht/replication/replicas.ts'

// the keys must stay byte for byte what multiformats and uint8arrays made before (stored records,
// other nodes' keys): those libraries are the reference here
describe('DHT key hashing', () => {
  test('base32 is multibase base32 (lower case, no padding) for any bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      assert.equal(base32(bytes), toString(bytes, 'base32'))
    }), { numRuns: 2000 })
  })

  test('sha256 is the SHA-256 multiformats computes, of bytes and of a string\'s UTF-8', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), fc.string({ maxLength: 100, unit: 'grapheme' }), (bytes, s) => {
      assert.deepEqual(sha256(bytes), (mfSha256.digest(bytes) as { digest: Uint8Array }).digest)
      assert.deepEqual(sha256(s), (mfSha256.digest(fromString(s)) as { digest: Uint8Array }).digest)
    }), { numRuns: 500 })
  })

  test('claimKey, claimKeyId, interestCid and kadId are what they were', () => {
    fc.assert(fc.property(fc.stringMatching(/^[a-z0-9.]{1,40}$/), (user) => {
      const aor = `sip:${user}@example.com`
      const digest = (mfSha256.digest(fromString(aor)) as { digest: Uint8Array }).digest
      assert.deepEqual(claimKey(aor), fromString('/sipmesh/' + toString(digest, 'base32')))
      assert.equal(claimKeyId(aor), toString(digest, 'base32'))
      const interest = mfSha256.digest(fromString('sipmesh-interest-v1\n' + aor)) as Parameters<typeof CID.createV1>[1]
      assert.ok(interestCid(aor).equals(CID.createV1(raw.code, interest)))
      assert.deepEqual(kadId(claimKey(aor)), (mfSha256.digest(claimKey(aor)) as { digest: Uint8Array }).digest)
    }), { numRuns: 300 })
  })
})
