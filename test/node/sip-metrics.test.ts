// GET /metrics shows the SIP gateway's figures: two real nodes (libp2p over loopback TCP, the
// real gateway from node/gateway.ts with a credentials file) take SIP over UDP from test user
// agents, and every sipmesh_sip_* series then holds the value the traffic implies.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { request } from 'node:http'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig } from '../../node/config.ts'
import { SipmeshNode } from '../../node/sipmesh-node.ts'
import { defaultGateway } from '../../node/gateway.ts'
import { createPinoLogger } from '../../node/logger.ts'
import { TestUa } from '../sip-gateway/gateway/fixtures/ua.ts'
import { answer } from '../sip-gateway/auth/fixtures.ts'
import { floodWhileBlocked } from './fixtures/udp-flood.ts'
import { udpSocketStats } from '../../node/udp-socket-stats.ts'
import { existsSync } from 'node:fs'
import type { SipRequest } from '../../sip-gateway/codec/index.ts'

const silent = createPinoLogger({ level: 'silent' })

async function scrape (admin: string): Promise<string> {
  const i = admin.lastIndexOf(':')
  return await new Promise((resolve, reject) => {
    const req = request({ host: admin.slice(0, i), port: Number(admin.slice(i + 1)), path: '/metrics', timeout: 15_000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => { if (res.statusCode === 200) resolve(body); else reject(new Error(`/metrics: ${String(res.statusCode)}`)) })
    })
    req.on('error', reject)
    req.on('timeout', () => { req.destroy(new Error('timeout')) })
    req.end()
  })
}

/** the value of one series; fails when the metric has no HELP or the series is absent */
function value (body: string, name: string, labels: Record<string, string> = {}): number {
  assert.match(body, new RegExp(`^# HELP ${name} \\S`, 'm'), `${name} has HELP text`)
  const l = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(',')
  const series = l === '' ? name : `${name}{${l}}`
  const line = body.split('\n').find(x => x.startsWith(series + ' '))
  assert.ok(line !== undefined, `${series} is exported`)
  return Number(line.slice(series.length + 1))
}

async function until<T> (fn: () => T | undefined | Promise<T | undefined>, ms: number, what: string): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v !== undefined) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/** count the datagrams a user agent sends (its automatic answers included) */
function counted (ua: TestUa): { ua: TestUa, sent: () => number } {
  let n = 0
  const send = ua.sendRaw.bind(ua)
  ua.sendRaw = (data, to) => { n++; send(data, to) }
  return { ua, sent: () => n }
}

