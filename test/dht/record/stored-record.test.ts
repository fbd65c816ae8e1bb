import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { Libp2pRecord } from '@libp2p/record'
import { recordTime, storedRecord } from '../../../dht/record/stored-record.ts'

// kad-dht and every node already running read these records with Libp2pRecord: the library is
// the reference, byte for byte
describe('stored DHT records', () => {
  test('are the bytes Libp2pRecord.serialize() writes, for any key, value and time', () => {
    fc.assert(fc.property(
      fc.uint8Array({ maxLength: 400 }),
      fc.uint8Array({ maxLength: 20_000 }),
      fc.integer({ min: Date.UTC(1000, 0, 1), max: Date.UTC(9999, 11, 31) }),
      (key, value, ms) => {
        const expected = new Libp2pRecord(key, value, new Date(ms)).serialize()
        assert.deepEqual(storedRecord(key, value, recordTime(ms)), expected)
      }), { numRuns: 1000 })
  })

  test('read back by Libp2pRecord with their key, value and time (to the millisecond)', () => {
    const key = new TextEncoder().encode('/sipmesh/abc')
    const value = new Uint8Array(300).fill(7)
    const ms = Date.UTC(2026, 11, 7, 14, 30, 5, 123)
    const rec = Libp2pRecord.deserialize(storedRecord(key, value, recordTime(ms)))
    assert.deepEqual(rec.key, key)
    assert.deepEqual(rec.value, value)
    assert.equal(rec.timeReceived.getTime(), ms)
  })

  test('leave out empty fields as protobuf does', () => {
    assert.deepEqual(storedRecord(new Uint8Array(0), new Uint8Array(0), new Uint8Array(0)), new Uint8Array(0))
    assert.deepEqual(storedRecord(new Uint8Array([1]), new Uint8Array(0), new Uint8Array(0)), new Uint8Array([0x0a, 1, 1]))
  })
})
