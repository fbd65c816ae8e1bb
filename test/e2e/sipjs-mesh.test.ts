// Issue 3's headline test: real clients nobody here wrote, against a 3-node mesh of separate
// `sipmesh start` processes on 127.0.0.1 (port 0 everywhere, ports read from the start log).
// A SIP.js UserAgent registers over WebSocket on node A; a second device of the same user
// registers over UDP (a tiny raw UA) on the same node; another SIP.js UserAgent sends a MESSAGE
// through node B: both devices get it across the mesh and the sender gets the 200. A MESSAGE to a
// user of the domain nobody knows gets 404, and one to a foreign domain 403/404 (never forwarded).
//
// Why the UDP device is on node A, not node C: the SPEC's conflict policy gives an AoR exactly one
// owner node (the latest registration takes over), so two devices of one user on two nodes would
// not both be bound; "all registered devices of a user" are the owner's bindings. Node C takes part
// as the entry point of the 404/403 checks.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { UserAgent, Registerer, RegistererState, Messager } from 'sip.js'
import type { Message } from 'sip.js'
import { run, stop, httpGet, waitFor, register, message, UdpUa, type Proc } from './fixtures/processes.ts'

interface Node { name: string, dataDir: string, proc?: Proc, ws: number, udp: number, admin: string, peerId: string, multiaddr: string }

async function startNode (n: Node, bootstrap?: string): Promise<void> {
  const args = ['start', '--domain', 'example.com', '--sip', '127.0.0.1:0', '--ws', '127.0.0.1:0', '--p2p', '/ip4/127.0.0.1/tcp/0',
    '--admin', '127.0.0.1:0', '--data-dir', n.dataDir, '--log-level', 'info']
  if (bootstrap !== undefined) args.push('--bootstrap', bootstrap)
  n.proc = run(args)
  const gw = JSON.parse(await n.proc.waitForLine(l => l.includes('"sip gateway started"'), 30_000)) as { udp?: { port: number }, ws?: { port: number } }
  const started = JSON.parse(await n.proc.waitForLine(l => l.includes('"sipmesh node started"'), 30_000)) as { peerId: string, multiaddrs: string[], admin: string, sip: string }
  n.ws = gw.ws?.port ?? 0
  n.udp = Number(started.sip.split(':')[1])
  n.admin = started.admin
  n.peerId = started.peerId
  n.multiaddr = started.multiaddrs[0]
  assert.ok(n.ws > 0 && n.udp > 0, `ports of ${n.name}: ws ${n.ws}, sip ${n.udp}`)
}

const within = async <T>(ms: number, p: Promise<T>, what: string): Promise<T> => await Promise.race([
  p, new Promise<never>((_resolve, reject) => setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms).unref())
])

