// Stateless nonces (HMAC of the issue time) and the nonce-count record against replays.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { NonceFactory, NonceCounts } from '../../../sip-gateway/auth/nonce.ts'

test('a nonce is valid for its realm, at its node, within its lifetime', () => {
  let now = 1_000_000
  const f = new NonceFactory({ lifetimeMs: 1000, now: () => now })
  const n = f.issue('example.com')
  assert.deepEqual(f.check(n, 'example.com'), { valid: true, issuedAt: 1_000_000 })
  assert.equal(f.check(n, 'other.org').valid, false, 'other realm')
  assert.equal(new NonceFactory({ now: () => now }).check(n, 'example.com').valid, false, 'another node (another key)')
  now += 1001
  assert.equal(f.check(n, 'example.com').valid, false, 'expired')
  assert.notEqual(f.issue('example.com'), f.issue('example.com'), 'two nonces of one millisecond differ')
})

test('forged and garbage nonces are invalid, never an exception', () => {
  const f = new NonceFactory()
  const n = f.issue('example.com')
  const flipped = (n[0] === 'A' ? 'B' : 'A') + n.slice(1)
  for (const bad of [flipped, '', 'x', n + 'A', n.slice(0, -1) + '*', '\u0000'.repeat(n.length), 'a'.repeat(100_000)]) {
    assert.equal(f.check(bad, 'example.com').valid, false)
  }
})

test('nonce-counts: each is accepted once; late ones within the window once; too old or 0 refused', () => {
  const c = new NonceCounts({ window: 4 })
  const use = (nc: number): boolean => c.use('n', 0, nc, 0, 1000)
  assert.ok(use(1))
  assert.ok(!use(1), 'replay')
  assert.ok(use(3))
  assert.ok(use(2), 'late but unseen')
  assert.ok(!use(2), 'late replay')
  assert.ok(use(10))
  assert.ok(use(7))
  assert.ok(!use(5), 'beyond the window')
  assert.ok(!use(0))
  assert.ok(!use(-1))
  assert.ok(use(10 + 40), 'a jump past 32 clears the window')
  assert.ok(!use(10), 'and what was before is too old')
})

test('nonce-counts: bounded; a forgotten nonce cannot be replayed, newer nonces still work', () => {
  const c = new NonceCounts({ maxNonces: 3 })
  for (let i = 1; i <= 3; i++) assert.ok(c.use(`n${i}`, i, 1, 10, 1_000_000))
  assert.ok(c.use('n4', 4, 1, 10, 1_000_000))
  assert.equal(c.size, 3)
  assert.ok(!c.use('n1', 1, 1, 10, 1_000_000), 'n1 was forgotten: refused, even with nc 1')
  assert.ok(!c.use('n1', 1, 2, 10, 1_000_000))
  assert.ok(c.use('n5', 5, 1, 10, 1_000_000), 'a nonce issued after the forgotten one is fine')
  assert.ok(c.use('n4', 4, 2, 10, 1_000_000))
})

test('nonce-counts: entries of expired nonces go', () => {
  const c = new NonceCounts({ maxNonces: 1000 })
  for (let i = 0; i < 100; i++) c.use(`n${i}`, 0, 1, 0, 1000)
  assert.equal(c.size, 100)
  c.use('late', 5000, 1, 5000, 1000)
  assert.equal(c.size, 1)
})
