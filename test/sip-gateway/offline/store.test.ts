import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import {
  OfflineStore, OfflineQuotaError, OfflineMessageTooLargeError, InvalidOfflineMessageError,
  OfflineStoreStoppedError, QuotaScope, DAY_MS
} from '../../../sip-gateway/offline/index.ts'
import type { OfflineRecord, OfflineStoreInit } from '../../../sip-gateway/offline/index.ts'
import { SipStatusError } from '../../../sip-gateway/errors.ts'
import { MSG_PREFIX, TOMB_PREFIX, encodeRecord } from '../../../sip-gateway/offline/record.ts'
import { ALICE, BOB, MapStore, RecordingLogger, message, settle, text } from './fixtures.ts'

async function open (init: OfflineStoreInit = {}, db = new MapStore(), logger = new RecordingLogger()): Promise<{ store: OfflineStore, db: MapStore, logger: RecordingLogger }> {
  const store = new OfflineStore({ store: db, logger }, init)
  await store.start()
  return { store, db, logger }
}

async function ids (store: OfflineStore, aor = ALICE): Promise<string[]> {
  const out: string[] = []
  for await (const r of store.pending(aor)) out.push(r.id)
  return out
}

describe('OfflineStore: store and order', () => {
  test('keeps every field and returns messages in arrival order', async () => {
    const { store } = await open()
    for (let i = 0; i < 5; i++) assert.deepEqual(await store.store(ALICE, message(i)), { id: `m-${i}`, stored: true })
    const got: OfflineRecord[] = []
    for await (const r of store.pending(ALICE)) got.push(r)
    assert.deepEqual(got.map(r => r.id), ['m-0', 'm-1', 'm-2', 'm-3', 'm-4'])
    assert.equal(got[2].from, '"Bob" <sip:bob@example.com>;tag=t2')
    assert.equal(got[2].to, '<sip:alice@example.com>')
    assert.equal(got[2].date, 'Sat, 21 Nov 2026 10:00:00 GMT')
    assert.equal(got[2].contentType, 'text/plain')
    assert.equal(text(got[2].body), 'hello 2')
    assert.deepEqual(got[2].headers, [['P-Asserted-Identity', '<sip:bob@example.com>']])
    assert.equal(got[2].aor, ALICE)
    assert.equal(store.count(ALICE), 5)
    assert.equal(store.count(BOB), 0)
    await store.stop()
  })

  test('a missing Date becomes the time of receipt', async () => {
    const { store } = await open({ now: () => Date.UTC(2026, 10, 22, 1, 2, 3) })
    await store.store(ALICE, message(1, { date: undefined }))
    const [r] = await store.export(ALICE)
    assert.equal(r.date, 'Sun, 22 Nov 2026 01:02:03 GMT')
    assert.equal(r.receivedAt, Date.UTC(2026, 10, 22, 1, 2, 3))
    await store.stop()
  })

  test('order holds when the clock steps back', async () => {
    let now = 1_000_000
    const { store, db } = await open({ now: () => now })
    await store.store(ALICE, message('a'))
    now -= 5000
    await store.store(ALICE, message('b'))
    now += 1
    await store.store(ALICE, message('c'))
    assert.deepEqual(await ids(store), ['m-a', 'm-b', 'm-c'])
    // the keys themselves sort that way, so a restart keeps the order
    const keys = db.keys(OfflineStore.userPrefix(ALICE))
    assert.deepEqual([...keys].sort(), keys)
    const again = new OfflineStore({ store: db, logger: new RecordingLogger() }, { now: () => now })
    await store.stop()
    await again.start()
    assert.deepEqual(await ids(again), ['m-a', 'm-b', 'm-c'])
    await again.stop()
  })

  test('concurrent stores for one user keep call order and count', async () => {
    const { store, db } = await open()
    // random write latency: later calls may finish their put first if not serialized
    db.beforePut = async () => { await new Promise(resolve => setTimeout(resolve, Math.floor(Math.random() * 3))) }
    const all = await Promise.all(Array.from({ length: 60 }, (_, i) => store.store(ALICE, message(i))))
    assert.equal(all.filter(r => r.stored).length, 60)
    assert.deepEqual(await ids(store), Array.from({ length: 60 }, (_, i) => `m-${i}`))
    assert.equal(store.count(ALICE), 60)
    await store.stop()
  })

  test('a user whose AoR is a prefix of another one sees only their own messages', async () => {
    const { store } = await open()
    await store.store('sip:al@example.com', message(1))
    await store.store('sip:al@example.co', message(2))
    await store.store('sip:al@example.com', message(3))
    assert.deepEqual(await ids(store, 'sip:al@example.co'), ['m-2'])
    assert.deepEqual(await ids(store, 'sip:al@example.com'), ['m-1', 'm-3'])
    await store.stop()
  })
})

