// MESSAGEs to one recipient are routed, stored and delivered in the order the node received them
// (issue 10 item 3), even when the first ones wait on route lookups that later ones find cached.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { TestMesh } from '../gateway/fixtures/mesh.ts'
import { TestUa } from '../gateway/fixtures/ua.ts'
import type { MemoryRegistry } from '../../../dht/memory-registry.ts'

const meshes: TestMesh[] = []
const uas: TestUa[] = []
after(async () => {
  for (const u of uas) await u.close()
  for (const m of meshes) await m.stop()
})

/**
 * A registry whose lookups (routes and known users) behave like DHT walks on a cold cache: until
 * one lookup of a key has completed, each takes 10-60 ms (a walk of its own); afterwards answers
 * are cached and immediate.
 */
function coldLookups (registry: MemoryRegistry): void {
  const warm = new Set<string>()
  const cold = async (key: string): Promise<void> => {
    if (warm.has(key)) return
    await new Promise(resolve => setTimeout(resolve, 10 + Math.floor(Math.random() * 50)))
    warm.add(key)
  }
  const resolve = registry.resolve.bind(registry)
  const known = registry.known.bind(registry)
  registry.resolve = async (aor, options) => { await cold(`route ${aor}`); return await resolve(aor, options) }
  registry.known = async (aor, options) => { await cold(`known ${aor}`); return await known(aor, options) }
}

test('back-to-back MESSAGEs to a known offline user are stored and delivered in arrival order (cold route lookups)', async () => {
  const mesh = await TestMesh.spawn(2)
  meshes.push(mesh)
  const [a, b] = mesh.nodes
  // olga registered on node b once and left: known mesh-wide (her released claim), offline now
  const olga = await TestUa.open('olga', b.sip)
  uas.push(olga)
  assert.equal((await olga.register(600))?.status, 200)
  await olga.waitFor(() => undefined, 50)
  assert.equal(await a.registry.known(olga.aor), true)
  assert.equal((await olga.register(0))?.status, 200)
  coldLookups(a.registry)

  const alice = await TestUa.open('alice', a.sip, 'TCP')
  uas.push(alice)
  const n = 200
  const branches: string[] = []
  for (let i = 0; i < n; i++) {
    const { text, branch } = alice.build({ uri: olga.aor, body: `m${i}`, callId: `order-${i}` })
    alice.sendRaw(text)
    branches.push(branch)
    if (i % 20 === 19) await new Promise(resolve => setImmediate(resolve))
  }
  for (const [i, br] of branches.entries()) assert.equal((await alice.waitFinal(br, 15_000))?.status, 202, `message ${i}`)

  const stored = (await a.gateway.im.offline.export(olga.aor)).map(r => Buffer.from(r.body).toString())
  const expected = Array.from({ length: n }, (_, i) => `m${i}`)
  assert.deepEqual(stored, expected, 'stored in arrival order')

  // she comes back on node b: node a delivers the backlog over the mesh, in the same order
  assert.equal((await olga.register(600))?.status, 200)
  const got = await olga.waitFor(() => {
    const bodies = olga.received.filter(m => m.method === 'MESSAGE').map(m => Buffer.from(m.body).toString())
    return bodies.length >= n ? bodies : undefined
  }, 15_000)
  assert.deepEqual(got, expected, 'delivered once each, in arrival order')
})
