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

test('offline limits: flags and defaults; zero, negative, non-numeric and huge values are refused', async () => {
  const { loadConfig, ConfigError } = await import('../../node/config.ts')
  const d = await loadConfig([], {})
  assert.deepEqual(d.config.gateway.offlineLimits, { maxMessagesPerUser: 1000, retentionDays: 7 })
  const c = await loadConfig(['--offline-max-per-user', '5', '--offline-retention-days', '30'], {})
  assert.deepEqual(c.config.gateway.offlineLimits, { maxMessagesPerUser: 5, retentionDays: 30 })
  const e = await loadConfig([], { SIPMESH_OFFLINE_MAX_PER_USER: '12' })
  assert.equal(e.config.gateway.offlineLimits.maxMessagesPerUser, 12)
  for (const bad of ['0', '-1', 'abc', '1e3', '99999999999', '']) {
    await assert.rejects(loadConfig(['--offline-max-per-user', bad], {}), (err: Error) => err.name === ConfigError.NAME, bad)
  }
  await assert.rejects(loadConfig(['--offline-retention-days', '4000'], {}), (err: Error) => err.name === ConfigError.NAME)
})
