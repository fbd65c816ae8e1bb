// Noise's length prefixes read without an exception per chunk (node/noise-length.ts): the same
// frames out of the same decoder as with a throwing reader, however the bytes are split, and hostile
// lengths refused as before.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { LengthPrefixedDecoder } from '@libp2p/utils'
import { Uint8ArrayList } from 'uint8arraylist'
import { patchLengthDecoder, readLength, type LengthSource } from '../../node/noise-length.ts'

/** the decoder's own reader type (its Uint8ArrayList is a copy of the package of its own) */
type LengthDecoder = NonNullable<NonNullable<ConstructorParameters<typeof LengthPrefixedDecoder>[0]>['lengthDecoder']>

/** the reader Noise uses: throws a RangeError when fewer than 2 bytes are there */
function throwing (data: LengthSource): number {
  if (data.byteLength < 2) throw new RangeError('Could not decode int16BE')
  return data instanceof Uint8Array ? (data[0] << 8) + data[1] : (data.get(0) << 8) + data.get(1)
}

function decoder (lengthDecoder: (data: LengthSource) => number): LengthPrefixedDecoder {
  return new LengthPrefixedDecoder({ lengthDecoder: lengthDecoder as LengthDecoder, maxBufferSize: 1024 * 1024, maxDataLength: 65535, encodingLength: () => 2 })
}

function frames (lengths: number[]): Uint8Array {
  const parts: number[] = []
  let v = 1
  for (const n of lengths) {
    parts.push(n >> 8, n & 0xff)
    for (let i = 0; i < n; i++) parts.push(v++ & 0xff)
  }
  return Uint8Array.from(parts)
}

function run (d: LengthPrefixedDecoder, wire: Uint8Array, step: number): string[] {
  const out: string[] = []
  for (let i = 0; i < wire.length; i += step) {
    for (const f of d.decode(wire.subarray(i, i + step))) out.push(Buffer.from(f.subarray()).toString('hex'))
  }
  return out
}

describe('readLength', () => {
  test('the big-endian length of a Uint8Array and of a list split inside the prefix; 0 below 2 bytes', () => {
    assert.equal(readLength(Uint8Array.of(0x01, 0x02, 9)), 0x0102)
    assert.equal(readLength(new Uint8ArrayList(Uint8Array.of(0xff), Uint8Array.of(0xfe, 1))), 0xfffe)
    assert.equal(readLength(new Uint8Array(0)), 0)
    assert.equal(readLength(Uint8Array.of(7)), 0)
    assert.equal(readLength(new Uint8ArrayList()), 0)
    assert.equal(readLength(new Uint8ArrayList(Uint8Array.of(7))), 0)
  })

  test('the decoder yields the same frames as with the throwing reader, at every split', () => {
    const wire = frames([0, 1, 2, 300, 65535, 5, 0, 1000])
    for (const step of [1, 2, 3, 5, 64, 1000, wire.length]) {
      assert.deepEqual(run(decoder(readLength), wire, step), run(decoder(throwing), wire, step), `step ${step}`)
    }
  })

  test('random frames split at random places: the same frames', () => {
    let seed = 7
    const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n }
    for (let round = 0; round < 50; round++) {
      const wire = frames(Array.from({ length: 1 + rnd(20) }, () => rnd(3) === 0 ? rnd(3) : rnd(2000)))
      const a = decoder(readLength)
      const b = decoder(throwing)
      const outA: string[] = []
      const outB: string[] = []
      for (let i = 0; i < wire.length;) {
        const n = 1 + rnd(700)
        const chunk = wire.subarray(i, i + n)
        for (const f of a.decode(chunk)) outA.push(Buffer.from(f.subarray()).toString('hex'))
        for (const f of b.decode(chunk)) outB.push(Buffer.from(f.subarray()).toString('hex'))
        i += n
      }
      assert.deepEqual(outA, outB)
    }
  })

  test('hostile input: a length beyond the limit is refused as before, a partial frame is held, not yielded', () => {
    const d = new LengthPrefixedDecoder({ lengthDecoder: readLength as LengthDecoder, maxBufferSize: 1024, maxDataLength: 100, encodingLength: () => 2 })
    assert.throws(() => [...d.decode(Uint8Array.of(0, 101))], /Invalid message length/)
    const e = new LengthPrefixedDecoder({ lengthDecoder: readLength as LengthDecoder, maxBufferSize: 1024, maxDataLength: 65535, encodingLength: () => 2 })
    assert.deepEqual([...e.decode(Uint8Array.of(0xff, 0xff, 1, 2, 3))], [])
    // more buffered than the decoder allows: refused as before
    assert.throws(() => [...e.decode(new Uint8Array(2000))], /Buffer length limit exceeded/)
  })
})

describe('patchLengthDecoder', () => {
  test('a stream with a 2-byte length decoder gets readLength; anything else is left alone', () => {
    const stream = { decoder: decoder(throwing) }
    assert.equal(patchLengthDecoder(stream), true)
    assert.equal((stream.decoder as unknown as { lengthDecoder: unknown }).lengthDecoder, readLength)
    assert.equal(patchLengthDecoder({ decoder: new LengthPrefixedDecoder() }), false, 'varint lengths')
    assert.equal(patchLengthDecoder({}), false)
    assert.equal(patchLengthDecoder(undefined), false)
    assert.equal(patchLengthDecoder({ decoder: { lengthDecoder: 1, encodingLength: () => 2 } }), false)
  })
})
