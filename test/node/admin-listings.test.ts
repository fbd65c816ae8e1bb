// The admin API's listings, pages and CLI subcommands (issue 14) on two real nodes (libp2p over
// loopback TCP, the real gateway) after real SIP traffic over UDP: registrations paged and
// filtered, bindings asked of the owner over /sipmesh/node-info, peers, the mesh as each node
// describes itself, claims, presence subscriptions, the offline queue; hostile queries, paths and
// node-info streams; and `sipmesh status | aor | registrations` run as processes.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { lpStream } from '@libp2p/utils'
import { loadConfig } from '../../node/config.ts'
import { SipmeshNode } from '../../node/sipmesh-node.ts'
import { defaultGateway } from '../../node/gateway.ts'
import { createPinoLogger } from '../../node/logger.ts'
import { NODE_INFO_PROTOCOL, parseSummary } from '../../node/mesh-info.ts'
import { TestUa } from '../sip-gateway/gateway/fixtures/ua.ts'
import { BIN, cleanEnv, httpGet } from '../e2e/fixtures/processes.ts'

const silent = createPinoLogger({ level: 'silent' })

async function until<T> (fn: () => T | undefined | Promise<T | undefined>, ms: number, what: string): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v !== undefined) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the test reads the JSON answers loosely
async function json (admin: string, path: string): Promise<{ status: number, body: any }> {
  const res = await httpGet(admin, path)
  return { status: res.status, body: JSON.parse(res.body) }
}

function cli (args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: cleanEnv() })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    // generous: a CLI process starts in ~1 s on a quiet machine, over 15 s under a load average of 25
    const timer = setTimeout(() => { child.kill('SIGKILL') }, 90_000)
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }) })
  })
}

