// The authentication step of the proxy core, request by request: who is challenged with what,
// what passes, and every way credentials can be wrong.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseMessage, SipRequest, type SipResponse } from '../../../sip-gateway/codec/index.ts'
import { UserAgentAuthenticator, type AuthVerdict } from '../../../sip-gateway/auth/authenticator.ts'
import { computeHa1, DigestAlgorithm } from '../../../sip-gateway/auth/digest.ts'
import type { UserSecret } from '../../../sip-gateway/auth/index.ts'
import { testLogger } from '../gateway/fixtures/log.ts'
import { answer } from './fixtures.ts'

const secrets = (user: string, password: string, algorithms = [DigestAlgorithm.SHA256, DigestAlgorithm.MD5]): UserSecret =>
  Object.fromEntries(algorithms.map(a => [a, computeHa1(a, user, 'example.com', password)]))

const credentials = new Map<string, UserSecret>([
  ['sip:alice@example.com', secrets('alice', 'wonderland')],
  ['sip:bob@example.com', secrets('bob', 'builder')],
  ['sip:md5only@example.com', secrets('md5only', 'old', [DigestAlgorithm.MD5])],
  ['sip:carol@example.com', {}]
])

function make (init: { now?: () => number, nonceLifetimeMs?: number, opaque?: string, nodeAddresses?: () => string[] } = {}): UserAgentAuthenticator {
  return new UserAgentAuthenticator({ logger: testLogger() }, { credentials, domains: ['example.com', 'example.net'], ...init })
}

interface Req { method?: string, uri?: string, from?: string, to?: string, headers?: Array<[string, string]> }
function request (o: Req = {}): SipRequest {
  const method = o.method ?? 'MESSAGE'
  const uri = o.uri ?? 'sip:bob@example.com'
  const text = [
    `${method} ${uri} SIP/2.0`, 'Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKtest', 'Max-Forwards: 70',
    `From: ${o.from ?? '<sip:alice@example.com>'};tag=f1`, `To: ${o.to ?? `<${uri}>`}`, 'Call-ID: c1', `CSeq: 1 ${method}`,
    ...(o.headers ?? []).map(([n, v]) => `${n}: ${v}`), 'Content-Length: 0', '', ''
  ].join('\r\n')
  return parseMessage(Buffer.from(text)) as SipRequest
}

const responseOf = (v: AuthVerdict): SipResponse | undefined => 'response' in v ? v.response : undefined
const identityOf = (v: AuthVerdict): string | undefined => 'identity' in v ? v.identity : undefined

/** challenge, then answer with `o` (the challenge of `algorithm`) and return the second verdict */
function roundTrip (a: UserAgentAuthenticator, req: Req, o: { username?: string, password?: string, nc?: number, realm?: string, override?: Record<string, string | undefined>, algorithm?: string } = {}): { verdict: AuthVerdict, first: SipResponse, value: string } {
  const first = responseOf(a.authenticate(request(req), false))
  assert.ok(first !== undefined && (first.status === 401 || first.status === 407), `challenged: ${first?.status}`)
  const challenges = first.headers.getLines(first.status === 401 ? 'WWW-Authenticate' : 'Proxy-Authenticate')
  const challenge = challenges.find(c => c.includes(`algorithm=${o.algorithm ?? 'SHA-256'}`)) ?? challenges[0]
  const method = req.method ?? 'MESSAGE'
  const value = answer(challenge, { username: o.username ?? 'alice', password: o.password ?? 'wonderland', method, uri: req.uri ?? 'sip:bob@example.com', nc: o.nc, realm: o.realm, override: o.override })
  const header = first.status === 401 ? 'Authorization' : 'Proxy-Authorization'
  return { verdict: a.authenticate(request({ ...req, headers: [...req.headers ?? [], [header, value]] }), false), first, value }
}

const REG: Req = { method: 'REGISTER', uri: 'sip:example.com', to: '<sip:alice@example.com>' }

test('REGISTER: 401 with SHA-256 then MD5 challenges (qop auth, one header each); right credentials pass as the To AoR', () => {
  const a = make()
  const { verdict, first } = roundTrip(a, REG)
  const challenges = first.headers.getLines('WWW-Authenticate')
  assert.equal(first.status, 401)
  assert.equal(challenges.length, 2)
  assert.match(challenges[0], /^Digest realm="example.com", qop="auth", algorithm=SHA-256, nonce="[^"]+"$/)
  assert.match(challenges[1], /algorithm=MD5/)
  assert.match(first.headers.get('To') ?? '', /;tag=/)
  assert.equal(identityOf(verdict), 'sip:alice@example.com')
  assert.equal(identityOf(roundTrip(make(), REG, { algorithm: 'MD5' }).verdict), 'sip:alice@example.com', 'MD5 too')
})

