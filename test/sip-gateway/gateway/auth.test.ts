// Digest authentication at the gateway level, on real UDP sockets with two in-process gateways:
// REGISTER and MESSAGE are challenged through the server transaction, the authenticated identity
// is asserted, and hostile user agents (forged identity, someone else's AoR) are refused while
// the node keeps serving.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { TestMesh } from './fixtures/mesh.ts'
import { TestUa, type RequestOptions } from './fixtures/ua.ts'
import { computeHa1, DigestAlgorithm } from '../../../sip-gateway/auth/digest.ts'
import type { UserSecret } from '../../../sip-gateway/auth/index.ts'
import type { SipResponse } from '../../../sip-gateway/codec/index.ts'
import { answer } from '../auth/fixtures.ts'

const PASSWORDS: Record<string, string> = { alice: 'wonderland', bob: 'builder', mallory: 'evil' }
const credentials = new Map<string, UserSecret>([
  ...Object.entries(PASSWORDS).map(([user, pw]): [string, UserSecret] => [`sip:${user}@example.com`, {
    'SHA-256': computeHa1(DigestAlgorithm.SHA256, user, 'example.com', pw),
    MD5: computeHa1(DigestAlgorithm.MD5, user, 'example.com', pw)
  }]),
  ['sip:carol@example.com', {}]
])

/** send, and when challenged answer once with `as`'s credentials (SHA-256 challenge) */
async function authed (ua: TestUa, o: RequestOptions, as: { user: string, password?: string } = { user: ua.user }): Promise<{ first?: SipResponse, final?: SipResponse }> {
  const first = await ua.request(o)
  if (first === undefined || (first.status !== 401 && first.status !== 407)) return { first, final: first }
  const header = first.status === 401 ? 'WWW-Authenticate' : 'Proxy-Authenticate'
  const challenge = first.headers.getLines(header)[0]
  const method = o.method ?? 'MESSAGE'
  const value = answer(challenge, { username: as.user, password: as.password ?? PASSWORDS[as.user], method, uri: o.uri ?? 'sip:bob@example.com' })
  const final = await ua.request({ ...o, headers: [...o.headers ?? [], [first.status === 401 ? 'Authorization' : 'Proxy-Authorization', value]] })
  return { first, final }
}

