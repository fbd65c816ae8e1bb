// The credentials file's users become users known to the mesh (issue 5): the parser, bad input.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readCredentialUsers } from '../../node/gateway.ts'

test('credentials file: one user per line, sip: optional, other domains, comments and junk skipped', () => {
  const text = [
    '# users', '', 'alice@example.com:secret', 'sip:Bob@EXAMPLE.com  hash', 'carol@other.org:x',
    'not a user', ':::', '@example.com', 'dave@example.com', 'dave@example.com', 'x'.repeat(10_000)
  ].join('\n')
  assert.deepEqual(readCredentialUsers(text, ['example.com']), ['sip:alice@example.com', 'sip:Bob@example.com', 'sip:dave@example.com'])
  assert.deepEqual(readCredentialUsers('\u0000\r\n\r\n', ['example.com']), [])
})
