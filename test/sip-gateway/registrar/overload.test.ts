// Overload is answered, not queued (RFC 3261 21.5.4): 503 with Retry-After beyond capacity,
// counted, logged at warn once per interval; never a 200 without a stored claim.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { Registrar, STORE_PREFIX } from '../../../sip-gateway/registrar/registrar.ts'
import type { Reply } from '../../../sip-gateway/registrar/registrar.ts'
import { OverloadGuard } from '../../../sip-gateway/registrar/overload.ts'
import { MemoryStore } from '../../../sip-gateway/memory-store.ts'
import { MemoryMesh } from '../../../dht/memory-registry.ts'
import { testLogger } from '../gateway/fixtures/log.ts'
import { HeldRegistry, registerFor, until } from './fixtures.ts'

function setup (overload: ConstructorParameters<typeof Registrar>[1]['overload']) {
  const mesh = new MemoryMesh()
  const registry = new HeldRegistry(mesh, { nodeId: 'node-a' })
  const store = new MemoryStore()
  const log = testLogger()
  const registrar = new Registrar({ registry, store, logger: log }, { domains: ['example.com'], overload })
  return { registry, store, log, registrar }
}

const retryAfter = (r: Reply): number => Number(r.headers?.find(([n]) => n === 'Retry-After')?.[1])

describe('registrar overload', () => {
  test('beyond maxPending REGISTERs waiting for their claim: 503 with Retry-After at once, counted, one warn line', async () => {
    const { registry, registrar, log, store } = setup({ maxPending: 3, maxLagMs: 0, retryAfterSeconds: 4 })
    await registrar.start()
    registry.held = true
    const waiting = ['u0', 'u1', 'u2'].map(u => registrar.handle(registerFor(u)))
    await until(() => registry.waiting === 3, 2000, 'three claims held')
    assert.equal(registrar.pending, 3)
    const shed: Reply[] = []
    for (let i = 0; i < 5; i++) shed.push(await registrar.handle(registerFor(`x${i}`)))
    for (const r of shed) {
      assert.equal(r.status, 503)
      assert.ok(retryAfter(r) >= 4 && retryAfter(r) <= 8, `Retry-After ${retryAfter(r)}`)
    }
    assert.deepEqual(registrar.shed, { pending: 5, lag: 0 })
    const warns = log.lines.filter(l => l.level === 'warn' && l.msg.startsWith('overload'))
    assert.equal(warns.length, 1, 'one line, not one per request')
    assert.deepEqual(warns[0].fields?.refused, { pending: 1, lag: 0 })
    // nothing of the refused ones is bound, stored or claimed
    assert.equal(registrar.lookup('sip:x0@example.com').length, 0)
    assert.equal(store.map.has(STORE_PREFIX + 'sip:x0@example.com'), false)
    assert.equal(await registry.resolve('sip:x0@example.com'), undefined)
    registry.letGo()
    assert.deepEqual((await Promise.all(waiting)).map(r => r.status), [200, 200, 200])
    assert.equal(registrar.pending, 0)
    // capacity is back
    assert.equal((await registrar.handle(registerFor('x0'))).status, 200)
    registrar.stop()
  })

  test('event-loop lag over maxLagMs in two samples in a row: 503 with Retry-After', async () => {
    // the lag is real (the loop is blocked here), so on a loaded machine a REGISTER may be refused
    // before and after too: those are retried until admitted
    const admitted = async (user: string): Promise<void> => {
      for (let i = 0; i < 100; i++) {
        if ((await registrar.handle(registerFor(user))).status === 200) return
        await new Promise(resolve => setTimeout(resolve, 50))
      }
      assert.fail(`${user} never admitted`)
    }
    const { registrar } = setup({ maxLagMs: 200 })
    await registrar.start()
    await admitted('before')
    const shedBefore = registrar.shed.lag
    // two blocks, each seen by the sampler (it was due during each): the loop stays behind
    for (let i = 0; i < 2; i++) {
      const end = performance.now() + 600
      while (performance.now() < end) { /* block the event loop */ }
      await new Promise(resolve => setTimeout(resolve, 1))
    }
    const r = await registrar.handle(registerFor('during'))
    assert.equal(r.status, 503)
    assert.ok(retryAfter(r) >= 1)
    assert.equal(registrar.shed.lag, shedBefore + 1)
    assert.equal(registrar.shed.pending, 0)
    // the loop recovers: admitted again
    await admitted('after')
    registrar.stop()
  })

  test('one pause of the event loop alone (a full GC, a memory trim) refuses nothing once the loop is back', async () => {
    const { registrar } = setup({ maxLagMs: 200 })
    await registrar.start()
    // a quiet loop first: two samples on time
    await new Promise(resolve => setTimeout(resolve, 250))
    const end = performance.now() + 600
    while (performance.now() < end) { /* one pause */ }
    // the sampler sees the pause (one late sample, over maxLagMs), and the REGISTERs that waited
    // through it are answered, not refused
    await new Promise(resolve => setTimeout(resolve, 1))
    const r = await registrar.handle(registerFor('after-pause'))
    assert.equal(r.status, 200)
    assert.equal(registrar.shed.lag, 0)
    registrar.stop()
  })

  test('the guard: one late sample is a pause, two in a row are lag', async () => {
    const warns: unknown[] = []
    const log = { debug () {}, info () {}, warn (m: string) { warns.push(m) }, error () {}, child () { return log } }
    const guard = new OverloadGuard(log, { maxLagMs: 200 })
    guard.start()
    try {
      await new Promise(resolve => setTimeout(resolve, 250))
      const block = (): void => { const end = performance.now() + 600; while (performance.now() < end) { /* block */ } }
      block()
      await new Promise(resolve => setTimeout(resolve, 1))
      assert.ok(guard.lagMs > 200, `the pause was sampled: ${guard.lagMs} ms`)
      assert.equal(guard.lagging, false)
      assert.equal(guard.check(), undefined)
      block()
      await new Promise(resolve => setTimeout(resolve, 1))
      assert.equal(guard.lagging, true)
      assert.equal(guard.check(), 'lag')
      assert.equal(guard.shed.lag, 1)
      assert.equal(warns.length, 1)
    } finally {
      guard.stop()
    }
    assert.equal(guard.lagging, false)
  })

  test('a claim that fails is answered 503 with Retry-After, and nothing is bound or stored', async () => {
    const { registry, registrar, store } = setup({ maxLagMs: 0 })
    await registrar.start()
    registry.failing = true
    const r = await registrar.handle(registerFor('bob'))
    assert.equal(r.status, 503)
    assert.ok(retryAfter(r) >= 1)
    assert.equal(registrar.claimFailures, 1)
    assert.equal(registrar.lookup('sip:bob@example.com').length, 0)
    assert.equal(store.map.size, 0)
    registry.failing = false
    assert.equal((await registrar.handle(registerFor('bob', { cseq: 2 }))).status, 200)
    registrar.stop()
  })

  test('a registration the store cannot write is answered 503, not 200', async () => {
    const { registrar, store } = setup({ maxLagMs: 0 })
    await registrar.start()
    store.put = async () => { throw new Error('disk full') }
    const r = await registrar.handle(registerFor('carol'))
    assert.equal(r.status, 503)
    assert.ok(retryAfter(r) >= 1)
    assert.equal(store.map.size, 0)
    registrar.stop()
  })
})
