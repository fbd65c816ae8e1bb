// The dialog (RFC 4235) and presence.winfo (RFC 3857) packages end to end: three `sipmesh start`
// processes on 127.0.0.1. A SIP.js Subscriber (WebSocket) on n1 watches bob's dialogs while carl on
// n3 calls bob on n2 (raw UDP user agents): ringing, connected, ended reach n1. Bob subscribes to
// his watcher information on n2 and sees the watchers of n1 and n3; a rules change through n3's
// admin API shows a watcher rejected. A callee who moves from n2 to n1 mid-call: n1 serves the call
// still up (handed over by n2), and its end (the BYE crosses n2, which relays it).
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'node:http'
import { UserAgent, Subscriber } from 'sip.js'
import { adminToken, run, stop, type Proc } from './fixtures/processes.ts'
import { registerOn } from './fixtures/register.ts'
import { TestUa } from '../sip-gateway/gateway/fixtures/ua.ts'
import { subscribe, waitNotify, type Dialog } from '../sip-gateway/presence/fixtures.ts'
import { parseDialogInfo } from '../../sip-gateway/presence/dialog-info.ts'
import { parseWatcherInfo } from '../../sip-gateway/presence/watcherinfo.ts'

interface Node { dataDir: string, proc?: Proc, ws: number, udp: number, admin: string, peerId: string, multiaddr: string }

async function startNode (n: Node, bootstrap?: string): Promise<void> {
  const args = ['start', '--domain', 'example.com', '--sip', '127.0.0.1:0', '--ws', '127.0.0.1:0', '--p2p', '/ip4/127.0.0.1/tcp/0',
    '--admin', '127.0.0.1:0', '--data-dir', n.dataDir, '--log-level', process.env.SIPMESH_TEST_LOG !== undefined ? 'debug' : 'info']
  if (bootstrap !== undefined) args.push('--bootstrap', bootstrap)
  n.proc = run(args)
  const gw = JSON.parse(await n.proc.waitForLine(l => l.includes('"sip gateway started"'), 30_000)) as { ws?: { port: number }, udp: { port: number } }
  const started = JSON.parse(await n.proc.waitForLine(l => l.includes('"sipmesh node started"'), 30_000)) as { peerId: string, multiaddrs: string[], admin: string }
  n.ws = gw.ws?.port ?? 0
  n.udp = gw.udp.port
  n.admin = started.admin
  n.peerId = started.peerId
  n.multiaddr = started.multiaddrs[0]
}

/** a PUT to a node's admin API with its token (issue 14: writes need it) */
function httpPut (hostPort: string, path: string, body: string, token: string): Promise<number> {
  const i = hostPort.lastIndexOf(':')
  return new Promise((resolve, reject) => {
    const req = request({ host: hostPort.slice(0, i), port: Number(hostPort.slice(i + 1)), path, method: 'PUT', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, timeout: 5000 }, (res) => {
      res.resume()
      res.on('end', () => { resolve(res.statusCode ?? 0) })
    })
    req.on('error', reject)
    req.end(body)
  })
}

const within = async <T>(ms: number, p: Promise<T>, what: string): Promise<T> => await Promise.race([
  p, new Promise<never>((_resolve, reject) => setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms).unref())
])