describe('OfflineStore: dedupe', () => {
  test('a retransmission is stored once, also after it was delivered', async () => {
    const { store, db } = await open()
    assert.equal((await store.store(ALICE, message(1))).stored, true)
    assert.equal((await store.store(ALICE, message(1))).stored, false)
    assert.equal(store.count(ALICE), 1)
    const puts = db.puts
    assert.equal(await store.remove(ALICE, 'm-1'), true)
    assert.equal(await store.remove(ALICE, 'm-1'), false)
    // the tombstone stops a late retransmission
    assert.equal((await store.store(ALICE, message(1))).stored, false)
    assert.equal(store.count(ALICE), 0)
    assert.equal(db.puts, puts + 1) // the tombstone only
    await store.stop()
  })

  test('concurrent copies of one message are stored once', async () => {
    const { store } = await open()
    const r = await Promise.all(Array.from({ length: 10 }, () => store.store(ALICE, message(7))))
    assert.equal(r.filter(x => x.stored).length, 1)
    assert.equal(store.count(ALICE), 1)
    await store.stop()
  })

  test('the same id for two users is two messages', async () => {
    const { store } = await open()
    await store.store(ALICE, message(1))
    await store.store(BOB, message(1))
    assert.equal(store.count(ALICE), 1)
    assert.equal(store.count(BOB), 1)
    await store.stop()
  })

  test('tombstones per user are capped, oldest first', async () => {
    const { store, db } = await open({ maxTombstonesPerUser: 3 })
    for (let i = 0; i < 5; i++) { await store.store(ALICE, message(i)); await store.remove(ALICE, `m-${i}`) }
    assert.equal(db.keys(TOMB_PREFIX).length, 3)
    assert.equal((await store.store(ALICE, message(0))).stored, true) // forgotten
    assert.equal((await store.store(ALICE, message(4))).stored, false)
    await store.stop()
  })
})

