// The offline store on a real LevelDB (datastore-level), adapted here to the DurableStore port:
// what store() acknowledged survives close and reopen, in order, with its dedupe memory.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LevelDatastore } from 'datastore-level'
import { Key } from 'interface-datastore'
import { OfflineStore, KnownUsers } from '../../../sip-gateway/offline/index.ts'
import type { DurableStore } from '../../../sip-gateway/ports.ts'
import { ALICE, BOB, RecordingLogger, message, text } from './fixtures.ts'

const ROOT = '/offline-test/'

/** DurableStore over a LevelDatastore (keys kept as they are: ours are ASCII). */
class LevelStore implements DurableStore {
  readonly ds: LevelDatastore
  failDelete = false

  constructor (ds: LevelDatastore) { this.ds = ds }

  async get (key: string): Promise<Uint8Array | undefined> {
    try {
      return await this.ds.get(new Key(ROOT + key, false))
    } catch (err) {
      if ((err as Error).name === 'NotFoundError') return undefined
      throw err
    }
  }

  async put (key: string, value: Uint8Array): Promise<void> { await this.ds.put(new Key(ROOT + key, false), value) }

  async delete (key: string): Promise<void> {
    if (this.failDelete) throw new Error('simulated crash before delete')
    await this.ds.delete(new Key(ROOT + key, false))
  }

  async * list (prefix: string): AsyncIterable<[key: string, value: Uint8Array]> {
    for await (const { key, value } of this.ds.query({ prefix: ROOT + prefix })) {
      const k = key.toString()
      if (k.startsWith(ROOT + prefix)) yield [k.slice(ROOT.length), value]
    }
  }
}

describe('OfflineStore on LevelDB', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'sipmesh-offline-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  async function withStore<T> (path: string, fn: (store: OfflineStore, db: LevelStore, logger: RecordingLogger) => Promise<T>): Promise<T> {
    const ds = new LevelDatastore(join(dir, path))
    await ds.open()
    const db = new LevelStore(ds)
    const logger = new RecordingLogger()
    const store = new OfflineStore({ store: db, logger })
    await store.start()
    try {
      return await fn(store, db, logger)
    } finally {
      await store.stop()
      await ds.close()
    }
  }

  test('acknowledged messages survive close and reopen, in order, with their dedupe memory', async () => {
    await withStore('a', async (store) => {
      for (let i = 0; i < 120; i++) {
        await store.store(i % 3 === 0 ? BOB : ALICE, message(i, { body: new TextEncoder().encode(`body ${i} ✓`) }))
      }
      await store.remove(ALICE, 'm-1')
    })
    await withStore('a', async (store) => {
      const alice: string[] = []
      for await (const r of store.pending(ALICE)) {
        alice.push(r.id)
        assert.equal(text(r.body), `body ${r.id.slice(2)} ✓`)
        assert.deepEqual(r.headers, [['P-Asserted-Identity', '<sip:bob@example.com>']])
      }
      const expected = Array.from({ length: 120 }, (_, i) => i).filter(i => i % 3 !== 0 && i !== 1).map(i => `m-${i}`)
      assert.deepEqual(alice, expected)
      assert.equal(store.count(BOB), 40)
      assert.equal(store.stats().messages, 40 + expected.length)
      // a retransmission after the restart is still recognised, pending or delivered
      assert.equal((await store.store(ALICE, message(2))).stored, false)
      assert.equal((await store.store(ALICE, message(1))).stored, false)
      // new messages go after the old ones
      await store.store(ALICE, message('late'))
      const sent: string[] = []
      const r = await store.deliverBacklog(ALICE, async (m) => { sent.push(m.id); return true })
      assert.deepEqual(sent, [...expected, 'm-late'])
      assert.equal(r.remaining, 0)
    })
    await withStore('a', async (store) => {
      assert.equal(store.count(ALICE), 0)
      assert.equal(store.count(BOB), 40)
    })
  })

  test('a crash between tombstone and delete never delivers the message twice', async () => {
    await withStore('b', async (store, db) => {
      for (let i = 0; i < 3; i++) await store.store(ALICE, message(i))
      db.failDelete = true
      await assert.rejects(store.deliverBacklog(ALICE, async () => true), /simulated crash/)
      db.failDelete = false
    })
    await withStore('b', async (store, _db, logger) => {
      const sent: string[] = []
      await store.deliverBacklog(ALICE, async (m) => { sent.push(m.id); return true })
      assert.deepEqual(sent, ['m-1', 'm-2'])
      assert.ok(logger.lines.some(l => l.msg === 'offline store loaded' && l.fields.stale === 1))
    })
  })

  test('a corrupt value on disk is skipped and logged, the rest is delivered', async () => {
    const keys: string[] = []
    await withStore('c', async (store, db) => {
      for (let i = 0; i < 3; i++) await store.store(ALICE, message(i))
      for await (const [k] of db.list(OfflineStore.userPrefix(ALICE))) keys.push(k)
      await db.put(keys[1], new Uint8Array([0xa1, 0x61, 0x76, 0x02])) // CBOR {v: 2}
    })
    await withStore('c', async (store, _db, logger) => {
      const got: string[] = []
      for await (const r of store.pending(ALICE)) got.push(r.id)
      assert.deepEqual(got, ['m-0', 'm-2'])
      assert.ok(logger.at('warn').some(l => l.msg.includes('corrupt') && l.fields.key === keys[1]))
    })
  })

  test('KnownUsers remembers registrations across reopen', async () => {
    const ds = new LevelDatastore(join(dir, 'k'))
    await ds.open()
    const now = Date.now()
    const k1 = new KnownUsers({ store: new LevelStore(ds), logger: new RecordingLogger() })
    await k1.start()
    await k1.markRegistered(ALICE, now)
    await k1.stop()
    const k2 = new KnownUsers({ store: new LevelStore(ds), logger: new RecordingLogger() })
    await k2.start()
    assert.equal(k2.isKnown(ALICE), true)
    assert.equal(k2.isKnown(BOB), false)
    await k2.stop()
    await ds.close()
  })
})
