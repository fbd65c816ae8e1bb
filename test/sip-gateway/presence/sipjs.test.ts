// SIP.js Subscriber and Publisher against in-process gateways over WebSocket: a subscription
// across two nodes, a publication, and an orderly unsubscribe (the final NOTIFY ends SIP.js's dialog).
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { UserAgent, Registerer, RegistererState, Subscriber, SubscriptionState, Publisher, PublisherState } from 'sip.js'
import { TestMesh } from '../gateway/fixtures/mesh.ts'

let mesh: TestMesh | undefined
const agents: UserAgent[] = []
after(async () => {
  for (const ua of agents) await ua.stop().catch(() => {})
  await mesh?.stop()
})

const within = async <T>(ms: number, p: Promise<T>, what: string): Promise<T> => await Promise.race([
  p, new Promise<never>((_resolve, reject) => setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms).unref())
])

async function agent (user: string, port: number): Promise<UserAgent> {
  const ua = new UserAgent({ uri: UserAgent.makeURI(`sip:${user}@example.com`)!, transportOptions: { server: `ws://127.0.0.1:${port}` }, logLevel: 'error', logBuiltinEnabled: false })
  agents.push(ua)
  await within(3000, ua.start(), `${user} connects`)
  return ua
}

test('SIP.js Subscriber on B sees a SIP.js Publisher on A; unsubscribe completes', async () => {
  mesh = await TestMesh.spawn(2, { ws: { host: '127.0.0.1', port: 0 } })
  const bob = await agent('bob', mesh.nodes[0].gateway.addresses.ws!.port)
  const reg = new Registerer(bob, { expires: 300 })
  const registered = new Promise<void>(resolve => { reg.stateChange.addListener(s => { if (s === RegistererState.Registered) resolve() }) })
  await reg.register()
  await within(3000, registered, 'register')

  const alice = await agent('alice', mesh.nodes[1].gateway.addresses.ws!.port)
  const bodies: string[] = []
  let notified: (() => void) | undefined
  const sub = new Subscriber(alice, UserAgent.makeURI('sip:bob@example.com')!, 'presence', { expires: 300 })
  sub.delegate = { onNotify: (n) => { void n.accept(); bodies.push(n.request.body); notified?.() } }
  const waitBody = async (match: (b: string) => boolean): Promise<void> => {
    await within(3000, new Promise<void>(resolve => {
      notified = () => { if (bodies.some(match)) resolve() }
      notified()
    }), 'NOTIFY')
  }
  await sub.subscribe()
  await waitBody(b => b.includes('<basic>open</basic>'))
  assert.equal(sub.state, SubscriptionState.Subscribed)

  const pub = new Publisher(bob, UserAgent.makeURI('sip:bob@example.com')!, 'presence', { expires: 60, contentType: 'application/pidf+xml' })
  const published = new Promise<void>(resolve => { pub.stateChange.addListener(s => { if (s === PublisherState.Published) resolve() }) })
  await pub.publish('<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:bob@example.com"><tuple id="a"><status><basic>open</basic></status><note>from SIP.js</note></tuple></presence>')
  await within(3000, published, 'publish')
  await waitBody(b => b.includes('from SIP.js'))

  const t0 = Date.now()
  await within(3000, sub.unsubscribe(), 'unsubscribe')
  await within(3000, new Promise<void>(resolve => {
    if (sub.state === SubscriptionState.Terminated) { resolve(); return }
    sub.stateChange.addListener(s => { if (s === SubscriptionState.Terminated) resolve() })
  }), 'subscription terminated')
  assert.ok(Date.now() - t0 < 3000)
  await within(3000, pub.unpublish(), 'unpublish')
  const store = mesh.nodes[0].gateway.presence.publications
  for (let i = 0; i < 60 && store.get('sip:bob@example.com', 'presence').length > 0; i++) await new Promise(resolve => setTimeout(resolve, 50))
  assert.equal(store.get('sip:bob@example.com', 'presence').length, 0)
})