describe('OfflineStore: quota and bad input', () => {
  test('per-user count quota: 480 Mailbox Full, nothing written, other users unaffected', async () => {
    const { store, db } = await open({ maxMessagesPerUser: 10 })
    let refused = 0
    for (let i = 0; i < 200; i++) {
      try {
        await store.store(ALICE, message(i))
      } catch (err) {
        assert.ok(err instanceof OfflineQuotaError)
        assert.ok(err instanceof SipStatusError)
        assert.equal(err.name, 'OfflineQuotaError')
        assert.equal(err.status, 480)
        assert.equal(err.reason, 'Mailbox Full')
        assert.equal(err.scope, QuotaScope.User)
        assert.equal(err.retryAfter, 3600)
        refused++
      }
    }
    assert.equal(refused, 190)
    assert.equal(store.count(ALICE), 10)
    assert.equal(db.keys(MSG_PREFIX).length, 10)
    assert.deepEqual(await ids(store), Array.from({ length: 10 }, (_, i) => `m-${i}`))
    assert.equal((await store.store(BOB, message('b'))).stored, true)
    // room again after a delivery
    await store.remove(ALICE, 'm-0')
    assert.equal((await store.store(ALICE, message(500))).stored, true)
    await store.stop()
  })

  test('per-user byte quota', async () => {
    const { store } = await open({ maxBytesPerUser: 2500 }) // a 500-byte body makes a ~720-byte record
    const big = (n: number) => message(n, { body: new Uint8Array(500) })
    await store.store(ALICE, big(1))
    await store.store(ALICE, big(2))
    await store.store(ALICE, big(3))
    await assert.rejects(store.store(ALICE, big(4)), { name: 'OfflineQuotaError', status: 480, scope: 'user' })
    assert.equal(store.count(ALICE), 3)
    assert.ok(store.stats().bytes <= 2500 && store.stats().bytes > 2000, String(store.stats().bytes))
    await store.store(ALICE, message(5)) // a small one still fits
    await store.stop()
  })

  test('global cap: 480 Offline Storage Full for everybody', async () => {
    const { store } = await open({ maxMessages: 5 })
    for (let i = 0; i < 5; i++) await store.store(`sip:u${i}@example.com`, message(i))
    await assert.rejects(store.store(ALICE, message(9)), (err: unknown) => {
      assert.ok(err instanceof OfflineQuotaError)
      assert.equal(err.scope, QuotaScope.Global)
      assert.equal(err.reason, 'Offline Storage Full')
      return true
    })
    assert.equal(store.stats().messages, 5)
    assert.equal(store.stats().users, 5)
    await store.stop()
  })

  test('concurrent stores of many users never exceed the global cap', async () => {
    const { store, db } = await open({ maxMessages: 20 })
    db.beforePut = async () => { await new Promise(resolve => setTimeout(resolve, 1)) }
    const r = await Promise.allSettled(Array.from({ length: 50 }, (_, i) => store.store(`sip:u${i}@example.com`, message(i))))
    assert.equal(r.filter(x => x.status === 'fulfilled').length, 20)
    assert.equal(db.keys(MSG_PREFIX).length, 20)
    assert.equal(store.stats().messages, 20)
    await store.stop()
  })

  test('oversized body: 513, nothing written', async () => {
    const { store, db } = await open({ maxBodyBytes: 1000 })
    await assert.rejects(store.store(ALICE, message(1, { body: new Uint8Array(1001) })),
      (err: unknown) => err instanceof OfflineMessageTooLargeError && err.status === 513)
    await store.store(ALICE, message(2, { body: new Uint8Array(1000) }))
    assert.equal(db.keys(MSG_PREFIX).length, 1)
    await store.stop()
  })

  test('bad AoRs and malformed messages: 400, nothing written', async () => {
    const { store, db } = await open()
    const badAors = ['', 'alice@example.com', 'sip:@example.com', 'sip:alice', 'SIP:alice@example.com', 'sip:alice@EXAMPLE.com',
      'sip:alice@example.com;transport=tcp', 'sip:al ice@example.com', 'sip:alice@example.com\r\nX: y', `sip:${'a'.repeat(300)}@example.com`,
      'tel:+123', 'sip:alice@-bad-.com', 'sip:alice@example.com/../x']
    for (const aor of badAors) {
      await assert.rejects(store.store(aor, message(1)), { name: 'InvalidOfflineMessageError', status: 400 }, aor)
    }
    const bad: Array<Record<string, unknown>> = [
      { id: '' }, { id: 'x\r\ny' }, { id: 'x'.repeat(300) }, { from: 'a\nb' }, { to: 42 }, { contentType: '' },
      { contentType: 'text/plain\r\nVia: evil' }, { body: 'not bytes' }, { date: 'x\u0000' },
      { headers: [['Bad Name', 'v']] }, { headers: [['X', 'a\r\nb']] }, { headers: 'nope' },
      { headers: Array.from({ length: 40 }, () => ['X', 'v']) }, { headers: [['X']] }
    ]
    for (const over of bad) {
      await assert.rejects(store.store(ALICE, { ...message(1), ...over } as never), InvalidOfflineMessageError, JSON.stringify(over).slice(0, 60))
    }
    await assert.rejects(store.store(ALICE, null as never), InvalidOfflineMessageError)
    assert.equal(db.keys(MSG_PREFIX).length, 0)
    assert.equal(store.stats().users, 0)
    // odd but valid user parts
    for (const aor of ['sip:a%40b@example.com', "sip:a.b-c_d!~*'()&=+$,;?/x@example.com", 'sip:x@[::1]', 'sip:x@127.0.0.1:5060', 'sips:x@example.com']) {
      assert.equal((await store.store(aor, message(1))).stored, true, aor)
      assert.equal(store.count(aor), 1)
    }
    await store.stop()
  })

  test('a failed write stores nothing and frees its quota', async () => {
    const { store, db } = await open({ maxMessagesPerUser: 2 })
    await store.store(ALICE, message(1))
    db.beforePut = () => { throw new Error('disk full') }
    await assert.rejects(store.store(ALICE, message(2)), /disk full/)
    db.beforePut = undefined
    assert.equal((await store.store(ALICE, message(2))).stored, true) // the id was not remembered, the slot is free
    assert.deepEqual(await ids(store), ['m-1', 'm-2'])
    assert.equal(store.stats().messages, 2)
    await store.stop()
  })

  test('a flood of distinct users hitting the global cap leaves no state behind', async () => {
    const { store } = await open({ maxMessages: 1 })
    await store.store(ALICE, message(0))
    for (let i = 0; i < 500; i++) await assert.rejects(store.store(`sip:f${i}@example.com`, message(i)), OfflineQuotaError)
    assert.equal(store.stats().users, 1)
    assert.deepEqual(store.users(), [ALICE])
    await store.stop()
  })
})

