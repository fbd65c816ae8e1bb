import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { encode } from 'cborg'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { concat } from 'uint8arrays/concat'
import { fromString } from 'uint8arrays/from-string'
import { CLAIM_SIGNING_DOMAIN, ClaimSigner, MAX_CLAIM_BYTES, claimKey, compareClaims, decodeClaim, normalizeAor, signClaim, verifyClaim } from '../../../dht/record/claim.ts'
import { claimSelector, claimValidator } from '../../../dht/record/validator.ts'
import type { ClaimFields } from '../../../dht/record/claim.ts'
import type { Logger, PrivateKey } from '@libp2p/interface'

const key = await generateKeyPair('Ed25519')
const other = await generateKeyPair('Ed25519')
const now = Date.now()

function fields (k: PrivateKey = key, over: Partial<ClaimFields> = {}): ClaimFields {
  return { kind: 'claim', aor: 'sip:alice@example.com', owner: peerIdFromPrivateKey(k), sip: '127.0.0.1:5060', version: BigInt(now), issuedAt: now, expiresAt: now + 60_000, ...over, knownUntil: over.knownUntil ?? over.expiresAt ?? now + 60_000 }
}

/** a payload signed with `signer` whatever owner it names (what a forger can produce) */
async function forge (f: ClaimFields, signer: PrivateKey, payloadOverride?: unknown[]): Promise<Uint8Array> {
  const payload = encode(payloadOverride ?? [2, f.kind, f.aor, f.owner.toMultihash().bytes, f.sip, f.version, f.issuedAt, f.expiresAt, f.knownUntil])
  const sig = await signer.sign(concat([CLAIM_SIGNING_DOMAIN, payload]))
  return encode([payload, sig])
}

describe('AoR normalization', () => {
  test('lower-cases scheme and domain, keeps the user, drops params, port and brackets', () => {
    assert.equal(normalizeAor('SIP:Alice@Example.COM'), 'sip:Alice@example.com')
    assert.equal(normalizeAor('<sip:bob@example.com:5060;transport=tcp>'), 'sip:bob@example.com')
    assert.equal(normalizeAor('sips:carol@example.com?subject=x'), 'sip:carol@example.com')
    assert.equal(normalizeAor(' sip:d.e-f_g@sub.example.com '), 'sip:d.e-f_g@sub.example.com')
  })
  test('refuses what is not sip:user@domain', () => {
    for (const bad of ['', 'alice', 'sip:alice', 'sip:@x.com', 'tel:+123', 'sip:a@b@c', 'sip:a b@x.com', 'sip:a@-x.com', 'sip:a@x..com', `sip:${'a'.repeat(300)}@x.com`, '\u0000', 'sip:a\n@x.com']) {
      assert.throws(() => normalizeAor(bad), { name: 'InvalidAorError' }, JSON.stringify(bad))
    }
  })
  test('the same AoR asked again (the last one is remembered) gives the same answers', () => {
    // a normal AoR comes back as it is, each time (equal strings built apart)
    const a = ['sip:', 'memo@example.com'].join('')
    const b = ['sip:memo', '@example.com'].join('')
    assert.equal(normalizeAor(a), a)
    assert.equal(normalizeAor(a), a)
    assert.equal(normalizeAor(b), b)
    // one to normalize, asked twice in a row
    assert.equal(normalizeAor('SIP:Memo@Example.COM:5060'), 'sip:Memo@example.com')
    assert.equal(normalizeAor('SIP:Memo@Example.COM:5060'), 'sip:Memo@example.com')
    // a refused one is refused again, and a valid one between them is not refused
    assert.throws(() => normalizeAor('sip:memo'), { name: 'InvalidAorError' })
    assert.throws(() => normalizeAor('sip:memo'), { name: 'InvalidAorError' })
    assert.equal(normalizeAor(a), a)
    assert.throws(() => normalizeAor(''), { name: 'InvalidAorError' })
    assert.throws(() => normalizeAor(''), { name: 'InvalidAorError' })
    assert.throws(() => normalizeAor(undefined as unknown as string), { name: 'InvalidAorError' })
  })
})