describe('GET /metrics: SIP gateway figures after real SIP traffic (two nodes)', () => {
  let dir: string
  let a: SipmeshNode
  let b: SipmeshNode
  const uas: TestUa[] = []

  const sipOf = (n: SipmeshNode): { host: string, port: number } => {
    const i = n.sip.lastIndexOf(':')
    return { host: n.sip.slice(0, i), port: Number(n.sip.slice(i + 1)) }
  }
  const open = async (user: string, n: SipmeshNode): Promise<TestUa> => {
    const ua = await TestUa.open(user, sipOf(n))
    uas.push(ua)
    return ua
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sipmesh-sip-metrics-'))
    const credentials = join(dir, 'users.txt')
    await writeFile(credentials, 'alice@example.com wonderland\ncarol@example.com\n')
    const config = async (name: string, extra: string[] = []): Promise<Awaited<ReturnType<typeof loadConfig>>['config']> => (await loadConfig([
      '--data-dir', join(dir, name), '--p2p', '/ip4/127.0.0.1/tcp/0', '--admin', '127.0.0.1:0', '--sip', '127.0.0.1:0',
      '--domain', 'example.com', '--credentials', credentials, ...extra
    ], {})).config
    a = new SipmeshNode({ config: await config('a'), logger: silent, libp2pMetrics: false, gateway: defaultGateway })
    await a.start()
    b = new SipmeshNode({ config: await config('b', ['--bootstrap', a.mesh.libp2p.getMultiaddrs()[0].toString(), '--max-connections-per-host', '2']), logger: silent, libp2pMetrics: false, gateway: defaultGateway })
    await b.start()
    const tableSize = (n: SipmeshNode): number => (n.mesh.libp2p.services.dht as unknown as { routingTable: { size: number } }).routingTable.size
    await until(() => tableSize(a) > 0 && tableSize(b) > 0 ? true : undefined, 10_000, 'the DHT routing tables')
  })

  after(async () => {
    for (const ua of uas) await ua.close()
    await b?.stop()
    await a?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  test('requests, responses, transactions, transport, mesh, registrar, offline IM, presence and auth counters match the traffic', async () => {
    const ext = counted(await open('ext', a)) // a user of another domain: never challenged
    const carol = counted(await open('carol', a))
    const alice = counted(await open('alice', a))
    const from = '<sip:ext@other.org>'

    // a datagram that is not SIP: dropped, counted as a UDP parse error
    ext.ua.sendRaw('this is not SIP\r\n\r\n')
    // OPTIONS to the node, then the same datagram again: answered locally, the retransmission absorbed
    const options = ext.ua.build({ method: 'OPTIONS', uri: `sip:${a.sip}`, from, to: `<sip:${a.sip}>` })
    ext.ua.sendRaw(options.text)
    assert.equal((await ext.ua.waitFinal(options.branch))?.status, 200)
    ext.ua.sendRaw(options.text)
    await until(() => ext.ua.responses(options.branch).length === 2 ? true : undefined, 3000, 'the retransmitted 200')
    // MESSAGE to a user nobody knows: 404; to alice (known from the credentials file, away): 202, stored
    assert.equal((await ext.ua.request({ uri: 'sip:nobody@example.com', from, body: 'hello?' }, 10_000))?.status, 404)
    assert.equal((await ext.ua.request({ uri: 'sip:alice@example.com', from, body: 'one' }, 10_000))?.status, 202)
    assert.equal((await ext.ua.request({ uri: 'sip:alice@example.com', from, body: 'two' }, 10_000))?.status, 202)
    // carol is known but has no secret: 403
    assert.equal((await carol.ua.register())?.status, 403)

    // alice: challenged, a wrong password (challenged again), then registered
    let release = false
    alice.ua.answer = (m: SipRequest) => {
      const body = new TextDecoder().decode(m.body)
      if (body === 'one') return release ? 200 : undefined // held: the delivery stays a live client transaction
      if (body === 'two') return 603 // refused for good
      return 200
    }
    const reg = { method: 'REGISTER', uri: 'sip:example.com', to: `<${alice.ua.aor}>`, headers: [['Contact', alice.ua.contact], ['Expires', '600']] as Array<[string, string]>, callId: 'reg-alice' }
    const first = await alice.ua.request(reg)
    assert.equal(first?.status, 401)
    const challenge = (r: typeof first): string => r?.headers.getLines('WWW-Authenticate')[0] ?? ''
    const wrong = await alice.ua.request({ ...reg, headers: [...reg.headers, ['Authorization', answer(challenge(first), { username: 'alice', password: 'looking-glass', method: 'REGISTER', uri: 'sip:example.com' })]] })
    assert.equal(wrong?.status, 401)
    const ok = await alice.ua.request({ ...reg, headers: [...reg.headers, ['Authorization', answer(challenge(wrong), { username: 'alice', password: 'wonderland', method: 'REGISTER', uri: 'sip:example.com' })]] }, 10_000)
    assert.equal(ok?.status, 200)

    // the backlog goes to alice; the first stored MESSAGE is held unanswered
    const held = await until(() => alice.ua.received.find(m => new TextDecoder().decode(m.body) === 'one'), 10_000, 'the first stored MESSAGE')
    let m = await scrape(a.adminAddress)
    assert.equal(value(m, 'sipmesh_sip_client_transactions'), 1, 'the held delivery')
    // OPTIONS, MESSAGE x3, REGISTER x4 over UDP: non-INVITE server transactions linger (timer J, 32 s)
    assert.equal(value(m, 'sipmesh_sip_server_transactions'), 8)
    assert.equal(value(m, 'sipmesh_sip_offline_stored_total'), 2)
    assert.equal(value(m, 'sipmesh_sip_offline_messages'), 2)
    assert.equal(value(m, 'sipmesh_sip_offline_users'), 1)
    assert.equal(value(m, 'sipmesh_sip_offline_delivered_total'), 0)
    release = true
    alice.ua.reply(held, 200)
    await until(async () => value(await scrape(a.adminAddress), 'sipmesh_sip_offline_messages') === 0 ? true : undefined, 10_000, 'the backlog to be gone')

    // over the mesh: a MESSAGE to alice sent to node B is forwarded to A and delivered there
    const viaB = counted(await open('ext', b))
    assert.equal((await viaB.ua.request({ uri: 'sip:alice@example.com', from, body: 'three' }, 10_000))?.status, 200)
    // presence: ext watches alice (a local presentity of A) and gets a NOTIFY
    const sub = await ext.ua.request({ method: 'SUBSCRIBE', uri: 'sip:alice@example.com', from, to: '<sip:alice@example.com>', headers: [['Event', 'presence'], ['Expires', '600'], ['Contact', ext.ua.contact]] }, 10_000)
    assert.ok(sub !== undefined && sub.status >= 200 && sub.status < 300, String(sub?.status))
    await until(() => ext.ua.received.some(r => r.method === 'NOTIFY') ? true : undefined, 5000, 'the NOTIFY')

    m = await scrape(a.adminAddress)
    const n = (name: string, labels?: Record<string, string>): number => value(m, name, labels)
    // OPTIONS, MESSAGE x3, REGISTER x4, the MESSAGE from the mesh, SUBSCRIBE (the retransmission is not counted)
    assert.equal(n('sipmesh_sip_requests_total'), 10)
    // 2xx: OPTIONS, 202 x2, REGISTER, the relayed 200 of alice, SUBSCRIBE; 4xx: 404, 403, 401 x2
    assert.deepEqual(['2xx', '3xx', '4xx', '5xx', '6xx'].map(c => n('sipmesh_sip_responses_total', { class: c })), [6, 0, 4, 0, 0])
    assert.equal(n('sipmesh_sip_requests_answered_local_total'), 1)
    assert.equal(n('sipmesh_sip_requests_delivered_local_total'), 1)
    assert.equal(n('sipmesh_sip_requests_forwarded_mesh_total'), 0)
    assert.equal(n('sipmesh_sip_loops_detected_total'), 0)
    assert.equal(n('sipmesh_sip_not_owner_retries_total'), 0)
    assert.deepEqual(['udp', 'tcp', 'ws', 'mesh'].map(t => n('sipmesh_sip_parse_errors_total', { transport: t })), [1, 0, 0, 0])
    assert.equal(n('sipmesh_sip_retransmissions_absorbed_total'), 1)
    assert.equal(n('sipmesh_sip_server_transactions_refused_total'), 0)
    assert.deepEqual(['pending', 'lag'].map(r => n('sipmesh_sip_overload_rejected_total', { reason: r })), [0, 0])
    assert.equal(n('sipmesh_sip_register_pending'), 0)
    assert.equal(n('sipmesh_sip_register_claim_failures_total'), 0)
    assert.equal(n('sipmesh_sip_reclaim_pending'), 0)
    assert.equal(n('sipmesh_sip_server_transactions'), 9, 'the UDP ones linger; the mesh one ended with its answer')
    // every datagram our user agents sent but the garbage; every one they got (responses: 2 + 3 + 1 + 1 + 3)
    const received = alice.ua.received.length + ext.ua.received.length + carol.ua.received.length
    assert.equal(n('sipmesh_sip_messages_received_total', { transport: 'udp' }), ext.sent() - 1 + carol.sent() + alice.sent())
    assert.equal(n('sipmesh_sip_messages_sent_total', { transport: 'udp' }), 10 + received)
    assert.equal(n('sipmesh_sip_messages_received_total', { transport: 'tcp' }), 0)
    assert.equal(n('sipmesh_sip_messages_sent_total', { transport: 'ws' }), 0)
    assert.equal(n('sipmesh_sip_rate_limited_total'), 0)
    assert.equal(n('sipmesh_sip_oversize_total'), 0)
    assert.equal(n('sipmesh_sip_slow_peers_total'), 0)
    assert.equal(n('sipmesh_sip_idle_closed_total'), 0)
    assert.equal(n('sipmesh_sip_connections'), 0)
    assert.deepEqual(['host', 'total'].map(c => n('sipmesh_sip_connections_refused_total', { cap: c })), [0, 0])
    assert.equal(n('sipmesh_sip_silent_connections_closed_total'), 0)
    assert.equal(n('sipmesh_sip_mesh_messages_received_total'), 1, 'the MESSAGE from B')
    assert.equal(n('sipmesh_sip_mesh_messages_sent_total'), 1, 'its 200')
    assert.equal(n('sipmesh_sip_bindings'), 1)
    assert.equal(n('sipmesh_registrations'), 1)
    assert.equal(n('sipmesh_sip_offline_stored_total'), 2)
    assert.equal(n('sipmesh_sip_offline_delivered_total'), 1)
    assert.equal(n('sipmesh_sip_offline_refused_total'), 1)
    assert.equal(n('sipmesh_sip_offline_messages'), 0)
    assert.equal(n('sipmesh_sip_offline_users'), 0)
    assert.equal(n('sipmesh_sip_presence_subscriptions'), 1)
    assert.equal(n('sipmesh_sip_presence_presentities'), 1)
    assert.equal(n('sipmesh_sip_presence_backend_subscriptions'), 0)
    assert.equal(n('sipmesh_sip_presence_publications'), 0)
    assert.ok(n('sipmesh_sip_presence_notifies_sent_total') >= 1)
    assert.equal(n('sipmesh_sip_presence_notifies_sent_total'), ext.ua.received.filter(r => r.method === 'NOTIFY').length)
    assert.equal(n('sipmesh_sip_presence_rate_limited_total'), 0)
    assert.equal(n('sipmesh_sip_auth_challenges_total'), 2)
    assert.equal(n('sipmesh_sip_auth_failures_total'), 1)
    assert.equal(n('sipmesh_sip_auth_successes_total'), 1)
    assert.equal(n('sipmesh_sip_auth_forbidden_total'), 1)
    assert.equal(n('sipmesh_sip_auth_malformed_total'), 0)
    assert.equal(n('sipmesh_sip_udp_receive_drops_total'), 0)
    assert.equal(n('sipmesh_sip_udp_receive_queue_bytes'), 0)

    // node B saw one request and forwarded it over the mesh
    m = await scrape(b.adminAddress)
    assert.equal(n('sipmesh_sip_requests_total'), 1)
    assert.equal(n('sipmesh_sip_requests_forwarded_mesh_total'), 1)
    assert.equal(n('sipmesh_sip_requests_delivered_local_total'), 0)
    assert.equal(n('sipmesh_sip_responses_total', { class: '2xx' }), 1)
    assert.equal(n('sipmesh_sip_mesh_messages_sent_total'), 1)
    assert.equal(n('sipmesh_sip_mesh_messages_received_total'), 1)
    assert.equal(n('sipmesh_sip_messages_received_total', { transport: 'udp' }), viaB.sent())
    assert.equal(n('sipmesh_sip_messages_sent_total', { transport: 'udp' }), 1 + viaB.ua.received.length)
    assert.equal(n('sipmesh_sip_bindings'), 0)
    assert.equal(n('sipmesh_sip_auth_challenges_total'), 0)
  })
  test('SIP datagrams the kernel dropped while the node could not read are counted on /metrics', { skip: existsSync('/proc/net/udp') ? false : 'no /proc/net/udp (not Linux)' }, async () => {
    const { host, port } = sipOf(b)
    const before = value(await scrape(b.adminAddress), 'sipmesh_sip_udp_receive_drops_total')
    // this process, node B in it, is blocked while another process floods B's SIP port
    floodWhileBlocked(host, port, 30_000)
    const full = udpSocketStats(host, port)
    assert.ok(full !== undefined && full.drops > before, `the kernel dropped datagrams (${String(full?.drops)})`)
    const m = await until(async () => {
      const body = await scrape(b.adminAddress)
      return value(body, 'sipmesh_sip_udp_receive_queue_bytes') === 0 ? body : undefined
    }, 10_000, 'B to read what was queued')
    assert.equal(value(m, 'sipmesh_sip_udp_receive_drops_total'), full.drops, 'every drop on /metrics, and none since')
    // B still answers SIP
    const ua = await open('afterflood', b)
    const options = ua.build({ method: 'OPTIONS', uri: `sip:${b.sip}`, from: '<sip:afterflood@other.org>', to: `<sip:${b.sip}>` })
    ua.sendRaw(options.text)
    assert.equal((await ua.waitFinal(options.branch))?.status, 200)
  })

  test('connections over the per-address cap are counted on /metrics', async () => {
    const sockets: Socket[] = []
    try {
      for (let i = 0; i < 3; i++) {
        const s = connect({ host: sipOf(b).host, port: sipOf(b).port })
        s.on('error', () => {})
        await new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('error', reject) })
        sockets.push(s)
      }
      const m = await until(async () => {
        const body = await scrape(b.adminAddress)
        return value(body, 'sipmesh_sip_connections_refused_total', { cap: 'host' }) === 1 ? body : undefined
      }, 5000, 'the refusal on /metrics')
      assert.equal(value(m, 'sipmesh_sip_connections'), 2, 'two idle connections admitted (--max-connections-per-host 2)')
      assert.equal(value(m, 'sipmesh_sip_connections_refused_total', { cap: 'total' }), 0)
    } finally {
      for (const s of sockets) s.destroy()
    }
  })
})
