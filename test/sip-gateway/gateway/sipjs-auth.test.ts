// Digest authentication against a real client nobody here wrote: SIP.js 0.21 UserAgents (which
// speak MD5 only, and take the MD5 challenge of our SHA-256 + MD5 pair) register over WebSocket
// with authorizationUsername/authorizationPassword and send an authenticated MESSAGE across two
// gateways; a wrong password is refused.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { UserAgent, Registerer, RegistererState, Messager } from 'sip.js'
import { TestMesh } from './fixtures/mesh.ts'
import { agent, agents, stopAgents, within } from './fixtures/sipjs.ts'
import { computeHa1, DigestAlgorithm } from '../../../sip-gateway/auth/digest.ts'
import type { UserSecret } from '../../../sip-gateway/auth/index.ts'

const PASSWORDS: Record<string, string> = { alice: 'wonderland', bob: 'builder' }
const credentials = new Map<string, UserSecret>(Object.entries(PASSWORDS).map(([user, pw]): [string, UserSecret] => [`sip:${user}@example.com`, {
  'SHA-256': computeHa1(DigestAlgorithm.SHA256, user, 'example.com', pw),
  MD5: computeHa1(DigestAlgorithm.MD5, user, 'example.com', pw)
}]))

let mesh: TestMesh | undefined
after(async () => {
  await stopAgents()
  await mesh?.stop()
})



/** REGISTER; resolves with the final status SIP.js saw (200 once registered) */
async function register (ua: UserAgent): Promise<number> {
  const registerer = new Registerer(ua, { expires: 300 })
  return await new Promise<number>((resolve, reject) => {
    registerer.stateChange.addListener(s => { if (s === RegistererState.Registered) resolve(200) })
    registerer.register({ requestDelegate: { onReject: (r) => resolve(r.message.statusCode ?? 0) } }).catch(reject)
  })
}

test('SIP.js with digest credentials: REGISTER (401 answered) on A, authenticated MESSAGE (407 answered) from B; a wrong password is refused', async () => {
  mesh = await TestMesh.spawn(2, { ws: { host: '127.0.0.1', port: 0 }, auth: { credentials } })
  const wsA = mesh.nodes[0].gateway.addresses.ws!.port
  const wsB = mesh.nodes[1].gateway.addresses.ws!.port

  let received: { body: string, pai?: string, proxyAuth?: string } | undefined
  const gotMessage = new Promise<void>(resolve => {
    agent('bob', wsA, { password: 'builder', onMessage: (m) => {
      received = { body: m.request.body, pai: m.request.getHeader('P-Asserted-Identity'), proxyAuth: m.request.getHeader('Proxy-Authorization') }
      void m.accept()
      resolve()
    } })
  })
  const bob = agents[0]
  await within(3000, bob.start(), 'bob connects')
  assert.equal(await within(3000, register(bob), 'bob registers'), 200)
  assert.equal(mesh.nodes[0].gateway.registrations, 1)
  assert.equal((await mesh.nodes[1].registry.resolve('sip:bob@example.com'))?.node, 'node-a')
  const authA = mesh.nodes[0].gateway.auth!.stats
  assert.equal(authA.challenged, 1, 'bob was challenged once')
  assert.equal(authA.authenticated, 1)

  const alice = agent('alice', wsB, { password: 'wonderland' })
  await within(3000, alice.start(), 'alice connects')
  const accepted = new Promise<number>((resolve, reject) => {
    void new Messager(alice, UserAgent.makeURI('sip:bob@example.com')!, 'hello, authenticated').message({
      requestDelegate: {
        onAccept: (r) => resolve(r.message.statusCode ?? 0),
        onReject: (r) => reject(new Error(`rejected ${r.message.statusCode}`))
      }
    })
  })
  assert.equal(await within(3000, accepted, 'alice gets the final response'), 200)
  await within(3000, gotMessage, 'bob gets the MESSAGE')
  assert.equal(received?.body, 'hello, authenticated')
  assert.equal(received?.pai, '<sip:alice@example.com>')
  assert.equal(received?.proxyAuth, undefined, 'credentials not forwarded')
  assert.equal(mesh.nodes[1].gateway.auth!.stats.authenticated, 1)

  // a wrong password: SIP.js answers the challenge once, gets 401 again and gives up
  const eve = agent('alice', wsB, { password: 'not-her-password' })
  await within(3000, eve.start(), 'eve connects')
  assert.equal(await within(3000, register(eve), 'eve is refused'), 401)
  assert.equal(mesh.nodes[1].gateway.registrations, 0)
  assert.equal(mesh.nodes[1].gateway.auth!.stats.failed, 1)
  const refused = new Promise<number>((resolve) => {
    void new Messager(eve, UserAgent.makeURI('sip:bob@example.com')!, 'forged').message({
      requestDelegate: { onAccept: () => resolve(200), onReject: (r) => resolve(r.message.statusCode ?? 0) }
    })
  })
  assert.equal(await within(3000, refused, 'eve\'s MESSAGE'), 407)
})
