// The admin API's guard (node/admin/auth.ts) over real HTTP: the Host check (DNS rebinding), the
// bearer token of mutating requests, the token file; and the rules checks of the admin server
// (foreign domain, total rules cap).
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'node:http'
import { connect } from 'node:net'
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AdminServer } from '../../node/admin/server.ts'
import { ADMIN_TOKEN_FILE, generateAdminToken, isLoopbackRemote, loadOrCreateAdminToken, tokenProblem } from '../../node/admin/auth.ts'
import { PresenceAuthorization } from '../../sip-gateway/presence/authorization.ts'
import { memoryLogger } from './fixtures/logger.ts'
import type { AdminBackend } from '../../node/admin/server.ts'

interface Reply { status: number, body: string, headers: Record<string, string | string[] | undefined> }

function call (address: string, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Reply> {
  const i = address.lastIndexOf(':')
  return new Promise((resolve, reject) => {
    const req = request({ host: address.slice(0, i), port: Number(address.slice(i + 1)), method, path, headers, timeout: 5000 }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { text += c })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, body: text, headers: res.headers }) })
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** a request written by hand: what no HTTP client library would send */
function raw (address: string, text: string): Promise<string> {
  const i = address.lastIndexOf(':')
  return new Promise((resolve, reject) => {
    const s = connect(Number(address.slice(i + 1)), address.slice(0, i))
    let out = ''
    s.setEncoding('utf8')
    s.on('data', (c: string) => { out += c })
    s.on('end', () => { resolve(out) })
    s.on('error', reject)
    s.setTimeout(5000, () => { s.destroy(new Error('no answer')) })
    s.end(text)
  })
}

const code = (r: Reply): string => (JSON.parse(r.body) as { error: { code: string } }).error.code

describe('admin API guard', () => {
  const token = generateAdminToken()
  const rules = new PresenceAuthorization({ maxTotalRules: 3 })
  const backend: AdminBackend = {
    status: () => ({ peerId: 'p', multiaddrs: [], sip: '127.0.0.1:5060', domains: ['example.com'], peers: [], registrations: 0 }),
    normalizeAor: (aor) => aor,
    resolve: async () => undefined,
    metrics: async () => ({ contentType: 'text/plain', body: '' }),
    presenceRules: {
      get: (aor) => rules.get(aor),
      set: async (aor, body) => { const doc = await rules.replace(aor, body); return { ...doc.rules, version: doc.version.toString() } }
    }
  }
  const server = new AdminServer({ backend, logger: memoryLogger() }, { host: '127.0.0.1', port: 0, token, domains: ['example.com'] })
  const noToken = new AdminServer({ backend, logger: memoryLogger() }, { host: '127.0.0.1', port: 0 })
  const path = `/presence/${encodeURIComponent('sip:bob@example.com')}/rules`
  const doc = JSON.stringify({ watchers: { 'sip:eve@example.com': 'block' } })
  const json = { 'content-type': 'application/json' }

  before(async () => { await server.start(); await noToken.start() })
  after(async () => { await server.stop(); await noToken.stop() })

  test('reads on loopback need no token', async () => {
    assert.equal((await call(server.address, 'GET', '/status')).status, 200)
    assert.equal((await call(server.address, 'GET', path)).status, 200)
    assert.equal((await call(server.address, 'HEAD', '/status')).status, 200)
  })

  test('PUT without a token, with a wrong one or another scheme: 401 with WWW-Authenticate: Bearer; nothing changes', async () => {
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{}, /^Bearer realm="sipmesh-admin"$/],
      [{ authorization: `Bearer ${generateAdminToken()}` }, /error="invalid_token"/],
      [{ authorization: `Bearer ${token}x` }, /error="invalid_token"/],
      [{ authorization: `Bearer ${token.slice(0, -1)}` }, /error="invalid_token"/],
      [{ authorization: `Basic ${Buffer.from(`admin:${token}`).toString('base64')}` }, /^Bearer realm/],
      [{ authorization: 'Bearer' }, /^Bearer realm/],
      [{ authorization: `Bearer ${token} extra` }, /^Bearer realm/],
      [{ authorization: `Bearer ${'A'.repeat(5000)}` }, /^Bearer realm/],
      // the token is case-sensitive (the scheme name is not)
      [{ authorization: `Bearer ${token.toUpperCase()}` }, /error="invalid_token"/]
    ]
    for (const [headers, challenge] of cases) {
      const r = await call(server.address, 'PUT', path, { ...json, ...headers }, doc)
      assert.equal(r.status, 401, JSON.stringify(headers).slice(0, 60))
      assert.equal(code(r), 'unauthorized')
      assert.match(String(r.headers['www-authenticate']), challenge)
    }
    for (const method of ['DELETE', 'POST', 'PATCH', 'OPTIONS']) {
      assert.equal((await call(server.address, method, path)).status, 401, method)
    }
    assert.deepEqual(rules.get('sip:bob@example.com'), { watchers: {}, domains: {} })
  })

  test('the right token: the PUT goes through (the scheme name in any case)', async () => {
    const r = await call(server.address, 'PUT', path, { ...json, authorization: `bearer ${token}` }, doc)
    assert.equal(r.status, 200, r.body)
    assert.equal(rules.get('sip:bob@example.com').watchers['sip:eve@example.com'], 'block')
    // a route that is read-only still says so once authorized
    assert.equal((await call(server.address, 'PUT', '/metrics', { authorization: `Bearer ${token}` })).status, 405)
  })

  test('a server without a token refuses every PUT', async () => {
    const r = await call(noToken.address, 'PUT', path, { ...json, authorization: `Bearer ${token}` }, doc)
    assert.equal(r.status, 401)
  })

  test('Host must name the admin API (DNS rebinding): 421 bad_host otherwise, reads included', async () => {
    const port = server.address.slice(server.address.lastIndexOf(':') + 1)
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `LOCALHOST:${port}`]) {
      assert.equal((await call(server.address, 'GET', '/status', { host })).status, 200, host)
    }
    for (const host of ['evil.example', `evil.example:${port}`, `127.0.0.1:${Number(port) + 1}`, '127.0.0.1', `localhost.evil.example:${port}`, `127.0.0.1:${port}@evil`, 'x'.repeat(3000)]) {
      const r = await call(server.address, 'GET', '/status', { host })
      assert.equal(r.status, 421, host.slice(0, 40))
      assert.equal(code(r), 'bad_host')
      const w = await call(server.address, 'PUT', path, { host, ...json, authorization: `Bearer ${token}` }, doc)
      assert.equal(w.status, 421, `PUT with ${host.slice(0, 40)}`)
    }
    // HTTP/1.0 without a Host header
    const answer = await raw(server.address, 'GET /status HTTP/1.0\r\n\r\n')
    assert.match(answer, /^HTTP\/1\.1 421 /)
    assert.match(answer, /"bad_host"/)
  })

  test('rules for a domain the mesh does not serve: 403 foreign_domain', async () => {
    for (const aor of ['sip:bob@evil.example', 'sip:bob@evil.example.', 'sip:bob@EVIL.example:5060', 'sip:bob@evil.example;x=example.com', 'sip:bob@example.com@evil.example']) {
      const r = await call(server.address, 'PUT', `/presence/${encodeURIComponent(aor)}/rules`, { ...json, authorization: `Bearer ${token}` }, doc)
      assert.equal(r.status, 403, aor)
      assert.equal(code(r), 'foreign_domain')
    }
    const bad = await call(server.address, 'PUT', `/presence/${encodeURIComponent('no-at-sign')}/rules`, { ...json, authorization: `Bearer ${token}` }, doc)
    assert.equal(bad.status, 400)
  })

  test('the total of stored rules is capped: 403 rules_limit; shrinking is always allowed', async () => {
    const put = async (user: string, watchers: string[]): Promise<Reply> => await call(server.address, 'PUT', `/presence/${encodeURIComponent(`sip:${user}@example.com`)}/rules`,
      { ...json, authorization: `Bearer ${token}` }, JSON.stringify({ watchers: Object.fromEntries(watchers.map(w => [`sip:${w}@example.com`, 'block'])) }))
    // bob holds 1 rule already; the cap is 3
    assert.equal((await put('carol', ['a', 'b'])).status, 200)
    const over = await put('dave', ['c'])
    assert.equal(over.status, 403, over.body)
    assert.equal(code(over), 'rules_limit')
    assert.match(JSON.parse(over.body).error.message, /at most 3 rules/)
    assert.equal((await put('carol', ['a'])).status, 200)
    assert.equal((await put('dave', ['c'])).status, 200)
  })
})

