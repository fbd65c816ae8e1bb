// A refresh within the stored record's durable horizon needs no disk write; what a crash (a new
// registrar on the same store, the old one never stopped) restores then: never an expiry earlier
// than the one last granted, at most min(slack, granted interval) later.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { Registrar, STORE_PREFIX } from '../../../sip-gateway/registrar/registrar.ts'
import { decodeRegistration } from '../../../sip-gateway/registrar/bindings.ts'
import { coveredByRecord, horizonOf } from '../../../sip-gateway/registrar/durable-horizon.ts'
import { MemoryStore } from '../../../sip-gateway/memory-store.ts'
import { MemoryMesh, MemoryRegistry } from '../../../dht/memory-registry.ts'
import { testLogger } from '../gateway/fixtures/log.ts'
import { registerFor } from './fixtures.ts'

const AOR = 'sip:alice@example.com'

class CountingStore extends MemoryStore {
  puts = 0
  failNext = 0
  override async put (key: string, value: Uint8Array): Promise<void> {
    if (this.failNext > 0) {
      this.failNext--
      throw new Error('disk full')
    }
    this.puts++
    await super.put(key, value)
  }
}

function setup (clock: { now: number }, store = new CountingStore(), mesh = new MemoryMesh(), slack?: number) {
  const registry = new MemoryRegistry(mesh, { nodeId: 'node-a', sip: 'node-a.test:5060' })
  const registrar = new Registrar({ registry, store, logger: testLogger() }, {
    domains: ['example.com'], minExpires: 60, maxExpires: 3600, now: () => clock.now, refreshWriteSlack: slack
  })
  return { registrar, store, mesh }
}

function storedExpiry (store: MemoryStore): number[] {
  const data = store.map.get(STORE_PREFIX + AOR)
  assert.ok(data !== undefined, 'a stored record')
  return decodeRegistration(data)?.bindings.map(b => b.expiresAt) ?? []
}

