// The registrar, rate-limit and connection-cap settings of `sipmesh start` reach the gateway the node builds:
// flags parsed by loadConfig, then the node's gateway factory, then SIP over real UDP sockets.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { loadConfig } from '../../node/config.ts'
import { defaultGateway } from '../../node/gateway.ts'
import { MemoryStore, MemoryChannelHub } from '../../sip-gateway/index.ts'
import type { Gateway } from '../../sip-gateway/gateway.ts'
import { MemoryMesh, MemoryRegistry } from '../../dht/memory-registry.ts'
import { testLogger } from '../sip-gateway/gateway/fixtures/log.ts'
import { TestUa } from '../sip-gateway/gateway/fixtures/ua.ts'

async function withGateway (args: string[], fn: (gw: Gateway) => Promise<void>): Promise<void> {
  const { config } = await loadConfig([...args, '--domain', 'example.com', '--sip', '127.0.0.1:0'], {})
  const registry = new MemoryRegistry(new MemoryMesh(), { nodeId: 'node-a', sip: 'unset:0' })
  const g = await defaultGateway!({
    registry,
    peerChannel: new MemoryChannelHub().channel('node-a'),
    store: new MemoryStore(),
    logger: testLogger(),
    config: config.gateway,
    announceSip: (hp) => { registry.sip = hp }
  })
  await g.start()
  try {
    await fn((g as unknown as { gateway: Gateway }).gateway)
  } finally {
    await g.stop()
    await registry.stop()
  }
}

test('--min-expires and --max-expires bound registrations: 423 with Min-Expires below, shortened above', async () => {
  await withGateway(['--min-expires', '120', '--max-expires', '900'], async (gw) => {
    const ua = await TestUa.open('alice', gw.addresses.udp)
    try {
      const brief = await ua.register(60)
      assert.equal(brief?.status, 423)
      assert.equal(brief?.headers.get('Min-Expires'), '120')
      const long = await ua.register(86_400)
      assert.equal(long?.status, 200)
      assert.match(long?.headers.get('Contact') ?? '', /expires=900\b/)
    } finally { await ua.close() }
  })
})

test('--rate-limit: a source over its rate is dropped (no answer), and served again once under it', async () => {
  await withGateway(['--rate-limit', '5'], async (gw) => {
    const ua = await TestUa.open('bob', gw.addresses.udp)
    try {
      const n = gw.addresses.udp
      const answers = await Promise.all(Array.from({ length: 30 }, async () => await ua.request({ method: 'OPTIONS', uri: `sip:${n.host}:${n.port}` }, 1_000)))
      const answered = answers.filter(r => r?.status === 200).length
      // a burst of twice the rate passes, then about 5 a second
      assert.ok(answered >= 10 && answered <= 16, `answered ${answered} of 30`)
      assert.ok((gw.stats.transport?.rateLimited ?? 0) >= 14)
      await new Promise(resolve => setTimeout(resolve, 1_000))
      assert.equal((await ua.request({ method: 'OPTIONS', uri: `sip:${n.host}:${n.port}` }))?.status, 200)
    } finally { await ua.close() }
  })
  // without the flag nothing is limited
  await withGateway([], async (gw) => {
    const ua = await TestUa.open('carol', gw.addresses.udp)
    try {
      const n = gw.addresses.udp
      const answers = await Promise.all(Array.from({ length: 30 }, async () => await ua.request({ method: 'OPTIONS', uri: `sip:${n.host}:${n.port}` }, 2_000)))
      assert.equal(answers.filter(r => r?.status === 200).length, 30)
    } finally { await ua.close() }
  })
})

test('--max-connections-per-host: idle TCP connections from one address beyond it are refused and counted', async () => {
  await withGateway(['--max-connections-per-host', '3'], async (gw) => {
    const port = gw.addresses.tcp.port
    const sockets: Socket[] = []
    try {
      for (let i = 0; i < 6; i++) {
        const s = connect({ host: '127.0.0.1', port })
        s.on('error', () => {})
        await new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('error', reject) })
        sockets.push(s)
      }
      const deadline = Date.now() + 3000
      while (sockets.filter(s => s.readableEnded || s.destroyed).length < 3 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
      assert.equal(sockets.filter(s => s.readableEnded || s.destroyed).length, 3, 'three refused')
      assert.equal(gw.stats.transport?.connections, 3)
      assert.deepEqual(gw.stats.transport?.connectionsRefused, { host: 3, total: 0 })
    } finally {
      for (const s of sockets) s.destroy()
    }
  })
})

