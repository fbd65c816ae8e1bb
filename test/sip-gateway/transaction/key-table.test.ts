// The table of live transactions by key: a Map's behaviour for string keys (any string, those an
// object's prototype would answer included), and what it is for: entries that come and go keep
// nothing alive through V8's scavenges, where a churning Map keeps every value it ever held.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { GCProfiler, setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { KeyTable } from '../../../sip-gateway/transaction/key-table.ts'

test('set, get, has, delete and size as a Map of string keys', () => {
  const t = new KeyTable<number>()
  assert.equal(t.size, 0)
  assert.equal(t.get('a'), undefined)
  assert.equal(t.has('a'), false)
  t.set('a', 1)
  t.set('b', 0) // a falsy value is a value
  assert.equal(t.size, 2)
  assert.equal(t.get('a'), 1)
  assert.equal(t.get('b'), 0)
  assert.equal(t.has('b'), true)
  t.set('a', 2) // replaced, not counted twice
  assert.equal(t.size, 2)
  assert.equal(t.get('a'), 2)
  assert.equal(t.delete('a'), true)
  assert.equal(t.delete('a'), false)
  assert.equal(t.size, 1)
  assert.deepEqual(t.values(), [0])
  t.clear()
  assert.equal(t.size, 0)
  assert.equal(t.get('b'), undefined)
})

test('keys an object would answer from its prototype, numeric keys and odd strings are ordinary keys', () => {
  const t = new KeyTable<string>()
  const keys = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', '0', '4294967295', '', ' ', 'z9hG4bK|MESSAGE|1.2.3.4:5060', '\u0000', 'ä'.repeat(300)]
  for (const k of keys) {
    assert.equal(t.get(k), undefined, `${JSON.stringify(k)} absent at first`)
    assert.equal(t.has(k), false)
  }
  for (const k of keys) t.set(k, `v:${k}`)
  assert.equal(t.size, keys.length)
  for (const k of keys) assert.equal(t.get(k), `v:${k}`)
  assert.equal(Object.getPrototypeOf({}), Object.prototype, 'no prototype was polluted')
  assert.equal(({} as Record<string, unknown>).polluted, undefined)
  for (const k of keys) assert.equal(t.delete(k), true)
  assert.equal(t.size, 0)
  for (const k of keys) assert.equal(t.has(k), false)
})

test('a sliding window of live entries, as transactions come and go, keeps nothing alive through scavenges', () => {
  // each entry a small object graph (~1.5 KB, as a transaction with its request), 16 alive at a
  // time; counted: the bytes the young generation's GCs copied or promoted. A full GC first, as
  // a node has had one before its load: it moves the table's storage to the old generation, which
  // is where a Map's chain of old tables starts (through a Map this loop then kept every graph:
  // 4.3-4.4 KB per entry here; through this table ~90 B, what is live when a scavenge runs)
  const n = 100_000
  const table = new KeyTable<object>()
  const ring: string[] = []
  for (let i = 0; i < 16; i++) { table.set(`warm${i}`, {}); ring.push(`warm${i}`) }
  setFlagsFromString('--expose-gc')
  ;(runInNewContext('gc') as () => void)()
  const profiler = new GCProfiler()
  profiler.start()
  for (let i = 0; i < n; i++) {
    const key = `z9hG4bK${i}|MESSAGE`
    table.set(key, { key, parts: Array.from({ length: 16 }, (_, k) => ({ k, s: `p${k}:${i}`, a: [k, i] })) })
    ring.push(key)
    if (ring.length > 16) table.delete(ring.shift() as string)
  }
  const { statistics } = profiler.stop()
  const used = (when: (typeof statistics)[number]['afterGC'], space: string): number => when.heapSpaceStatistics.find(s => s.spaceName === space)?.spaceUsedSize ?? 0
  let bytes = 0
  for (const gc of statistics) {
    // copied within the young generation, and promoted out of it
    if (gc.gcType === 'Scavenge') bytes += used(gc.afterGC, 'new_space') + Math.max(0, used(gc.afterGC, 'old_space') - used(gc.beforeGC, 'old_space'))
  }
  assert.equal(table.size, 16)
  assert.ok(bytes / n < 500, `${(bytes / n).toFixed(0)} B per entry survived scavenges`)
})