describe('digest authentication at the gateway', () => {
  let mesh: TestMesh
  const uas: TestUa[] = []
  const ua = async (user: string, node: number): Promise<TestUa> => {
    const u = await TestUa.open(user, mesh.nodes[node].sip)
    uas.push(u)
    return u
  }
  const register = async (u: TestUa, as?: { user: string, password?: string }, extra: RequestOptions = {}): Promise<{ first?: SipResponse, final?: SipResponse }> =>
    await authed(u, { method: 'REGISTER', uri: 'sip:example.com', to: `<${u.aor}>`, headers: [['Contact', u.contact], ['Expires', '600']], callId: `reg-${u.user}-${u.port}`, ...extra }, as)

  before(async () => { mesh = await TestMesh.spawn(2, { auth: { credentials } }) })
  after(async () => {
    for (const u of uas) await u.close()
    await mesh?.stop()
  })

  test('REGISTER without credentials: 401 through the server transaction (a retransmission gets the same 401, the core sees it once)', async () => {
    const alice = await ua('alice', 0)
    const { text, branch } = alice.build({ method: 'REGISTER', uri: 'sip:example.com', to: `<${alice.aor}>`, headers: [['Contact', alice.contact]] })
    const before = mesh.nodes[0].gateway.stats
    alice.sendRaw(text)
    const r = await alice.waitFinal(branch)
    assert.equal(r?.status, 401)
    assert.deepEqual(r?.headers.getLines('WWW-Authenticate').map(c => /algorithm=([\w-]+)/.exec(c)?.[1]), ['SHA-256', 'MD5'])
    alice.sendRaw(text)
    await alice.waitFor(() => alice.responses(branch).length >= 2 ? true : undefined)
    const [a, b] = alice.responses(branch)
    assert.equal(b?.headers.get('To'), a.headers.get('To'), 'the same response, retransmitted')
    const after = mesh.nodes[0].gateway.stats
    assert.equal(after.requests - before.requests, 1, 'the proxy core saw the REGISTER once')
    assert.equal(after.retransmissionsAbsorbed - before.retransmissionsAbsorbed, 1)
    assert.equal(mesh.nodes[0].gateway.registrations, 0)
  })

  test('REGISTER with the right credentials: 200, registered and claimed; wrong password: 401 again, nothing registered', async () => {
    const alice = await ua('alice', 0)
    const bad = await register(alice, { user: 'alice', password: 'guess' })
    assert.equal(bad.final?.status, 401)
    assert.equal(mesh.nodes[0].gateway.registrar.lookup('sip:alice@example.com').length, 0)
    const ok = await register(alice)
    assert.equal(ok.first?.status, 401)
    assert.equal(ok.final?.status, 200)
    assert.equal(mesh.nodes[0].gateway.registrar.lookup('sip:alice@example.com').length, 1)
    assert.equal((await mesh.nodes[1].registry.resolve('sip:alice@example.com'))?.node, 'node-a')
  })

  test('MESSAGE: 407, then delivered across the mesh with the authenticated identity asserted and our Proxy-Authorization removed', async () => {
    const bob = await ua('bob', 1)
    assert.equal((await register(bob)).final?.status, 200)
    const alice = await ua('alice', 0)
    const { first, final } = await authed(alice, { uri: 'sip:bob@example.com', body: 'hi bob', headers: [['P-Asserted-Identity', '<sip:ceo@example.com>']] })
    assert.equal(first?.status, 407)
    assert.equal(first?.headers.getLines('Proxy-Authenticate').length, 2)
    assert.equal(final?.status, 200)
    const m = await bob.waitFor(() => bob.received.find(r => r.method === 'MESSAGE' && Buffer.from(r.body).toString() === 'hi bob'))
    assert.ok(m !== undefined)
    assert.deepEqual(m.headers.getAll('P-Asserted-Identity'), ['<sip:alice@example.com>'])
    assert.equal(m.headers.has('Proxy-Authorization'), false)
  })

  test('hostile: mallory registering alice\'s AoR with her own valid credentials gets 403; alice stays where she is', async () => {
    const mallory = await ua('mallory', 1)
    const r = await authed(mallory, { method: 'REGISTER', uri: 'sip:example.com', to: '<sip:alice@example.com>', from: '<sip:alice@example.com>', headers: [['Contact', mallory.contact], ['Expires', '600']] })
    assert.equal(r.first?.status, 401)
    assert.equal(r.final?.status, 403)
    assert.equal(mesh.nodes[1].gateway.registrar.lookup('sip:alice@example.com').length, 0)
    assert.equal((await mesh.nodes[1].registry.resolve('sip:alice@example.com'))?.node, 'node-a', 'no hijack')
  })

  test('hostile: a MESSAGE From alice with a forged P-Asserted-Identity: 407 without credentials, 403 with mallory\'s; bob gets nothing; the node keeps serving', async () => {
    const mallory = await ua('mallory', 0)
    const bob = uas.find(u => u.user === 'bob')!
    const before = bob.received.length
    const forged = { uri: 'sip:bob@example.com', from: '<sip:alice@example.com>', body: 'pay mallory', headers: [['P-Asserted-Identity', '<sip:alice@example.com>']] as Array<[string, string]> }
    assert.equal((await mallory.request(forged))?.status, 407)
    const r = await authed(mallory, forged, { user: 'mallory' })
    assert.equal(r.final?.status, 403)
    await new Promise(resolve => setTimeout(resolve, 100))
    assert.equal(bob.received.length, before, 'nothing reached bob')
    // and mallory as herself works, asserted as herself
    const own = await authed(mallory, { uri: 'sip:bob@example.com', body: 'hello from mallory' })
    assert.equal(own.final?.status, 200)
    const m = await bob.waitFor(() => bob.received.find(x => Buffer.from(x.body).toString() === 'hello from mallory'))
    assert.deepEqual(m?.headers.getAll('P-Asserted-Identity'), ['<sip:mallory@example.com>'])
  })

  test('a foreign From passes without credentials and nothing is asserted (a forged PAI is stripped)', async () => {
    const zed = await ua('zed', 0)
    const bob = uas.find(u => u.user === 'bob')!
    const r = await zed.request({ uri: 'sip:bob@example.com', from: '<sip:zed@other.org>', body: 'from afar', headers: [['P-Asserted-Identity', '<sip:alice@example.com>']] })
    assert.equal(r?.status, 200)
    const m = await bob.waitFor(() => bob.received.find(x => Buffer.from(x.body).toString() === 'from afar'))
    assert.ok(m !== undefined)
    assert.deepEqual(m.headers.getAll('P-Asserted-Identity'), [])
  })

  test('a served user without a secret gets 403; OPTIONS to the node needs no credentials; in-dialog requests pass without identity', async () => {
    const carol = await ua('carol', 0)
    assert.equal((await carol.request({ uri: 'sip:bob@example.com', body: 'x' }))?.status, 403)
    assert.equal((await carol.register(600))?.status, 403)
    const n = mesh.nodes[0].sip
    assert.equal((await carol.request({ method: 'OPTIONS', uri: `sip:${n.host}:${n.port}` }))?.status, 200)
    const bob = uas.find(u => u.user === 'bob')!
    // a made-up To tag is no dialog: still refused
    assert.equal((await carol.request({ uri: 'sip:bob@example.com', to: '<sip:bob@example.com>;tag=made-up', body: 'x' }))?.status, 403)
    // in a dialog this node Record-Routed (its Route on top, a To tag): no challenge
    const r = await carol.request({ uri: 'sip:bob@example.com', to: '<sip:bob@example.com>;tag=dlg1', headers: [['Route', `<sip:${n.host}:${n.port};lr>`]], body: 'in dialog' })
    assert.equal(r?.status, 200)
    const m = await bob.waitFor(() => bob.received.find(x => Buffer.from(x.body).toString() === 'in dialog'))
    assert.deepEqual(m?.headers.getAll('P-Asserted-Identity'), [], 'nobody authenticated it: nothing asserted')
  })

  test('garbage credentials get 400 and the node keeps serving', async () => {
    const alice = uas.find(u => u.user === 'alice')!
    for (const bad of ['Digest username="unterminated', 'Digest ' + 'a=b,'.repeat(3000), 'Digest username="alice", realm="example.com"']) {
      const r = await alice.request({ method: 'REGISTER', uri: 'sip:example.com', to: `<${alice.aor}>`, headers: [['Contact', alice.contact], ['Authorization', bad]] })
      assert.equal(r?.status, 400, bad.slice(0, 40))
    }
    assert.equal((await authed(alice, { uri: 'sip:bob@example.com', body: 'still fine' })).final?.status, 200)
  })

  test('presence.winfo: only the authenticated presentity sees her watchers (RFC 3857 5.1.1)', async () => {
    const bob = await ua('bob', 1)
    assert.equal((await register(bob)).final?.status, 200)
    const winfo = (u: TestUa, callId: string): RequestOptions => ({ method: 'SUBSCRIBE', uri: bob.aor, to: `<${bob.aor}>`, from: `<${bob.aor}>`, callId, headers: [['Contact', u.contact], ['Event', 'presence.winfo'], ['Accept', 'application/watcherinfo+xml'], ['Expires', '60']] })
    // bob, authenticated, subscribes from node A (the back-end subscription carries his identity)
    const bobAway = await ua('bob', 0)
    const mine = await authed(bobAway, winfo(bobAway, 'winfo-bob'))
    assert.equal(mine.first?.status, 407, 'challenged first')
    assert.equal(mine.final?.status, 200)
    // mallory sends bob's From: without credentials she is only challenged; with hers, refused
    const mallory = await ua('mallory', 0)
    const forged = await authed(mallory, winfo(mallory, 'winfo-mal'), { user: 'mallory' })
    assert.equal(forged.first?.status, 407)
    assert.equal(forged.final?.status, 403)
    // alice, authenticated as herself, is not the presentity
    const alice = await ua('alice', 0)
    const other = await authed(alice, { ...winfo(alice, 'winfo-alice'), from: `<${alice.aor}>` })
    assert.equal(other.final?.status, 403)
  })
})
