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

test('credentials file: passwords become HA1 of both algorithms, HA1 values are taken as given, bare AoRs have no secret', async () => {
  const { parseCredentialsFile } = await import('../../node/credentials.ts')
  const { computeHa1 } = await import('../../sip-gateway/auth/digest.ts')
  const md5 = computeHa1('MD5', 'bob', 'example.com', 'pw')
  const sha = computeHa1('SHA-256', 'bob', 'example.com', 'pw')
  const f = parseCredentialsFile([
    'alice@example.com   correct-horse',
    `sip:bob@example.com md5:${md5.toUpperCase()}\tsha-256:${sha}`,
    `old@example.com md5:${md5}`,
    'carol@example.com',
    'dave@example.com:s3cret',
    'erin@example.com:old-style pw2',
    'eve@example.com password:md5:notahash',
    'frank@other.org pw'
  ].join('\r\n'), ['example.com'])
  assert.deepEqual(f.users, ['sip:alice@example.com', 'sip:bob@example.com', 'sip:old@example.com', 'sip:carol@example.com', 'sip:dave@example.com', 'sip:erin@example.com', 'sip:eve@example.com'])
  assert.deepEqual(f.secrets.get('sip:alice@example.com'), { 'SHA-256': computeHa1('SHA-256', 'alice', 'example.com', 'correct-horse'), MD5: computeHa1('MD5', 'alice', 'example.com', 'correct-horse') })
  assert.deepEqual(f.secrets.get('sip:bob@example.com'), { MD5: md5, 'SHA-256': sha })
  assert.deepEqual(f.secrets.get('sip:old@example.com'), { MD5: md5 }, 'MD5 only')
  assert.equal(f.secrets.has('sip:carol@example.com'), false)
  assert.equal(f.secrets.has('sip:dave@example.com'), false, 'the older user@domain:text form: known, the text ignored as before')
  assert.equal(f.secrets.get('sip:erin@example.com')?.MD5, computeHa1('MD5', 'erin', 'example.com', 'pw2'), 'a secret after whitespace counts')
  assert.deepEqual(f.warnings.map(w => w.line), [5, 6])
  assert.equal(f.secrets.get('sip:eve@example.com')?.MD5, computeHa1('MD5', 'eve', 'example.com', 'md5:notahash'))
  assert.deepEqual(f.skipped, [])
})

test('credentials file: hostile lines are skipped by line number (never echoed), the rest still loads', async () => {
  const { parseCredentialsFile } = await import('../../node/credentials.ts')
  const lines = [
    'ok@example.com pw',
    'twopw@example.com S3CRa S3CRb',
    'both@example.com pw md5:' + '0'.repeat(32),
    'shorthash@example.com md5:abc',
    'twohash@example.com md5:' + '1'.repeat(32) + ' md5:' + '2'.repeat(32),
    'ctl@example.com S3\u0000CR',
    'quote"@example.com pw',
    'ok@example.com S3CRc',
    'long@example.com ' + 'x'.repeat(5000),
    '__proto__@example.com pw',
    'sip:@example.com pw',
    'bad@exa_mple.com pw',
    'empty@example.com password:'
  ]
  const f = parseCredentialsFile(lines.join('\n'), ['example.com'])
  assert.deepEqual(f.users, ['sip:ok@example.com', 'sip:__proto__@example.com'])
  assert.equal(f.secrets.get('sip:ok@example.com')?.MD5 !== undefined, true, 'the first line for a user counts')
  assert.deepEqual(f.skipped.map(s => s.line), [2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13])
  for (const s of f.skipped) assert.doesNotMatch(s.reason, /S3|xxxx/, 'no secret in the reason')
  assert.equal(Object.getPrototypeOf({}), Object.prototype)
  assert.deepEqual(parseCredentialsFile('\u0000\r\n\r\n\ufeff', ['example.com']).users, [])
})

test('credentials file: an oversized file, a missing file and a non-file are refused (CredentialsFileError)', async () => {
  const { readCredentialsFile, CredentialsFileError, MAX_CREDENTIALS_BYTES } = await import('../../node/credentials.ts')
  const { mkdtemp, writeFile, truncate, rm } = await import('node:fs/promises')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const dir = await mkdtemp(join(tmpdir(), 'sipmesh-cred-'))
  try {
    const big = join(dir, 'big')
    await writeFile(big, 'alice@example.com pw\n')
    await truncate(big, MAX_CREDENTIALS_BYTES + 1)
    const refused = (err: Error): boolean => err.name === CredentialsFileError.NAME
    await assert.rejects(readCredentialsFile(big, ['example.com']), refused)
    await assert.rejects(readCredentialsFile(join(dir, 'missing'), ['example.com']), refused)
    await assert.rejects(readCredentialsFile(dir, ['example.com']), refused)
    const ok = join(dir, 'ok')
    await writeFile(ok, 'alice@example.com pw\ncarol@example.com\n')
    const f = await readCredentialsFile(ok, ['example.com'])
    assert.deepEqual(f.users, ['sip:alice@example.com', 'sip:carol@example.com'])
    assert.equal(f.secrets.size, 1)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('the node\'s gateway: a credentials file with secrets turns digest authentication on (REGISTER 401); bare AoRs leave it off (200)', async () => {
  const { defaultGateway } = await import('../../node/gateway.ts')
  const { MemoryStore, MemoryChannelHub } = await import('../../sip-gateway/index.ts')
  const { MemoryMesh, MemoryRegistry } = await import('../../dht/memory-registry.ts')
  const { testLogger } = await import('../sip-gateway/gateway/fixtures/log.ts')
  const { TestUa } = await import('../sip-gateway/gateway/fixtures/ua.ts')
  const { mkdtemp, writeFile, rm } = await import('node:fs/promises')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const dir = await mkdtemp(join(tmpdir(), 'sipmesh-cred-'))
  try {
    for (const [text, expected] of [['alice@example.com wonderland\n', 401], ['alice@example.com\nbob@example.com\n', 200]] as const) {
      const path = join(dir, `c${expected}`)
      await writeFile(path, text)
      const lines: Array<{ level: string, msg: string, fields?: Record<string, unknown> }> = []
      const registry = new MemoryRegistry(new MemoryMesh(), { nodeId: 'node-a', sip: 'unset:0' })
      const g = await defaultGateway!({
        registry,
        peerChannel: new MemoryChannelHub().channel('node-a'),
        store: new MemoryStore(),
        logger: testLogger(lines),
        config: { domains: ['example.com'], sip: { host: '127.0.0.1', port: 0 }, credentials: path, offlineLimits: { maxMessagesPerUser: 10, retentionDays: 1 }, registrar: { minExpires: 60, maxExpires: 3600, refreshWriteSlack: 300, conflictPolicy: 'latest-takes-over', overload: { maxPending: 2000, maxLagMs: 500 } } },
        announceSip: (hp) => { registry.sip = hp }
      })
      await g.start()
      try {
        const gw = (g as unknown as { gateway: import('../../sip-gateway/gateway.ts').Gateway }).gateway
        const ua = await TestUa.open('alice', gw.addresses.udp)
        assert.equal((await ua.register(600))?.status, expected)
        await ua.close()
        assert.equal(lines.find(l => l.msg === 'credentials file read')?.fields?.digestAuthentication, expected === 401)
      } finally {
        await g.stop()
        await registry.stop()
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