describe('admin token file', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'sipmesh-token-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  test('generated once (mode 0600), then read back', async () => {
    const first = await loadOrCreateAdminToken(dir)
    assert.equal(first.created, true)
    assert.equal(first.path, join(dir, ADMIN_TOKEN_FILE))
    assert.equal(tokenProblem(first.token), undefined)
    assert.equal((await stat(first.path)).mode & 0o777, 0o600)
    const second = await loadOrCreateAdminToken(dir)
    assert.equal(second.created, false)
    assert.equal(second.token, first.token)
  })

  test('processes starting together agree on one token', async () => {
    const d = join(dir, 'race')
    await (await import('node:fs/promises')).mkdir(d)
    const all = await Promise.all(Array.from({ length: 8 }, async () => await loadOrCreateAdminToken(d)))
    assert.equal(new Set(all.map(a => a.token)).size, 1)
    assert.equal(all.filter(a => a.created).length, 1)
  })

  test('a file readable by others is made private; an unusable one is an error, not replaced', async () => {
    const path = join(dir, ADMIN_TOKEN_FILE)
    await chmod(path, 0o644)
    const t = await loadOrCreateAdminToken(dir)
    assert.equal(t.tightened, true)
    assert.equal((await stat(path)).mode & 0o777, 0o600)
    for (const garbage of ['', 'short', 'has spaces in the middle of it', 'x'.repeat(600), '\u00e9'.repeat(20)]) {
      await writeFile(path, garbage)
      await assert.rejects(loadOrCreateAdminToken(dir), { name: 'AdminTokenError' })
      assert.equal(await readFile(path, 'utf8'), garbage)
    }
  })

  test('token and remote-address rules', () => {
    assert.equal(tokenProblem('a'.repeat(16)), undefined)
    assert.match(tokenProblem('a'.repeat(15)) ?? '', /at least 16/)
    assert.match(tokenProblem('abc def ghi jkl mno') ?? '', /letters/)
    for (const a of ['127.0.0.1', '127.9.9.9', '::1', '::ffff:127.0.0.1']) assert.equal(isLoopbackRemote(a), true, a)
    for (const a of [undefined, '10.0.0.1', '::ffff:10.0.0.1', '::', '0.0.0.0', '128.0.0.1', 'fe80::1']) assert.equal(isLoopbackRemote(a), false, String(a))
  })
})
