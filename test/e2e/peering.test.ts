// Peering end to end: two meshes of two `sipmesh start` processes each (example.com, example.net),
// peered over mutually authenticated TLS with a CA and certificates made by openssl at test time.
// MESSAGE both ways (raw UDP user agents), SUBSCRIBE/NOTIFY both ways with the presentity moving
// between the nodes of its mesh (SIP.js over WebSocket), and the refusals: a peer whose From is
// not its own domain (403), untrusted and expired certificates (refused, warn), plain SIP to the
// TLS port (dropped); the nodes stay up throughout. Issue 13 item 4: many watchers of one node
// cost one back-end subscription between the networks (the metrics of both sides), the
// presentity's rules applied by its network per watcher, the presentity moving; and the back-end
// SUBSCRIBE's refusals (a watcher of a foreign domain, hostile watcher lists, internal headers).
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { once } from 'node:events'
import { connect as tlsConnect } from 'node:tls'
import { connect as netConnect } from 'node:net'
import { UserAgent, Registerer, RegistererState, Subscriber, SubscriptionState, Publisher, PublisherState } from 'sip.js'
import { run, stop, freePorts, register, message, waitFor, httpGet, httpRequest, adminToken, UdpUa, type Proc } from './fixtures/processes.ts'
import { makeTestPki, type TestPki, type Pem } from '../fixtures/pki.ts'

interface Node { name: string, domain: string, dataDir: string, proc?: Proc, sip: number, ws: number, tls: number, peerId: string, multiaddr: string, admin: string }

