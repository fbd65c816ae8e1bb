import { afterEach, beforeEach, describe, mock, test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import {
  BadPublicationError, ConditionalRequestFailedError, IntervalTooBriefError, PublicationStore, TooManyPublicationsError
} from '../../../sip-gateway/presence/publications.ts'
import type { PublicationChange } from '../../../sip-gateway/presence/publications.ts'

const ALICE = 'sip:alice@example.com'
const BOB = 'sip:bob@example.com'

describe('PublicationStore (RFC 3903)', () => {
  let store: PublicationStore<string>
  let changes: PublicationChange[]

  beforeEach(() => {
    mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 })
    store = new PublicationStore<string>({ minExpires: 60, maxExpires: 7200, defaultExpires: 3600, maxPerPresentity: 3 })
    changes = []
    store.onChange(c => changes.push(c))
  })
  afterEach(() => {
    store.stop()
    mock.timers.reset()
  })

  test('initial publication gets an unguessable entity tag and the default expiry', () => {
    const r = store.publish({ presentity: ALICE, event: 'presence', body: 'doc1' })
    assert.equal(r.outcome, 'created')
    assert.equal(r.expires, 3600)
    assert.match(r.etag, /^[A-Za-z0-9_-]{22}$/, '128 bits, base64url: a SIP token')
    const pubs = store.get(ALICE, 'presence')
    assert.equal(pubs.length, 1)
    assert.equal(pubs[0].body, 'doc1')
    assert.equal(pubs[0].expiresAt, 1_000_000 + 3_600_000)
    assert.deepEqual(changes, [{ presentity: ALICE, event: 'presence', reason: 'created', etag: r.etag }])
    const tags = new Set(Array.from({ length: 200 }, () => store.publish({ presentity: BOB, event: `e${Math.random()}`, body: 'x' }).etag))
    assert.equal(tags.size, 200)
  })

  test('refresh: new tag, new expiry, same body, no change event; the old tag is dead', () => {
    const first = store.publish({ presentity: ALICE, event: 'presence', body: 'doc1', expires: 120 })
    mock.timers.tick(100_000)
    const r = store.publish({ presentity: ALICE, event: 'presence', ifMatch: first.etag, expires: 120 })
    assert.equal(r.outcome, 'refreshed')
    assert.notEqual(r.etag, first.etag)
    assert.equal(store.get(ALICE, 'presence')[0].body, 'doc1')
    assert.equal(store.get(ALICE, 'presence')[0].expiresAt, 1_100_000 + 120_000)
    assert.equal(changes.length, 1)
    assert.throws(() => store.publish({ presentity: ALICE, event: 'presence', ifMatch: first.etag }), ConditionalRequestFailedError)
    // it survives past the first expiry because it was refreshed
    mock.timers.tick(50_000)
    assert.equal(store.get(ALICE, 'presence').length, 1)
  })

  test('modify replaces the body and emits a change', () => {
    const first = store.publish({ presentity: ALICE, event: 'presence', body: 'doc1' })
    const r = store.publish({ presentity: ALICE, event: 'presence', ifMatch: ` ${first.etag} `, body: 'doc2' })
    assert.equal(r.outcome, 'modified')
    assert.equal(store.get(ALICE, 'presence')[0].body, 'doc2')
    assert.deepEqual(changes.map(c => c.reason), ['created', 'modified'])
  })

  test('remove with Expires: 0', () => {
    const first = store.publish({ presentity: ALICE, event: 'presence', body: 'doc1' })
    const r = store.publish({ presentity: ALICE, event: 'presence', ifMatch: first.etag, expires: 0 })
    assert.deepEqual(r, { outcome: 'removed', etag: first.etag, expires: 0 })
    assert.deepEqual(store.get(ALICE, 'presence'), [])
    assert.equal(store.size, 0)
    assert.deepEqual(changes.map(c => c.reason), ['created', 'removed'])
    assert.throws(() => store.publish({ presentity: ALICE, event: 'presence', ifMatch: first.etag, expires: 0 }), ConditionalRequestFailedError)
  })

  test('unknown tags, tags of another presentity or package: 412', () => {
    const a = store.publish({ presentity: ALICE, event: 'presence', body: 'doc1' })
    for (const req of [
      { presentity: ALICE, event: 'presence', ifMatch: 'nope' },
      { presentity: BOB, event: 'presence', ifMatch: a.etag },
      { presentity: ALICE, event: 'dialog', ifMatch: a.etag },
      { presentity: ALICE, event: 'presence', ifMatch: '' },
      { presentity: ALICE, event: 'presence', ifMatch: 'x'.repeat(10_000) }
    ]) {
      assert.throws(() => store.publish(req), (err: unknown) => err instanceof ConditionalRequestFailedError && err.status === 412 && err.message.length < 200)
    }
  })

  test('expiry bounds: 423 with Min-Expires below the minimum, lowered above the maximum, 400 when malformed', () => {
    assert.throws(() => store.publish({ presentity: ALICE, event: 'presence', body: 'x', expires: 59 }),
      (err: unknown) => err instanceof IntervalTooBriefError && err.status === 423 && err.minExpires === 60)
    assert.equal(store.publish({ presentity: ALICE, event: 'presence', body: 'x', expires: 60 }).expires, 60)
    assert.equal(store.publish({ presentity: ALICE, event: 'presence', body: 'x', expires: 1e9 }).expires, 7200)
    for (const expires of [-1, 1.5, Number.NaN, Infinity]) {
      assert.throws(() => store.publish({ presentity: BOB, event: 'presence', body: 'x', expires }), BadPublicationError)
    }
    assert.throws(() => store.publish({ presentity: BOB, event: 'presence' }), (err: unknown) => err instanceof BadPublicationError && err.status === 400)
  })

  test('initial PUBLISH with Expires: 0 keeps nothing', () => {
    const r = store.publish({ presentity: ALICE, event: 'presence', body: 'x', expires: 0 })
    assert.equal(r.expires, 0)
    assert.equal(store.size, 0)
    assert.deepEqual(changes, [])
  })

  test('expiry timers remove publications and emit a change; a refreshed one stays', () => {
    const a = store.publish({ presentity: ALICE, event: 'presence', body: 'a', expires: 60 })
    store.publish({ presentity: ALICE, event: 'presence', body: 'b', expires: 120 })
    mock.timers.tick(59_999)
    assert.equal(store.get(ALICE, 'presence').length, 2)
    mock.timers.tick(1)
    assert.deepEqual(store.get(ALICE, 'presence').map(p => p.body), ['b'])
    assert.deepEqual(changes.map(c => [c.reason, c.etag === a.etag]), [['created', true], ['created', false], ['expired', true]])
    mock.timers.tick(60_000)
    assert.equal(store.size, 0)
    assert.equal(changes.at(-1)?.reason, 'expired')
    assert.throws(() => store.publish({ presentity: ALICE, event: 'presence', ifMatch: a.etag }), ConditionalRequestFailedError)
  })

  test('a later expiry leaves the timer to set itself again for the rest; a shorter one sets it earlier', () => {
    const a = store.publish({ presentity: ALICE, event: 'presence', body: 'a', expires: 120 })
    mock.timers.tick(60_000)
    const later = store.publish({ presentity: ALICE, event: 'presence', ifMatch: a.etag, body: 'a2', expires: 120 }) // now due at 180 s
    mock.timers.tick(60_000) // the first timer's time: it sets itself for the rest
    assert.equal(store.size, 1)
    mock.timers.tick(59_999)
    assert.equal(store.size, 1)
    mock.timers.tick(1)
    assert.equal(store.size, 0, 'expired at 180 s exactly')
    assert.deepEqual(changes.map(c => c.reason), ['created', 'modified', 'expired'])
    assert.equal(changes.at(-1)?.etag, later.etag)

    const b = store.publish({ presentity: BOB, event: 'presence', body: 'b', expires: 3600 })
    mock.timers.tick(10_000)
    store.publish({ presentity: BOB, event: 'presence', ifMatch: b.etag, expires: 60 }) // sooner than the timer set for 3600 s
    mock.timers.tick(59_999)
    assert.equal(store.size, 1)
    mock.timers.tick(1)
    assert.equal(store.size, 0, 'expired 60 s after the refresh')
  })

  test('a publication past its expiry is dead even before its timer runs', () => {
    const a = store.publish({ presentity: ALICE, event: 'presence', body: 'a', expires: 60 })
    mock.timers.setTime(1_000_000 + 61_000) // moves the clock without running timers
    assert.deepEqual(store.get(ALICE, 'presence'), [])
    assert.throws(() => store.publish({ presentity: ALICE, event: 'presence', ifMatch: a.etag }), ConditionalRequestFailedError)
    assert.equal(changes.at(-1)?.reason, 'expired')
  })

  test('several devices: creation order kept across refreshes; at most maxPerPresentity', () => {
    const tags = ['a', 'b', 'c'].map(body => store.publish({ presentity: ALICE, event: 'presence', body }).etag)
    store.publish({ presentity: ALICE, event: 'presence', ifMatch: tags[0], body: 'a2' })
    assert.deepEqual(store.get(ALICE, 'presence').map(p => p.body), ['a2', 'b', 'c'])
    const keys = store.get(ALICE, 'presence').map(p => p.key)
    assert.deepEqual([...keys].sort(), keys)
    assert.throws(() => store.publish({ presentity: ALICE, event: 'presence', body: 'd' }), (err: unknown) => err instanceof TooManyPublicationsError && err.status === 403)
    assert.equal(store.publish({ presentity: BOB, event: 'presence', body: 'd' }).outcome, 'created')
  })

  test('the whole store is bounded too; room comes back when publications go', () => {
    const small = new PublicationStore<string>({ maxTotal: 3 })
    try {
      const tags = [1, 2, 3].map(i => small.publish({ presentity: `sip:u${i}@example.com`, event: 'presence', body: 'x' }).etag)
      assert.throws(() => small.publish({ presentity: 'sip:u4@example.com', event: 'presence', body: 'x' }), (err: unknown) => err instanceof TooManyPublicationsError && /in all/.test(err.message))
      small.publish({ presentity: 'sip:u1@example.com', event: 'presence', ifMatch: tags[0], expires: 0 })
      assert.equal(small.size, 2)
      assert.equal(small.publish({ presentity: 'sip:u4@example.com', event: 'presence', body: 'x' }).outcome, 'created')
      small.publish({ presentity: 'sip:u2@example.com', event: 'presence', ifMatch: tags[1], body: 'y' }) // modify keeps the count
      assert.equal(small.size, 3)
    } finally {
      small.stop()
    }
  })

  test('stop cancels every timer', () => {
    store.publish({ presentity: ALICE, event: 'presence', body: 'a', expires: 60 })
    store.stop()
    mock.timers.tick(120_000)
    assert.deepEqual(changes.map(c => c.reason), ['created'])
  })

  test('listeners: one that leaves or adds another while told keeps the others told, the new one from the next change', () => {
    const seen: string[] = []
    const later = (c: PublicationChange): void => { seen.push(`later ${c.reason}`) }
    const leaving = store.onChange((c) => { seen.push(`leaving ${c.reason}`); leaving(); store.onChange(later) })
    const after = store.onChange((c) => { seen.push(`after ${c.reason}`) })
    const r = store.publish({ presentity: ALICE, event: 'presence', body: 'a' })
    store.publish({ presentity: ALICE, event: 'presence', ifMatch: r.etag, expires: 0 })
    assert.deepEqual(seen, ['leaving created', 'after created', 'after removed', 'later removed'])
    after()
    const unsubscribeTwice = store.onChange(later) // already there: told once
    store.publish({ presentity: BOB, event: 'presence', body: 'b' })
    assert.deepEqual(seen.slice(4), ['later created'])
    unsubscribeTwice()
    unsubscribeTwice()
  })

  test('a throwing listener does not break the store', () => {
    store.onChange(() => { throw new Error('boom') })
    const r = store.publish({ presentity: ALICE, event: 'presence', body: 'a' })
    assert.equal(store.get(ALICE, 'presence')[0].etag, r.etag)
  })

  test('rejects inconsistent configuration', () => {
    assert.throws(() => new PublicationStore({ minExpires: 100, defaultExpires: 50 }), RangeError)
  })

  test('property: random operation sequences match a simple model', () => {
    type Op = { kind: 'pub' | 'refresh' | 'modify' | 'remove' | 'tick', who: number, pick: number, secs: number }
    const op = fc.record({ kind: fc.constantFrom('pub', 'refresh', 'modify', 'remove', 'tick'), who: fc.nat(1), pick: fc.nat(5), secs: fc.integer({ min: 0, max: 200 }) }) as fc.Arbitrary<Op>
    fc.assert(fc.property(fc.array(op, { maxLength: 40 }), ops => {
      mock.timers.reset()
      mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 0 })
      const s = new PublicationStore<number>({ minExpires: 60, maxExpires: 7200, defaultExpires: 100, maxPerPresentity: 3 })
      const model = new Map<string, { who: number, body: number, expiresAt: number }>()
      let now = 0
      let body = 0
      try {
        for (const o of ops) {
          const aor = o.who === 0 ? ALICE : BOB
          const mine = [...model.entries()].filter(([, v]) => v.who === o.who)
          const target = mine.length > 0 ? mine[o.pick % mine.length][0] : 'unknown-tag'
          const expires = 60 + o.secs
          if (o.kind === 'tick') {
            mock.timers.tick(o.secs * 1000)
            now += o.secs * 1000
            for (const [k, v] of model) if (v.expiresAt <= now) model.delete(k)
          } else if (o.kind === 'pub') {
            if (mine.length >= 3) {
              assert.throws(() => s.publish({ presentity: aor, event: 'presence', body: ++body, expires }), TooManyPublicationsError)
            } else {
              const r = s.publish({ presentity: aor, event: 'presence', body: ++body, expires })
              model.set(r.etag, { who: o.who, body, expiresAt: now + expires * 1000 })
            }
          } else if (!model.has(target)) {
            assert.throws(() => s.publish({ presentity: aor, event: 'presence', ifMatch: target, expires }), ConditionalRequestFailedError)
          } else if (o.kind === 'remove') {
            s.publish({ presentity: aor, event: 'presence', ifMatch: target, expires: 0 })
            model.delete(target)
          } else {
            const old = model.get(target) as { who: number, body: number }
            const newBody = o.kind === 'modify' ? ++body : old.body
            const r = s.publish({ presentity: aor, event: 'presence', ifMatch: target, expires, body: o.kind === 'modify' ? newBody : undefined })
            model.delete(target)
            model.set(r.etag, { who: o.who, body: newBody, expiresAt: now + expires * 1000 })
          }
          assert.equal(s.size, model.size)
          for (const who of [0, 1]) {
            const got = s.get(who === 0 ? ALICE : BOB, 'presence').map(p => [p.etag, p.body]).sort()
            const want = [...model.entries()].filter(([, v]) => v.who === who).map(([k, v]) => [k, v.body]).sort()
            assert.deepEqual(got, want)
          }
        }
      } finally {
        s.stop()
      }
    }), { numRuns: 200 })
  })
})