test('--presence-rate-limit: SUBSCRIBEs from one source over the rate get 503 with Retry-After; off by default (an edge proxy carries many users)', async () => {
  const subscribe = async (ua: TestUa, i: number): Promise<number | undefined> =>
    (await ua.request({ method: 'SUBSCRIBE', uri: `sip:user${i}@example.com`, to: `<sip:user${i}@example.com>`, headers: [['Event', 'presence'], ['Expires', '0'], ['Contact', ua.contact]] }, 2_000))?.status
  await withGateway(['--presence-rate-limit', '5'], async (gw) => {
    const ua = await TestUa.open('dave', gw.addresses.udp)
    try {
      const statuses = await Promise.all(Array.from({ length: 30 }, async (_, i) => await subscribe(ua, i)))
      const refused = statuses.filter(s => s === 503).length
      // a burst of twice the rate passes
      assert.ok(refused >= 14 && refused <= 20, `${refused} of 30 refused: ${statuses.join(',')}`)
      assert.ok(statuses.filter(s => s !== 503).every(s => s !== undefined && s < 300), statuses.join(','))
    } finally { await ua.close() }
  })
  await withGateway([], async (gw) => {
    const ua = await TestUa.open('erin', gw.addresses.udp)
    try {
      const statuses = await Promise.all(Array.from({ length: 300 }, async (_, i) => await subscribe(ua, i)))
      assert.equal(statuses.filter(s => s === 503).length, 0, 'no limit unless asked')
    } finally { await ua.close() }
  })
})

test('--max-list-members, --max-lists, --max-list-subscriptions: 413, 413 and 403 beyond them', async () => {
  await withGateway(['--max-list-members', '2', '--max-lists', '1', '--max-list-subscriptions', '1'], async (gw) => {
    const lists = gw.presence
    const tooBig = await lists.putList('sip:big@example.com', { members: ['sip:a@example.com', 'sip:b@example.com', 'sip:c@example.com'] }).then(() => undefined, (err: Error & { status?: number, code?: string }) => err)
    assert.equal(tooBig?.status, 413)
    assert.equal(tooBig?.code, 'too_large')
    assert.match(tooBig?.message ?? '', /at most 2 members/)
    await lists.putList('sip:friends@example.com', { members: ['sip:a@example.com', 'sip:b@example.com'] })
    const second = await lists.putList('sip:others@example.com', { members: ['sip:a@example.com'] }).then(() => undefined, (err: Error & { status?: number, code?: string }) => err)
    assert.equal(second?.status, 413)
    assert.equal(second?.code, 'too_many_lists')
    // replacing the one list is no new list
    await lists.putList('sip:friends@example.com', { members: ['sip:b@example.com'] })
    const ua = await TestUa.open('carol', gw.addresses.udp)
    try {
      const subscribe = async (): Promise<number | undefined> => (await ua.request({
        method: 'SUBSCRIBE',
        uri: 'sip:friends@example.com',
        headers: [['Contact', ua.contact], ['Event', 'presence'], ['Expires', '60'], ['Supported', 'eventlist'], ['Accept', 'multipart/related, application/rlmi+xml, application/pidf+xml']]
      }))?.status
      assert.equal(await subscribe(), 200)
      assert.equal(await subscribe(), 403, 'a second list subscription of the same subscriber')
      // an ad hoc list (RFC 5367) is bounded by the same member limit
      const body = '<?xml version="1.0"?><resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list>' +
        ['a', 'b', 'c'].map(u => `<entry uri="sip:${u}@example.com"/>`).join('') + '</list></resource-lists>'
      const { text, branch } = ua.build({
        method: 'SUBSCRIBE',
        uri: 'sip:rls@example.com',
        headers: [['Contact', ua.contact], ['Event', 'presence'], ['Expires', '60'], ['Supported', 'eventlist'], ['Require', 'recipient-list-subscribe'], ['Content-Disposition', 'recipient-list']],
        body
      })
      ua.sendRaw(text.replace('Content-Type: text/plain', 'Content-Type: application/resource-lists+xml'))
      assert.equal((await ua.waitFinal(branch))?.status, 413)
    } finally { await ua.close() }
  })
})