describe('claim record', () => {
  test('round trip: sign, decode, verify; the key is derived from the AoR', async () => {
    const c = await signClaim(fields(), key)
    const v = await verifyClaim(c.bytes, { key: claimKey('sip:alice@example.com') })
    assert.equal(v.aor, 'sip:alice@example.com')
    assert.equal(v.version, BigInt(now))
    assert.ok(v.owner.equals(peerIdFromPrivateKey(key)))
    assert.ok(c.bytes.byteLength < 300)
    assert.match(new TextDecoder().decode(claimKey(v.aor)), /^\/sipmesh\/[a-z2-7]+$/)
  })

  test('encoding is deterministic', async () => {
    const a = await signClaim(fields(), key)
    const b = await signClaim(fields(), key)
    assert.deepEqual(a.payload, b.payload)
  })

  test('signing with a key that is not the owner\'s is refused', async () => {
    await assert.rejects(signClaim(fields(key), other), { name: 'InvalidClaimError' })
  })

  const refusals: Array<[string, () => Promise<Uint8Array>, RegExp, Uint8Array?]> = [
    ['forged (owner named, another key signed)', async () => forge(fields(key), other), /signature/],
    ['altered after signing', async () => { const b = (await signClaim(fields(), key)).bytes.slice(); b[40] ^= 0x01; return b }, /./],
    ['unsigned', async () => { const c = await signClaim(fields(), key); return encode([c.payload, new Uint8Array(0)]) }, /unsigned/],
    ['expired', async () => forge(fields(key, { issuedAt: now - 10_000, expiresAt: now - 1 }), key), /expired/],
    ['issued in the future', async () => forge(fields(key, { issuedAt: now + 3_600_000, expiresAt: now + 3_700_000 }), key), /future/],
    ['lifetime too long', async () => forge(fields(key, { expiresAt: now + 400 * 24 * 3600_000 }), key), /lifetime/],
    ['AoR not normalized', async () => forge(fields(key, { aor: 'sip:alice@EXAMPLE.com' }), key), /normalized/],
    ['bad sip address', async () => forge(fields(key, { sip: 'nowhere' }), key), /host:port/],
    ['release with an address', async () => forge(fields(key, { kind: 'release' }), key), /release/],
    ['oversized', async () => new Uint8Array(MAX_CLAIM_BYTES + 1), /too large/],
    ['not CBOR', async () => fromString('hello world'), /CBOR|envelope/],
    ['wrong shape', async () => encode({ a: 1 }), /envelope/],
    ['unknown format', async () => forge(fields(), key, [1, 'claim', 'sip:alice@example.com', peerIdFromPrivateKey(key).toMultihash().bytes, '127.0.0.1:5060', now, now, now + 1000, now + 1000]), /format/],
    ['the format-1 shape (8 fields)', async () => forge(fields(), key, [1, 'claim', 'sip:alice@example.com', peerIdFromPrivateKey(key).toMultihash().bytes, '127.0.0.1:5060', now, now, now + 1000]), /9-field/],
    ['retention ending before the lease', async () => forge(fields(key, { knownUntil: now + 1000 }), key), /retention/],
    ['wrong field types', async () => forge(fields(), key, [2, 'claim', 'sip:alice@example.com', 'not bytes', '127.0.0.1:5060', now, now, now + 1000, now + 1000]), /owner/],
    ['negative version', async () => forge(fields(), key, [2, 'claim', 'sip:alice@example.com', peerIdFromPrivateKey(key).toMultihash().bytes, '127.0.0.1:5060', -5, now, now + 1000, now + 1000]), /version/],
    ['stored under another AoR\'s key (wrong namespace key)', async () => (await signClaim(fields(), key)).bytes, /key does not match/, claimKey('sip:mallory@example.com')]
  ]
  for (const [what, make, reason, k] of refusals) {
    test(`refused with a reason: ${what}`, async () => {
      const bytes = await make()
      const logged: string[] = []
      const warned: string[] = []
      const log = Object.assign((fmt: string, ...args: unknown[]) => { logged.push(`${fmt} ${args.join(' ')}`) }, { enabled: true, trace: () => {}, error: (fmt: string, ...args: unknown[]) => { warned.push(`${fmt} ${args.join(' ')}`) }, newScope: () => log }) as unknown as Logger
      await assert.rejects(claimValidator(log)(k ?? claimKey('sip:alice@example.com'), bytes), (err: Error) => {
        assert.equal(err.name, 'InvalidClaimError')
        assert.match(err.message, reason)
        return true
      })
      // routine expiry quietly, anything else as a warning (written at every log level)
      if (what === 'expired') assert.deepEqual([logged.length, warned.length], [1, 0], 'the reason is logged at debug')
      else assert.deepEqual([logged.length, warned.length], [0, 1], 'the reason is logged as a warning')
    })
  }

  test('the selector picks the highest version, then later issue, then owner bytes, deterministically', async () => {
    const a = await signClaim(fields(key, { version: 5n }), key)
    const b = await signClaim(fields(other, { version: 6n }), other)
    const c = await signClaim(fields(other, { version: 6n, issuedAt: now + 1 }), other)
    const d = await signClaim(fields(key, { version: 6n, issuedAt: now + 1 }), key)
    const select = claimSelector()
    assert.equal(select(claimKey('sip:alice@example.com'), [a.bytes, b.bytes]), 1)
    assert.equal(select(claimKey('sip:alice@example.com'), [c.bytes, b.bytes]), 0)
    const cd = select(claimKey('sip:alice@example.com'), [c.bytes, d.bytes])
    const dc = select(claimKey('sip:alice@example.com'), [d.bytes, c.bytes])
    assert.equal([c, d][cd], [d, c][dc], 'same winner whatever the order')
    assert.equal(Math.sign(compareClaims(c, d)), -Math.sign(compareClaims(d, c)))
    assert.equal(select(claimKey('sip:alice@example.com'), [fromString('junk'), a.bytes]), 1)
  })

  test('fuzz: decoding arbitrary bytes only ever fails with InvalidClaimError', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 1200 }), (bytes) => {
      try {
        decodeClaim(bytes)
      } catch (err) {
        assert.equal((err as Error).name, 'InvalidClaimError')
      }
    }), { numRuns: 2000 })
  })

  test('fuzz: any single-byte change to a signed claim is refused', async () => {
    const c = await signClaim(fields(), key)
    await fc.assert(fc.asyncProperty(fc.nat(c.bytes.length - 1), fc.integer({ min: 1, max: 255 }), async (i, x) => {
      const b = c.bytes.slice()
      b[i] ^= x
      await assert.rejects(verifyClaim(b, { key: claimKey(c.aor) }), { name: 'InvalidClaimError' })
    }), { numRuns: 300 })
  })
})