describe('OfflineStore: lifecycle', () => {
  test('use before start or after stop: 503', async () => {
    const store = new OfflineStore({ store: new MapStore(), logger: new RecordingLogger() })
    await assert.rejects(store.store(ALICE, message(1)), (err: unknown) => err instanceof OfflineStoreStoppedError && err.status === 503)
    await store.start()
    await store.store(ALICE, message(1))
    await store.stop()
    await assert.rejects(store.store(ALICE, message(2)), OfflineStoreStoppedError)
    await assert.rejects(store.deliverBacklog(ALICE, async () => true), OfflineStoreStoppedError)
    await store.stop() // idempotent
  })

  test('bad config is refused', () => {
    for (const init of [{ retentionMs: 0 }, { maxMessagesPerUser: -1 }, { maxBytes: Number.NaN }, { sweepIntervalMs: Infinity }]) {
      assert.throws(() => new OfflineStore({ store: new MapStore(), logger: new RecordingLogger() }, init), RangeError)
    }
  })

  test('stop waits for a store in progress', async () => {
    const { store, db } = await open()
    let release!: () => void
    db.beforePut = () => new Promise<void>(resolve => { release = resolve })
    const p = store.store(ALICE, message(1))
    await settle(5)
    let stopped = false
    const s = store.stop().then(() => { stopped = true })
    await settle(5)
    assert.equal(stopped, false)
    release()
    await s
    assert.equal((await p).stored, true)
    assert.equal(db.keys(MSG_PREFIX).length, 1)
  })
})

describe('OfflineStore: retention', () => {
  test('the periodic sweep purges expired messages and tombstones (mock timers)', async (t) => {
    t.mock.timers.enable({ apis: ['setInterval', 'Date'], now: Date.UTC(2026, 0, 1) })
    const { store, db, logger } = await open({ retentionMs: 7 * DAY_MS, sweepIntervalMs: 60 * 60 * 1000 })
    await store.store(ALICE, message('old'))
    await store.store(ALICE, message('gone'))
    await store.remove(ALICE, 'm-gone')
    t.mock.timers.tick(3 * DAY_MS)
    await store.store(ALICE, message('new'))
    await store.store(BOB, message('old-bob'))
    t.mock.timers.tick(4 * DAY_MS + 60 * 60 * 1000) // 'old' and the tombstone pass 7 days; a sweep runs
    await settle()
    assert.deepEqual(await ids(store), ['m-new'])
    assert.equal(store.count(BOB), 1)
    assert.equal(db.keys(TOMB_PREFIX).length, 0)
    assert.ok(logger.lines.some(l => l.msg === 'offline sweep' && l.fields.expired === 1 && l.fields.tombstones === 1))
    t.mock.timers.tick(3 * DAY_MS)
    await settle()
    assert.equal(store.count(ALICE), 0)
    assert.equal(store.count(BOB), 0)
    assert.equal(store.stats().messages, 0)
    assert.equal(store.stats().users, 0)
    assert.equal(db.keys('sip-gateway/offline/').length, 0)
    await store.stop()
    // no sweep after stop
    await store.store(ALICE, message('x')).catch(() => {})
    t.mock.timers.tick(30 * DAY_MS)
    await settle()
  })

  test('expired messages are not delivered even before the sweep runs', async () => {
    let now = 1_000_000_000
    const { store } = await open({ retentionMs: 1000, now: () => now })
    await store.store(ALICE, message(1))
    now += 500
    await store.store(ALICE, message(2))
    now += 600
    const sent: string[] = []
    const r = await store.deliverBacklog(ALICE, async (m) => { sent.push(m.id); return true })
    assert.deepEqual(sent, ['m-2'])
    assert.equal(r.delivered, 1)
    assert.deepEqual((await store.sweep()).expired, 1)
    assert.equal(store.count(ALICE), 0)
    await store.stop()
  })

  test('the sweep timer is unref\'d', async () => {
    const handles: Array<{ unref: () => void, unrefd: boolean }> = []
    const timers = {
      setInterval: () => { const h = { unrefd: false, unref () { h.unrefd = true } }; handles.push(h); return h },
      clearInterval: () => {}
    }
    const { store } = await open({ timers })
    assert.equal(handles.length, 1)
    assert.equal(handles[0].unrefd, true)
    await store.stop()
  })
})

