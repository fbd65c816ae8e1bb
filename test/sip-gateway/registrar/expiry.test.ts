// Expiry through the registrar's one timer wheel: never early, at most a slot late; a refresh
// moves the expiry on; the claim is released with the last binding.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { Registrar } from '../../../sip-gateway/registrar/registrar.ts'
import { ExpiryWheel } from '../../../sip-gateway/registrar/expiry-wheel.ts'
import { MemoryStore } from '../../../sip-gateway/memory-store.ts'
import { MemoryMesh, MemoryRegistry } from '../../../dht/memory-registry.ts'
import { testLogger } from '../gateway/fixtures/log.ts'
import { registerFor, sleep, until } from './fixtures.ts'

describe('expiry wheel', () => {
  test('a key fires in the first sweep at or after its time, never before; stale slots are the owner\'s to skip', () => {
    let now = 10_000
    const fired: Array<[string, number]> = []
    const wheel = new ExpiryWheel((keys) => { for (const k of keys) fired.push([k, now]) }, { granularityMs: 100, now: () => now })
    wheel.add('a', 10_250)
    wheel.add('b', 10_250)
    wheel.add('c', 10_900)
    wheel.add('late', 5_000) // already due: the next sweep
    now = 10_050; wheel.sweep()
    assert.deepEqual(fired, [['late', 10_050]])
    now = 10_199; wheel.sweep()
    assert.equal(fired.length, 1)
    now = 10_200; wheel.sweep()
    // the slot of 10_250 starts at 10_200: it fires, and the owner (seeing 10_250 > now) adds it again
    assert.deepEqual(fired.slice(1).map(([k]) => k), ['a', 'b'])
    assert.equal(wheel.add('a', 10_250), 103, 'a slot already swept: the next one')
    now = 10_300; wheel.sweep()
    assert.deepEqual(fired.at(-1), ['a', 10_300])
    // a clock jump fires everything due, in slot order
    now = 99_999; wheel.sweep()
    assert.deepEqual(fired.at(-1), ['c', 99_999])
    assert.equal(wheel.size, 0)
  })
})

describe('registrar expiry', () => {
  function setup () {
    const registry = new MemoryRegistry(new MemoryMesh(), { nodeId: 'node-a' })
    const registrar = new Registrar({ registry, store: new MemoryStore(), logger: testLogger() }, { domains: ['example.com'], minExpires: 1, expiryGranularityMs: 50 })
    const changes: Array<{ aor: string, n: number, at: number }> = []
    registrar.onChange((aor, bindings) => { changes.push({ aor, n: bindings.length, at: Date.now() }) })
    return { registry, registrar, changes }
  }

  test('a binding expires on time (not before, at most a slot late) and the claim is released', async () => {
    const { registry, registrar, changes } = setup()
    await registrar.start()
    const t0 = Date.now()
    await registrar.handle(registerFor('alice', { expires: 1 }))
    await until(() => changes.some(c => c.n === 0), 3000, 'the expiry')
    const at = changes.find(c => c.n === 0)!.at - t0
    assert.ok(at >= 1000 && at < 1000 + 50 + 200, `expired after ${at} ms`)
    assert.equal(registrar.registrations, 0)
    assert.equal(await registry.resolve('sip:alice@example.com', { fresh: true }), undefined)
    registrar.stop()
  })

  test('a refresh to a later expiry moves it; a second contact with an earlier expiry expires alone', async () => {
    // bounds are taken from when each REGISTER was handled, so a loaded machine only adds slack
    const { registrar, changes } = setup()
    await registrar.start()
    await registrar.handle(registerFor('bob', { expires: 1 }))
    await sleep(500)
    const tRefresh = Date.now()
    await registrar.handle(registerFor('bob', { expires: 2, cseq: 2 }))
    const tSecond = Date.now()
    await registrar.handle(registerFor('bob', { expires: 1, cseq: 3, contact: '<sip:bob@10.0.0.2>' }))
    await until(() => registrar.lookup('sip:bob@example.com').length === 1 && changes.at(-1)?.n === 1, 3000, 'the second contact to expire')
    const second = changes.at(-1)!.at
    assert.ok(second >= tSecond + 1000 && second < tSecond + 1000 + 50 + 400, `the second contact expired ${second - tSecond} ms after its REGISTER`)
    assert.equal(registrar.lookup('sip:bob@example.com')[0].uri, 'sip:bob@127.0.0.1:5070', 'the refreshed contact outlived its first expiry')
    // the change is told once the expiry is written and the claim released
    await until(() => changes.at(-1)?.n === 0, 3000, 'the refreshed contact to expire')
    assert.equal(registrar.registrations, 0)
    const last = changes.at(-1)!.at
    assert.ok(last >= tRefresh + 2000 && last < tRefresh + 2000 + 50 + 400 + (tSecond - tRefresh), `the refreshed contact expired ${last - tRefresh} ms after its refresh`)
    registrar.stop()
  })
})
