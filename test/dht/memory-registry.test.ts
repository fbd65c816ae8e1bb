import { test } from 'node:test'
import assert from 'node:assert/strict'
import { MemoryMesh, MemoryRegistry } from '../../dht/memory-registry.ts'
import { registryCompliance } from './registry-compliance.ts'

registryCompliance('memory', async (n, options) => {
  const mesh = new MemoryMesh()
  const registries = Array.from({ length: n }, (_, i) => new MemoryRegistry(mesh, { nodeId: `node-${i}`, sip: `127.0.0.1:${5060 + i}`, expiryGraceMs: options.expiryGraceMs }))
  return { registries, stop: async () => { await Promise.all(registries.map(async r => { await r.stop() })) } }
})

test('memory registry: a stopped instance is no longer told anything', async () => {
  const mesh = new MemoryMesh()
  const a = new MemoryRegistry(mesh, { nodeId: 'a' })
  const b = new MemoryRegistry(mesh, { nodeId: 'b' })
  let displaced = 0
  a.onDisplaced(() => { displaced++ })
  await a.claim('sip:x@example.com', { expiresAt: Date.now() + 60_000 })
  await a.stop()
  await b.claim('sip:x@example.com', { expiresAt: Date.now() + 60_000 })
  await new Promise(resolve => setTimeout(resolve, 20))
  assert.equal(displaced, 0)
  assert.equal((await b.resolve('sip:x@example.com'))?.node, 'b')
  await b.stop()
})