test('MESSAGE from a served user: 407 Proxy-Authenticate; authenticated as the From AoR; our Proxy-Authorization stripped, others kept', () => {
  const a = make()
  const first = responseOf(a.authenticate(request(), false))
  assert.equal(first?.status, 407)
  assert.equal(first?.headers.getLines('Proxy-Authenticate').length, 2)
  const challenge = first!.headers.getLines('Proxy-Authenticate')[1]
  const value = answer(challenge, { username: 'alice', password: 'wonderland', method: 'MESSAGE', uri: 'sip:bob@example.com' })
  const req = request({ headers: [['Proxy-Authorization', 'Digest username="x", realm="upstream.org", nonce="n"'], ['Proxy-Authorization', value]] })
  assert.equal(identityOf(a.authenticate(req, false)), 'sip:alice@example.com')
  assert.deepEqual(req.headers.getLines('Proxy-Authorization'), ['Digest username="x", realm="upstream.org", nonce="n"'])
})

test('the methods: SUBSCRIBE, PUBLISH, INVITE, OPTIONS to a user are challenged; ACK, CANCEL, in-dialog, to-the-node pass', () => {
  const a = make()
  for (const method of ['SUBSCRIBE', 'PUBLISH', 'INVITE', 'OPTIONS', 'REFER']) {
    assert.equal(responseOf(a.authenticate(request({ method }), false))?.status, 407, method)
  }
  for (const method of ['ACK', 'CANCEL']) assert.deepEqual(a.authenticate(request({ method }), false), { identity: undefined }, method)
  assert.deepEqual(a.authenticate(request({ to: '<sip:bob@example.com>;tag=dlg' }), false, true), { identity: undefined }, 'in-dialog MESSAGE')
  assert.deepEqual(a.authenticate(request({ method: 'BYE', to: '<sip:bob@example.com>;tag=dlg' }), false, true), { identity: undefined })
  // a To tag without our Route on top is no dialog of ours: a made-up tag skips nothing
  assert.equal(responseOf(a.authenticate(request({ to: '<sip:bob@example.com>;tag=made-up' }), false))?.status, 407, 'a To tag alone')
  assert.equal(responseOf(a.authenticate(request({ method: 'INVITE', to: '<sip:bob@example.com>;tag=made-up' }), false, false))?.status, 407)
  assert.equal(responseOf(a.authenticate(request({ method: 'PUBLISH', to: '<sip:alice@example.com>;tag=x' }), false))?.status, 407, 'a To tag does not exempt a PUBLISH')
  assert.deepEqual(a.authenticate(request({ method: 'OPTIONS', uri: 'sip:127.0.0.1:5060' }), true), { identity: undefined }, 'OPTIONS to the node')
  assert.equal(responseOf(a.authenticate(request({ method: 'OPTIONS', uri: 'sip:127.0.0.1:5060', headers: [['Route', '<sip:elsewhere.org;lr>']] }), true))?.status, 407, 'to the node with a Route left: not for the node')
})

test('a foreign From passes with no identity; a served user without a secret, or unknown, gets 403', () => {
  const a = make()
  assert.deepEqual(a.authenticate(request({ from: '<sip:zed@other.org>' }), false), { identity: undefined })
  assert.equal(responseOf(a.authenticate(request({ from: '<sip:carol@example.com>' }), false))?.status, 403)
  assert.equal(responseOf(a.authenticate(request({ from: '<sip:nobody@example.net>' }), false))?.status, 403, 'another served domain')
  assert.equal(responseOf(a.authenticate(request({ ...REG, to: '<sip:nobody@example.com>' }), false))?.status, 403)
  assert.equal(responseOf(a.authenticate(request({ ...REG, to: '<sip:alice@other.org>' }), false))?.status, 403, 'REGISTER for a domain not served')
  assert.equal(responseOf(a.authenticate(request({ from: 'not a uri' }), false))?.status, 400)
})

test('a user with only an MD5 secret is challenged with MD5 only', () => {
  const first = responseOf(make().authenticate(request({ from: '<sip:md5only@example.com>' }), false))
  assert.deepEqual(first?.headers.getLines('Proxy-Authenticate').map(c => /algorithm=([\w-]+)/.exec(c)?.[1]), ['MD5'])
})

test('wrong password, wrong realm, unknown user name: challenged again (not stale)', () => {
  for (const o of [{ password: 'guess' }, { realm: 'other.org' }, { username: 'mallory' }]) {
    const { verdict } = roundTrip(make(), REG, o)
    const r = responseOf(verdict)
    assert.equal(r?.status, 401, JSON.stringify(o))
    assert.doesNotMatch(r?.headers.getLines('WWW-Authenticate').join() ?? '', /stale/)
  }
})

test('valid credentials of another user for this AoR: 403 (REGISTER and MESSAGE)', () => {
  assert.equal(responseOf(roundTrip(make(), REG, { username: 'bob', password: 'builder' }).verdict)?.status, 403)
  assert.equal(responseOf(roundTrip(make(), {}, { username: 'bob', password: 'builder' }).verdict)?.status, 403)
})

