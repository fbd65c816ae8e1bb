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

/** the bodies of the MESSAGEs a user agent got (over TCP: nothing is retransmitted, so a duplicate is a second delivery) */
function messages (ua: TestUa): string[] {
  return ua.received.filter(m => m.method === 'MESSAGE').map(m => Buffer.from(m.body).toString())
}

/**
 * A registry whose lookups (routes and known users) behave like DHT walks on a cold cache: until
 * one lookup of a key has completed, each takes 10-60 ms (a walk of its own) and `routeNow` has no
 * answer; afterwards answers are cached and immediate, `routeNow`'s too.
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
  const routeNow = registry.routeNow.bind(registry)
  registry.routeNow = (aor) => warm.has(`route ${aor}`) ? routeNow(aor) : undefined
  registry.resolve = async (aor, options) => { await cold(`route ${aor}`); return await resolve(aor, options) }
  registry.known = async (aor, options) => { await cold(`known ${aor}`); return await known(aor, options) }
}

/** `n` MESSAGEs m0… to `uri` sent back to back, `pause` after every 20; their branches */
async function burst (ua: TestUa, uri: string, n: number, callId: string, pause: () => Promise<void>): Promise<string[]> {
  const branches: string[] = []
  for (let i = 0; i < n; i++) {
    const { text, branch } = ua.build({ uri, body: `m${i}`, callId: `${callId}-${i}` })
    ua.sendRaw(text)
    branches.push(branch)
    if (i % 20 === 19) await pause()
  }
  return branches
}

test('back-to-back MESSAGEs to a known offline user are stored and delivered in arrival order (cold route lookups)', async () => {
  const mesh = await TestMesh.spawn(2)
  meshes.push(mesh)
  const [a, b] = mesh.nodes
  // olga registered on node b once and left: known mesh-wide (her released claim), offline now
  const olga = await TestUa.open('olga', b.sip, 'TCP')
  uas.push(olga)
  assert.equal((await olga.register(600))?.status, 200)
  await olga.waitFor(() => undefined, 50)
  assert.equal(await a.registry.known(olga.aor), true)
  assert.equal((await olga.register(0))?.status, 200)
  coldLookups(a.registry)

  const alice = await TestUa.open('alice', a.sip, 'TCP')
  uas.push(alice)
  const n = 200
  const branches = await burst(alice, olga.aor, n, 'order', async () => { await new Promise(resolve => setImmediate(resolve)) })
  for (const [i, br] of branches.entries()) assert.equal((await alice.waitFinal(br, 15_000))?.status, 202, `message ${i}`)

  const stored = (await a.gateway.im.offline.export(olga.aor)).map(r => Buffer.from(r.body).toString())
  const expected = Array.from({ length: n }, (_, i) => `m${i}`)
  assert.deepEqual(stored, expected, 'stored in arrival order')

  // she comes back on node b: node a delivers the backlog over the mesh, in the same order
  assert.equal((await olga.register(600))?.status, 200)
  const got = await olga.waitFor(() => {
    const bodies = messages(olga)
    return bodies.length >= n ? bodies : undefined
  }, 15_000)
  assert.deepEqual(got, expected, 'delivered once each, in arrival order')
})

test('MESSAGEs that arrive while the backlog is being delivered queue behind it instead of overtaking it', async () => {
  const mesh = await TestMesh.spawn(2)
  meshes.push(mesh)
  const [a, b] = mesh.nodes
  const paula = await TestUa.open('paula', b.sip, 'TCP')
  uas.push(paula)
  assert.equal((await paula.register(600))?.status, 200)
  await paula.waitFor(() => undefined, 50)
  assert.equal((await paula.register(0))?.status, 200)
  const alice = await TestUa.open('alice', a.sip, 'TCP')
  uas.push(alice)
  const n = 100
  for (let i = 0; i < n; i++) assert.equal((await alice.request({ uri: paula.aor, body: `m${i}` }))?.status, 202)
  // she comes back on node b; node a starts handing its backlog over, one message at a time,
  // while alice goes on sending through node a
  assert.equal((await paula.register(600))?.status, 200)
  const live: Array<Promise<unknown>> = []
  for (let i = n; i < n + 20; i++) live.push(alice.request({ uri: paula.aor, body: `m${i}` }, 10_000))
  const answers = await Promise.all(live) as Array<{ status: number } | undefined>
  assert.ok(answers.every(r => r !== undefined && r.status >= 200 && r.status < 300), answers.map(r => r?.status).join(','))
  const expected = Array.from({ length: n + 20 }, (_, i) => `m${i}`)
  const got = await paula.waitFor(() => {
    const bodies = messages(paula)
    return bodies.length >= n + 20 ? bodies : undefined
  }, 15_000)
  assert.deepEqual(got, expected, 'the live messages came after the stored ones')
})

test('back-to-back MESSAGEs to a user on another node arrive in arrival order while the first wait on the route lookup and later ones find it at hand', async () => {
  const mesh = await TestMesh.spawn(2)
  meshes.push(mesh)
  const [a, b] = mesh.nodes
  const rita = await TestUa.open('rita', b.sip, 'TCP')
  uas.push(rita)
  assert.equal((await rita.register(600))?.status, 200)
  // the route is at hand (cached) as soon as the first lookup began, while that lookup's callers
  // wait 60 ms more (as for a liveness probe of the owner): later MESSAGEs could overtake them
  const resolve = a.registry.resolve.bind(a.registry)
  const routeNow = a.registry.routeNow.bind(a.registry)
  let looked = false
  let atHand = 0
  a.registry.resolve = async (aor, options) => {
    looked = true
    await new Promise(resolve => setTimeout(resolve, 60))
    return await resolve(aor, options)
  }
  a.registry.routeNow = (aor) => {
    const route = looked ? routeNow(aor) : undefined
    if (route !== undefined) atHand++
    return route
  }

  const alice = await TestUa.open('alice', a.sip, 'TCP')
  uas.push(alice)
  const n = 200
  const branches = await burst(alice, rita.aor, n, 'remote-order', async () => { await new Promise(resolve => setTimeout(resolve, 5)) })
  for (const [i, br] of branches.entries()) assert.equal((await alice.waitFinal(br, 15_000))?.status, 200, `message ${i}`)
  const got = await rita.waitFor(() => {
    const bodies = messages(rita)
    return bodies.length >= n ? bodies : undefined
  }, 15_000)
  assert.deepEqual(got, Array.from({ length: n }, (_, i) => `m${i}`), 'delivered once each, in arrival order')
  assert.ok(atHand > 0, 'later MESSAGEs took the route at hand')
})