describe('admin listings, pages and CLI subcommands on two nodes', () => {
  let dir: string
  let a: SipmeshNode
  let b: SipmeshNode
  const uas: TestUa[] = []
  const users = ['alice', 'alfred', 'bob', 'carol', 'dan']

  const sipOf = (n: SipmeshNode): { host: string, port: number } => {
    const i = n.sip.lastIndexOf(':')
    return { host: n.sip.slice(0, i), port: Number(n.sip.slice(i + 1)) }
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sipmesh-admin-listings-'))
    // known users without secrets: no digest authentication, and an IM to dave (away) is stored
    const credentials = join(dir, 'users.txt')
    await writeFile(credentials, 'dave@example.com\n')
    const config = async (name: string, extra: string[] = []): Promise<Awaited<ReturnType<typeof loadConfig>>['config']> => (await loadConfig([
      '--data-dir', join(dir, name), '--p2p', '/ip4/127.0.0.1/tcp/0', '--admin', '127.0.0.1:0', '--sip', '127.0.0.1:0',
      '--domain', 'example.com', '--credentials', credentials, ...extra
    ], {})).config
    a = new SipmeshNode({ config: await config('a', ['--ws', '127.0.0.1:0']), logger: silent, libp2pMetrics: false, gateway: defaultGateway })
    await a.start()
    b = new SipmeshNode({ config: await config('b', ['--bootstrap', a.mesh.libp2p.getMultiaddrs()[0].toString()]), logger: silent, libp2pMetrics: false, gateway: defaultGateway })
    await b.start()
    const tableSize = (n: SipmeshNode): number => (n.mesh.libp2p.services.dht as unknown as { routingTable: { size: number } }).routingTable.size
    await until(() => tableSize(a) > 0 && tableSize(b) > 0 ? true : undefined, 10_000, 'the DHT routing tables')
    for (const u of users) {
      const ua = await TestUa.open(u, sipOf(a))
      uas.push(ua)
      assert.equal((await ua.register(600, {}))?.status, 200, `${u} registers on a`)
    }
  })

  after(async () => {
    for (const ua of uas) await ua.close()
    await b?.stop()
    await a?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  test('GET /registrations: pages in order with a cursor, filters by prefix (with or without sip:)', async () => {
    const first = await json(a.adminAddress, '/registrations?limit=2')
    assert.equal(first.status, 200)
    assert.deepEqual(first.body.items.map((i: { aor: string }) => i.aor), ['sip:alfred@example.com', 'sip:alice@example.com'])
    assert.equal(first.body.total, 5)
    assert.equal(first.body.limit, 2)
    assert.equal(first.body.next, 'sip:alice@example.com')
    const binding = first.body.items[1].bindings[0]
    assert.match(binding.contact, /^sip:alice@127\.0\.0\.1:\d+$/)
    assert.ok(Date.parse(binding.expires) > Date.now() + 500_000, binding.expires)
    assert.equal(binding.transport, 'UDP')
    assert.match(binding.source, /^127\.0\.0\.1:\d+$/)

    const seen: string[] = []
    let after: string | undefined
    for (let i = 0; i < 5; i++) {
      const page = await json(a.adminAddress, `/registrations?limit=2${after !== undefined ? `&after=${encodeURIComponent(after)}` : ''}`)
      seen.push(...page.body.items.map((x: { aor: string }) => x.aor))
      after = page.body.next
      if (after === undefined) break
    }
    assert.deepEqual(seen, users.map(u => `sip:${u}@example.com`).sort())

    for (const prefix of ['al', 'sip:al', 'sip%3Aal']) {
      const r = await json(a.adminAddress, `/registrations?prefix=${prefix}`)
      assert.deepEqual(r.body.items.map((x: { aor: string }) => x.aor), ['sip:alfred@example.com', 'sip:alice@example.com'], prefix)
      assert.equal(r.body.total, 2)
      assert.equal(r.body.next, undefined)
    }
    assert.deepEqual((await json(a.adminAddress, '/registrations?prefix=zz')).body, { items: [], total: 0, limit: 100 })
    // a cursor past everything, or one that is no AoR at all, is a position, not an error
    assert.deepEqual((await json(a.adminAddress, '/registrations?after=%7E%7E')).body.items, [])
    assert.equal((await json(a.adminAddress, '/registrations?after=%20not-an-aor')).body.items.length, 5)
    // b has nobody
    assert.equal((await json(b.adminAddress, '/registrations')).body.total, 0)
  })

  test('bad queries: 400 bad_query, never a 5xx; other methods 405', async () => {
    const bad = [
      'limit=0', 'limit=1001', 'limit=99999999999999999999', 'limit=-1', 'limit=abc', 'limit=1.5', 'limit=', 'limit=%00',
      'after=%00', 'after=a%0Db', `after=${'x'.repeat(513)}`, 'prefix=%1B%5B31m', `prefix=${'p'.repeat(600)}`
    ]
    for (const q of bad) {
      const r = await json(a.adminAddress, `/registrations?${q}`)
      assert.equal(r.status, 400, q)
      assert.equal(r.body.error.code, 'bad_query', q)
    }
    for (const path of ['/subscriptions?limit=0', '/offline?limit=5000', '/claims?limit=x']) {
      assert.equal((await json(a.adminAddress, path)).status, 400, path)
    }
    const huge = await httpGet(a.adminAddress, `/registrations?prefix=${'a'.repeat(3000)}`)
    assert.equal(huge.status, 404, 'an over-long URL is refused before routing')
    const post = async (headers: Record<string, string>): Promise<number> => await new Promise<number>((resolve, reject) => {
      const [host, port] = a.adminAddress.split(':')
      import('node:http').then(({ request }) => {
        const req = request({ host, port: Number(port), path: '/registrations', method: 'POST', headers }, (res) => { res.resume(); resolve(res.statusCode ?? 0) })
        req.on('error', reject)
        req.end('{}')
      }, reject)
    })
    // a change needs the admin token (node/admin/auth.ts); with it, the read-only route says 405
    assert.equal(await post({}), 401)
    const token = (await import('node:fs')).readFileSync(join(a.config.dataDir, 'admin.token'), 'utf8').trim()
    assert.equal(await post({ authorization: `Bearer ${token}` }), 405)
  })

  test('GET /bindings/<aor>: the owner\'s bindings, asked over the mesh from the other node; bad and unknown AoRs', async () => {
    const here = await json(a.adminAddress, `/bindings/${encodeURIComponent('sip:bob@example.com')}`)
    assert.equal(here.status, 200)
    assert.equal(here.body.self, true)
    assert.equal(here.body.owner, a.peerId)
    const there = await json(b.adminAddress, `/bindings/${encodeURIComponent('sip:bob@example.com')}`)
    assert.equal(there.status, 200, JSON.stringify(there.body))
    assert.equal(there.body.self, false)
    assert.equal(there.body.owner, a.peerId)
    assert.equal(there.body.sip, a.sip)
    assert.deepEqual(there.body.bindings, here.body.bindings)
    assert.equal(there.body.bindings.length, 1)
    assert.equal((await json(b.adminAddress, `/bindings/${encodeURIComponent('sip:nobody@example.com')}`)).body.error.code, 'aor_not_found')
    for (const bad of ['not-an-aor', '%E0%A4%A', encodeURIComponent('sip:@example.com'), encodeURIComponent('sip:x@' + 'h'.repeat(400))]) {
      const r = await json(b.adminAddress, `/bindings/${bad}`)
      assert.equal(r.status, 400, bad)
      assert.equal(r.body.error.code, 'bad_aor', bad)
    }
  })

  test('GET /peers and /mesh: each node lists the other, with addresses, the SIP stream and who is connected to whom', async () => {
    const peers = (await json(a.adminAddress, '/peers')).body as Array<{ peerId: string, addresses: string[], connections: Array<{ status: string, streams: Record<string, number> }>, sipStream: { open: boolean, queued: number } }>
    const pb = peers.find(p => p.peerId === b.peerId)
    assert.ok(pb !== undefined, JSON.stringify(peers))
    assert.match(pb.addresses[0], /^\/ip4\/127\.0\.0\.1\/tcp\/\d+/)
    assert.ok(pb.connections.some(c => c.status === 'open'))
    assert.equal(typeof pb.sipStream.open, 'boolean')

    const mesh = (await json(b.adminAddress, '/mesh')).body
    assert.equal(mesh.self, b.peerId)
    const na = mesh.nodes.find((n: { peerId: string }) => n.peerId === a.peerId)
    assert.equal(na.reachable, true)
    assert.equal(na.admin, a.adminAddress)
    assert.equal(na.sip, a.sip)
    assert.match(na.ws, /^127\.0\.0\.1:\d+$/)
    assert.equal(na.registrations, 5)
    assert.equal(na.ownedClaims, 5)
    assert.ok(na.peers.includes(b.peerId))
    const nb = mesh.nodes.find((n: { peerId: string }) => n.peerId === b.peerId)
    assert.equal(nb.self, true)
    assert.equal(nb.ws, undefined)
    assert.deepEqual(mesh.links, [[a.peerId, b.peerId].sort()])
  })

  test('GET /claims, /subscriptions, /offline, /summary reflect the traffic', async () => {
    const claims = (await json(a.adminAddress, '/claims')).body
    assert.equal(claims.owned.total, 5)
    assert.deepEqual(claims.owned.aors, users.map(u => `sip:${u}@example.com`).sort())
    const own = claims.stored.items.filter((c: { own: boolean }) => c.own)
    assert.equal(own.length, 5)
    assert.equal((await json(a.adminAddress, '/claims?limit=2')).body.stored.truncated, true)
    // b replicates a's claims (the claim's replica set is every node below 6)
    const stored = await until(async () => {
      const items = (await json(b.adminAddress, '/claims')).body.stored.items as Array<{ owner: string }>
      return items.filter(c => c.owner === a.peerId).length === 5 ? items : undefined
    }, 10_000, 'b to store a\'s claims')
    assert.ok(stored.every(c => c.owner === a.peerId))

    // a watcher on b subscribes to alice (on a): b holds a back-end subscription, a serves it
    const watcher = await TestUa.open('walt', sipOf(b))
    uas.push(watcher)
    const sub = await watcher.request({ method: 'SUBSCRIBE', uri: 'sip:alice@example.com', headers: [['Event', 'presence'], ['Contact', watcher.contact], ['Expires', '300']] }, 10_000)
    assert.ok(sub !== undefined && sub.status >= 200 && sub.status < 300, `SUBSCRIBE: ${sub?.status}`)
    const atB = await until(async () => {
      const s = (await json(b.adminAddress, '/subscriptions')).body
      return s.presentities.find((p: { aor: string, backend?: string }) => p.aor === 'sip:alice@example.com' && p.backend === 'accepted')
    }, 10_000, 'b\'s back-end subscription')
    assert.equal(atB.mode, 'remote')
    assert.equal(atB.owner, a.peerId)
    assert.deepEqual(atB.watchers, ['sip:walt@example.com'])
    const atA = (await json(a.adminAddress, '/subscriptions')).body.presentities.find((p: { aor: string }) => p.aor === 'sip:alice@example.com')
    assert.equal(atA.mode, 'local')
    assert.deepEqual(atA.watcherNodes, [b.peerId])

    // dave is known (credentials file) and away: an IM is stored here
    const sender = uas[0]
    assert.equal((await sender.request({ uri: 'sip:dave@example.com', body: 'are you there?' }, 10_000))?.status, 202)
    const offline = await until(async () => {
      const o = (await json(a.adminAddress, '/offline')).body
      return o.total > 0 ? o : undefined
    }, 10_000, 'the offline queue')
    assert.deepEqual(offline.users, [{ aor: 'sip:dave@example.com', messages: 1 }])

    const summary = (await json(a.adminAddress, '/summary')).body
    assert.equal(summary.peerId, a.peerId)
    assert.ok(summary.totals.sipRequests >= 6, JSON.stringify(summary))
    assert.equal(summary.totals.claims >= 5, true)
    assert.equal(summary.now.registrations, 5)
    assert.equal(summary.now.offlineMessages, 1)
    assert.ok(summary.now.subscriptions >= 1)
  })

  test('pages: the dashboard, the phone only with --ws, vendored files, and no way out of their folders', async () => {
    const home = await httpGet(a.adminAddress, '/')
    assert.equal(home.status, 200)
    assert.match(home.body, /<title>sipmesh dashboard<\/title>/)
    assert.equal((await httpGet(a.adminAddress, '/dashboard/dashboard.js')).status, 200)
    assert.equal((await httpGet(a.adminAddress, '/vendor/uplot/uPlot.iife.min.js')).status, 200)
    const sipjs = await httpGet(a.adminAddress, '/vendor/sip.js/api/user-agent.js')
    assert.equal(sipjs.status, 200)
    assert.match(sipjs.body, /class UserAgent/)
    const phone = await httpGet(a.adminAddress, '/phone')
    assert.equal(phone.status, 200)
    assert.match(phone.body, /sipmesh phone/)
    const config = (await json(a.adminAddress, '/phone/config.json')).body
    assert.match(config.ws, /^ws:\/\/127\.0\.0\.1:\d+$/)
    assert.deepEqual(config.domains, ['example.com'])
    const none = await json(b.adminAddress, '/phone')
    assert.equal(none.status, 404)
    assert.equal(none.body.error.code, 'phone_unavailable')
    for (const path of ['/vendor/sip.js/../package.json', '/vendor/sip.js/..%2Fpackage.json', '/vendor/sip.js/api/../../package.json', '/vendor/sip.js/.x.js',
      '/dashboard/../server.ts', '/dashboard/%2e%2e%2fserver.ts', '/dashboard/nope.js', '/dashboard/x.ts', '/vendor/uplot/package.json', '/vendor/sip.js/api/none.js', '//etc/passwd']) {
      assert.equal((await httpGet(a.adminAddress, path)).status, 404, path)
    }
  })

  test('node-info protocol: garbage, an oversized request and an unknown question are refused; the node still answers', async () => {
    const ask = async (payload: Uint8Array): Promise<string> => {
      const stream = await b.mesh.libp2p.dialProtocol(a.mesh.peerId, NODE_INFO_PROTOCOL, { signal: AbortSignal.timeout(5000) })
      try {
        const lp = lpStream(stream, { maxDataLength: 512 * 1024 })
        await lp.write(payload, { signal: AbortSignal.timeout(5000) })
        return new TextDecoder().decode((await lp.read({ signal: AbortSignal.timeout(5000) })).subarray())
      } catch (err) {
        return `refused: ${(err as Error).name}`
      } finally {
        stream.abort(new Error('done'))
      }
    }
    const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
    for (const payload of [enc('not json'), enc('{"q":"everything"}'), enc('{"q":"bindings","aor":42}'), enc('null'), enc(JSON.stringify({ q: 'bindings', aor: 'x'.repeat(600) })), new Uint8Array(2048)]) {
      assert.match(await ask(payload), /^refused/)
    }
    const summary = parseSummary(JSON.parse(await ask(enc('{"q":"summary"}'))))
    assert.equal(summary.peerId, a.peerId)
    // a summary from a peer is checked field by field
    for (const bad of [null, 1, {}, { ...summary, peers: 'x' }, { ...summary, registrations: -1 }, { ...summary, peers: Array(65).fill('p') }, { ...summary, sip: 'x'.repeat(300) }]) {
      assert.throws(() => parseSummary(bad), { name: 'NodeInfoError' })
    }
  })

  test('sipmesh status, aor and registrations print tables, or JSON; errors exit 1, bad usage 2', async () => {
    const st = await cli(['status', '--admin', a.adminAddress])
    assert.equal(st.code, 0, st.stderr)
    assert.match(st.stdout, new RegExp(`^node\\s+${a.peerId}$`, 'm'))
    assert.match(st.stdout, /^registrations\s+5$/m)
    assert.match(st.stdout, /^peers: 1$/m)
    assert.match(st.stdout, new RegExp(`^${b.peerId}\\s+/ip4/127\\.0\\.0\\.1/tcp/\\d+`, 'm'))

    const reg = await cli(['registrations', '--admin', a.adminAddress, '--prefix', 'al', '--limit', '1'])
    assert.equal(reg.code, 0, reg.stderr)
    assert.match(reg.stdout, /^AoR\s+contact\s+expires in$/m)
    assert.match(reg.stdout, /^sip:alfred@example\.com\s+sip:alfred@127\.0\.0\.1:\d+\s+\d+ s$/m)
    assert.match(reg.stdout, /^1 of 2 AoRs; next page: --after sip:alfred@example\.com$/m)

    const aor = await cli(['aor', 'sip:carol@example.com', '--admin', b.adminAddress])
    assert.equal(aor.code, 0, aor.stderr)
    assert.match(aor.stdout, new RegExp(`^owner\\s+${a.peerId}$`, 'm'))
    assert.match(aor.stdout, /^sip:carol@127\.0\.0\.1:\d+\s+\d+ s/m)

    const js = await cli(['registrations', '--admin', a.adminAddress, '--json'])
    assert.equal(js.code, 0)
    assert.equal(JSON.parse(js.stdout).total, 5)

    const missing = await cli(['aor', 'sip:nobody@example.com', '--admin', a.adminAddress])
    assert.equal(missing.code, 1)
    assert.match(missing.stderr, /nobody holds a live claim of sip:nobody@example\.com \(aor_not_found\)/)
    const down = await cli(['status', '--admin', '127.0.0.1:9'])
    assert.equal(down.code, 1)
    assert.match(down.stderr, /cannot reach the admin API at 127\.0\.0\.1:9/)
    for (const args of [['aor'], ['registrations', '--limit', '0'], ['status', '--admin', 'no port']]) {
      const r = await cli(args)
      assert.equal(r.code, 2, args.join(' '))
    }
  })
})
