import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { certificateDomains, parseSubjectAltName, MAX_SAN_LENGTH } from '../../../sip-gateway/transport/tls-identity.ts'

describe('certificate identity (RFC 5922 7.1)', () => {
  test('dNSName entries name the domains', () => {
    assert.deepEqual(certificateDomains({ subjectaltname: 'DNS:example.net, IP Address:127.0.0.1, DNS:Sip.Example.NET' }), ['example.net', 'sip.example.net'])
  })

  test('sip: URIs, when present, are the only names used', () => {
    assert.deepEqual(certificateDomains({ subjectaltname: 'DNS:other.org, URI:sip:example.net' }), ['example.net'])
  })

  test('URIs that are not sip: domain URIs do not count, and leave dNSName in force', () => {
    assert.deepEqual(certificateDomains({ subjectaltname: 'URI:https://example.net/, URI:sip:bob@example.net, DNS:example.net' }), ['example.net'])
  })

  test('Common Name only without subjectAltName', () => {
    assert.deepEqual(certificateDomains({ subject: { CN: 'example.net' } }), ['example.net'])
    assert.deepEqual(certificateDomains({ subjectaltname: 'IP Address:127.0.0.1', subject: { CN: 'example.net' } }), [])
  })

  test('wildcards and malformed names are not identities', () => {
    assert.deepEqual(certificateDomains({ subjectaltname: 'DNS:*.example.net, DNS:exa mple.net, DNS:-bad.net, DNS:' }), [])
    assert.deepEqual(certificateDomains(undefined), [])
    assert.deepEqual(certificateDomains({ subject: { CN: ['a.net', 'x y'] } }), ['a.net'])
  })

  test('quoted values with commas are one value, never split into a forged name', () => {
    const items = parseSubjectAltName('URI:"sip:evil.net, DNS:example.net", DNS:good.org')
    assert.deepEqual(items.map(i => i.kind), ['URI', 'DNS'])
    assert.deepEqual(certificateDomains({ subjectaltname: 'DNS:"example.net, DNS:bank.com"' }), [])
  })

  test('hostile input: oversize, unterminated quotes, garbage', () => {
    assert.deepEqual(certificateDomains({ subjectaltname: 'DNS:a.net, '.repeat(MAX_SAN_LENGTH) }), [])
    assert.deepEqual(certificateDomains({ subjectaltname: 'DNS:"unterminated' }), [])
    assert.deepEqual(certificateDomains({ subjectaltname: ':::,,,"' }), [])
    const many = Array.from({ length: 500 }, (_, i) => `DNS:d${i}.net`).join(', ')
    assert.equal(certificateDomains({ subjectaltname: many }).length, 64)
  })
})
