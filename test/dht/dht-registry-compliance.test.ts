import { Mesh } from '../fixtures/mesh.ts'
import { registryCompliance } from './registry-compliance.ts'

registryCompliance('kad-dht over loopback TCP', async (n, options) => {
  const mesh = await Mesh.spawn(n, { registry: { expiryGraceMs: options.expiryGraceMs, watchIntervalMs: 1_000 } })
  return { registries: mesh.nodes.map(node => node.registry), stop: async () => { await mesh.stop() } }
})