describe('ClaimSigner: signatures on the threadpool', () => {
  test('signAsync makes the very claim sign makes (Ed25519 is deterministic), which verifies; bad fields still throw', async () => {
    const signer = new ClaimSigner(key)
    const { owner: _owner, ...input } = fields()
    const sync = signer.sign(input)
    const async = await signer.signAsync(input)
    assert.deepEqual(async.bytes, sync.bytes)
    assert.equal((await verifyClaim(async.bytes, { key: claimKey(input.aor) })).version, input.version)
    // many at once (as a burst of REGISTERs makes them), each its own claim
    const many = await Promise.all(Array.from({ length: 200 }, async (_, i) => await signer.signAsync({ ...input, aor: `sip:u${i}@example.com` })))
    for (const [i, c] of many.entries()) assert.equal((await verifyClaim(c.bytes, { key: claimKey(`sip:u${i}@example.com`) })).aor, `sip:u${i}@example.com`)
    await assert.rejects(signer.signAsync({ ...input, aor: 'not an aor' }))
    await assert.rejects(signer.signAsync({ ...input, sip: 'x'.repeat(MAX_CLAIM_BYTES) }))
  })
})

describe('signing thread: batched signatures', () => {
  test('a burst of signatures from two keys goes out in a few batches, each the one-by-one signature', async () => {
    const { signingThread } = await import('../../../dht/record/sign-batch.ts')
    const a = new ClaimSigner(key)
    const b = new ClaimSigner(other)
    const { owner: _owner, ...input } = fields()
    const before = { ...signingThread.stats }
    const inputs = Array.from({ length: 600 }, (_, i) => ({ ...input, aor: `sip:burst${i}@example.com` }))
    const signed = await Promise.all(inputs.map(async (x, i) => await (i % 2 === 0 ? a : b).signAsync(x)))
    for (const [i, c] of signed.entries()) assert.deepEqual(c.bytes, (i % 2 === 0 ? a : b).sign(inputs[i]).bytes)
    const batches = signingThread.stats.batches - before.batches
    assert.equal(signingThread.stats.signatures - before.signatures, 600)
    assert.equal(signingThread.stats.fallbacks, before.fallbacks, 'no signature fell back to the threadpool')
    // one turn: a batch per key, cut at 256 signatures
    assert.ok(batches >= 4 && batches <= 8, `${batches} batches`)
  })
})
