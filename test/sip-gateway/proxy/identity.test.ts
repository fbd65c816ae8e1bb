// The identity room (proxy/identity.ts, RFC 3325): what P-Asserted-Identity the node sets on what
// it forwards, with and without digest authentication, and nothing for hostile or foreign Froms.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { parseMessage, type SipRequest } from '../../../sip-gateway/codec/index.ts'
import { IdentityAsserter } from '../../../sip-gateway/proxy/identity.ts'

const request = (from: string): SipRequest => parseMessage(Buffer.from(['MESSAGE sip:bob@example.com SIP/2.0',
  'Via: SIP/2.0/UDP ua.example.com;branch=z9hG4bKua', `From: ${from}`, 'To: <sip:bob@example.com>', 'Call-ID: c@h',
  'CSeq: 1 MESSAGE', 'Max-Forwards: 70', 'Content-Length: 0', '', ''].join('\r\n'))) as SipRequest

const domains = new Set(['example.com'])

test('without authentication: the From AoR of a served domain, parameters and display name dropped', () => {
  const ids = new IdentityAsserter(domains, false)
  for (let i = 0; i < 2; i++) { // the second time from the cache
    const r = request('"Alice" <sip:alice@Example.COM;transport=tcp>;tag=1')
    ids.assert(r)
    assert.equal(r.headers.get('P-Asserted-Identity'), '<sip:alice@example.com>')
  }
})

test('foreign, user-less and hostile Froms assert nothing', () => {
  const ids = new IdentityAsserter(domains, false)
  for (const from of ['<sip:mallory@evil.example.net>;tag=1', '<sip:example.com>;tag=1', '<<<;;;', '<sip:@example.com>', `<sip:${'a'.repeat(5000)}@example.com`, '"\u0000" <tel:+123>']) {
    const r = request(from)
    ids.assert(r)
    assert.equal(r.headers.get('P-Asserted-Identity'), undefined, from)
  }
  const none = request('<sip:alice@example.com>')
  none.headers.delete('From')
  ids.assert(none)
  assert.equal(none.headers.get('P-Asserted-Identity'), undefined)
})

test('with authentication: only the remembered identity, never the From', () => {
  const ids = new IdentityAsserter(domains, true)
  const unauth = request('<sip:alice@example.com>;tag=1')
  ids.assert(unauth)
  assert.equal(unauth.headers.get('P-Asserted-Identity'), undefined)
  const authed = request('<sip:alice@example.com>;tag=1')
  ids.remember(authed, 'sip:carol@example.com')
  ids.assert(authed)
  assert.equal(authed.headers.get('P-Asserted-Identity'), '<sip:carol@example.com>')
})

test('the cache is bounded: many distinct senders still get their own identity', () => {
  const ids = new IdentityAsserter(domains, false)
  for (let i = 0; i < 5000; i++) {
    const r = request(`<sip:u${i}@example.com>;tag=1`)
    ids.assert(r)
    assert.equal(r.headers.get('P-Asserted-Identity'), `<sip:u${i}@example.com>`)
  }
})
