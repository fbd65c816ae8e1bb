import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig } from '../../node/config.ts'
import { SipmeshNode } from '../../node/sipmesh-node.ts'
import { DatastoreDurableStore, loadOrCreateIdentity, openDatastore, KEY_FILE } from '../../node/persistence.ts'
import { createPinoLogger } from '../../node/logger.ts'
import type { GatewayContext } from '../../node/sipmesh-node.ts'

const silent = createPinoLogger({ level: 'silent' })

async function nodeConfig (dataDir: string, extra: string[] = []): Promise<Awaited<ReturnType<typeof loadConfig>>['config']> {
  return (await loadConfig(['--data-dir', dataDir, '--p2p', '/ip4/127.0.0.1/tcp/0', '--admin', '127.0.0.1:0', '--sip', '127.0.0.1:5999', '--domain', 'example.com', ...extra], {})).config
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
interface Reply { status: number, headers: Record<string, string | string[] | undefined>, body: string, json: () => any }

function http (admin: string, path: string, method = 'GET', token?: string): Promise<Reply> {
  const [host, port] = [admin.slice(0, admin.lastIndexOf(':')), Number(admin.slice(admin.lastIndexOf(':') + 1))]
  const headers = token === undefined ? {} : { authorization: `Bearer ${token}` }
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, method, headers, timeout: 15_000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: () => JSON.parse(body) }) })
    })
    req.on('error', reject)
    req.on('timeout', () => { req.destroy(new Error('timeout')) })
    req.end()
  })
}

async function waitFor (check: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const until = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

describe('persistence', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'sipmesh-persist-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  test('the identity is created once and read back; the key file is private', async () => {
    const first = await loadOrCreateIdentity(join(dir, 'id'))
    const second = await loadOrCreateIdentity(join(dir, 'id'))
    assert.equal(first.created, true)
    assert.equal(second.created, false)
    assert.equal(first.privateKey.type, 'Ed25519')
    assert.ok(first.privateKey.equals(second.privateKey))
    const { stat } = await import('node:fs/promises')
    assert.equal((await stat(join(dir, 'id', KEY_FILE))).mode & 0o777, 0o600)
  })

  test('a damaged key file is an error, never silently replaced', async () => {
    await loadOrCreateIdentity(join(dir, 'bad'))
    await writeFile(join(dir, 'bad', KEY_FILE), 'garbage')
    await assert.rejects(loadOrCreateIdentity(join(dir, 'bad')), /the node key .* is damaged/)
    assert.equal(await readFile(join(dir, 'bad', KEY_FILE), 'utf8'), 'garbage')
  })

  test('the durable store survives reopening, lists by prefix in key order, takes any key', async () => {
    const path = join(dir, 'store')
    let ds = await openDatastore(path)
    let store = new DatastoreDurableStore(ds)
    const keys = ['reg/sip:bob@example.com', 'reg/sip:alice@example.com', 'reg/', 'im/sip:alice@example.com/0001', 'reg/\u00e9\u2603 /:x//y', 'rega', '']
    for (const [i, k] of keys.entries()) await store.put(k, Uint8Array.of(i))
    await ds.close()
    ds = await openDatastore(path)
    store = new DatastoreDurableStore(ds)
    try {
      assert.deepEqual(await store.get('reg/sip:bob@example.com'), Uint8Array.of(0))
      assert.deepEqual(await store.get(''), Uint8Array.of(6))
      assert.equal(await store.get('reg/nobody'), undefined)
      const listed: string[] = []
      for await (const [k] of store.list('reg/')) listed.push(k)
      assert.deepEqual(listed, ['reg/', 'reg/sip:alice@example.com', 'reg/sip:bob@example.com', 'reg/\u00e9\u2603 /:x//y'])
      await store.delete('reg/sip:bob@example.com')
      await store.delete('reg/never-there')
      assert.equal(await store.get('reg/sip:bob@example.com'), undefined)
      let all = 0
      for await (const _ of store.list('')) all++
      assert.equal(all, keys.length - 1)
    } finally {
      await ds.close()
    }
  })

  test('a restarted node has the same peer id; a second node on the same data dir is refused', async () => {
    const dataDir = join(dir, 'node')
    const config = await nodeConfig(dataDir)
    const a = new SipmeshNode({ config, logger: silent, libp2pMetrics: false })
    await a.start()
    const id = a.peerId
    // the admin token: generated into the data dir, private, reused by a restart (issue 14)
    const { stat } = await import('node:fs/promises')
    const token = await readFile(join(dataDir, 'admin.token'), 'utf8')
    assert.match(token, /^[0-9a-f]{64}\n$/)
    assert.equal((await stat(join(dataDir, 'admin.token'))).mode & 0o777, 0o600)
    const twin = new SipmeshNode({ config, logger: silent, libp2pMetrics: false })
    await assert.rejects(twin.start(), /cannot open the datastore .*another node/)
    await a.stop()
    const again = new SipmeshNode({ config, logger: silent, libp2pMetrics: false })
    await again.start()
    try {
      assert.equal(again.peerId, id)
      assert.equal(await readFile(join(dataDir, 'admin.token'), 'utf8'), token)
    } finally {
      await again.stop()
    }
    // the same object can be started again too
    await a.start()
    try {
      assert.equal(a.peerId, id)
    } finally {
      await a.stop()
    }
  })
})

