import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { KnownUsers, KNOWN_PREFIX, DAY_MS } from '../../../sip-gateway/offline/index.ts'
import { ALICE, BOB, MapStore, RecordingLogger, settle } from './fixtures.ts'

describe('KnownUsers', () => {
  test('known within 30 days of the last registration here, persisted, forgotten after', async () => {
    let now = 1_700_000_000_000
    const db = new MapStore()
    const k = new KnownUsers({ store: db, logger: new RecordingLogger() }, { now: () => now })
    await k.start()
    assert.equal(k.isKnown(ALICE), false)
    await k.markRegistered(ALICE)
    assert.equal(k.isKnown(ALICE), true)
    assert.equal(k.lastRegistered(ALICE), now)
    now += 29 * DAY_MS
    assert.equal(k.isKnown(ALICE), true)
    await k.stop()
    // a restarted node still knows her
    const k2 = new KnownUsers({ store: db, logger: new RecordingLogger() }, { now: () => now })
    await k2.start()
    assert.equal(k2.isKnown(ALICE), true)
    now += 2 * DAY_MS
    assert.equal(k2.isKnown(ALICE), false)
    assert.equal(k2.lastRegistered(ALICE), undefined)
    assert.equal(await k2.sweep(), 1)
    assert.equal(db.keys(KNOWN_PREFIX).length, 0)
    await k2.stop()
  })

  test('the credentials file makes users known without a registration', async () => {
    const k = new KnownUsers({ store: new MapStore(), logger: new RecordingLogger() }, { credentials: [BOB] })
    await k.start()
    assert.equal(k.isKnown(BOB), true)
    assert.equal(k.isKnown(ALICE), false)
    k.setCredentials([ALICE, 'garbage'])
    assert.equal(k.isKnown(ALICE), true)
    assert.equal(k.isKnown(BOB), false)
    assert.equal(k.isKnown('garbage'), false)
    await k.stop()
  })

  test('refreshes within the write granularity are not written again; older times never win', async () => {
    let now = 1_700_000_000_000
    const db = new MapStore()
    const k = new KnownUsers({ store: db, logger: new RecordingLogger() }, { now: () => now, writeGranularityMs: 60_000 })
    await k.start()
    await k.markRegistered(ALICE)
    now += 30_000
    await k.markRegistered(ALICE)
    assert.equal(db.puts, 1)
    now += 31_000
    await k.markRegistered(ALICE)
    assert.equal(db.puts, 2)
    await k.markRegistered(ALICE, now - 10 * DAY_MS)
    assert.equal(k.lastRegistered(ALICE), now)
    await assert.rejects(k.markRegistered('not an aor'), { name: 'InvalidOfflineMessageError' })
    await k.stop()
  })

  test('corrupt entries are skipped and logged', async () => {
    const db = new MapStore()
    const now = 1_700_000_000_000
    db.map.set(`${KNOWN_PREFIX}${encodeURIComponent(ALICE)}`, new TextEncoder().encode(String(now)))
    db.map.set(`${KNOWN_PREFIX}${encodeURIComponent(BOB)}`, new TextEncoder().encode('yesterday'))
    db.map.set(`${KNOWN_PREFIX}%ZZ`, new TextEncoder().encode(String(now)))
    db.map.set(`${KNOWN_PREFIX}not-an-aor`, new TextEncoder().encode(String(now)))
    const logger = new RecordingLogger()
    const k = new KnownUsers({ store: db, logger }, { now: () => now })
    await k.start()
    assert.equal(k.isKnown(ALICE), true)
    assert.equal(k.isKnown(BOB), false)
    assert.equal(logger.at('warn').length, 3)
    await k.stop()
  })

  test('the periodic sweep forgets expired users (mock timers)', async (t) => {
    t.mock.timers.enable({ apis: ['setInterval', 'Date'], now: 1_700_000_000_000 })
    const db = new MapStore()
    const k = new KnownUsers({ store: db, logger: new RecordingLogger() }, { sweepIntervalMs: DAY_MS })
    await k.start()
    await k.markRegistered(ALICE)
    t.mock.timers.tick(31 * DAY_MS)
    await settle()
    assert.equal(db.keys(KNOWN_PREFIX).length, 0)
    await k.stop()
  })
})