describe('OfflineStore: deliverBacklog', () => {
  test('sends in order, removes after each 2xx, stops at the first failure and keeps the rest', async () => {
    const { store } = await open()
    for (let i = 0; i < 6; i++) await store.store(ALICE, message(i))
    const sent: string[] = []
    const r = await store.deliverBacklog(ALICE, async (m) => { sent.push(m.id); return m.id !== 'm-3' })
    assert.deepEqual(sent, ['m-0', 'm-1', 'm-2', 'm-3'])
    assert.deepEqual(r, { delivered: 3, refused: 0, remaining: 3, stopped: true })
    assert.deepEqual(await ids(store), ['m-3', 'm-4', 'm-5'])
    const r2 = await store.deliverBacklog(ALICE, async (m) => { sent.push(m.id); return true })
    assert.deepEqual(r2, { delivered: 3, refused: 0, remaining: 0, stopped: false })
    assert.deepEqual(sent, ['m-0', 'm-1', 'm-2', 'm-3', 'm-3', 'm-4', 'm-5'])
    await store.stop()
  })

  test('a permanent refusal (415, 513, 603...) drops that message, logged and counted, and the rest go on in order', async () => {
    const { store, logger } = await open()
    for (let i = 0; i < 6; i++) await store.store(ALICE, message(i))
    const refuse: Record<string, number> = { 'm-1': 415, 'm-3': 513, 'm-4': 603 }
    const sent: string[] = []
    const r = await store.deliverBacklog(ALICE, async (m) => {
      sent.push(m.id)
      const status = refuse[m.id] ?? 200
      return { status, reason: status === 415 ? 'Unsupported Media Type' : undefined }
    })
    assert.deepEqual(sent, ['m-0', 'm-1', 'm-2', 'm-3', 'm-4', 'm-5'])
    assert.deepEqual(r, { delivered: 3, refused: 3, remaining: 0, stopped: false })
    assert.equal(store.count(ALICE), 0)
    assert.equal(store.stats().refused, 3)
    const warned = logger.at('warn').filter(l => l.msg.includes('refused'))
    assert.deepEqual(warned.map(l => [l.fields.id, l.fields.status]), [['m-1', 415], ['m-3', 513], ['m-4', 603]])
    assert.equal(warned[0].fields.from, '"Bob" <sip:bob@example.com>;tag=t1')
    assert.equal(warned[0].fields.aor, ALICE)
    // tombstoned: the same message arriving again is not stored (nor sent) a second time
    assert.deepEqual(await store.store(ALICE, message(1)), { id: 'm-1', stored: false })
    await store.stop()
  })

  test('a transient failure (408, 480, 486, 500, 503, 600, no answer) keeps that message and all after it, in order', async () => {
    for (const failure of [{ status: 408 }, { status: 480 }, { status: 486 }, { status: 500 }, { status: 503 }, { status: 600 }, { status: 404 }, false, undefined]) {
      const { store, logger } = await open()
      for (let i = 0; i < 4; i++) await store.store(ALICE, message(i))
      const sent: string[] = []
      const r = await store.deliverBacklog(ALICE, async (m) => { sent.push(m.id); return m.id === 'm-1' ? failure : { status: 200 } })
      const label = JSON.stringify(failure)
      assert.deepEqual(sent, ['m-0', 'm-1'], label)
      assert.deepEqual(r, { delivered: 1, refused: 0, remaining: 3, stopped: true }, label)
      assert.deepEqual(await ids(store), ['m-1', 'm-2', 'm-3'], label)
      assert.equal(store.stats().refused, 0, label)
      assert.equal(logger.at('warn').length, 0, label)
      await store.stop()
    }
  })

  test('a sender that throws is a failure', async () => {
    const { store } = await open()
    await store.store(ALICE, message(1))
    const r = await store.deliverBacklog(ALICE, async () => { throw new Error('408') })
    assert.deepEqual(r, { delivered: 0, refused: 0, remaining: 1, stopped: true })
    await store.stop()
  })

  test('concurrent deliveries for one user never send a message twice', async () => {
    const { store } = await open()
    for (let i = 0; i < 30; i++) await store.store(ALICE, message(i))
    const sent: string[] = []
    const send = async (m: OfflineRecord): Promise<boolean> => {
      sent.push(m.id)
      await new Promise(resolve => setTimeout(resolve, Math.floor(Math.random() * 2)))
      return true
    }
    const results = await Promise.all([store.deliverBacklog(ALICE, send), store.deliverBacklog(ALICE, send), store.deliverBacklog(ALICE, send)])
    assert.equal(results.reduce((n, r) => n + r.delivered, 0), 30)
    assert.deepEqual(sent, Array.from({ length: 30 }, (_, i) => `m-${i}`))
    assert.equal(store.count(ALICE), 0)
    await store.stop()
  })

  test('messages stored during a delivery are delivered too, in order', async () => {
    const { store } = await open()
    await store.store(ALICE, message(0))
    const sent: string[] = []
    let n = 1
    const r = await store.deliverBacklog(ALICE, async (m) => {
      sent.push(m.id)
      if (n < 4) await store.store(ALICE, message(n++))
      return true
    })
    assert.deepEqual(sent, ['m-0', 'm-1', 'm-2', 'm-3'])
    assert.equal(r.delivered, 4)
    await store.stop()
  })

  test('abort and max stop a delivery; deliveries for other users go on', async () => {
    const { store } = await open()
    for (let i = 0; i < 5; i++) { await store.store(ALICE, message(i)); await store.store(BOB, message(i)) }
    const ac = new AbortController()
    const r = await store.deliverBacklog(ALICE, async (m) => { if (m.id === 'm-1') ac.abort(); return true }, { signal: ac.signal })
    assert.deepEqual(r, { delivered: 2, refused: 0, remaining: 3, stopped: true })
    const r2 = await store.deliverBacklog(BOB, async () => true, { max: 2 })
    assert.deepEqual(r2, { delivered: 2, refused: 0, remaining: 3, stopped: false })
    await store.stop()
  })

  test('a removal in between (another path got the 2xx) is not sent again', async () => {
    const { store } = await open()
    for (let i = 0; i < 3; i++) await store.store(ALICE, message(i))
    const sent: string[] = []
    await store.deliverBacklog(ALICE, async (m) => {
      sent.push(m.id)
      if (m.id === 'm-0') await store.remove(ALICE, 'm-1')
      return true
    })
    assert.deepEqual(sent, ['m-0', 'm-2'])
    await store.stop()
  })

  test('stop aborts a delivery in progress', async () => {
    const { store } = await open()
    for (let i = 0; i < 3; i++) await store.store(ALICE, message(i))
    let seen: AbortSignal | undefined
    const p = store.deliverBacklog(ALICE, async (_m, { signal }) => {
      seen = signal
      await new Promise<void>(resolve => signal?.addEventListener('abort', () => { resolve() }))
      return false
    })
    await settle(5)
    await store.stop()
    const r = await p
    assert.equal(seen?.aborted, true)
    assert.equal(r.delivered, 0)
    assert.equal(r.stopped, true)
  })
})

