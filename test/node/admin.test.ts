// The admin server alone, over a fake backend: the error paths a real node rarely shows.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'node:http'
import { AdminServer, isLoopback } from '../../node/admin/server.ts'
import { createNodeMetrics } from '../../node/metrics.ts'
import { memoryLogger } from './fixtures/logger.ts'
import type { AdminBackend } from '../../node/admin/server.ts'
import type { Route } from '../../sip-gateway/ports.ts'

function get (address: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number, body: string }> {
  const i = address.lastIndexOf(':')
  return new Promise((resolve, reject) => {
    const req = request({ host: address.slice(0, i), port: Number(address.slice(i + 1)), path, headers, timeout: 5000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, body }) })
    })
    req.on('error', reject)
    req.end()
  })
}

describe('AdminServer', () => {
  const routes = new Map<string, Route>()
  let behaviour: 'ok' | 'hang' | 'fail' | 'throw-status' = 'ok'
  const backend: AdminBackend = {
    status: () => {
      if (behaviour === 'throw-status') throw new Error('status exploded')
      return { peerId: 'p', multiaddrs: [], sip: '127.0.0.1:5060', domains: ['example.com'], peers: [], registrations: 0 }
    },
    normalizeAor: (aor) => {
      if (!/^sip:[^@]+@[^@]+$/.test(aor)) throw Object.assign(new Error(`not an AoR: ${aor.slice(0, 20)}`), { name: 'InvalidAorError' })
      return aor.toLowerCase()
    },
    resolve: async (aor, { signal }) => {
      if (behaviour === 'hang') {
        await new Promise((_resolve, reject) => { signal.addEventListener('abort', () => { reject(signal.reason) }) })
      }
      if (behaviour === 'fail') throw new Error('no DHT peers')
      return routes.get(aor)
    },
    metrics: async () => ({ contentType: 'text/plain; version=0.0.4', body: '# nothing\n' })
  }
  const logs = memoryLogger()
  const metrics = createNodeMetrics()
  const server = new AdminServer({ backend, logger: logs, metrics }, { host: '127.0.0.1', port: 0, resolveTimeout: 200 })

  before(async () => { await server.start() })
  after(async () => { await server.stop() })

  test('loopback detection, and no warning on loopback', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', 'localhost']) assert.equal(isLoopback(h), true, h)
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.1', 'example.com', '128.0.0.1']) assert.equal(isLoopback(h), false, h)
    assert.ok(!logs.lines.some(l => l.level === 'warn'))
  })

  test('a claim: version as a decimal string (beyond 2^53), expires as ISO time', async () => {
    routes.set('sip:big@example.com', { aor: 'sip:big@example.com', node: 'peer', sip: '127.0.0.1:5070', version: 2n ** 63n - 1n, expiresAt: Date.UTC(2030, 0, 1) })
    const res = await get(server.address, '/aor/sip%3ABIG%40example.com')
    assert.equal(res.status, 200)
    assert.deepEqual(JSON.parse(res.body), { aor: 'sip:big@example.com', owner: 'peer', version: '9223372036854775807', sip: '127.0.0.1:5070', expires: '2030-01-01T00:00:00.000Z' })
  })

  test('a resolve that takes too long: 504 resolve_timeout; a failing registry: 503; a crashing handler: 500', async () => {
    behaviour = 'hang'
    let res = await get(server.address, '/aor/sip%3Aa%40example.com')
    assert.equal(res.status, 504)
    assert.equal(JSON.parse(res.body).error.code, 'resolve_timeout')
    behaviour = 'fail'
    res = await get(server.address, '/aor/sip%3Aa%40example.com')
    assert.equal(res.status, 503)
    assert.equal(JSON.parse(res.body).error.code, 'registry_unavailable')
    behaviour = 'throw-status'
    res = await get(server.address, '/status')
    assert.equal(res.status, 500)
    assert.deepEqual(JSON.parse(res.body), { error: { code: 'internal', message: 'internal error' } })
    behaviour = 'ok'
    assert.equal((await get(server.address, '/status')).status, 200)
  })

  test('hostile paths and headers', async () => {
    for (const path of ['/aor/%', '/aor/%00', '/aor/sip%3A%40', '/aor/' + '%41'.repeat(600), '/aor/sip:a@b/../../etc/passwd']) {
      const res = await get(server.address, path)
      assert.ok([400, 404].includes(res.status), `${path.slice(0, 40)} → ${res.status}`)
      assert.ok(JSON.parse(res.body).error.code)
    }
    const big = await get(server.address, '/status', { 'x-pad': 'x'.repeat(20_000) })
    assert.equal(big.status, 431)
    assert.equal((await get(server.address, '/status')).status, 200)
  })

  test('requests are counted by route and status', async () => {
    const text = await metrics.registry.metrics()
    assert.match(text, /sipmesh_admin_requests_total\{route="aor",status="504"\} 1/)
    assert.match(text, /sipmesh_admin_aor_lookup_seconds_count\{result="error"\} 2/)
  })
})
