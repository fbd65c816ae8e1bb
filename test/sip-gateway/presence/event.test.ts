// RFC 6665 header helpers and the back-end identity/decision headers: good, malformed, oversized
// and random input.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import {
  parseEvent, parseExpiresHeader, parseSubscriptionState, formatSubscriptionState, parseWatchers, formatWatchers,
  parseDecisions, formatDecisions, MAX_WATCHERS_PER_REQUEST
} from '../../../sip-gateway/presence/event.ts'

test('Event: package lower-cased, id parameter, junk refused', () => {
  assert.deepEqual(parseEvent('Presence;id=7'), { pkg: 'presence', id: '7' })
  assert.deepEqual(parseEvent(' presence '), { pkg: 'presence' })
  assert.deepEqual(parseEvent('PRESENCE.winfo'), { pkg: 'presence.winfo' })
  assert.equal(parseEvent('  '), undefined)
  assert.equal(parseEvent(undefined), undefined)
  assert.equal(parseEvent(''), undefined)
  assert.equal(parseEvent('pres ence'), undefined)
  assert.equal(parseEvent('x'.repeat(300)), undefined)
  assert.equal(parseEvent('<script>'), undefined)
})

test('Expires: digits only, else 400', () => {
  assert.equal(parseExpiresHeader(' 60 '), 60)
  assert.equal(parseExpiresHeader(undefined), undefined)
  for (const bad of ['-1', '1e3', 'sixty', '', '99999999999', '6 0']) {
    assert.throws(() => parseExpiresHeader(bad), { status: 400 }, bad)
  }
})

test('Subscription-State: round trip, reasons, malformed', () => {
  const v = formatSubscriptionState({ state: 'terminated', reason: 'deactivated', retryAfter: 5 })
  assert.equal(v, 'terminated;reason=deactivated;retry-after=5')
  assert.deepEqual(parseSubscriptionState(v), { state: 'terminated', reason: 'deactivated', retryAfter: 5 })
  assert.deepEqual(parseSubscriptionState('active;expires=119'), { state: 'active', expires: 119 })
  assert.equal(parseSubscriptionState('asleep'), undefined)
  assert.equal(parseSubscriptionState(undefined), undefined)
  assert.equal(parseSubscriptionState('active;' + 'x'.repeat(300)), undefined)
  assert.deepEqual(parseSubscriptionState('pending;expires=abc;reason=<x>'), { state: 'pending' })
})

test('watcher identities and decisions round-trip, hostile entries dropped, too many refused', () => {
  const aors = ['sip:a@example.com', 'sip:we,ird=x@example.com', 'sips:b@sub.example.org']
  assert.deepEqual(parseWatchers(formatWatchers(aors)), aors)
  assert.deepEqual(parseWatchers('%E0%A4%A sip:x <tag>'), [], 'malformed escapes and raw characters are dropped')
  assert.throws(() => parseWatchers(Array.from({ length: MAX_WATCHERS_PER_REQUEST + 1 }, (_, i) => `w${i}`).join(' ')), { status: 400 })
  const d = new Map([['sip:a@example.com', 'allow'], ['sip:b@example.com', 'polite-block'], ['sip:c@example.com', 'block']] as const)
  assert.deepEqual(parseDecisions(formatDecisions(d)), new Map(d))
  assert.deepEqual(parseDecisions('maybe=sip%3Ax allow=<bad> block'), new Map())
  fc.assert(fc.property(fc.string({ maxLength: 2000 }), (s) => {
    parseDecisions(s)
    try { parseWatchers(s) } catch (err) { assert.equal((err as { status?: number }).status, 400) }
    parseEvent(s)
    parseSubscriptionState(s)
  }), { numRuns: 300 })
  fc.assert(fc.property(fc.array(fc.string({ minLength: 1, maxLength: 60 }), { maxLength: 20 }), (list) => {
    assert.deepEqual(parseWatchers(formatWatchers(list)), list)
  }), { numRuns: 200 })
})
