import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { decode, encode as cborgEncode } from 'cborg'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromMultihash, peerIdFromPrivateKey } from '@libp2p/peer-id'
import * as Digest from 'multiformats/hashes/digest'
import { decodeEnvelope, decodePayload, encodeEnvelope, encodePayload, envelopeLength, writeEnvelope } from '../../../dht/record/claim-cbor.ts'
import { ClaimSigner, decodeClaim } from '../../../dht/record/claim.ts'
import type { RawPayload } from '../../../dht/record/claim-cbor.ts'

// cborg is the reference: the hand-written codec must write the very bytes cborg's deterministic
// encoding writes, and accept exactly what the cborg-based decoder it replaced accepted (the
// canonical form of the claim's shape), nothing more

const key = await generateKeyPair('Ed25519')
const owner = peerIdFromPrivateKey(key).toMultihash().bytes
const now = Date.now()

/** cborg's encoding as a plain Uint8Array (on Node it hands out Buffers) */
function encode (value: unknown): Uint8Array {
  const b = cborgEncode(value)
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength)
}

const DECODE_OPTS = { strict: true, allowIndefinite: false, allowUndefined: false, rejectDuplicateMapKeys: true, useMaps: false } as const

/** the decoder before claim-cbor.ts (cborg, then canonical re-encodes): accepted fields, or undefined */
function reference (bytes: Uint8Array): Omit<RawPayload, 'owner'> & { owner: string, signature: Uint8Array } | undefined {
  try {
    const env = decode(bytes, DECODE_OPTS) as unknown
    if (!Array.isArray(env) || env.length !== 2 || !(env[0] instanceof Uint8Array) || !(env[1] instanceof Uint8Array)) return undefined
    const [payload, signature] = env as [Uint8Array, Uint8Array]
    if (signature.byteLength === 0 || signature.byteLength > 128) return undefined
    const p = decode(payload, DECODE_OPTS) as unknown
    if (!Array.isArray(p) || p.length !== 9) return undefined
    const [format, kind, aor, ownerBytes, sip, version, issuedAt, expiresAt, knownUntil] = p as unknown[]
    if (format !== 2 || (kind !== 'claim' && kind !== 'release') || typeof aor !== 'string' || typeof sip !== 'string' || !(ownerBytes instanceof Uint8Array)) return undefined
    const ownerId = peerIdFromMultihash(Digest.decode(ownerBytes))
    const ms = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
    if (!(typeof version === 'bigint' || (typeof version === 'number' && Number.isSafeInteger(version))) || !ms(issuedAt) || !ms(expiresAt) || !ms(knownUntil)) return undefined
    const v = BigInt(version)
    if (!equal(encode([2, kind, aor, ownerBytes, sip, v, issuedAt, expiresAt, knownUntil]), payload)) return undefined
    if (!equal(encode([payload, signature]), bytes)) return undefined
    return { format: 2, kind, aor, owner: ownerId.toString(), sip, version: v, issuedAt, expiresAt, knownUntil, signature }
  } catch {
    return undefined
  }
}

/** what decodeClaim accepts, in the reference's terms */
function ours (bytes: Uint8Array): ReturnType<typeof reference> {
  try {
    const c = decodeClaim(bytes)
    return { format: 2, kind: c.kind, aor: c.aor, owner: c.owner.toString(), sip: c.sip, version: c.version, issuedAt: c.issuedAt, expiresAt: c.expiresAt, knownUntil: c.knownUntil, signature: c.signature }
  } catch (err) {
    assert.equal((err as Error).name, 'InvalidClaimError')
    return undefined
  }
}

function equal (a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

const uint64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })
const edgeUint = fc.constantFrom(0, 1, 23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER)
const ms = fc.oneof(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), edgeUint)
const text = fc.oneof(fc.string({ maxLength: 300 }), fc.string({ maxLength: 40, unit: 'grapheme' }), fc.constantFrom('', 'sip:alice@example.com', '127.0.0.1:5060'))
const payloadArb = fc.record({
  format: fc.oneof(fc.constant(2), fc.nat(70_000)),
  kind: fc.oneof(fc.constantFrom('claim', 'release'), text),
  aor: text,
  owner: fc.oneof(fc.constant(owner), fc.uint8Array({ maxLength: 300 })),
  sip: text,
  version: fc.oneof(uint64, fc.constantFrom(0n, 23n, 24n, 255n, 256n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n, 2n ** 64n - 1n)),
  issuedAt: ms,
  expiresAt: ms,
  knownUntil: ms
})

