// The credentials parser on what clients send and on hostile input; the challenge format.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { parseCredentials, formatChallenge, MAX_CREDENTIALS_LENGTH } from '../../../sip-gateway/auth/header.ts'
import { MalformedCredentialsError } from '../../../sip-gateway/auth/errors.ts'

test('SIP.js-style credentials: every directive, unquoted algorithm/qop/nc', () => {
  const c = parseCredentials('Digest algorithm=MD5, username="alice", realm="example.com", nonce="abc", uri="sip:example.com", response="0123", qop=auth, cnonce="xyz", nc=00000001')
  assert.equal(c?.username, 'alice')
  assert.equal(c?.realm, 'example.com')
  assert.equal(c?.algorithm, 'MD5')
  assert.equal(c?.qop, 'auth')
  assert.equal(c?.nc, '00000001')
  assert.equal(c?.uri, 'sip:example.com')
})

test('quoted strings with escapes and commas, odd spacing, empty list elements, unknown directives', () => {
  const c = parseCredentials('digest   username = "al\\"ice,x" ,, realm="a\\\\b",future-thing="1,2" ,nonce=tok,')
  assert.equal(c?.username, 'al"ice,x')
  assert.equal(c?.realm, 'a\\b')
  assert.equal(c?.nonce, 'tok')
  assert.equal(c?.params.get('future-thing'), '1,2')
})

test('other schemes are not ours (undefined), not errors', () => {
  assert.equal(parseCredentials('Basic YWxpY2U6c2VjcmV0'), undefined)
  assert.equal(parseCredentials('Bearer abc.def'), undefined)
  assert.equal(parseCredentials('Digestusername="a"'), undefined, 'one token: the scheme Digestusername')
  assert.equal(parseCredentials('Digest')?.params.size, 0, 'no directives: parsed, and incomplete (the authenticator answers 400)')
})

test('malformed: 400-class MalformedCredentialsError, never another exception', () => {
  const bad = [
    '', ' ,', 'Digest username', 'Digest username=', 'Digest username="open', 'Digest a=1 b=2',
    'Digest username="a", username="b"', 'Digest =x', 'Digest a="x\\', '"Digest" a=1',
    'Digest a="\u0001"', 'Digest ' + Array.from({ length: 40 }, (_, i) => `p${i}=1`).join(','),
    'Digest username="' + 'x'.repeat(MAX_CREDENTIALS_LENGTH) + '"'
  ]
  for (const v of bad) {
    assert.throws(() => parseCredentials(v), (err: Error) => err.name === 'MalformedCredentialsError' && (err as MalformedCredentialsError).status === 400, JSON.stringify(v.slice(0, 60)))
  }
})

test('hostile names cannot reach a prototype', () => {
  const c = parseCredentials('Digest __proto__="x", constructor="y", username="u"')
  assert.equal(c?.username, 'u')
  assert.equal(c?.params.get('__proto__'), 'x')
  assert.equal(({} as Record<string, unknown>).x, undefined)
})

test('property: any string either parses, is not Digest, or is a MalformedCredentialsError', () => {
  fc.assert(fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.string({ maxLength: 200 }).map(s => 'Digest ' + s)), (s) => {
    try {
      const c = parseCredentials(s)
      if (c !== undefined) assert.ok(c.params instanceof Map)
    } catch (err) {
      assert.equal((err as Error).name, 'MalformedCredentialsError')
    }
  }), { numRuns: 2000 })
})

test('challenge: realm, qop="auth", algorithm, nonce; opaque and stale when asked; parses back', () => {
  const v = formatChallenge({ realm: 'example.com', nonce: 'n1', algorithm: 'SHA-256', stale: true, opaque: 'o"1' })
  assert.equal(v, 'Digest realm="example.com", qop="auth", algorithm=SHA-256, nonce="n1", opaque="o\\"1", stale=true')
  const back = parseCredentials(v)
  assert.equal(back?.opaque, 'o"1')
  assert.equal(back?.params.get('stale'), 'true')
  assert.doesNotMatch(formatChallenge({ realm: 'r', nonce: 'n', algorithm: 'MD5' }), /stale|opaque/)
})