const PIDF = (aor: string, note: string): string =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="${aor.replace('sip:', 'pres:')}"><tuple id="sipjs"><status><basic>open</basic></status></tuple><note>${note}</note></presence>`

const within = async <T>(ms: number, p: Promise<T>, what: string): Promise<T> => await Promise.race([
  p, new Promise<never>((_resolve, reject) => setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms).unref())
])

const statusOf = (answer: string): number => Number(answer.slice(8, 11))

describe('peering between two meshes over TLS (separate processes)', () => {
  const nodes: Node[] = []
  const agents: UserAgent[] = []
  const subscribers: Subscriber[] = []
  const udpAgents: UdpUa[] = []
  let pki: TestPki
  let dir = ''
  let deadPort = 0

  async function startNode (n: Node, peer: { domain: string, ports: number[] }, bootstrap?: string): Promise<void> {
    const pem = n.domain === 'example.com' ? pki.com : pki.net
    const args = ['start', '--domain', n.domain, '--sip', '127.0.0.1:0', '--ws', '127.0.0.1:0', '--tls', `127.0.0.1:${n.tls}`, '--p2p', '/ip4/127.0.0.1/tcp/0',
      '--admin', '127.0.0.1:0', '--data-dir', n.dataDir, '--log-level', process.env.SIPMESH_TEST_LOG !== undefined ? 'debug' : 'info',
      '--tls-cert', pem.certFile, '--tls-key', pem.keyFile, '--tls-ca', pki.caFile,
      '--peer', `${peer.domain}=${peer.ports.map(p => `127.0.0.1:${p}`).join(',')}`, '--peer-trust', peer.domain]
    if (bootstrap !== undefined) args.push('--bootstrap', bootstrap)
    n.proc = run(args)
    const gw = JSON.parse(await n.proc.waitForLine(l => l.includes('"sip gateway started"'), 30_000)) as { ws?: { port: number }, udp: { port: number }, tls?: { port: number } }
    const started = JSON.parse(await n.proc.waitForLine(l => l.includes('"sipmesh node started"'), 30_000)) as { peerId: string, multiaddrs: string[], admin: string }
    n.admin = started.admin
    n.ws = gw.ws?.port ?? 0
    n.sip = gw.udp.port
    assert.equal(gw.tls?.port, n.tls)
    n.peerId = started.peerId
    n.multiaddr = started.multiaddrs[0]
  }

  const bootOf = (n: Node): string => `${n.multiaddr.replace(/\/p2p\/.*$/, '')}/p2p/${n.peerId}`

  async function agent (aor: string, node: Node): Promise<UserAgent> {
    const ua = new UserAgent({ uri: UserAgent.makeURI(aor)!, transportOptions: { server: `ws://127.0.0.1:${node.ws}` }, logLevel: 'error', logBuiltinEnabled: false })
    agents.push(ua)
    await within(5000, ua.start(), `${aor} connects`)
    const r = new Registerer(ua, { expires: 300 })
    const ok = new Promise<void>(resolve => { r.stateChange.addListener(s => { if (s === RegistererState.Registered) resolve() }) })
    await r.register()
    await within(10_000, ok, `${aor} registers`)
    return ua
  }

  async function publish (ua: UserAgent, aor: string, note: string): Promise<void> {
    const p = new Publisher(ua, UserAgent.makeURI(aor)!, 'presence', { expires: 120, contentType: 'application/pidf+xml', unpublishOnClose: false })
    const ok = new Promise<void>((resolve, reject) => {
      p.stateChange.addListener(s => {
        if (s === PublisherState.Published) resolve()
        if (s === PublisherState.Terminated) reject(new Error('publication refused'))
      })
    })
    await p.publish(PIDF(aor, note))
    await within(5000, ok, `publish ${note}`)
  }

  async function watch (ua: UserAgent, target: string): Promise<{ sub: Subscriber, bodies: string[], states: SubscriptionState[], wait: (note: string, ms: number) => Promise<void> }> {
    const bodies: string[] = []
    const states: SubscriptionState[] = []
    const waiters = new Set<() => void>()
    const sub = new Subscriber(ua, UserAgent.makeURI(target)!, 'presence', { expires: 300 })
    subscribers.push(sub)
    sub.stateChange.addListener(s => { states.push(s) })
    sub.delegate = {
      onNotify: (n) => {
        void n.accept()
        bodies.push(n.request.body)
        for (const w of [...waiters]) w()
      }
    }
    await sub.subscribe()
    const wait = async (note: string, ms: number): Promise<void> => {
      await within(ms, new Promise<void>(resolve => {
        const check = (): void => { if (bodies.some(b => b.includes(note))) { waiters.delete(check); resolve() } }
        waiters.add(check)
        check()
      }), `NOTIFY with "${note}" on ${target} (notes so far: ${bodies.map(b => /<note>([^<]*)</.exec(b)?.[1] ?? /<basic>(\w+)/.exec(b)?.[1] ?? '-').join(', ')})`)
    }
    return { sub, bodies, states, wait }
  }

  async function udpUser (aor: string, node: Node): Promise<UdpUa> {
    const ua = new UdpUa()
    await ua.open()
    udpAgents.push(ua)
    const answer = await ua.request({ host: '127.0.0.1', port: node.sip }, register(aor, ua.port))
    assert.equal(statusOf(answer), 200, answer)
    return ua
  }

  before(async () => {
    pki = await makeTestPki()
    dir = mkdtempSync(join(tmpdir(), 'sipmesh-peering-e2e-'))
    const ports = await freePorts(5)
    deadPort = ports[4]
    for (const [i, name] of ['com1', 'com2', 'net1', 'net2'].entries()) {
      nodes.push({ name, domain: i < 2 ? 'example.com' : 'example.net', dataDir: join(dir, name), sip: 0, ws: 0, tls: ports[i], peerId: '', multiaddr: '', admin: '' })
    }
    const [com1, com2, net1, net2] = nodes
    // example.com lists a dead address first: every new connection to example.net fails over
    const toNet = { domain: 'example.net', ports: [deadPort, net1.tls, net2.tls] }
    const toCom = { domain: 'example.com', ports: [com1.tls, com2.tls] }
    await Promise.all([startNode(com1, toNet), startNode(net1, toCom)])
    await Promise.all([startNode(com2, toNet, bootOf(com1)), startNode(net2, toCom, bootOf(net1))])
  })

  after(async () => {
    for (const sub of subscribers) await within(3000, sub.unsubscribe(), 'unsubscribe').catch(() => {})
    for (const ua of agents) await within(5000, ua.stop(), 'stop').catch(() => {})
    for (const ua of udpAgents) ua.close()
    if (process.env.SIPMESH_TEST_LOG !== undefined) for (const n of nodes) for (const l of n.proc?.lines ?? []) console.error(n.name, l)
    const ends = await Promise.all(nodes.map(async n => await stop(n.proc)))
    rmSync(dir, { recursive: true, force: true })
    pki?.remove()
    for (const e of ends) assert.equal(e?.signal ?? null, null, 'a node crashed')
  })

  test('MESSAGE both ways, each from one node to the user on the other mesh\'s second node', async () => {
    const [, com2, , net2] = nodes
    const alice = await udpUser('sip:alice@example.com', com2)
    const bob = await udpUser('sip:bob@example.net', net2)
    // alice on com2 → bob on net2 (com2 dials example.net; the node that answers routes by its DHT)
    const out = await alice.request({ host: '127.0.0.1', port: com2.sip }, message('sip:alice@example.com', 'sip:bob@example.net', alice.port, 'hello net'))
    assert.equal(statusOf(out), 200, out)
    const got = bob.received.find(m => m.endsWith('hello net'))
    assert.ok(got !== undefined, 'bob got the message')
    assert.match(got, /^P-Asserted-Identity: <sip:alice@example\.com>/im, 'identity crosses within the trust domain')
    assert.match(got, /^Via: SIP\/2\.0\/TLS /im, 'it crossed over TLS')
    // and back
    const back = await bob.request({ host: '127.0.0.1', port: net2.sip }, message('sip:bob@example.net', 'sip:alice@example.com', bob.port, 'hello com'))
    assert.equal(statusOf(back), 200, back)
    assert.ok(alice.received.some(m => m.endsWith('hello com')), 'alice got the answer')
    assert.ok(com2.proc?.lines.some(l => l.includes('"peer address unreachable"') && l.includes(`:${deadPort}`)), 'com2 failed over past the dead address')
    // a user nobody knows on the other side: the peer's 404 comes back
    const unknown = await alice.request({ host: '127.0.0.1', port: com2.sip }, message('sip:alice@example.com', 'sip:nobody@example.net', alice.port, 'x'))
    assert.equal(statusOf(unknown), 404, unknown)
    // a domain neither served nor peered is still refused
    const foreign = await alice.request({ host: '127.0.0.1', port: com2.sip }, message('sip:alice@example.com', 'sip:x@example.org', alice.port, 'x'))
    assert.equal(statusOf(foreign), 403, foreign)
    // a user agent cannot send for someone of another domain through its node
    const spoof = await alice.request({ host: '127.0.0.1', port: com2.sip }, message('sip:mallory@example.org', 'sip:bob@example.net', alice.port, 'x'))
    assert.equal(statusOf(spoof), 403, spoof)
  })

  test('SUBSCRIBE/NOTIFY both ways; the subscription survives the presentity moving between nodes of its mesh', async () => {
    const [com1, com2, net1, net2] = nodes
    // example.com watches example.net: carol on com1 watches dave, who is on net1, then moves to net2
    const dave1 = await agent('sip:dave@example.net', net1)
    await publish(dave1, 'sip:dave@example.net', 'dave on net1')
    const carol = await agent('sip:carol@example.com', com1)
    const onDave = await watch(carol, 'sip:dave@example.net')
    await onDave.wait('dave on net1', 10_000)
    const dave2 = await agent('sip:dave@example.net', net2)
    await publish(dave2, 'sip:dave@example.net', 'dave moved to net2')
    await onDave.wait('dave moved to net2', 10_000)
    assert.equal(onDave.sub.state, SubscriptionState.Subscribed)
    assert.ok(!onDave.states.includes(SubscriptionState.Terminated))

    // example.net watches example.com: erin on net2 watches frank, on com2 then com1
    const frank2 = await agent('sip:frank@example.com', com2)
    await publish(frank2, 'sip:frank@example.com', 'frank on com2')
    const erin = await agent('sip:erin@example.net', net2)
    const onFrank = await watch(erin, 'sip:frank@example.com')
    await onFrank.wait('frank on com2', 10_000)
    const frank1 = await agent('sip:frank@example.com', com1)
    await publish(frank1, 'sip:frank@example.com', 'frank moved to com1')
    await onFrank.wait('frank moved to com1', 10_000)
    assert.equal(onFrank.sub.state, SubscriptionState.Subscribed)
    assert.ok(!onFrank.states.includes(SubscriptionState.Terminated))
  })

  async function tlsExchange (port: number, client: Pem | undefined, text: string): Promise<{ answer: string, closed: boolean }> {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca: pki.ca, cert: client?.cert, key: client?.key })
    socket.on('error', () => {})
    let answer = ''
    socket.on('data', (d: Buffer) => { answer += d.toString() })
    const closed = once(socket, 'close').then(() => true)
    try {
      const connected = await Promise.race([once(socket, 'secureConnect').then(() => true), closed.then(() => false)])
      if (!connected) return { answer, closed: true }
      socket.write(text)
      const done = await Promise.race([
        new Promise<boolean>(resolve => {
          const t = setInterval(() => { if (/^SIP\/2\.0 [2-6]/m.test(answer)) { clearInterval(t); resolve(false) } }, 20)
          setTimeout(() => { clearInterval(t); resolve(false) }, 5000)
        }),
        closed
      ])
      return { answer, closed: done }
    } finally {
      socket.destroy()
    }
  }

  const tlsMessage = (from: string, to: string, body: string): string => [
    `MESSAGE ${to} SIP/2.0`,
    `Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK${Math.random().toString(36).slice(2)}`,
    'Max-Forwards: 70',
    `From: <${from}>;tag=${Math.random().toString(36).slice(2)}`,
    `To: <${to}>`,
    `Call-ID: ${Math.random().toString(36).slice(2)}@peer`,
    'CSeq: 1 MESSAGE',
    'Content-Type: text/plain',
    `Content-Length: ${Buffer.byteLength(body)}`,
    '',
    body
  ].join('\r\n')

  test('refusals: a peer speaking for another domain, bad certificates, plain SIP to the TLS port, a stalled handshake', async () => {
    const [com1, com2] = nodes
    await udpUser('sip:gina@example.com', com2)
    // the trusted example.net peer sends for a user of example.org: 403
    const wrongFrom = await tlsExchange(com1.tls, pki.net, tlsMessage('sip:eve@example.org', 'sip:gina@example.com', 'spoof'))
    assert.match(wrongFrom.answer, /^SIP\/2\.0 403/, wrongFrom.answer)
    // the same peer for its own user: accepted and routed to com2
    const right = await tlsExchange(com1.tls, pki.net, tlsMessage('sip:eve@example.net', 'sip:gina@example.com', 'fine'))
    assert.match(right.answer, /^SIP\/2\.0 200/, right.answer)
    // a peer may not use us as a relay to a third domain
    const relay = await tlsExchange(com1.tls, pki.net, tlsMessage('sip:eve@example.net', 'sip:x@example.org', 'relay'))
    assert.match(relay.answer, /^SIP\/2\.0 403/, relay.answer)
    // untrusted, expired and wrong-domain certificates: refused at the handshake, logged at warn
    for (const bad of [pki.rogueNet, pki.expiredNet, pki.org]) {
      const r = await tlsExchange(com1.tls, bad, tlsMessage('sip:eve@example.net', 'sip:gina@example.com', 'bad cert'))
      assert.equal(r.closed, true)
      assert.doesNotMatch(r.answer, /SIP\/2\.0/)
    }
    await waitFor(() => (com1.proc?.lines ?? []).filter(l => l.includes('"tls connection refused"')).length >= 3, 5000, 'the refusals logged')
    const refusals = (com1.proc?.lines ?? []).filter(l => l.includes('"tls connection refused"')).map(l => JSON.parse(l) as { level: string, reason: string })
    assert.equal(refusals.length, 3, 'each bad certificate logged')
    assert.ok(refusals.every(r => r.level === 'warn'))
    assert.match(refusals.map(r => r.reason).join(' | '), /untrusted.*\| untrusted.*CERT_HAS_EXPIRED.*\| certificate names no configured peer \(example\.org\)/)
    // plain SIP to the TLS port: no answer, the connection dropped
    const plain = netConnect({ host: '127.0.0.1', port: com1.tls })
    plain.on('error', () => {})
    let heard = ''
    plain.on('data', (d: Buffer) => { heard += d.toString() })
    await once(plain, 'connect')
    plain.write(tlsMessage('sip:eve@example.net', 'sip:gina@example.com', 'plain'))
    await within(8000, once(plain, 'close'), 'the plain connection is dropped')
    assert.doesNotMatch(heard, /SIP\/2\.0/)
    // a client that never finishes its handshake is dropped after the handshake timeout (5 s)
    const stalled = netConnect({ host: '127.0.0.1', port: com1.tls })
    stalled.on('error', () => {})
    await once(stalled, 'connect')
    const t0 = Date.now()
    stalled.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff])) // a ClientHello record header, then nothing
    await within(10_000, once(stalled, 'close'), 'the stalled handshake is dropped')
    const held = Date.now() - t0
    assert.ok(held >= 4000 && held < 10_000, `dropped after ${held} ms`)
    // everyone is still up
    for (const n of nodes) assert.equal(n.proc?.child.exitCode, null, `${n.name} still runs`)
  })

  // ---- issue 13 item 4: one back-end subscription per presentity between the networks ----------

  /** a gauge of a node's /metrics */
  async function gauge (n: Node, name: string): Promise<number> {
    const r = await httpGet(n.admin, '/metrics')
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, 'm').exec(r.body)
    return m === null ? 0 : Number(m[1])
  }
  const held = async (ns: Node[]): Promise<number> => (await Promise.all(ns.map(async n => await gauge(n, 'sipmesh_sip_presence_peer_backend_subscriptions')))).reduce((a, b) => a + b, 0)
  const served = async (ns: Node[]): Promise<number> => (await Promise.all(ns.map(async n => await gauge(n, 'sipmesh_sip_presence_peer_backends_served')))).reduce((a, b) => a + b, 0)

  const rawSubscribe = (from: string, to: string, port: number, callId = `${Math.random().toString(36).slice(2)}@w`): string => [
    `SUBSCRIBE ${to} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bK${Math.random().toString(36).slice(2)};rport`,
    'Max-Forwards: 70',
    `From: <${from}>;tag=${Math.random().toString(36).slice(2)}`,
    `To: <${to}>`,
    `Call-ID: ${callId}`,
    'CSeq: 1 SUBSCRIBE',
    `Contact: <sip:${from.slice(4).split('@')[0]}@127.0.0.1:${port}>`,
    'Event: presence',
    'Accept: application/pidf+xml',
    'Expires: 300',
    'Content-Length: 0',
    '',
    ''
  ].join('\r\n')

  interface Watcher { aor: string, ua: UdpUa, answer: string }
  const notifies = (w: Watcher): string[] => w.ua.received.filter(m => m.startsWith('NOTIFY '))
  const saw = (w: Watcher, note: string): boolean => notifies(w).some(m => m.includes(note))

  async function watchers (names: string[], domain: string, at: Node, target: string): Promise<Watcher[]> {
    return await Promise.all(names.map(async (name) => {
      const ua = new UdpUa()
      await ua.open()
      udpAgents.push(ua)
      const aor = `sip:${name}@${domain}`
      const answer = await ua.request({ host: '127.0.0.1', port: at.sip }, rawSubscribe(aor, target, ua.port), 10_000)
      return { aor, ua, answer }
    }))
  }

  async function putRules (n: Node, aor: string, rules: unknown): Promise<void> {
    const r = await httpRequest(n.admin, 'PUT', `/presence/${encodeURIComponent(aor)}/rules`, { body: JSON.stringify(rules), token: adminToken(n.dataDir) })
    assert.equal(r.status, 200, r.body)
  }

  test('24 watchers of example.com on one node cost ONE subscription to example.net; Bob\'s rules applied by example.net per watcher; Bob moves, watchers follow', async () => {
    const [com1, com2, net1, net2] = nodes
    const bob1 = await agent('sip:bob@example.net', net1)
    await publish(bob1, 'sip:bob@example.net', 'bob on net1')
    // Bob's rules live in example.net (on the node that owns him); example.com learns decisions only
    await putRules(net1, 'sip:bob@example.net', { watchers: { 'sip:mallory@example.com': 'block', 'sip:pat@example.com': 'polite-block' } })
    // what the earlier tests left (carol's subscription to dave): the counts below are on top of it
    const base = { com1: await held([com1]), others: await held([com2, net1, net2]), served: await served([net1, net2]) }
    const names = [...Array.from({ length: 22 }, (_, i) => `w${i}`), 'mallory', 'pat']
    const all = await watchers(names, 'example.com', com1, 'sip:bob@example.net')
    const allowed = all.filter(w => /sip:w\d+@/.test(w.aor))
    const mallory = all.find(w => w.aor.includes('mallory')) as Watcher
    const pat = all.find(w => w.aor.includes('pat')) as Watcher
    for (const w of allowed) assert.equal(statusOf(w.answer), 200, w.answer)
    await waitFor(() => allowed.every(w => saw(w, 'bob on net1')), 15_000, 'every allowed watcher told Bob\'s state')
    // blocked: refused (403) or its subscription ended as rejected; never Bob's state
    assert.ok(statusOf(mallory.answer) === 403 || notifies(mallory).some(m => /Subscription-State: terminated;reason=rejected/i.test(m)), mallory.answer)
    assert.equal(statusOf(pat.answer), 200, pat.answer)
    await waitFor(() => notifies(pat).length > 0, 10_000, 'pat told something')
    // exactly one subscription between the networks, held by com1, served by one node of example.net
    assert.equal(await held([com1]) - base.com1, 1, 'com1 holds one back-end subscription to example.net for Bob')
    assert.equal(await held([com2, net1, net2]), base.others)
    assert.equal(await served([net1, net2]) - base.served, 1, 'example.net serves one back-end subscription of example.com for Bob')
    assert.ok(await gauge(com1, 'sipmesh_sip_presence_subscriptions') >= 23, 'com1 holds the watchers\' dialogs')

    // Bob moves to net2 and publishes there: every allowed watcher follows, without re-subscribing
    const bob2 = await agent('sip:bob@example.net', net2)
    await publish(bob2, 'sip:bob@example.net', 'bob moved to net2')
    await waitFor(() => allowed.every(w => saw(w, 'bob moved to net2')), 20_000, 'every allowed watcher told Bob\'s new state')
    await waitFor(async () => await held([com1]) - base.com1 === 1 && await served([net1, net2]) - base.served === 1, 10_000, 'still one subscription between the networks')
    assert.equal(await held([com2, net1, net2]), base.others)
    for (const w of [mallory, pat]) assert.ok(!notifies(w).some(m => m.includes('bob on net1') || m.includes('bob moved')), `${w.aor} never sees Bob's state`)
    // no watcher left pending: each one's latest NOTIFY is active with Bob's new state; pat's is active and neutral
    const last = (w: Watcher): string => notifies(w).at(-1) ?? ''
    for (const w of allowed) {
      assert.match(last(w), /^Subscription-State: active/im, w.aor)
      assert.ok(last(w).includes('bob moved to net2'), w.aor)
    }
    assert.match(last(pat), /^Subscription-State: active/im, 'pat: polite-block is an active subscription')
    assert.doesNotMatch(last(pat), /<note>/, 'with the neutral document')
  })

  test('the other way: watchers of example.net on one node cost one subscription to example.com', async () => {
    const [com1, com2, net1, net2] = nodes
    const base = { net2: await held([net2]), net1: await held([net1]), served: await served([com1, com2]) }
    const hank = await agent('sip:hank@example.com', com2)
    await publish(hank, 'sip:hank@example.com', 'hank on com2')
    const all = await watchers(Array.from({ length: 6 }, (_, i) => `v${i}`), 'example.net', net2, 'sip:hank@example.com')
    for (const w of all) assert.equal(statusOf(w.answer), 200, w.answer)
    await waitFor(() => all.every(w => saw(w, 'hank on com2')), 15_000, 'every watcher told Hank\'s state')
    assert.equal(await held([net2]) - base.net2, 1)
    assert.equal(await held([net1]), base.net1)
    assert.equal(await served([com1, com2]) - base.served, 1)
  })

  const tlsRequest = (method: string, to: string, from: string, extra: string[], body = '', callId = `${Math.random().toString(36).slice(2)}@peer`): string => [
    `${method} ${to} SIP/2.0`,
    `Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK${Math.random().toString(36).slice(2)}`,
    'Max-Forwards: 70',
    `From: <${from}>;tag=${Math.random().toString(36).slice(2)}`,
    `To: <${to}>`,
    `Call-ID: ${callId}`,
    `CSeq: 1 ${method}`,
    'Contact: <sip:127.0.0.1:5999;transport=tls>',
    ...extra,
    `Content-Length: ${Buffer.byteLength(body)}`,
    '',
    body
  ].join('\r\n')
  const backend = (watchers: string): string => tlsRequest('SUBSCRIBE', 'sip:bob@example.net', 'sip:example.com', ['Event: presence', 'Require: sipmesh-watchers', 'Expires: 60', `Sipmesh-Watchers: ${watchers}`])
  const enc = (aor: string): string => encodeURIComponent(aor)

  test('a peer\'s back-end SUBSCRIBE: its own watchers only (403), hostile watcher lists 4xx, internal headers refused; nothing crashes', async () => {
    const [, , net1] = nodes
    // a well-formed one from example.com: accepted, with the option tag and a decision per watcher
    const ok = await tlsExchange(net1.tls, pki.com, backend(`${enc('sip:ok1@example.com')} ${enc('sip:ok2@example.com')}`))
    assert.match(ok.answer, /^SIP\/2\.0 200/, ok.answer)
    assert.match(ok.answer, /^Require: sipmesh-watchers/im)
    // in its dialog too: a refresh naming a watcher of another domain is refused, one of its own accepted
    const dialog = (answer: string, cseq: number, watchers: string): string => {
      const h = (name: string): string => new RegExp(`^${name}: (.*)$`, 'im').exec(answer)?.[1] ?? ''
      return [`SUBSCRIBE ${/<([^>]+)>/.exec(h('Contact'))?.[1] ?? ''} SIP/2.0`, `Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK${Math.random().toString(36).slice(2)}`,
        'Max-Forwards: 70', `From: ${h('From')}`, `To: ${h('To')}`, `Call-ID: ${h('Call-ID')}`, `CSeq: ${cseq} SUBSCRIBE`, 'Contact: <sip:127.0.0.1:5999;transport=tls>',
        'Event: presence', 'Require: sipmesh-watchers', 'Expires: 60', `Sipmesh-Watchers: ${watchers}`, 'Content-Length: 0', '', ''].join('\r\n')
    }
    const refreshForeign = await tlsExchange(net1.tls, pki.com, dialog(ok.answer, 2, enc('sip:eve@example.org')))
    assert.match(refreshForeign.answer, /^SIP\/2\.0 403/, refreshForeign.answer)
    const refreshOwn = await tlsExchange(net1.tls, pki.com, dialog(ok.answer, 3, enc('sip:ok3@example.com')))
    assert.match(refreshOwn.answer, /^SIP\/2\.0 200/, refreshOwn.answer)
    assert.match(refreshOwn.answer, /^Sipmesh-Authorization: .*ok3%40example\.com/im, 'a decision for the new watcher')
    // a peer speaks for its own users only: one watcher of another domain refuses the whole request
    const foreign = await tlsExchange(net1.tls, pki.com, backend(`${enc('sip:ok1@example.com')} ${enc('sip:eve@example.org')}`))
    assert.match(foreign.answer, /^SIP\/2\.0 403/, foreign.answer)
    const ours = await tlsExchange(net1.tls, pki.com, backend(enc('sip:bob@example.net')))
    assert.match(ours.answer, /^SIP\/2\.0 403/, ours.answer)
    // hostile lists: malformed entries, one oversized entry, 201 and 10,000 entries
    for (const [what, list] of [
      ['malformed', '%%% <script>'],
      ['not a user', enc('sip:example.com')],
      ['oversized entry', enc(`sip:${'a'.repeat(900)}@example.com`)],
      ['201 entries', Array.from({ length: 201 }, (_, i) => enc(`sip:u${i}@example.com`)).join(' ')],
      ['10,000 entries', Array.from({ length: 10_000 }, (_, i) => enc(`sip:u${i}@example.com`)).join(' ')],
      ['10,000 short entries', Array.from({ length: 10_000 }, () => 'x').join(' ')]
    ]) {
      const r = await tlsExchange(net1.tls, pki.com, backend(list))
      // answered 4xx, or (beyond the transport's message size) the connection dropped unanswered
      assert.ok(/^SIP\/2\.0 4\d\d/.test(r.answer) || (r.closed && r.answer === ''), `${what}: ${r.answer.slice(0, 200)}`)
      assert.doesNotMatch(r.answer, /^SIP\/2\.0 [25]/, what)
      // within the transport's message size, always an answer
      if (list.length < 30_000) assert.match(r.answer, /^SIP\/2\.0 400/, what)
    }
    // internal requests a mesh node may send, from the peer: refused
    const rules = await tlsExchange(net1.tls, pki.com, tlsRequest('PUBLISH', 'sip:bob@example.net', 'sip:x@example.com', ['Event: sipmesh-rules', 'Content-Type: application/json'], '{"watchers":{"sip:x@example.com":"allow"}}'))
    assert.match(rules.answer, /^SIP\/2\.0 403/, rules.answer)
    const list = await tlsExchange(net1.tls, pki.com, tlsRequest('PUBLISH', 'sip:friends@example.net', 'sip:x@example.com', ['Event: sipmesh-list', 'Content-Type: application/json'], '{}'))
    assert.match(list.answer, /^SIP\/2\.0 403/, list.answer)
    const fetch = await tlsExchange(net1.tls, pki.com, tlsRequest('SUBSCRIBE', 'sip:bob@example.net', 'sip:x@example.com', ['Event: sipmesh-rules', 'Expires: 60']))
    assert.match(fetch.answer, /^SIP\/2\.0 489/, fetch.answer)
    // a MESSAGE carrying a stored message's id and a not-owner mark reaches Bob without them
    const bob = await udpUser('sip:bobby@example.net', net1)
    const marked = await tlsExchange(net1.tls, pki.com, tlsRequest('MESSAGE', 'sip:bobby@example.net', 'sip:x@example.com', ['Content-Type: text/plain', 'Sipmesh-Message-Id: forged', 'Sipmesh-Not-Owner: forged', 'Sipmesh-Rules-Version: 99'], 'marked'))
    assert.match(marked.answer, /^SIP\/2\.0 200/, marked.answer)
    const got = bob.received.find(m => m.endsWith('marked'))
    assert.ok(got !== undefined)
    assert.doesNotMatch(got, /^Sipmesh-/im, 'no internal header of the peer\'s reached the user')
    for (const n of nodes) assert.equal(n.proc?.child.exitCode, null, `${n.name} still runs`)
  })
})