describe('OfflineStore: hand-over between nodes', () => {
  test('take hands the backlog over; a retried import stores nothing twice', async () => {
    const a = await open()
    const b = await open()
    for (let i = 0; i < 4; i++) await a.store.store(ALICE, message(i))
    let transferred: OfflineRecord[] = []
    const n = await a.store.take(ALICE, async (aor, records) => {
      transferred = records
      assert.deepEqual(await b.store.import(aor, records), { imported: 4, duplicates: 0, expired: 0, rejected: 0 })
    })
    assert.equal(n, 4)
    assert.equal(a.store.count(ALICE), 0)
    assert.deepEqual(await b.store.import(ALICE, transferred), { imported: 0, duplicates: 4, expired: 0, rejected: 0 })
    // delivered on b, then the transfer is retried once more: still nothing twice
    const sent: string[] = []
    await b.store.deliverBacklog(ALICE, async (m) => { sent.push(m.id); return true })
    assert.deepEqual(await b.store.import(ALICE, transferred), { imported: 0, duplicates: 4, expired: 0, rejected: 0 })
    assert.deepEqual(sent, ['m-0', 'm-1', 'm-2', 'm-3'])
    // a retransmission of an original request reaching a later is not stored again either
    assert.equal((await a.store.store(ALICE, message(2))).stored, false)
    await a.store.stop()
    await b.store.stop()
  })

  test('a failed hand-over removes nothing', async () => {
    const { store } = await open()
    await store.store(ALICE, message(1))
    await assert.rejects(store.take(ALICE, async () => { throw new Error('peer gone') }), /peer gone/)
    assert.deepEqual(await ids(store), ['m-1'])
    assert.equal(await store.take(BOB, async () => { throw new Error('not called') }), 0)
    await store.stop()
  })

  test('take hands over in batches; a failure keeps that batch and the rest', async () => {
    const a = await open()
    const b = await open()
    for (let i = 0; i < 7; i++) await a.store.store(ALICE, message(i))
    const calls: string[][] = []
    await assert.rejects(a.store.take(ALICE, async (aor, recs) => {
      calls.push(recs.map(r => r.id))
      if (calls.length === 3) throw new Error('link lost')
      await b.store.import(aor, recs)
    }, { batchSize: 2 }), /link lost/)
    assert.deepEqual(calls, [['m-0', 'm-1'], ['m-2', 'm-3'], ['m-4', 'm-5']])
    assert.deepEqual(await ids(a.store), ['m-4', 'm-5', 'm-6'])
    assert.deepEqual(await ids(b.store), ['m-0', 'm-1', 'm-2', 'm-3'])
    // retried: the rest follows, nothing twice on b
    assert.equal(await a.store.take(ALICE, async (aor, recs) => { await b.store.import(aor, recs) }, { batchSize: 2 }), 3)
    assert.deepEqual(await ids(b.store), ['m-0', 'm-1', 'm-2', 'm-3', 'm-4', 'm-5', 'm-6'])
    await a.store.stop()
    await b.store.stop()
  })

  test('a full backlog handed over stays recognised (tombstones cover the quota by default)', async () => {
    const { store, db } = await open({ maxMessagesPerUser: 1500 })
    for (let i = 0; i < 1500; i++) await store.store(ALICE, message(i))
    let handed: OfflineRecord[] = []
    await store.take(ALICE, async (_aor, recs) => { handed = handed.concat(recs) })
    assert.equal(handed.length, 1500)
    assert.equal(db.keys(TOMB_PREFIX).length, 1500)
    const r = await store.import(ALICE, handed) // e.g. the other node handed them back by mistake
    assert.equal(r.duplicates, 1500)
    await store.stop()
  })

  test('import merges by time of receipt, validates, and respects the node-wide cap', async () => {
    const t0 = 1_700_000_000_000
    let now = t0
    const { store } = await open({ maxMessages: 6, retentionMs: DAY_MS, now: () => now })
    await store.store(ALICE, message('local-1')) // at t0
    now += 2000
    await store.store(ALICE, message('local-2'))
    const rec = (id: string, receivedAt: number, aor = ALICE): OfflineRecord => ({ ...message(id), id, aor, receivedAt, date: 'D', headers: [] })
    const r = await store.import(ALICE, [
      rec('early', t0 - 1000), rec('mid', t0 + 1000), rec('future', now + 2 * DAY_MS), rec('ancient', now - 2 * DAY_MS),
      rec('bob', t0 + 500, BOB), { ...rec('bad', t0), from: 'x\r\ny' }, null as never, rec('mid', t0 + 1000)
    ])
    assert.deepEqual(r, { imported: 2, duplicates: 1, expired: 1, rejected: 4 })
    assert.deepEqual(await ids(store), ['early', 'm-local-1', 'mid', 'm-local-2'])
    await assert.rejects(store.import(ALICE, [rec('x1', now), rec('x2', now), rec('x3', now)]), { name: 'OfflineQuotaError', scope: 'global' })
    assert.equal(store.count(ALICE), 4)
    await assert.rejects(store.import(ALICE, 'nope' as never), InvalidOfflineMessageError)
    await store.stop()
  })

  test('drain hands every user over and keeps those whose hand-over failed', async () => {
    const { store } = await open()
    await store.store(ALICE, message(1))
    await store.store(BOB, message(2))
    await store.store('sip:carol@example.com', message(3))
    const got: string[] = []
    const r = await store.drain(async (aor) => { if (aor === BOB) throw new Error('no'); got.push(aor) })
    assert.deepEqual(r, { users: 2, messages: 2, failed: 1 })
    assert.deepEqual(store.users(), [BOB])
    assert.deepEqual(got.sort(), [ALICE, 'sip:carol@example.com'])
    await store.stop()
  })

  test('take excludes a concurrent delivery: nothing both sent and handed over', async () => {
    const { store } = await open()
    for (let i = 0; i < 5; i++) await store.store(ALICE, message(i))
    const sent: string[] = []
    const handed: string[] = []
    await Promise.all([
      store.deliverBacklog(ALICE, async (m) => { sent.push(m.id); await settle(1); return true }),
      store.take(ALICE, async (_aor, recs) => { handed.push(...recs.map(r => r.id)) })
    ])
    assert.equal(sent.length + handed.length, 5)
    assert.equal(new Set([...sent, ...handed]).size, 5)
    await store.stop()
  })
})

