import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { loadConfig, parseHostPort, ConfigError, DEFAULTS } from '../../node/config.ts'

const PEER = '12D3KooWEtSQspbLiDuDZHudt5WMhTmsCgN1pN8iUyzfQMAvpXiV'
const PEER2 = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'

async function configError (p: Promise<unknown>): Promise<string> {
  try {
    await p
  } catch (err) {
    assert.equal((err as Error).name, ConfigError.NAME, `expected a ConfigError, got ${(err as Error).name}: ${(err as Error).message}`)
    return (err as Error).message
  }
  assert.fail('expected a ConfigError')
}

describe('config', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'sipmesh-config-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  async function file (name: string, content: string): Promise<string> {
    const path = join(dir, name)
    await writeFile(path, content)
    return path
  }

  test('defaults need nothing', async () => {
    const { config } = await loadConfig([], {}, '/srv')
    assert.deepEqual(config.gateway.domains, DEFAULTS.domain)
    assert.deepEqual(config.gateway.sip, { host: '127.0.0.1', port: 5060 })
    assert.equal(config.gateway.ws, undefined)
    assert.deepEqual(config.mesh.listen, ['/ip4/127.0.0.1/tcp/4001'])
    assert.deepEqual(config.mesh.bootstrap, [])
    assert.equal(config.mesh.mdns, false)
    assert.equal(config.dataDir, '/srv/.sipmesh')
    assert.deepEqual(config.admin, { host: '127.0.0.1', port: 8080 })
    assert.equal(config.log.level, 'info')
  })

  test('file, then environment, then flags: the later layer wins', async () => {
    const path = await file('layers.json', JSON.stringify({
      domain: ['file.example'], sip: '127.0.0.1:1111', admin: '127.0.0.1:2222', 'log-level': 'warn', mdns: true, 'data-dir': 'from-file'
    }))
    const { config } = await loadConfig(['--config', path, '--admin', '127.0.0.1:4444'], {
      SIPMESH_SIP: '127.0.0.1:3333', SIPMESH_ADMIN: '127.0.0.1:3334', SIPMESH_MDNS: 'false'
    }, '/srv')
    assert.deepEqual(config.gateway.domains, ['file.example'])
    assert.equal(config.gateway.sip.port, 3333)
    assert.equal(config.admin.port, 4444)
    assert.equal(config.log.level, 'warn')
    assert.equal(config.mesh.mdns, false)
    assert.equal(config.dataDir, '/srv/from-file')
  })

  test('SIPMESH_CONFIG names the file when --config is absent', async () => {
    const path = await file('env.json', JSON.stringify({ sip: '127.0.0.1:7777' }))
    const { config } = await loadConfig([], { SIPMESH_CONFIG: path })
    assert.equal(config.gateway.sip.port, 7777)
  })

  test('lists: repeated and comma-separated flags, comma-separated env; a later layer replaces the list', async () => {
    const { config } = await loadConfig(['--domain', 'a.example,B.example', '--domain', 'c.example', '--p2p', '/ip4/127.0.0.1/tcp/1', '--p2p', '/ip4/127.0.0.1/tcp/2'], {
      SIPMESH_DOMAIN: 'env.example', SIPMESH_BOOTSTRAP: `/ip4/127.0.0.1/tcp/9/p2p/${PEER}, /ip4/127.0.0.1/tcp/10/p2p/${PEER2}`, SIPMESH_ALLOW_PEER: PEER
    })
    assert.deepEqual(config.gateway.domains, ['a.example', 'b.example', 'c.example'])
    assert.deepEqual(config.mesh.listen, ['/ip4/127.0.0.1/tcp/1', '/ip4/127.0.0.1/tcp/2'])
    assert.equal(config.mesh.bootstrap.length, 2)
    assert.deepEqual(config.mesh.allowPeers, [PEER])
  })

  test('the result is deeply frozen', async () => {
    const { config } = await loadConfig(['--ws', '127.0.0.1:5066'], {})
    assert.ok(Object.isFrozen(config))
    assert.ok(Object.isFrozen(config.gateway.domains))
    assert.ok(Object.isFrozen(config.gateway.ws))
    assert.throws(() => { (config.gateway.sip as { port: number }).port = 1 }, TypeError)
    assert.throws(() => { (config.mesh.listen as string[]).push('x') }, TypeError)
  })

  test('unknown flag, unknown variable and unknown file key are errors naming them', async () => {
    assert.match(await configError(loadConfig(['--bogus'], {})), /Unknown option '--bogus'/)
    assert.match(await configError(loadConfig(['start'], {})), /positional/i)
    assert.match(await configError(loadConfig([], { SIPMESH_SIPP: 'x' })), /unknown environment variable SIPMESH_SIPP/)
    const path = await file('unknown.json', JSON.stringify({ sip: '127.0.0.1:5060', dataDir: 'x' }))
    const msg = await configError(loadConfig(['--config', path], {}))
    assert.match(msg, /unknown key "dataDir"/)
    assert.ok(msg.includes(path))
  })

  test('a config file that is missing, not JSON, not an object, or too large fails with a clear message', async () => {
    assert.match(await configError(loadConfig(['--config', join(dir, 'nope.json')], {})), /cannot read config file .*nope\.json/)
    const bad = await file('bad.json', '{ "sip": "127.0.0.1:5060", }')
    assert.match(await configError(loadConfig(['--config', bad], {})), /bad\.json is not valid JSON/)
    const arr = await file('array.json', '["sip"]')
    assert.match(await configError(loadConfig(['--config', arr], {})), /must hold a JSON object/)
    const nul = await file('null.json', 'null')
    assert.match(await configError(loadConfig(['--config', nul], {})), /must hold a JSON object/)
    const big = await file('big.json', JSON.stringify({ domain: ['a.example'], pad: 'x'.repeat(1024 * 1024) }))
    assert.match(await configError(loadConfig(['--config', big], {})), /larger than/)
  })

  test('wrong types and bad values name the setting where it came from', async () => {
    const path = await file('types.json', JSON.stringify({ sip: 5060, mdns: 'yes', domain: 'a.example' }))
    const msg = await configError(loadConfig(['--config', path], {}))
    assert.match(msg, /"sip" in .*types\.json: expected string/)
    assert.match(msg, /"mdns" in .*: expected boolean/)
    assert.match(msg, /"domain" in .*: expected array/)

    assert.match(await configError(loadConfig(['--sip', 'localhost'], {})), /--sip: expected host:port/)
    assert.match(await configError(loadConfig(['--sip', '127.0.0.1:70000'], {})), /--sip: port 70000 is out of range/)
    assert.match(await configError(loadConfig(['--admin', 'bad host:80'], {})), /--admin/)
    assert.match(await configError(loadConfig([], { SIPMESH_ADMIN: ':80' })), /SIPMESH_ADMIN: expected host:port/)
    assert.match(await configError(loadConfig(['--p2p', 'not-a-multiaddr'], {})), /--p2p \(item 1\)/)
    assert.match(await configError(loadConfig(['--bootstrap', '/ip4/127.0.0.1/tcp/1'], {})), /--bootstrap \(item 1\): a bootstrap address must end in \/p2p\/<peer id>/)
    assert.match(await configError(loadConfig(['--bootstrap', '/ip4/127.0.0.1/tcp/1/p2p/notapeer'], {})), /--bootstrap/)
    assert.match(await configError(loadConfig(['--allow-peer', 'alice'], {})), /--allow-peer \(item 1\): "alice" is not a peer id/)
    assert.match(await configError(loadConfig(['--log-level', 'loud'], {})), /--log-level/)
    assert.match(await configError(loadConfig([], { SIPMESH_MDNS: 'maybe' })), /SIPMESH_MDNS: expected true or false/)
    assert.match(await configError(loadConfig(['--domain', 'exa mple.com'], {})), /--domain \(item 1\): not a domain name/)
    assert.match(await configError(loadConfig(['--data-dir', ''], {})), /--data-dir: must not be empty/)
    assert.match(await configError(loadConfig(['--sip'], {})), /argument missing/)
  })

  test('resource list limits: defaults, flags, environment; bad values refused', async () => {
    const { config: d } = await loadConfig([], {})
    assert.deepEqual(d.gateway.lists, { maxMembers: 1000, maxLists: 10_000, maxSubscriptionsPerUser: 20 })
    const { config: c } = await loadConfig(['--max-list-members', '50', '--max-list-subscriptions', '3'], { SIPMESH_MAX_LISTS: '7' })
    assert.deepEqual(c.gateway.lists, { maxMembers: 50, maxLists: 7, maxSubscriptionsPerUser: 3 })
    for (const [flag, bad] of [['--max-list-members', '0'], ['--max-list-members', '10001'], ['--max-lists', '-1'], ['--max-lists', '1e3'], ['--max-list-subscriptions', 'many'], ['--max-list-subscriptions', '']]) {
      assert.match(await configError(loadConfig([`${flag}=${bad}`], {})), new RegExp(`${flag}: `), `${flag} ${bad}`)
    }
    assert.match(await configError(loadConfig([], { SIPMESH_MAX_LIST_MEMBERS: '2.5' })), /SIPMESH_MAX_LIST_MEMBERS: expected a whole number/)
  })

  test('registrar and rate limit: defaults, flags, environment; bad values and min above max are refused', async () => {
    const { config: d } = await loadConfig([], {})
    assert.deepEqual(d.gateway.registrar, { minExpires: 60, maxExpires: 3600, refreshWriteSlack: 300, conflictPolicy: 'latest-takes-over', overload: { maxPending: 2000, maxLagMs: 500 } })
    assert.deepEqual(d.gateway.limits, { maxConnectionsPerHost: 256 }, 'no rate limit unless asked; 256 connections per source address')
    const { config: c } = await loadConfig(['--min-expires', '30', '--conflict-policy', 'first-keeps', '--rate-limit', '50'], { SIPMESH_MAX_EXPIRES: '7200', SIPMESH_MAX_CONNECTIONS_PER_HOST: '20' })
    assert.deepEqual(c.gateway.registrar, { minExpires: 30, maxExpires: 7200, refreshWriteSlack: 300, conflictPolicy: 'first-keeps', overload: { maxPending: 2000, maxLagMs: 500 } })
    assert.deepEqual(c.gateway.limits, { maxConnectionsPerHost: 20, rateLimit: { perSecond: 50, burst: 100 } })
    const { config: p } = await loadConfig(['--presence-rate-limit', '40'], {})
    assert.deepEqual(p.gateway.limits, { maxConnectionsPerHost: 256, presenceRateLimit: { perSecond: 40, burst: 80 } })
    assert.match(await configError(loadConfig(['--presence-rate-limit', '0'], {})), /--presence-rate-limit: expected a whole number/)
    assert.match(await configError(loadConfig(['--max-connections-per-host', '0'], {})), /--max-connections-per-host: expected a whole number/)
    assert.equal(d.gateway.udpThread, undefined, 'UDP on the event loop unless asked')
    assert.equal((await loadConfig(['--udp-thread'], {})).config.gateway.udpThread, true)
    assert.equal((await loadConfig([], { SIPMESH_UDP_THREAD: '1' })).config.gateway.udpThread, true)
    assert.equal((await loadConfig(['--no-udp-thread'], { SIPMESH_UDP_THREAD: 'true' })).config.gateway.udpThread, undefined, 'the flag overrides the environment')
    assert.match(await configError(loadConfig([], { SIPMESH_UDP_THREAD: 'sometimes' })), /SIPMESH_UDP_THREAD/)
    const { config: o } = await loadConfig(['--max-pending-registers', '50'], { SIPMESH_OVERLOAD_LAG_MS: '120' })
    assert.deepEqual(o.gateway.registrar.overload, { maxPending: 50, maxLagMs: 120 })
    assert.match(await configError(loadConfig(['--max-pending-registers', '0'], {})), /--max-pending-registers: expected a whole number/)
    assert.match(await configError(loadConfig([], { SIPMESH_OVERLOAD_LAG_MS: 'soon' })), /SIPMESH_OVERLOAD_LAG_MS: expected a whole number/)
    assert.match(await configError(loadConfig(['--conflict-policy', 'whoever'], {})), /--conflict-policy/)
    // refreshes written to disk within the slack: 0 writes every one
    assert.equal((await loadConfig(['--refresh-write-slack', '0'], {})).config.gateway.registrar.refreshWriteSlack, 0)
    assert.equal((await loadConfig([], { SIPMESH_REFRESH_WRITE_SLACK: '60' })).config.gateway.registrar.refreshWriteSlack, 60)
    for (const bad of ['-1', '1.5', 'soon', '86401', '']) {
      assert.match(await configError(loadConfig(['--refresh-write-slack', bad], {})), /--refresh-write-slack/, bad)
    }
    // idle mesh connections: 5 minutes by default, 0 keeps them all
    assert.equal(d.mesh.idleConnectionMs, 300_000)
    assert.equal((await loadConfig(['--mesh-idle', '0'], {})).config.mesh.idleConnectionMs, 0)
    assert.equal((await loadConfig([], { SIPMESH_MESH_IDLE: '300' })).config.mesh.idleConnectionMs, 300_000)
    for (const bad of ['-1', '1.5', 'soon', '86401', '']) {
      assert.match(await configError(loadConfig(['--mesh-idle', bad], {})), /--mesh-idle/, bad)
    }
    assert.match(await configError(loadConfig(['--min-expires', '0'], {})), /--min-expires: expected a whole number/)
    assert.match(await configError(loadConfig(['--rate-limit', 'lots'], {})), /--rate-limit: expected a whole number/)
    assert.match(await configError(loadConfig(['--min-expires', '600', '--max-expires', '300'], {})), /min-expires \(600\) is above max-expires \(300\)/)
  })

  test('admin token and log format: flag, environment, file; bad values refused; test variables ignored (issue 14)', async () => {
    const token = 'a'.repeat(16) + '-._~+/' + '=='
    assert.equal((await loadConfig(['--admin-token', token], {})).config.admin.token, token)
    assert.equal((await loadConfig([], { SIPMESH_ADMIN_TOKEN: token })).config.admin.token, token)
    assert.equal((await loadConfig(['--config', await file('token.json', JSON.stringify({ 'admin-token': token, 'log-format': 'pretty' }))], {})).config.log.format, 'pretty')
    assert.equal((await loadConfig([], {})).config.admin.token, undefined)
    assert.equal((await loadConfig([], {})).config.log.format, 'json')
    assert.match(await configError(loadConfig(['--admin-token', 'short'], {})), /--admin-token: a token needs at least 16 characters/)
    assert.match(await configError(loadConfig([], { SIPMESH_ADMIN_TOKEN: 'has a space in it, sadly' })), /SIPMESH_ADMIN_TOKEN: a token may hold/)
    assert.match(await configError(loadConfig(['--admin-token', 'x'.repeat(513)], {})), /at most 512/)
    assert.match(await configError(loadConfig(['--log-format', 'xml'], {})), /--log-format/)
    const { config } = await loadConfig([], { SIPMESH_REQUIRE_SIPP: '1', SIPMESH_TEST_LOG: 'yes' })
    assert.equal(config.log.level, 'info')
  })

  test('--help is reported, not an error', async () => {
    const { help } = await loadConfig(['--help'], {})
    assert.equal(help, true)
  })

  test('host:port parsing', () => {
    assert.deepEqual(parseHostPort('[::1]:5060'), { host: '::1', port: 5060 })
    assert.deepEqual(parseHostPort('sip.example.com:0'), { host: 'sip.example.com', port: 0 })
    for (const bad of ['', ':', '1.2.3.4', '1.2.3.4:', '256.1.1.1:5', '[zz]:5', 'a:b:5', '1.2.3.4:5:6', 'host:-1', 'h\u0000:5']) {
      assert.throws(() => parseHostPort(bad), Error, bad)
    }
  })

  test('hostile values: any string anywhere yields a config or a ConfigError, never anything else', async () => {
    const keys = ['--domain', '--sip', '--ws', '--p2p', '--bootstrap', '--data-dir', '--admin', '--log-level', '--allow-peer', '--psk', '--min-expires', '--max-expires', '--refresh-write-slack', '--conflict-policy', '--rate-limit', '--max-connections-per-host', '--max-pending-registers', '--overload-lag-ms', '--mesh-idle', '--max-list-members', '--max-lists', '--max-list-subscriptions']
    await fc.assert(fc.asyncProperty(fc.constantFrom(...keys), fc.string({ maxLength: 300 }), fc.string({ maxLength: 100 }), async (key, value, envValue) => {
      for (const run of [() => loadConfig([key, value], {}), () => loadConfig([], { [`SIPMESH_${key.slice(2).toUpperCase().replace('-', '_')}`]: envValue })]) {
        try {
          await run()
        } catch (err) {
          assert.equal((err as Error).name, ConfigError.NAME, `${key} ${JSON.stringify(value)}: ${(err as Error).message}`)
        }
      }
    }), { numRuns: 300 })
  })
})