describe('dialog and presence.winfo across a 3-node mesh of separate processes', () => {
  const nodes: Node[] = []
  const uas: TestUa[] = []
  const agents: UserAgent[] = []
  let dir = ''
  const ua = async (user: string, n: Node): Promise<TestUa> => {
    const u = await TestUa.open(user, { host: '127.0.0.1', port: n.udp })
    uas.push(u)
    return u
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sipmesh-packages-e2e-'))
    for (let i = 0; i < 3; i++) nodes.push({ dataDir: join(dir, `n${i + 1}`), ws: 0, udp: 0, admin: '', peerId: '', multiaddr: '' })
    await startNode(nodes[0])
    const boot = `${nodes[0].multiaddr.replace(/\/p2p\/.*$/, '')}/p2p/${nodes[0].peerId}`
    await Promise.all([startNode(nodes[1], boot), startNode(nodes[2], boot)])
  })

  after(async () => {
    for (const a of agents) await a.stop().catch(() => {})
    for (const u of uas) await u.close()
    await Promise.all(nodes.map(async n => await stop(n.proc)))
    rmSync(dir, { recursive: true, force: true })
  })

  test('a SIP.js watcher on n1 sees bob\'s call on n2 (from carl on n3) ring, connect and end', async () => {
    const bob = await ua('bob', nodes[1])
    assert.equal(await registerOn(bob), 200)
    const alice = new UserAgent({ uri: UserAgent.makeURI('sip:alice@example.com')!, transportOptions: { server: `ws://127.0.0.1:${nodes[0].ws}` }, logLevel: 'error', logBuiltinEnabled: false })
    agents.push(alice)
    await within(5000, alice.start(), 'alice connects')
    const docs: Array<ReturnType<typeof parseDialogInfo>> = []
    const waiters = new Set<() => void>()
    const sub = new Subscriber(alice, UserAgent.makeURI('sip:bob@example.com')!, 'dialog', { expires: 300, extraHeaders: ['Accept: application/dialog-info+xml'] })
    sub.delegate = { onNotify: (n) => { void n.accept(); docs.push(parseDialogInfo(n.request.body)); for (const w of [...waiters]) w() } }
    await sub.subscribe()
    const seen = async (state: string): Promise<void> => {
      await within(15_000, new Promise<void>(resolve => {
        const check = (): void => { if (docs.some(d => d.dialogs.some(x => x.state === state))) { waiters.delete(check); resolve() } }
        waiters.add(check)
        check()
      }), `dialog ${state} on n1 (so far: ${docs.map(d => `${d.version}:${d.state}:${d.dialogs.map(x => x.state).join('/')}`).join(', ')})`)
    }
    await within(15_000, new Promise<void>(resolve => { const c = (): void => { if (docs.length > 0) resolve() }; waiters.add(c); c() }), 'the first NOTIFY')
    assert.equal(docs[0].state, 'full')

    const carl = await ua('carl', nodes[2])
    bob.answer = () => undefined
    const callId = 'e2e-call-1'
    const inv = carl.build({ method: 'INVITE', uri: 'sip:bob@example.com', callId, cseq: 1, fromTag: 'c1', headers: [['Contact', carl.contact]] })
    carl.sendRaw(inv.text)
    const invite = await bob.waitFor(() => bob.received.find(m => m.method === 'INVITE' && m.headers.get('Call-ID') === callId), 10_000)
    assert.ok(invite !== undefined, 'bob got the INVITE')
    const rr = invite.headers.getAll('Record-Route').map(r => ['Record-Route', r] as [string, string])
    bob.reply(invite, 180, rr)
    await seen('early')
    bob.reply(invite, 200, [...rr, ['Contact', bob.contact]])
    assert.equal((await carl.waitFinal(inv.branch, 10_000))?.status, 200)
    await seen('confirmed')
    bob.answer = () => 200
    carl.answer = () => 200
    const routes = invite.headers.getAll('Record-Route').map(r => ['Route', r] as [string, string])
    const bye = await bob.request({ method: 'BYE', uri: carl.contact.slice(1, -1), callId, cseq: 1, fromTag: 'uas', to: `<${carl.aor}>;tag=c1`, from: `<${bob.aor}>`, headers: routes }, 10_000)
    assert.equal(bye?.status, 200)
    await seen('terminated')
    const versions = docs.map(d => d.version)
    for (let i = 1; i < versions.length; i++) assert.ok(versions[i] > versions[i - 1], `versions grow: ${versions.join(',')}`)
    assert.ok(docs.slice(1).some(d => d.state === 'partial'), 'partial state after the first')
    await sub.unsubscribe()
  })

  test('bob sees his watchers on n1 and n3 through winfo on n2; n3\'s admin API rejects one', async () => {
    const bob = await ua('bobw', nodes[1])
    assert.equal(await registerOn(bob), 200)
    const w1 = await ua('wanda', nodes[0])
    const w3 = await ua('walt', nodes[2])
    const s1 = await subscribe(w1, { to: bob.aor, expires: 300 }, 10_000)
    const s3 = await subscribe(w3, { to: bob.aor, expires: 300 }, 10_000)
    assert.equal(s1.response?.status, 200)
    assert.equal(s3.response?.status, 200)
    const nobody = await subscribe(w1, { to: bob.aor, event: 'presence.winfo', accept: 'application/watcherinfo+xml' }, 10_000)
    assert.equal(nobody.response?.status, 403, 'only bob may see his watchers')
    const { response, dialog } = await subscribe(bob, { to: bob.aor, event: 'presence.winfo', accept: 'application/watcherinfo+xml', expires: 300 }, 10_000)
    assert.equal(response?.status, 200)
    const d = dialog as Dialog
    const statusOf = (body: Uint8Array, aor: string): string | undefined => parseWatcherInfo(body).lists.flatMap(l => l.watchers).find(w => w.uri === aor)?.status
    assert.ok(await waitNotify(bob, d.callId, r => statusOf(r.body, w1.aor) === 'active' && statusOf(r.body, w3.aor) === 'active', 15_000), 'both watchers active')
    const status = await httpPut(nodes[2].admin, `/presence/${encodeURIComponent(bob.aor)}/rules`, JSON.stringify({ watchers: { [w3.aor]: 'block' } }), adminToken(nodes[2].dataDir))
    assert.equal(status, 200)
    assert.ok(await waitNotify(bob, d.callId, r => statusOf(r.body, w3.aor) === 'terminated', 15_000), 'walt shown terminated')
  })

  test('bob moves from n2 to n1 mid-call: n1 serves the call still up, then its end', async () => {
    const bob = await ua('bobm', nodes[1])
    assert.equal(await registerOn(bob), 200)
    const carl = await ua('carlm', nodes[2])
    bob.answer = () => undefined
    const callId = 'e2e-moving-call'
    const inv = carl.build({ method: 'INVITE', uri: bob.aor, callId, cseq: 1, fromTag: 'm1', headers: [['Contact', carl.contact]] })
    carl.sendRaw(inv.text)
    const invite = await bob.waitFor(() => bob.received.find(m => m.method === 'INVITE' && m.headers.get('Call-ID') === callId), 10_000)
    assert.ok(invite !== undefined, 'bob got the INVITE')
    const rr = invite.headers.getAll('Record-Route').map(r => ['Record-Route', r] as [string, string])
    bob.reply(invite, 200, [...rr, ['Contact', bob.contact]])
    assert.equal((await carl.waitFinal(inv.branch, 10_000))?.status, 200)
    const watcher = await ua('wendym', nodes[2])
    const callState = (r: { body: Uint8Array }): string | undefined => parseDialogInfo(r.body).dialogs.find(d => d.callId === callId)?.state
    const before = await subscribe(watcher, { to: bob.aor, event: 'dialog', accept: 'application/dialog-info+xml', expires: 300 }, 10_000)
    assert.ok(await waitNotify(watcher, before.dialog!.callId, r => callState(r) === 'confirmed', 10_000), 'the call up, served by n2')

    // bob's AoR moves to n1 (a registration there takes it over)
    const moved = await ua('bobm', nodes[0])
    assert.equal(await registerOn(moved), 200)
    // a watcher subscribing through n1, the owner now, sees the call up (n2 handed it over)
    const local = await ua('walterm', nodes[0])
    let seen: string | undefined
    for (let i = 0; i < 10 && seen !== 'confirmed'; i++) {
      const s = await subscribe(local, { to: bob.aor, event: 'dialog', accept: 'application/dialog-info+xml', expires: 300 }, 10_000)
      const first = await waitNotify(local, s.dialog!.callId, () => true, 10_000)
      seen = first === undefined ? undefined : callState(first)
      if (seen !== 'confirmed') await new Promise(resolve => setTimeout(resolve, 300))
      else {
        // bob hangs up from the phone in the call: the BYE goes through n2 and n3, never n1
        bob.answer = () => 200
        carl.answer = () => 200
        const routes = invite.headers.getAll('Record-Route').map(r => ['Route', r] as [string, string])
        const bye = await bob.request({ method: 'BYE', uri: carl.contact.slice(1, -1), callId, cseq: 1, fromTag: 'uas', to: `<${carl.aor}>;tag=m1`, from: `<${bob.aor}>`, headers: routes }, 10_000)
        assert.equal(bye?.status, 200)
        assert.ok(await waitNotify(local, s.dialog!.callId, r => callState(r) === 'terminated', 10_000), 'the end, relayed from n2 to n1')
        assert.ok(await waitNotify(watcher, before.dialog!.callId, r => callState(r) === 'terminated', 10_000), 'the end, at the watcher on n3')
      }
    }
    assert.equal(seen, 'confirmed', 'n1 shows the call up after the move')
  })
})