test('an expired nonce with otherwise right credentials: challenged again with stale=true; a wrong password on it is not stale', () => {
  let now = 1_000_000
  const a = make({ now: () => now, nonceLifetimeMs: 1000 })
  const first = responseOf(a.authenticate(request(REG), false))!
  const challenge = first.headers.getLines('WWW-Authenticate')[0]
  now += 5000
  const late = (password: string): SipResponse | undefined => responseOf(a.authenticate(request({ ...REG, headers: [['Authorization', answer(challenge, { username: 'alice', password, method: 'REGISTER', uri: 'sip:example.com' })]] }), false))
  const r = late('wonderland')
  assert.equal(r?.status, 401)
  assert.match(r!.headers.getLines('WWW-Authenticate')[0], /stale=true/)
  assert.doesNotMatch(late('guess')!.headers.getLines('WWW-Authenticate')[0], /stale/)
})

test('a nonce of another node (another key) is stale, not a hard failure', () => {
  const first = responseOf(make().authenticate(request(REG), false))!
  const value = answer(first.headers.getLines('WWW-Authenticate')[0], { username: 'alice', password: 'wonderland', method: 'REGISTER', uri: 'sip:example.com' })
  const r = responseOf(make().authenticate(request({ ...REG, headers: [['Authorization', value]] }), false))
  assert.match(r?.headers.getLines('WWW-Authenticate')[0] ?? '', /stale=true/)
})

test('replay: the same nc on the same nonce is refused; the next nc passes', () => {
  const a = make()
  const { verdict, value } = roundTrip(a, REG)
  assert.equal(identityOf(verdict), 'sip:alice@example.com')
  const again = responseOf(a.authenticate(request({ ...REG, headers: [['Authorization', value]] }), false))
  assert.equal(again?.status, 401, 'replayed')
  const nonce = /nonce="([^"]+)"/.exec(value)![1]
  const next = answer(`Digest realm="example.com", nonce="${nonce}", algorithm=SHA-256, qop="auth"`, { username: 'alice', password: 'wonderland', method: 'REGISTER', uri: 'sip:example.com', nc: 2 })
  assert.equal(identityOf(a.authenticate(request({ ...REG, headers: [['Authorization', next]] }), false)), 'sip:alice@example.com')
})

test('missing qop, nc or cnonce, bad nc, short response, other Request-URI, malformed or oversized header: 400', () => {
  const cases: Array<Record<string, string | undefined>> = [
    { qop: undefined }, { nc: undefined }, { cnonce: undefined }, { username: undefined }, { nc: '1' }, { nc: 'zzzzzzzz' },
    { response: '"abc"' }, { response: '"' + 'g'.repeat(64) + '"' }, { uri: '"sip:carol@example.com"' }, { 'username*': "UTF-8''alice" }
  ]
  for (const override of cases) {
    assert.equal(responseOf(roundTrip(make(), REG, { override }).verdict)?.status, 400, JSON.stringify(override))
  }
  for (const bad of ['Digest username="open', 'Digest a=1 b=2', 'Digest realm="example.com", ' + 'x=1,'.repeat(2000)]) {
    assert.equal(responseOf(make().authenticate(request({ ...REG, headers: [['Authorization', bad]] }), false))?.status, 400, bad.slice(0, 40))
  }
  const many = Array.from({ length: 9 }, (): [string, string] => ['Authorization', 'Digest realm="x"'])
  assert.equal(responseOf(make().authenticate(request({ ...REG, headers: many }), false))?.status, 400, 'too many credentials headers')
})

test('an algorithm or qop we did not offer, or opaque not echoed: challenged again', () => {
  for (const override of [{ algorithm: 'MD5-sess' }, { qop: 'auth-int' }]) {
    assert.equal(responseOf(roundTrip(make(), REG, { override }).verdict)?.status, 401, JSON.stringify(override))
  }
  const a = make({ opaque: 'op1' })
  assert.equal(identityOf(roundTrip(a, REG).verdict), 'sip:alice@example.com', 'opaque echoed')
  assert.equal(responseOf(roundTrip(a, REG, { override: { opaque: '"other"' } }).verdict)?.status, 401)
})

test('Basic credentials are ignored (challenged), never accepted', () => {
  const r = make().authenticate(request({ ...REG, headers: [['Authorization', 'Basic YWxpY2U6d29uZGVybGFuZA==']] }), false)
  assert.equal(responseOf(r)?.status, 401)
})

test('the digest-uri may name this node itself (an outbound proxy, as SIPp does), not any other server', () => {
  const a = make({ nodeAddresses: () => ['127.0.0.1:5070'] })
  assert.equal(identityOf(roundTrip(a, REG, { override: {} }).verdict), 'sip:alice@example.com')
  const viaNode = (uri: string): AuthVerdict => {
    const first = responseOf(a.authenticate(request(REG), false))!
    const value = answer(first.headers.getLines('WWW-Authenticate')[0], { username: 'alice', password: 'wonderland', method: 'REGISTER', uri })
    return a.authenticate(request({ ...REG, headers: [['Authorization', value]] }), false)
  }
  assert.equal(identityOf(viaNode('sip:127.0.0.1:5070')), 'sip:alice@example.com')
  assert.equal(responseOf(viaNode('sip:127.0.0.1:5071'))?.status, 400, 'another port')
  assert.equal(responseOf(viaNode('sip:alice@127.0.0.1:5070'))?.status, 400, 'a user at our address is not the node')
  assert.equal(responseOf(viaNode('sip:10.0.0.1:5070'))?.status, 400)
})