describe('the admin token of a node', () => {
  test('--admin-token: that token opens PUT, no token file is written', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sipmesh-token-node-'))
    const token = 'operator-chosen-token-0123456789'
    const n = new SipmeshNode({ config: await nodeConfig(dir, ['--admin-token', token]), logger: silent, libp2pMetrics: false })
    await n.start()
    try {
      const path = `/presence/${encodeURIComponent('sip:bob@example.com')}/rules`
      assert.equal((await http(n.adminAddress, path, 'PUT')).status, 401)
      assert.equal((await http(n.adminAddress, path, 'PUT', 'x'.repeat(32))).status, 401)
      // past the guard: this node runs no gateway, so no presence agent
      const ok = await http(n.adminAddress, path, 'PUT', token)
      assert.equal(ok.status, 404)
      assert.equal(ok.json().error.code, 'presence_unavailable')
      await assert.rejects(readFile(join(dir, 'admin.token')), { code: 'ENOENT' })
    } finally {
      await n.stop()
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('SipmeshNode and its admin API (two real nodes over TCP)', () => {
  let dir: string
  let a: SipmeshNode
  let b: SipmeshNode
  const gatewayCalls: string[] = []
  let context: GatewayContext | undefined

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sipmesh-node-'))
    a = new SipmeshNode({
      config: await nodeConfig(join(dir, 'a')),
      logger: silent,
      gateway: (ctx) => {
        context = ctx
        return {
          start: async () => { gatewayCalls.push('start'); ctx.announceSip('127.0.0.1:5998') },
          stop: async () => { gatewayCalls.push('stop') },
          registrations: () => 7
        }
      }
    })
    await a.start()
    const boot = a.mesh.libp2p.getMultiaddrs()[0].toString()
    b = new SipmeshNode({ config: await nodeConfig(join(dir, 'b'), ['--bootstrap', boot]), logger: silent, libp2pMetrics: false })
    await b.start()
    await waitFor(() => a.status().peers.includes(b.peerId) && b.status().peers.includes(a.peerId), 10_000, 'the nodes to connect')
    // and to see each other in their DHT routing tables (after identify), so a claim reaches both
    const tableSize = (n: SipmeshNode): number => (n.mesh.libp2p.services.dht as unknown as { routingTable: { size: number } }).routingTable.size
    await waitFor(() => tableSize(a) > 0 && tableSize(b) > 0, 10_000, 'the DHT routing tables')
  })

  after(async () => {
    await b?.stop()
    await a?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  test('the gateway seam gets its context and is started; its count and SIP address show in /status', async () => {
    assert.deepEqual(gatewayCalls, ['start'])
    assert.ok(context != null)
    assert.deepEqual(context.config.domains, ['example.com'])
    assert.equal(context.registry.nodeId, a.peerId)
    const res = await http(a.adminAddress, '/status')
    assert.equal(res.status, 200)
    assert.match(String(res.headers['content-type']), /application\/json/)
    const s = res.json()
    assert.deepEqual(Object.keys(s).sort(), ['bootstrap', 'domains', 'joinErrors', 'multiaddrs', 'peerId', 'peers', 'registrations', 'sip'])
    assert.equal(s.peerId, a.peerId)
    assert.equal(s.sip, '127.0.0.1:5998')
    assert.deepEqual(s.domains, ['example.com'])
    assert.equal(s.registrations, 7)
    assert.ok(s.multiaddrs.length > 0 && s.multiaddrs.every((m: string) => m.startsWith('/ip4/127.0.0.1/tcp/')))
    assert.deepEqual(s.peers, [b.peerId])
  })

  test('GET /aor: 404 for an unclaimed AoR, the claim once one node claims it', async () => {
    const aor = 'sip:alice@example.com'
    const path = `/aor/${encodeURIComponent(aor)}`
    const missing = await http(b.adminAddress, path)
    assert.equal(missing.status, 404)
    assert.equal(missing.json().error.code, 'aor_not_found')
    const expiresAt = Date.now() + 3600_000
    const claimed = await a.mesh.registry.claim(aor, { expiresAt })
    assert.equal(claimed.won, true)
    for (const node of [a, b]) {
      const res = await http(node.adminAddress, `${path}?fresh=1`)
      assert.equal(res.status, 200, res.body)
      const body = res.json()
      assert.deepEqual(Object.keys(body).sort(), ['aor', 'expires', 'owner', 'sip', 'version'])
      assert.equal(body.aor, aor)
      assert.equal(body.owner, a.peerId)
      assert.equal(body.sip, '127.0.0.1:5998')
      assert.match(body.version, /^\d+$/)
      assert.equal(BigInt(body.version), claimed.route.version)
      assert.match(body.expires, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
      // the claim's lease: renewed while the registration lasts, never past it (plus the grace)
      assert.ok(Date.parse(body.expires) > Date.now() && Date.parse(body.expires) <= expiresAt + 30_000)
    }
    // the AoR is normalized: scheme and domain case, parameters
    const res = await http(b.adminAddress, `/aor/${encodeURIComponent('SIP:alice@EXAMPLE.com;transport=tcp')}`)
    assert.equal(res.status, 200)
    assert.equal(res.json().aor, aor)
  })

  test('bad requests get stable JSON errors and never hurt the node', async () => {
    const cases: Array<[string, string, number, string]> = [
      ['GET', '/aor/not-an-aor', 400, 'bad_aor'],
      ['GET', '/aor/%E0%A4%A', 400, 'bad_aor'],
      ['GET', `/aor/${encodeURIComponent('sip:' + 'x'.repeat(600) + '@example.com')}`, 400, 'bad_aor'],
      ['GET', '/aor/', 404, 'not_found'],
      ['GET', '/nope', 404, 'not_found'],
      ['GET', '/index.htm', 404, 'not_found'],
      ['GET', '/status/extra', 404, 'not_found'],
      ['GET', '/' + 'a'.repeat(4000), 404, 'not_found'],
      ['POST', '/status', 405, 'method_not_allowed'],
      ['DELETE', '/aor/sip%3Aalice%40example.com', 405, 'method_not_allowed'],
      ['PUT', '/metrics', 405, 'method_not_allowed']
    ]
    const token = (await readFile(join(a.config.dataDir, 'admin.token'), 'utf8')).trim()
    for (const [method, path, status, code] of cases) {
      const res = await http(a.adminAddress, path, method, method === 'GET' ? undefined : token)
      assert.equal(res.status, status, `${method} ${path.slice(0, 50)}: ${res.body}`)
      const body = res.json()
      assert.equal(body.error.code, code)
      assert.equal(typeof body.error.message, 'string')
      if (status === 405) assert.equal(res.headers.allow, 'GET, HEAD')
    }
    const head = await http(a.adminAddress, '/status', 'HEAD')
    assert.equal(head.status, 200)
    assert.equal(head.body, '')
    assert.equal((await http(a.adminAddress, '/status')).status, 200)
  })

  test('GET /metrics: Prometheus text with our figures and libp2p metrics', async () => {
    const res = await http(a.adminAddress, '/metrics')
    assert.equal(res.status, 200)
    assert.match(String(res.headers['content-type']), /^text\/plain/)
    assert.match(res.body, /^# HELP /m)
    assert.match(res.body, /^sipmesh_connected_peers 1$/m)
    assert.match(res.body, /^sipmesh_registrations 7$/m)
    assert.match(res.body, /^sipmesh_admin_requests_total\{route="status",status="200"\} \d+$/m)
    assert.match(res.body, /^sipmesh_registry_claims_total \d+$/m)
    assert.match(res.body, /^libp2p_kad_dht_routing_table_size/m)
    assert.match(res.body, /^libp2p_connection_manager_connections/m)
  })

  test('the SIP peer channel runs between the nodes', async () => {
    const got: string[] = []
    const off = b.peerChannel.onMessage((node, data) => { got.push(`${node} ${new TextDecoder().decode(data)}`) })
    try {
      await a.peerChannel.send(b.peerId, new TextEncoder().encode('OPTIONS sip:b SIP/2.0'))
      await waitFor(() => got.length === 1, 5000, 'the message')
      assert.equal(got[0], `${a.peerId} OPTIONS sip:b SIP/2.0`)
    } finally { off() }
  })
})
