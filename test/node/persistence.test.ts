// The durable store's group commit: concurrent writes share LevelDB batches, and each call
// resolves only once its batch is committed (or rejects with it).
import { test, describe, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import type { Batch } from 'interface-datastore'
import { DatastoreDurableStore, openDatastore } from '../../node/persistence.ts'

/** A datastore whose batch commits wait for `release()` (or fail with `fail(err)`), recorded. */
class GatedDatastore extends MemoryDatastore {
  readonly commits: number[] = []
  #gates: Array<{ open: () => void, fail: (err: Error) => void }> = []

  override batch (): Batch {
    const inner = super.batch()
    let n = 0
    return {
      put: (key, value) => { n++; inner.put(key, value) },
      delete: (key) => { n++; inner.delete(key) },
      commit: async () => {
        this.commits.push(n)
        await new Promise<void>((resolve, reject) => { this.#gates.push({ open: resolve, fail: reject }) })
        await inner.commit()
      }
    }
  }

  get waiting (): number { return this.#gates.length }
  release (): void { this.#gates.shift()?.open() }
  fail (err: Error): void { this.#gates.shift()?.fail(err) }
}

const tick = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)) }
const state = (p: Promise<unknown>): Promise<string> => Promise.race([p.then(() => 'resolved', () => 'rejected'), tick().then(() => 'pending')])

describe('DatastoreDurableStore batching', () => {
  test('a put resolves only once its batch is committed; concurrent writes share one batch', async () => {
    const ds = new GatedDatastore()
    const store = new DatastoreDurableStore(ds)
    const puts = [store.put('a', Uint8Array.of(1)), store.put('b', Uint8Array.of(2)), store.delete('c')]
    await tick()
    assert.deepEqual(ds.commits, [3], 'one batch of three writes')
    assert.deepEqual(await Promise.all(puts.map(state)), ['pending', 'pending', 'pending'])
    // reads see the writes not committed yet
    assert.deepEqual(await store.get('a'), Uint8Array.of(1))
    // writes issued while a batch is committing go to the next one
    const later = store.put('d', Uint8Array.of(4))
    await tick()
    assert.deepEqual(ds.commits, [3])
    ds.release()
    await Promise.all(puts)
    assert.equal(await state(later), 'pending')
    await tick()
    assert.deepEqual(ds.commits, [3, 1])
    ds.release()
    await later
    assert.deepEqual(store.stats, { batches: 2, writes: 4 })
  })

  test('a failed commit rejects every call of that batch, and only those', async () => {
    const ds = new GatedDatastore()
    const store = new DatastoreDurableStore(ds)
    const first = [store.put('x', Uint8Array.of(1)), store.put('y', Uint8Array.of(2))]
    await tick()
    const second = store.put('z', Uint8Array.of(3))
    ds.fail(new Error('disk full'))
    const settled = await Promise.allSettled(first)
    assert.deepEqual(settled.map(s => s.status), ['rejected', 'rejected'])
    assert.match(String((settled[0] as PromiseRejectedResult).reason), /disk full/)
    // what failed is not visible as if stored
    assert.equal(await store.get('x'), undefined)
    await tick()
    ds.release()
    await second
    assert.deepEqual(await store.get('z'), Uint8Array.of(3))
  })

  test('batches are bounded by maxBatch, and writes apply in call order', async () => {
    const ds = new GatedDatastore()
    const store = new DatastoreDurableStore(ds, { maxBatch: 4 })
    const all = Array.from({ length: 10 }, (_, i) => store.put(`k${i}`, Uint8Array.of(i)))
    // writes of one key in one batch: the last one is written
    all.push(store.put('k', Uint8Array.of(1)), store.delete('k'), store.put('k', Uint8Array.of(99)))
    for (let i = 0; i < 3; i++) { await tick(); ds.release() }
    await Promise.all(all)
    assert.deepEqual(ds.commits, [4, 4, 3])
    assert.deepEqual(await store.get('k'), Uint8Array.of(99))
    assert.throws(() => new DatastoreDurableStore(ds, { maxBatch: 0 }), RangeError)
  })

  test('list waits for pending writes', async () => {
    const ds = new GatedDatastore()
    const store = new DatastoreDurableStore(ds)
    const put = store.put('p/1', Uint8Array.of(1))
    const listed = (async () => { const keys: string[] = []; for await (const [k] of store.list('p/')) keys.push(k); return keys })()
    await tick()
    ds.release()
    await put
    assert.deepEqual(await listed, ['p/1'])
  })

  describe('on LevelDB', () => {
    let dir: string
    after(async () => { if (dir !== undefined) await rm(dir, { recursive: true, force: true }) })

    test('1,000 concurrent writes in a few batches, durable after reopening; an absent key is undefined', async () => {
      dir = await mkdtemp(join(tmpdir(), 'sipmesh-persist-'))
      let ds = await openDatastore(dir)
      let store = new DatastoreDurableStore(ds, { maxBatch: 256 })
      await Promise.all(Array.from({ length: 1000 }, async (_, i) => { await store.put(`r/${i}`, Uint8Array.of(i % 256)) }))
      await Promise.all(Array.from({ length: 500 }, async (_, i) => { await store.delete(`r/${i * 2}`) }))
      assert.ok(store.stats.batches <= 10, `${store.stats.batches} batches`)
      assert.equal(store.stats.writes, 1500)
      await ds.close()
      ds = await openDatastore(dir)
      store = new DatastoreDurableStore(ds)
      try {
        assert.equal(await store.get('r/0'), undefined)
        assert.deepEqual(await store.get('r/1'), Uint8Array.of(1))
        assert.equal(await store.get('r/nobody'), undefined)
        // the datastore itself (kad-dht, the claim guard): a miss is a NotFoundError by name, one
        // shared instance rather than one built per miss
        const misses = await Promise.all([1, 2].map(async () => await ds.get(new Key('/sipmesh/absent')).then(() => undefined, (err: Error) => err)))
        assert.equal(misses[0]?.name, 'NotFoundError')
        assert.equal(misses[0], misses[1])
        assert.equal(await ds.has(new Key('/sipmesh/absent')), false)
        let n = 0
        for await (const _ of store.list('r/')) n++
        assert.equal(n, 500)
      } finally {
        await ds.close()
      }
    })

    test('written with LevelDB\'s own batch: the keys a Key-based batch wrote, readable through the datastore; a failed batch rejects its writes', async () => {
      const d = await mkdtemp(join(tmpdir(), 'sipmesh-persist-'))
      const ds = await openDatastore(d)
      try {
        const store = new DatastoreDurableStore(ds)
        const hostile = 'sip-gateway/registrar/sip:zo\u00eb\u0000%2F/..@example.com'
        await Promise.all([store.put(hostile, Uint8Array.of(7)), store.put('a', Uint8Array.of(1)), store.delete('a'), store.put('b', Uint8Array.of(2))])
        const hex = Buffer.from(hostile, 'utf8').toString('hex')
        assert.deepEqual([...await ds.get(new Key('/sipmesh/store/' + hex))], [7])
        assert.equal(await ds.has(new Key('/sipmesh/store/' + Buffer.from('a').toString('hex'))), false)
        assert.deepEqual(await store.get('b'), Uint8Array.of(2))
        await ds.close()
        const results = await Promise.allSettled([store.put('c', Uint8Array.of(3)), store.delete('b')])
        assert.deepEqual(results.map(r => r.status), ['rejected', 'rejected'])
        // nothing pending is left to be read as if written
        assert.equal(await store.get('c').catch(() => undefined), undefined)
      } finally {
        await ds.close().catch(() => {})
        await rm(d, { recursive: true, force: true })
      }
    })
  })
})

describe('DatastoreDurableStore keys', () => {
  test('keys are lowercase UTF-8 hex under the prefix, as stores written before read them; list decodes them back', async () => {
    const ds = new MemoryDatastore()
    const store = new DatastoreDurableStore(ds)
    const keys = ['sip-gateway/registrar/sip:alice@example.com', 'sip-gateway/registrar/sip:zoë@example.com', 'sip-gateway/registrar/sip:\u{1F600}@example.com', 'other/x']
    for (const k of keys) await store.put(k, new TextEncoder().encode(k))
    // the layout a data directory already holds: each key's UTF-8 bytes, two lowercase hex digits each
    const hex = (s: string): string => [...new TextEncoder().encode(s)].map(b => b.toString(16).padStart(2, '0')).join('')
    for (const k of keys) assert.deepEqual(new TextDecoder().decode(await ds.get(new Key('/sipmesh/store/' + hex(k)))), k)
    await ds.put(new Key('/sipmesh/store/' + hex('sip-gateway/registrar/sip:old@example.com')), new Uint8Array([1]))
    const listed: string[] = []
    for await (const [k] of store.list('sip-gateway/registrar/')) listed.push(k)
    assert.deepEqual(listed.sort(), [...keys.slice(0, 3), 'sip-gateway/registrar/sip:old@example.com'].sort())
    assert.deepEqual(await store.get('sip-gateway/registrar/sip:old@example.com'), new Uint8Array([1]))
  })
})
