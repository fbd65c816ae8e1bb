// The factory node/ plugs in: it has the node's GatewayFactory shape, announces the bound SIP
// address before any claim, and a restarted gateway re-claims its stored registrations.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { GatewayFactory } from '../../../node/sipmesh-node.ts'
import { sipGateway, MemoryStore, MemoryChannelHub } from '../../../sip-gateway/index.ts'
import { MemoryMesh, MemoryRegistry } from '../../../dht/memory-registry.ts'
import { testLogger } from './fixtures/log.ts'
import { TestUa } from './fixtures/ua.ts'

const factory: GatewayFactory = sipGateway // compile-time check of the shape
void factory

test('sipGateway: announces the bound address, serves, and a restart re-claims stored registrations', async () => {
  const mesh = new MemoryMesh()
  const hub = new MemoryChannelHub()
  const store = new MemoryStore()
  const registry = new MemoryRegistry(mesh, { nodeId: 'node-a', sip: 'unset:0' })
  const announced: string[] = []
  const make = () => sipGateway({
    registry,
    peerChannel: hub.channel('node-a'),
    store,
    logger: testLogger(),
    config: { domains: ['example.com'], sip: { host: '127.0.0.1', port: 0 } },
    announceSip: (hp) => { announced.push(hp); registry.sip = hp }
  })
  const first = make()
  await first.start()
  assert.match(announced[0], /^127\.0\.0\.1:\d+$/)
  const ua = await TestUa.open('alice', first.gateway.addresses.udp)
  assert.equal((await ua.register(600))?.status, 200)
  assert.equal(first.registrations(), 1)
  assert.equal((await registry.resolve('sip:alice@example.com'))?.sip, announced[0])
  await first.stop()
  await registry.release('sip:alice@example.com') // the claim lapsed while the node was down

  const second = make()
  await second.start()
  try {
    // re-claimed in the background, while the node already serves
    await second.gateway.registrar.reclaimed()
    assert.equal(second.registrations(), 1, 'the stored registration is back')
    const route = await registry.resolve('sip:alice@example.com', { fresh: true })
    assert.equal(route?.node, 'node-a')
    assert.equal(route?.sip, announced[1], 're-claimed with the new address')
  } finally {
    await second.stop()
    await ua.close()
    await registry.stop()
  }
})
