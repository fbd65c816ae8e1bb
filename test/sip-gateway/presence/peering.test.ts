// Back-end subscriptions between peer networks (presence/peering.ts): the strict watcher list a
// peer may send (its own domain only; malformed, oversized, too many and random input refused with
// a status, never a crash), the owner marker, and what a node remembers of a plain peer.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { PeerCapabilities, parsePeerWatchers, peerOfOwner, peerOwner, MAX_PEER_WATCHERS_HEADER } from '../../../sip-gateway/presence/peering.ts'
import { formatWatchers, MAX_WATCHERS_PER_REQUEST } from '../../../sip-gateway/presence/event.ts'
import { SipStatusError } from '../../../sip-gateway/errors.ts'

const status = (fn: () => unknown): number | undefined => {
  try { fn(); return undefined } catch (err) { return err instanceof SipStatusError ? err.status : -1 }
}

test('a peer\'s watchers: AoRs of its own domain, normalized', () => {
  assert.deepEqual(parsePeerWatchers(formatWatchers(['sip:alice@Example.COM', 'sips:bob@example.com;transport=tls']), 'example.com'), ['sip:alice@example.com', 'sip:bob@example.com'])
  assert.deepEqual(parsePeerWatchers(undefined, 'example.com'), [])
  assert.deepEqual(parsePeerWatchers('   ', 'example.com'), [])
})

test('a watcher of another domain refuses the whole list: 403', () => {
  assert.equal(status(() => parsePeerWatchers(formatWatchers(['sip:a@example.com', 'sip:eve@example.org']), 'example.com')), 403)
  assert.equal(status(() => parsePeerWatchers(formatWatchers(['sip:a@example.com.evil.org']), 'example.com')), 403)
  assert.equal(status(() => parsePeerWatchers(formatWatchers(['sip:bob@example.net']), 'example.com')), 403)
})

test('malformed, oversized and too many: 400', () => {
  for (const bad of ['%%%', '<script>', 'sip:a@example.com', encodeURIComponent('tel:+123'), encodeURIComponent('sip:example.com'),
    encodeURIComponent('http://a@example.com'), encodeURIComponent(`sip:${'a'.repeat(800)}@example.com`), '%E0%A4%A']) {
    assert.equal(status(() => parsePeerWatchers(bad, 'example.com')), 400, bad)
  }
  const many = (n: number): string => Array.from({ length: n }, (_, i) => encodeURIComponent(`sip:u${i}@example.com`)).join(' ')
  assert.equal(parsePeerWatchers(many(MAX_WATCHERS_PER_REQUEST), 'example.com').length, MAX_WATCHERS_PER_REQUEST)
  assert.equal(status(() => parsePeerWatchers(many(MAX_WATCHERS_PER_REQUEST + 1), 'example.com')), 400)
  assert.equal(status(() => parsePeerWatchers(many(10_000), 'example.com')), 400)
  assert.equal(status(() => parsePeerWatchers(Array(10_000).fill('x').join(' '), 'example.com')), 400)
  assert.equal(status(() => parsePeerWatchers('a'.repeat(MAX_PEER_WATCHERS_HEADER + 1), 'example.com')), 400)
})

test('random input: a list, 400 or 403, nothing else', () => {
  fc.assert(fc.property(fc.string({ maxLength: 2000 }), (s) => {
    const r = status(() => parsePeerWatchers(s, 'example.com'))
    assert.ok(r === undefined || r === 400 || r === 403, String(r))
  }), { numRuns: 500 })
  fc.assert(fc.property(fc.array(fc.oneof(fc.emailAddress(), fc.string({ maxLength: 40 })), { maxLength: 50 }), (parts) => {
    const r = status(() => parsePeerWatchers(parts.map(p => encodeURIComponent(`sip:${p}`)).join(' '), 'example.com'))
    assert.ok(r === undefined || r === 400 || r === 403, String(r))
  }), { numRuns: 300 })
})

test('the owner of a peer network\'s presentity', () => {
  assert.equal(peerOwner('Example.NET'), 'peer:example.net')
  assert.equal(peerOfOwner('peer:example.net'), 'example.net')
  assert.equal(peerOfOwner('12D3KooWabc'), undefined)
  assert.equal(peerOfOwner(undefined), undefined)
})

test('a plain peer is remembered for a while; a tagged answer makes it sipmesh again', async () => {
  const c = new PeerCapabilities(50)
  assert.equal(c.plain('example.net'), false)
  assert.equal(c.sipmesh('example.net'), false)
  c.markPlain('example.net')
  assert.equal(c.plain('example.net'), true)
  assert.equal(c.plain('example.org'), false)
  await new Promise(resolve => setTimeout(resolve, 80))
  assert.equal(c.plain('example.net'), false, 'asked again after plainMs')
  c.markPlain('example.net')
  c.markSipmesh('example.net')
  assert.equal(c.plain('example.net'), false)
  assert.equal(c.sipmesh('example.net'), true)
  c.markPlain('example.net')
  assert.equal(c.sipmesh('example.net'), false)
})