describe('SIP.js pager IM across a 3-node mesh of separate processes', () => {
  const nodes: Node[] = []
  const agents: UserAgent[] = []
  const udpUas: UdpUa[] = []
  let dir = ''

  function agent (user: string, node: Node, onMessage?: (m: Message) => void): UserAgent {
    const ua = new UserAgent({
      uri: UserAgent.makeURI(`sip:${user}@example.com`)!,
      transportOptions: { server: `ws://127.0.0.1:${node.ws}` },
      logLevel: 'error',
      logBuiltinEnabled: false,
      delegate: onMessage === undefined ? undefined : { onMessage }
    })
    agents.push(ua)
    return ua
  }

  /** send a MESSAGE with SIP.js and resolve with the final status code (accepted or rejected) */
  function send (from: UserAgent, to: string, body: string): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      new Messager(from, UserAgent.makeURI(to)!, body).message({
        requestDelegate: {
          onAccept: (r) => { resolve(r.message.statusCode ?? 0) },
          onReject: (r) => { resolve(r.message.statusCode ?? 0) }
        }
      }).catch(reject)
    })
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sipmesh-sipjs-e2e-'))
    for (let i = 0; i < 3; i++) nodes.push({ name: `n${i + 1}`, dataDir: join(dir, `n${i + 1}`), ws: 0, udp: 0, admin: '', peerId: '', multiaddr: '' })
    await startNode(nodes[0])
    const boot = `${nodes[0].multiaddr.replace(/\/p2p\/.*$/, '')}/p2p/${nodes[0].peerId}`
    await Promise.all([startNode(nodes[1], boot), startNode(nodes[2], boot)])
    await waitFor(async () => {
      for (const n of nodes) {
        const s = JSON.parse((await httpGet(n.admin, '/status')).body) as { peers: string[] }
        if (!nodes.filter(o => o !== n).every(o => s.peers.includes(o.peerId))) return false
      }
      return true
    }, 15_000, 'every node to see the two others')
  })

  after(async () => {
    for (const ua of agents) await within(5000, ua.stop(), 'SIP.js stop').catch((err: unknown) => { console.error(String(err)) })
    for (const u of udpUas) u.close()
    await Promise.all(nodes.map(async n => await stop(n.proc)))
    rmSync(dir, { recursive: true, force: true })
  })

  test('bob (SIP.js/WS and a UDP device, on A) gets alice\'s MESSAGE sent through B; alice gets the 200', async () => {
    const [a, b] = nodes
    const got: Array<{ body: string, from: string, pai?: string }> = []
    let wsArrived: () => void = () => {}
    const wsGot = new Promise<void>(resolve => { wsArrived = resolve })
    const bob = agent('bob', a, (m) => {
      got.push({ body: m.request.body, from: m.request.from.uri.toString(), pai: m.request.getHeader('P-Asserted-Identity') })
      void m.accept()
      wsArrived()
    })
    await within(5000, bob.start(), 'bob connects to A')
    const registerer = new Registerer(bob, { expires: 300 })
    const registered = new Promise<void>(resolve => {
      registerer.stateChange.addListener(s => { if (s === RegistererState.Registered) resolve() })
    })
    await registerer.register()
    await within(10_000, registered, 'bob registers on A over WebSocket')

    // bob's second device: a raw UDP user agent, same AoR, same owner node
    const phone = new UdpUa()
    udpUas.push(phone)
    await phone.open()
    const reg = await phone.request({ host: '127.0.0.1', port: a.udp }, register('sip:bob@example.com', phone.port))
    assert.match(reg, /^SIP\/2\.0 200 /)
    assert.match(reg, /^(Contact|m):.*transport=ws/im, 'the 200 lists the WebSocket binding')
    assert.match(reg, new RegExp(`^(Contact|m):.*127\\.0\\.0\\.1:${phone.port}`, 'im'), 'the 200 lists the UDP binding')

    // every node resolves bob to A (the claim is in the DHT by the time the 200 was sent)
    for (const n of nodes) {
      await waitFor(async () => {
        const res = await httpGet(n.admin, `/aor/${encodeURIComponent('sip:bob@example.com')}`)
        return res.status === 200 && (JSON.parse(res.body) as { owner: string }).owner === a.peerId
      }, 5000, `${n.name} to resolve bob to A`)
    }

    const alice = agent('alice', b)
    await within(5000, alice.start(), 'alice connects to B')
    const status = await within(10_000, send(alice, 'sip:bob@example.com', 'hello from SIP.js on B'), 'alice gets the final response')
    assert.equal(status, 200)
    await within(5000, wsGot, 'bob (SIP.js) gets the MESSAGE')
    await waitFor(() => phone.received.length > 0, 5000, 'bob\'s UDP device to get the MESSAGE')

    assert.equal(got.length, 1)
    assert.equal(got[0].body, 'hello from SIP.js on B')
    assert.equal(got[0].from, 'sip:alice@example.com')
    assert.equal(got[0].pai, '<sip:alice@example.com>')
    assert.equal(phone.received.length, 1)
    const udpMsg = phone.received[0]
    assert.match(udpMsg, new RegExp(`^MESSAGE sip:bob@127\\.0\\.0\\.1:${phone.port} SIP/2\\.0\r\n`))
    assert.ok(udpMsg.endsWith('\r\n\r\nhello from SIP.js on B'), udpMsg)
    assert.match(udpMsg, /^From: .*sip:alice@example\.com/im)
    // the request went through both nodes: two gateway Vias above alice's own
    assert.ok((udpMsg.match(/^(Via|v):/gim) ?? []).length >= 3, udpMsg)

    // the peer channel carried it
    const metricsB = await httpGet(b.admin, '/metrics')
    assert.match(metricsB.body, /^sipmesh_peer_channel_frames_sent_total [1-9]/m)

    await within(5000, registerer.unregister(), 'unregister')
  })

  test('a MESSAGE to a user nobody knows gets 404; to a foreign domain 403 or 404, never forwarded', async () => {
    const c = nodes[2]
    const alice = agents.find(ua => ua.configuration.uri.user === 'alice')!
    assert.equal(await within(10_000, send(alice, 'sip:nobody-knows-me@example.com', 'hello?'), '404 via SIP.js'), 404)
    const foreign = await within(10_000, send(alice, 'sip:someone@elsewhere.example.org', 'hello?'), 'foreign via SIP.js')
    assert.ok(foreign === 403 || foreign === 404, `foreign domain: ${foreign}`)

    // the same through node C over UDP
    const ua = new UdpUa()
    udpUas.push(ua)
    await ua.open()
    assert.match(await ua.request({ host: '127.0.0.1', port: c.udp }, message('sip:carol@example.com', 'sip:ghost@example.com', ua.port, 'boo')), /^SIP\/2\.0 404 /)
    assert.match(await ua.request({ host: '127.0.0.1', port: c.udp }, message('sip:carol@example.com', 'sip:x@elsewhere.example.org', ua.port, 'boo')), /^SIP\/2\.0 40[34] /)
    assert.equal(ua.received.length, 0)
  })
})
