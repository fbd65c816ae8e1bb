import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { encode } from 'cborg'
import {
  checkAor, decodeRecord, decodeRecords, encodeRecord, encodeRecords, messageIdOf, messageKey, parseMessageKey,
  parseTombstoneKey, toRecord, tombstoneKey
} from '../../../sip-gateway/offline/record.ts'
import type { OfflineRecord } from '../../../sip-gateway/offline/record.ts'
import { ALICE, message } from './fixtures.ts'

const rec = (n: number): OfflineRecord => toRecord(ALICE, message(n), 1_700_000_000_000 + n, 65536)

describe('offline records', () => {
  test('encode / decode round trip', () => {
    const r = rec(1)
    assert.deepEqual(decodeRecord(encodeRecord(r)), r)
  })

  test('round trip of arbitrary valid content (property)', () => {
    // eslint-disable-next-line no-control-regex
    const safe = fc.string({ maxLength: 60 }).map(s => s.replace(/[\u0000-\u0008\u000a-\u001f\u007f]/g, '') || 'x')
    fc.assert(fc.property(safe, safe, fc.uint8Array({ maxLength: 300 }), fc.integer({ min: 0, max: 2 ** 40 }), (id, from, body, at) => {
      const r = toRecord(ALICE, { id, from, to: '<sip:alice@example.com>', contentType: 'text/plain', body }, at, 1000)
      assert.deepEqual(decodeRecord(encodeRecord(r)), r)
    }), { numRuns: 200 })
  })

  test('garbage never throws, it decodes to undefined', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      const r = decodeRecord(bytes)
      assert.ok(r === undefined || typeof r.id === 'string')
    }), { numRuns: 500 })
    for (const bad of [
      encode({ v: 2 }), encode([1, 2]), encode(null), encode({ v: 1, aor: ALICE }),
      encode({ ...Object.fromEntries(Object.entries({ v: 1, aor: ALICE, id: 'x', from: 'a', to: 'b', date: 'd', ct: 't', body: 'str', h: [], at: 1 })) }),
      encode({ v: 1, aor: ALICE, id: 'x', from: 'a\r\nb', to: 'b', date: 'd', ct: 't', body: new Uint8Array(1), h: [], at: 1 }),
      encode({ v: 1, aor: 'nope', id: 'x', from: 'a', to: 'b', date: 'd', ct: 't', body: new Uint8Array(1), h: [], at: 1 }),
      encode({ v: 1, aor: ALICE, id: 'x', from: 'a', to: 'b', date: 'd', ct: 't', body: new Uint8Array(1), h: [], at: -5 }),
      encode({ v: 1, aor: ALICE, id: 'x', from: 'a', to: 'b', date: 'd', ct: 't', body: new Uint8Array(1), h: [['X']], at: 1 })
    ]) assert.equal(decodeRecord(bad), undefined)
    assert.equal(decodeRecord(encodeRecord(rec(1)), 3), undefined) // body over the limit
  })

  test('transfers: a list of records, bad entries counted, a bad envelope refused', () => {
    const good = encodeRecords([rec(1), rec(2)])
    assert.deepEqual(decodeRecords(good).records.map(r => r.id), ['m-1', 'm-2'])
    const mixed = encode([encodeRecord(rec(1)), new Uint8Array([1, 2, 3]), 'str', encodeRecord(rec(3))])
    assert.deepEqual(decodeRecords(mixed).records.map(r => r.id), ['m-1', 'm-3'])
    assert.equal(decodeRecords(mixed).corrupt, 2)
    assert.throws(() => decodeRecords(new Uint8Array([0xff])), { name: 'InvalidOfflineMessageError', status: 400 })
    assert.throws(() => decodeRecords(encode({ a: 1 })), { name: 'InvalidOfflineMessageError' })
  })

  test('message ids: same request, same id; any field differs, another id', () => {
    const id = messageIdOf('abc@host', 1, 'tag1')
    assert.match(id, /^[0-9a-f]{32}$/)
    assert.equal(messageIdOf('abc@host', 1, 'tag1'), id)
    assert.notEqual(messageIdOf('abc@host', 2, 'tag1'), id)
    assert.notEqual(messageIdOf('abc@host', 1, 'tag2'), id)
    assert.notEqual(messageIdOf('abc@hos', 1, 'ttag1'), id)
    // no ambiguity from concatenation
    assert.notEqual(messageIdOf('a', 11, 'b'), messageIdOf('a1', 1, 'b'))
  })

  test('keys parse back, sort by time then counter, and reject foreign shapes', () => {
    const k = messageKey(ALICE, 1_700_000_000_000, 7)
    assert.deepEqual(parseMessageKey(k), { aor: ALICE, time: 1_700_000_000_000, counter: 7 })
    assert.ok(messageKey(ALICE, 5, 9) < messageKey(ALICE, 6, 1))
    assert.ok(messageKey(ALICE, 5, 9) < messageKey(ALICE, 5, 10))
    for (const bad of ['x', 'sip-gateway/offline/m/', `sip-gateway/offline/m/${encodeURIComponent(ALICE)}/zz`,
      'sip-gateway/offline/m/%E0%A4%A/00000000000000000001', 'sip-gateway/offline/m/not-an-aor/00000000000000000001']) {
      assert.equal(parseMessageKey(bad), undefined, bad)
    }
    const weird = 'sip:a/b%c@example.com'
    assert.deepEqual(parseTombstoneKey(tombstoneKey(weird, 'id/with/slashes')), { aor: weird, id: 'id/with/slashes' })
    assert.equal(parseTombstoneKey('sip-gateway/offline/t/nope'), undefined)
    assert.equal(parseTombstoneKey('sip-gateway/offline/t/%ZZ/x'), undefined)
  })

  test('checkAor', () => {
    assert.equal(checkAor(ALICE), ALICE)
    assert.throws(() => checkAor(undefined), { name: 'InvalidOfflineMessageError' })
    assert.throws(() => checkAor('sip:alice@example.com:99999999'), { name: 'InvalidOfflineMessageError' })
  })
})
