import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { KeyFilter } from '../../dht/key-filter.ts'

const key = (i: number): string => `/dht/record/ciqk${i.toString(36)}x${(i * 7919).toString(36)}`

describe('KeyFilter', () => {
  test('never says "absent" for a key added, across growth into several layers', () => {
    const f = new KeyFilter({ skipPrefix: '/dht/record/'.length, capacity: 1000 })
    for (let i = 0; i < 20_000; i++) f.add(key(i))
    for (let i = 0; i < 20_000; i++) assert.equal(f.mightHold(key(i)), true, key(i))
    // a key the filter already answers "maybe" for is not added again (nor counted)
    assert.ok(f.size <= 20_000 && f.size > 19_500, String(f.size))
  })

  test('says "absent" for nearly every key not added (about 1% false positives, once grown too)', () => {
    const f = new KeyFilter({ skipPrefix: '/dht/record/'.length, capacity: 4096 })
    for (let i = 0; i < 50_000; i++) f.add(key(i))
    let maybe = 0
    for (let i = 50_000; i < 150_000; i++) if (f.mightHold(key(i))) maybe++
    // layers of 1% each: a few layers together stay well under 5%
    assert.ok(maybe < 5_000, `${maybe} of 100,000 absent keys answered "maybe"`)
    assert.ok(maybe > 0, 'a Bloom filter this full has some false positives: the test would not see a broken one')
    // about 10 bits per key
    assert.ok(f.bytes < 50_000 * 4, `${f.bytes} bytes for 50,000 keys`)
  })

  test('an empty filter holds nothing; a repeated key is counted once; hostile strings are keys like any', () => {
    const f = new KeyFilter()
    assert.equal(f.mightHold(''), false)
    assert.equal(f.mightHold('/dht/record/x'), false)
    for (const k of ['', '\u0000', '\uffff'.repeat(1000), '\ud800', 'a'.repeat(100_000)]) {
      f.add(k)
      f.add(k)
      assert.equal(f.mightHold(k), true)
    }
    assert.equal(f.size, 5)
  })
})