describe('config: TLS and peer networks', () => {
  test('--tls, --wss and --peer with their certificate files', async () => {
    const { config } = await loadConfig([
      '--domain', 'example.com', '--tls', '127.0.0.1:5061', '--wss', '127.0.0.1:5067', '--tls-cert', 'c.pem', '--tls-key', 'k.pem', '--tls-ca', 'ca.pem',
      '--peer', 'example.net=127.0.0.1:6061,127.0.0.1:6071', '--peer', 'Example.ORG=10.0.0.1:5061', '--peer-trust', 'example.net'
    ], {}, '/srv')
    assert.deepEqual(config.gateway.tls, { listen: { host: '127.0.0.1', port: 5061 }, wss: { host: '127.0.0.1', port: 5067 }, cert: '/srv/c.pem', key: '/srv/k.pem', ca: '/srv/ca.pem' })
    assert.deepEqual(config.gateway.peers, [
      { domain: 'example.net', addresses: [{ host: '127.0.0.1', port: 6061 }, { host: '127.0.0.1', port: 6071 }], trusted: true },
      { domain: 'example.org', addresses: [{ host: '10.0.0.1', port: 5061 }], trusted: false }
    ])
    assert.ok(Object.isFrozen(config.gateway.peers))
  })

  test('SIPMESH_PEER and the config file key', async () => {
    const env = { SIPMESH_PEER: 'example.net=127.0.0.1:6061,127.0.0.1:6071,example.org=127.0.0.1:7061', SIPMESH_TLS_CERT: 'c', SIPMESH_TLS_KEY: 'k', SIPMESH_TLS_CA: 'a' }
    const { config } = await loadConfig([], env, '/srv')
    assert.deepEqual(config.gateway.peers?.map(p => [p.domain, p.addresses.length]), [['example.net', 2], ['example.org', 1]])
    const dir = await mkdtemp(join(tmpdir(), 'sipmesh-config-'))
    try {
      const path = join(dir, 'c.json')
      await writeFile(path, JSON.stringify({ peer: ['example.net=127.0.0.1:6061,127.0.0.1:6071'], 'tls-cert': 'c', 'tls-key': 'k', 'tls-ca': 'a' }))
      const fromFile = await loadConfig(['--config', path], {}, '/srv')
      assert.equal(fromFile.config.gateway.peers?.[0].addresses.length, 2)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  test('no TLS settings: none in the config', async () => {
    const { config } = await loadConfig([], {}, '/srv')
    assert.equal(config.gateway.tls, undefined)
    assert.equal(config.gateway.peers, undefined)
  })

  test('bad peer settings are refused with the flag named', async () => {
    const files = ['--tls-cert', 'c', '--tls-key', 'k', '--tls-ca', 'a']
    assert.match(await configError(loadConfig(['--peer', '127.0.0.1:5061', ...files], {})), /--peer.*no peer domain/)
    assert.match(await configError(loadConfig(['--peer', 'example.net=nowhere', ...files], {})), /--peer.*host:port/)
    assert.match(await configError(loadConfig(['--peer', 'bad domain=1.2.3.4:5', ...files], {})), /--peer.*not a domain/)
    assert.match(await configError(loadConfig(['--peer', 'example.net=1.2.3.4:99999', ...files], {})), /out of range/)
    assert.match(await configError(loadConfig(['--peer', 'example.net=1.2.3.4:5', '--peer', 'EXAMPLE.net=1.2.3.4:6', ...files], {})), /given twice/)
    assert.match(await configError(loadConfig(['--domain', 'example.com', '--peer', 'example.com=1.2.3.4:5', ...files], {})), /serves/)
    assert.match(await configError(loadConfig(['--peer', 'example.net=1.2.3.4:5', '--peer-trust', 'example.org', ...files], {})), /not a configured peer/)
    assert.match(await configError(loadConfig(['--peer', 'example.net=1.2.3.4:5', '--tls-cert', 'c', '--tls-key', 'k'], {})), /--tls-ca/)
    assert.match(await configError(loadConfig(['--tls', '127.0.0.1:5061'], {})), /--tls-cert and --tls-key/)
    assert.match(await configError(loadConfig(['--wss', '127.0.0.1:5067', '--tls-cert', 'c'], {})), /--tls-cert and --tls-key/)
    assert.match(await configError(loadConfig(['--peer', `example.net=${Array.from({ length: 17 }, (_, i) => `1.2.3.4:${i + 1}`).join(',')}`, ...files], {})), /more than 16/)
    assert.match(await configError(loadConfig([], { SIPMESH_PEER: 'x'.repeat(5000) })), /SIPMESH_PEER/)
  })
})
