// Real clients nobody here wrote: a SIP.js UserAgent registers on gateway A over WebSocket and
// receives a MESSAGE that another SIP.js UserAgent sends through gateway B.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { UserAgent, Registerer, RegistererState, Messager } from 'sip.js'
import { TestMesh } from './fixtures/mesh.ts'
import { agent, agents, stopAgents, within } from './fixtures/sipjs.ts'

let mesh: TestMesh | undefined
after(async () => {
  await stopAgents()
  await mesh?.stop()
})



test('SIP.js over WebSocket: REGISTER on A, MESSAGE from a UA on B arrives, sender gets 200', async () => {
  if (typeof globalThis.WebSocket !== 'function') throw new Error('Node 22 global WebSocket expected')
  mesh = await TestMesh.spawn(2, { ws: { host: '127.0.0.1', port: 0 } })
  const wsA = mesh.nodes[0].gateway.addresses.ws!.port
  const wsB = mesh.nodes[1].gateway.addresses.ws!.port

  let received: { body: string, from: string, pai?: string } | undefined
  const gotMessage = new Promise<void>(resolve => {
    const bob = agent('bob', wsA, { onMessage: (m) => {
      received = { body: m.request.body, from: m.request.from.uri.toString(), pai: m.request.getHeader('P-Asserted-Identity') }
      void m.accept()
      resolve()
    } })
    void bob
  })
  const bob = agents[0]
  await within(3000, bob.start(), 'bob connects')
  const registerer = new Registerer(bob, { expires: 300 })
  const registered = new Promise<void>(resolve => {
    registerer.stateChange.addListener(s => { if (s === RegistererState.Registered) resolve() })
  })
  await registerer.register()
  await within(3000, registered, 'bob registers')
  assert.equal(mesh.nodes[0].gateway.registrations, 1)
  assert.equal((await mesh.nodes[1].registry.resolve('sip:bob@example.com'))?.node, 'node-a')

  const alice = agent('alice', wsB)
  await within(3000, alice.start(), 'alice connects')
  const target = UserAgent.makeURI('sip:bob@example.com')!
  const accepted = new Promise<number>((resolve, reject) => {
    void new Messager(alice, target, 'hello from SIP.js').message({
      requestDelegate: {
        onAccept: (r) => resolve(r.message.statusCode ?? 0),
        onReject: (r) => reject(new Error(`rejected ${r.message.statusCode}`))
      }
    })
  })
  assert.equal(await within(3000, accepted, 'alice gets the final response'), 200)
  await within(3000, gotMessage, 'bob gets the MESSAGE')
  assert.equal(received?.body, 'hello from SIP.js')
  assert.equal(received?.from, 'sip:alice@example.com')
  assert.equal(received?.pai, '<sip:alice@example.com>')
  await within(3000, registerer.unregister(), 'unregister')
})
