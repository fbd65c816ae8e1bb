// The digest computations against the worked examples of the RFCs (nothing of ours on the other side).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { computeHa1, computeResponse, digestAlgorithmOf, digestEquals, DigestAlgorithm } from '../../../sip-gateway/auth/digest.ts'

// RFC 7616 section 3.9.1: GET /dir/index.html, Mufasa / "Circle of Life", qop=auth
const rfc7616 = {
  method: 'GET',
  uri: '/dir/index.html',
  nonce: '7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v',
  nc: '00000001',
  cnonce: 'f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ',
  qop: 'auth' as const
}

test('RFC 7616 3.9.1: MD5 response', () => {
  const ha1 = computeHa1(DigestAlgorithm.MD5, 'Mufasa', 'http-auth@example.org', 'Circle of Life')
  assert.equal(computeResponse({ algorithm: DigestAlgorithm.MD5, ha1, ...rfc7616 }), '8ca523f5e9506fed4657c9700eebdbec')
})

test('RFC 7616 3.9.1: SHA-256 response', () => {
  const ha1 = computeHa1(DigestAlgorithm.SHA256, 'Mufasa', 'http-auth@example.org', 'Circle of Life')
  assert.equal(computeResponse({ algorithm: DigestAlgorithm.SHA256, ha1, ...rfc7616 }), '753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1')
})

test('RFC 2617 3.5: MD5 response (and an upper-case HA1 gives the same)', () => {
  const ha1 = computeHa1(DigestAlgorithm.MD5, 'Mufasa', 'testrealm@host.com', 'Circle Of Life')
  const input = { algorithm: DigestAlgorithm.MD5, method: 'GET', uri: '/dir/index.html', nonce: 'dcd98b7102dd2f0e8b11d0f600bfb0c093', nc: '00000001', cnonce: '0a4f113b', qop: 'auth' as const }
  assert.equal(computeResponse({ ...input, ha1 }), '6629fae49393a05397450978507c4ef1')
  assert.equal(computeResponse({ ...input, ha1: ha1.toUpperCase() }), '6629fae49393a05397450978507c4ef1')
})

test('algorithm names: absent is MD5, case-insensitive, -sess and others are not ours', () => {
  assert.equal(digestAlgorithmOf(undefined), 'MD5')
  assert.equal(digestAlgorithmOf('md5'), 'MD5')
  assert.equal(digestAlgorithmOf('sha-256'), 'SHA-256')
  for (const a of ['MD5-sess', 'SHA-256-sess', 'SHA-512-256', 'AKAv1-MD5', '']) assert.equal(digestAlgorithmOf(a), undefined, a)
})

test('digestEquals: equal digests in any case; different lengths or one digit off are not', () => {
  assert.ok(digestEquals('6629fae49393a05397450978507c4ef1', '6629FAE49393A05397450978507C4EF1'))
  assert.ok(!digestEquals('6629fae49393a05397450978507c4ef1', '6629fae49393a05397450978507c4ef'))
  assert.ok(!digestEquals('6629fae49393a05397450978507c4ef1', '6629fae49393a05397450978507c4ef2'))
})