describe('OfflineStore: corrupt entries', () => {
  test('corrupt values and foreign keys are skipped and logged at start, then swept', async () => {
    let now = 5_000_000_000
    const db = new MapStore()
    const first = await open({ now: () => now }, db)
    for (let i = 0; i < 3; i++) await first.store.store(ALICE, message(i))
    await first.store.stop()
    const keys = db.keys(OfflineStore.userPrefix(ALICE))
    db.map.set(keys[1], new Uint8Array([0xff, 0x00, 0x13]))                           // garbage
    db.map.set(`${OfflineStore.userPrefix(ALICE)}zz`, new Uint8Array([1]))            // foreign key
    db.map.set(`${MSG_PREFIX}%E0%A4%A/000000000000000000001`, new Uint8Array([1]))     // bad escape
    db.map.set(`${TOMB_PREFIX}${encodeURIComponent(ALICE)}/x`, new TextEncoder().encode('not a time'))
    // a valid record filed under another user's key
    db.map.set(`${OfflineStore.userPrefix(BOB)}000000000001` + '00000001', encodeRecord({ ...message(9), aor: ALICE, receivedAt: now, date: 'D', headers: [] }))

    const logger = new RecordingLogger()
    const second = await open({ now: () => now, retentionMs: DAY_MS }, db, logger)
    assert.deepEqual(await ids(second.store), ['m-0', 'm-2'])
    assert.equal(second.store.count(BOB), 0)
    assert.ok(logger.at('warn').length >= 5)
    // the misfiled record carries key time 1: already past retention, deleted by the first sweep
    assert.equal(second.store.stats().corrupt, 1)
    assert.equal(db.keys(OfflineStore.userPrefix(BOB)).length, 0)
    // new messages do not overwrite the corrupt entry and still sort last
    await second.store.store(ALICE, message(3))
    assert.deepEqual(await ids(second.store), ['m-0', 'm-2', 'm-3'])
    assert.ok(db.map.has(keys[1]))
    const sent: string[] = []
    await second.store.deliverBacklog(ALICE, async (m) => { sent.push(m.id); return true })
    assert.deepEqual(sent, ['m-0', 'm-2', 'm-3'])
    now += 2 * DAY_MS
    const s = await second.store.sweep()
    assert.equal(s.corrupt, 1)
    assert.equal(second.store.stats().corrupt, 0)
    assert.equal(db.map.has(keys[1]), false)
    await second.store.stop()
  })

  test('a value corrupted after start is skipped at delivery, the rest goes on', async () => {
    const { store, db, logger } = await open()
    for (let i = 0; i < 3; i++) await store.store(ALICE, message(i))
    const keys = db.keys(OfflineStore.userPrefix(ALICE))
    db.map.set(keys[0], new TextEncoder().encode('{"json":"not cbor"}'))
    const sent: string[] = []
    const r = await store.deliverBacklog(ALICE, async (m) => { sent.push(m.id); return true })
    assert.deepEqual(sent, ['m-1', 'm-2'])
    assert.equal(r.remaining, 1)
    assert.ok(logger.at('warn').some(l => l.msg.includes('corrupt')))
    await store.stop()
  })
})