function cborgPayload (p: RawPayload): Uint8Array {
  return encode([p.format, p.kind, p.aor, p.owner, p.sip, p.version, p.issuedAt, p.expiresAt, p.knownUntil])
}

describe('claim CBOR: the hand-written codec against cborg', () => {
  test('encodes payloads and envelopes byte for byte as cborg does', () => {
    fc.assert(fc.property(payloadArb, fc.uint8Array({ maxLength: 300 }), (p, sig) => {
      const bytes = encodePayload(p)
      assert.deepEqual(bytes, cborgPayload(p))
      assert.deepEqual(encodeEnvelope(bytes, sig), encode([bytes, sig]))
    }), { numRuns: 3000 })
  })

  test('a payload after a prefix, and an envelope written at an offset, are the same bytes', () => {
    fc.assert(fc.property(payloadArb, fc.uint8Array({ maxLength: 40 }), fc.uint8Array({ maxLength: 300 }), fc.nat(64), (p, prefix, sig, offset) => {
      const bytes = encodePayload(p)
      const prefixed = encodePayload(p, prefix)
      assert.deepEqual(prefixed.subarray(0, prefix.length), prefix)
      assert.deepEqual(prefixed.subarray(prefix.length), bytes)
      const n = envelopeLength(bytes.length, sig.length)
      const out = new Uint8Array(offset + n + 3).fill(0xee)
      writeEnvelope(out, offset, prefixed.subarray(prefix.length), sig)
      assert.deepEqual(out.subarray(offset, offset + n), encodeEnvelope(bytes, sig))
      // nothing written outside its room
      assert.ok(out.subarray(0, offset).every(b => b === 0xee) && out.subarray(offset + n).every(b => b === 0xee))
    }), { numRuns: 1000 })
  })

  test('decodes what it encodes, with the same values', () => {
    fc.assert(fc.property(payloadArb, fc.uint8Array({ minLength: 1, maxLength: 128 }), (p, sig) => {
      const env = encodeEnvelope(encodePayload(p), sig)
      const parts = decodeEnvelope(env, 128)
      assert.deepEqual(env.subarray(parts.signatureAt), sig)
      const back = decodePayload(env, parts.payloadAt, parts.payloadEnd)
      assert.deepEqual({ ...back, owner: [...back.owner] }, { ...p, owner: [...p.owner] })
    }), { numRuns: 2000 })
  })

  test('signed claims are what cborg would have made of their fields', async () => {
    const signer = new ClaimSigner(key)
    await fc.assert(fc.asyncProperty(fc.stringMatching(/^[a-z0-9.]{1,60}$/), fc.bigInt({ min: 0n, max: 2n ** 63n - 1n }), fc.integer({ min: 0, max: 10_000_000 }), async (user, version, life) => {
      const c = await signer.signAsync({ kind: 'claim', aor: `sip:${user}@example.com`, sip: '10.0.0.1:5060', version, issuedAt: now, expiresAt: now + life })
      assert.deepEqual(c.payload, encode([2, 'claim', `sip:${user}@example.com`, owner, '10.0.0.1:5060', version, now, now + life, now + life]))
      assert.deepEqual(c.bytes, encode([c.payload, c.signature]))
    }), { numRuns: 200 })
  })

  test('refuses exactly what the cborg decoder refused: mutated claims (bytes changed, inserted, removed, cut)', () => {
    const base = encodeEnvelope(encodePayload({ format: 2, kind: 'claim', aor: 'sip:alice@example.com', owner, sip: '127.0.0.1:5060', version: BigInt(now), issuedAt: now, expiresAt: now + 60_000, knownUntil: now + 60_000 }), new Uint8Array(64).fill(7))
    const edit = fc.oneof(
      fc.record({ op: fc.constant('set' as const), at: fc.nat(base.length - 1), value: fc.nat(255) }),
      fc.record({ op: fc.constant('insert' as const), at: fc.nat(base.length), value: fc.nat(255) }),
      fc.record({ op: fc.constant('delete' as const), at: fc.nat(base.length - 1), value: fc.constant(0) }),
      fc.record({ op: fc.constant('cut' as const), at: fc.nat(base.length), value: fc.constant(0) })
    )
    fc.assert(fc.property(fc.array(edit, { minLength: 1, maxLength: 3 }), (edits) => {
      let b = [...base]
      for (const e of edits) {
        const at = Math.min(e.at, b.length)
        if (e.op === 'set' && at < b.length) b[at] = e.value
        if (e.op === 'insert') b.splice(at, 0, e.value)
        if (e.op === 'delete') b.splice(at, 1)
        if (e.op === 'cut') b = b.slice(0, at)
      }
      const bytes = new Uint8Array(b)
      assert.deepEqual(ours(bytes), reference(bytes))
    }), { numRuns: 20000 })
  })

  test('refuses exactly what the cborg decoder refused: other CBOR values in the claim\'s places', () => {
    const value = fc.oneof(
      fc.constant(2), fc.constant('claim'), fc.constant('release'), fc.constant(owner), fc.constant('sip:bob@example.com'),
      fc.integer(), fc.bigInt({ min: -(2n ** 64n) + 1n, max: 2n ** 64n - 1n }), fc.double(), fc.string({ maxLength: 20 }), fc.uint8Array({ maxLength: 40 }),
      fc.constant(null), fc.boolean(), fc.constant([]), fc.constant({ a: 1 }), fc.constant(now)
    )
    const good: unknown[] = [2, 'claim', 'sip:alice@example.com', owner, '127.0.0.1:5060', BigInt(now), now, now + 1000, now + 1000]
    const sigs = fc.oneof(fc.uint8Array({ maxLength: 140 }), fc.constant(new Uint8Array(64)))
    // the right shape with one or two fields replaced
    fc.assert(fc.property(fc.nat(8), value, fc.nat(8), value, fc.boolean(), sigs, (i, v, j, w, two, sig) => {
      const fields = good.slice()
      fields[i] = v
      if (two) fields[j] = w
      const bytes = encode([encode(fields), sig])
      assert.deepEqual(ours(bytes), reference(bytes))
    }), { numRuns: 5000 })
    // other shapes
    fc.assert(fc.property(fc.array(value, { minLength: 0, maxLength: 11 }), sigs, (fields, sig) => {
      const bytes = encode([encode(fields), sig])
      assert.deepEqual(ours(bytes), reference(bytes))
    }), { numRuns: 1000 })
  })

  test('refuses non-canonical encodings of a valid claim: long heads, indefinite lengths, trailing bytes, bad UTF-8, tags, floats', () => {
    const sig = new Uint8Array(64).fill(1)
    const p = encodePayload({ format: 2, kind: 'claim', aor: 'sip:a@example.com', owner, sip: '127.0.0.1:5060', version: 5n, issuedAt: now, expiresAt: now + 1, knownUntil: now + 1 })
    const good = encodeEnvelope(p, sig)
    assert.notEqual(ours(good), undefined)
    const hex = (s: string): number[] => s.match(/../g)!.map(h => parseInt(h, 16))
    const ownerItem = [0x58, owner.length, ...owner]
    const text = (s: string): number[] => [0x60 | s.length, ...new TextEncoder().encode(s)]
    const ts = [0x1b, ...hex(BigInt(now).toString(16).padStart(16, '0'))]
    const tail = [...ts, 0x1b, ...hex(BigInt(now + 1).toString(16).padStart(16, '0')), 0x1b, ...hex(BigInt(now + 1).toString(16).padStart(16, '0'))]
    const payloadOf = (items: number[], head = [0x89]): Uint8Array => new Uint8Array([...head, ...items])
    const wrap = (payload: Uint8Array, extra: number[] = []): Uint8Array => new Uint8Array([0x82, 0x58, payload.length, ...payload, 0x58, 64, ...sig, ...extra])
    const canonical = [0x02, ...text('claim'), ...text('sip:a@example.com'), ...ownerItem, ...text('127.0.0.1:5060'), 0x05, ...tail]
    assert.deepEqual(wrap(payloadOf(canonical)), good, 'the hand-built canonical form is the encoder\'s')
    const bad: Array<[string, Uint8Array]> = [
      ['version in a one-byte head', wrap(payloadOf([0x02, ...text('claim'), ...text('sip:a@example.com'), ...ownerItem, ...text('127.0.0.1:5060'), 0x18, 0x05, ...tail]))],
      ['format in a two-byte head', wrap(payloadOf([0x19, 0x00, 0x02, ...canonical.slice(1)]))],
      ['a timestamp in a needless 8-byte head', wrap(payloadOf([...canonical.slice(0, -27), 0x1b, 0, 0, 0, 0, 0, 0, 0, 5, ...canonical.slice(-18)]))],
      ['payload as an indefinite array', wrap(payloadOf([...canonical, 0xff], [0x9f]))],
      ['envelope as an indefinite array', new Uint8Array([0x9f, ...good.subarray(1), 0xff])],
      ['payload bytes in a two-byte length head', new Uint8Array([0x82, 0x59, 0x00, p.length, ...p, 0x58, 64, ...sig])],
      ['signature as indefinite bytes', new Uint8Array([0x82, 0x58, p.length, ...p, 0x5f, 0x58, 64, ...sig, 0xff])],
      ['a byte after the envelope', wrap(payloadOf(canonical), [0x00])],
      ['a byte after the payload', (() => { const q = payloadOf([...canonical, 0x00]); return wrap(q) })()],
      ['invalid UTF-8 in the AoR', wrap(payloadOf([0x02, ...text('claim'), 0x71, ...new TextEncoder().encode('sip:a@example.co'), 0xff, ...ownerItem, ...text('127.0.0.1:5060'), 0x05, ...tail]))],
      ['a tagged version', wrap(payloadOf([0x02, ...text('claim'), ...text('sip:a@example.com'), ...ownerItem, ...text('127.0.0.1:5060'), 0xc2, 0x41, 0x05, ...tail]))],
      ['a float timestamp', wrap(payloadOf([...canonical.slice(0, -27), 0xfb, ...new Uint8Array(new Float64Array([now]).buffer).reverse(), ...canonical.slice(-18)]))],
      ['a map envelope', encode({ payload: p, signature: sig })],
      ['empty input', new Uint8Array(0)],
      ['a lone array head', new Uint8Array([0x82])],
      ['a length past the end', new Uint8Array([0x82, 0x5a, 0xff, 0xff, 0xff, 0xff])],
      ['an 8-byte length', new Uint8Array([0x82, 0x5b, 0, 0, 0, 1, 0, 0, 0, 0])],
      ['reserved head values', new Uint8Array([0x82, 0x5c, 0x00])]
    ]
    for (const [what, bytes] of bad) {
      assert.throws(() => decodeClaim(bytes), { name: 'InvalidClaimError' }, what)
      assert.equal(reference(bytes), undefined, `the reference refuses it too: ${what}`)
    }
  })

  test('the encoder refuses what is not an unsigned integer where one goes', () => {
    const p: RawPayload = { format: 2, kind: 'claim', aor: 'sip:a@example.com', owner, sip: '127.0.0.1:5060', version: 1n, issuedAt: now, expiresAt: now, knownUntil: now }
    for (const over of [{ version: -1n }, { version: 2n ** 64n }, { issuedAt: -1 }, { expiresAt: 1.5 }, { knownUntil: Number.MAX_SAFE_INTEGER + 1 }, { issuedAt: Number.NaN }]) {
      assert.throws(() => encodePayload({ ...p, ...over }), { name: 'ClaimCborError' }, JSON.stringify(over, (_k, v: unknown) => typeof v === 'bigint' ? v.toString() : v))
    }
  })
})