describe('durable horizon of refreshes', () => {
  test('a refresh within the horizon is not written; after a crash the binding lives until at least its last granted expiry, at most the slack later', async () => {
    const t0 = Date.now()
    const clock = { now: t0 }
    const first = setup(clock)
    await first.registrar.start()
    assert.equal((await first.registrar.handle(registerFor('alice', { expires: 600, cseq: 1 }))).status, 200)
    assert.equal(first.store.puts, 1)
    assert.deepEqual(storedExpiry(first.store), [t0 + 900_000], 'granted 600 s, stored with 300 s of slack')

    clock.now = t0 + 200_000
    const refreshed = await first.registrar.handle(registerFor('alice', { expires: 600, cseq: 2 }))
    assert.equal(refreshed.status, 200)
    assert.match(refreshed.headers?.find(([n]) => n === 'Contact')?.[1] ?? '', /;expires=600$/)
    assert.equal(first.store.puts, 1, 'the record covers the refresh: no write')
    assert.equal(first.registrar.lookup(AOR)[0].expiresAt, t0 + 800_000)

    // kill -9: the first registrar is never stopped; a new one reads the same store
    clock.now = t0 + 250_000
    const second = setup(clock, first.store, first.mesh)
    await second.registrar.start()
    await second.registrar.reclaimed()
    const restored = second.registrar.lookup(AOR)
    assert.equal(restored.length, 1)
    assert.ok(restored[0].expiresAt >= t0 + 800_000, 'not earlier than the expiry last granted')
    assert.ok(restored[0].expiresAt <= t0 + 800_000 + 300_000, 'at most the slack later')
    assert.equal(restored[0].cseq, 1, 'the CSeq on disk is the written one')
    // the client's next refresh (higher CSeq, same Call-ID) is accepted and written (restart takes the record over)
    clock.now = t0 + 400_000
    assert.equal((await second.registrar.handle(registerFor('alice', { expires: 600, cseq: 3 }))).status, 200)
    assert.deepEqual(storedExpiry(first.store), [t0 + 1_300_000])
    first.registrar.stop(); second.registrar.stop()
  })

  test('written before the 200: a refresh past the horizon, a changed contact, Call-ID or parameter, a much shorter expiry, a second contact, a removal', async () => {
    const t0 = Date.now()
    const clock = { now: t0 }
    const { registrar, store } = setup(clock)
    await registrar.start()
    let cseq = 1
    const reg = async (o: { contact?: string, expires?: number, callId?: string } = {}): Promise<void> => {
      assert.equal((await registrar.handle(registerFor('alice', { expires: 600, cseq: cseq++, ...o }))).status, 200)
    }
    await reg()
    assert.equal(store.puts, 1)
    clock.now = t0 + 400_000 // expiry t0 + 1,000 s beyond the stored t0 + 900 s
    await reg()
    assert.equal(store.puts, 2)
    assert.deepEqual(storedExpiry(store), [t0 + 1_300_000])
    await reg()
    assert.equal(store.puts, 2, 'within the new horizon')
    await reg({ contact: '<sip:alice@127.0.0.1:5070>;q=0.5' })
    assert.equal(store.puts, 3, 'a new parameter')
    await reg({ contact: '<sip:alice@127.0.0.1:5070>;q=0.5' })
    assert.equal(store.puts, 3, 'the same parameter again')
    await reg({ contact: '<sip:alice@127.0.0.1:5070>;q=0.5', callId: 'another-call' })
    assert.equal(store.puts, 4, 'another Call-ID')
    await reg({ contact: '<sip:alice@127.0.0.1:5070>;q=0.5', callId: 'another-call', expires: 60 })
    assert.equal(store.puts, 5, 'an expiry far shorter than the stored one')
    assert.deepEqual(storedExpiry(store), [clock.now + 120_000], 'the slack is at most the interval granted')
    await reg({ contact: '<sip:alice@10.0.0.9:5070>' })
    assert.equal(store.puts, 6, 'a second contact')
    assert.equal(storedExpiry(store).length, 2)
    await reg({ contact: '<sip:alice@10.0.0.9:5070>', expires: 0 })
    assert.equal(store.puts, 7, 'a removal')
    assert.equal(storedExpiry(store).length, 1)
    registrar.stop()
  })

  test('slack 0 writes every refresh; a failed write answers 503 and the next refresh is written', async () => {
    const t0 = Date.now()
    const clock = { now: t0 }
    const strict = setup(clock, new CountingStore(), new MemoryMesh(), 0)
    await strict.registrar.start()
    await strict.registrar.handle(registerFor('alice', { expires: 600, cseq: 1 }))
    clock.now += 1000
    await strict.registrar.handle(registerFor('alice', { expires: 600, cseq: 2 }))
    assert.equal(strict.store.puts, 2)
    assert.deepEqual(storedExpiry(strict.store), [clock.now + 600_000])
    strict.registrar.stop()

    const { registrar, store } = setup(clock)
    await registrar.start()
    await registrar.handle(registerFor('alice', { expires: 600, cseq: 1 }))
    clock.now += 400_000
    store.failNext = 1
    assert.equal((await registrar.handle(registerFor('alice', { expires: 600, cseq: 2 }))).status, 503)
    clock.now += 1000
    assert.equal((await registrar.handle(registerFor('alice', { expires: 600, cseq: 3 }))).status, 200)
    assert.equal(store.puts, 2, 'written, though within the horizon the failed write would have set')
    assert.throws(() => setup(clock, new CountingStore(), new MemoryMesh(), -1), RangeError)
    registrar.stop()
  })

  test('coveredByRecord: same count, every binding within its horizon and no more than its slack short of it', () => {
    const b = (expiresAt: number, durableUntil: number) => ({ aor: AOR, key: 'k', uri: 'sip:a@h', params: {}, callId: 'c', cseq: 1, expiresAt, durableUntil })
    const now = 1_000_000
    assert.equal(horizonOf(now + 600_000, now, 300_000), now + 900_000)
    assert.equal(horizonOf(now + 60_000, now, 300_000), now + 120_000)
    assert.equal(horizonOf(now - 5, now, 300_000), now - 5, 'no slack for what has expired')
    const stored = [b(now + 500_000, now + 900_000)]
    assert.equal(coveredByRecord([b(now + 600_000, now + 900_000)], stored, now, 300_000), true)
    assert.equal(coveredByRecord([b(now + 600_000, now + 900_000)], undefined, now, 300_000), false, 'nothing stored')
    assert.equal(coveredByRecord([b(now + 600_000, now + 900_000), b(now + 600_000, now + 900_000)], stored, now, 300_000), false, 'another count')
    assert.equal(coveredByRecord([b(now + 900_001, now + 900_000)], stored, now, 300_000), false, 'past the horizon')
    assert.equal(coveredByRecord([b(now + 599_999, now + 900_000)], stored, now, 300_000), false, 'more than the slack short')
    assert.equal(coveredByRecord([b(now + 200_000, now + 450_000)], stored, now, 300_000), false, 'more than the interval short')
    assert.equal(coveredByRecord([b(now + 600_000, 0)], stored, now, 300_000), false, 'never written')
    assert.equal(coveredByRecord([b(Number.NaN, now + 900_000)], stored, now, 300_000), false)
  })
})
