// Restart: stored registrations are claimed again in the background, a bounded number at once,
// while the registrar already answers; a REGISTER for an AoR not re-claimed yet keeps its
// stored bindings.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { Registrar, STORE_PREFIX } from '../../../sip-gateway/registrar/registrar.ts'
import { decodeRegistration } from '../../../sip-gateway/registrar/bindings.ts'
import { MemoryStore } from '../../../sip-gateway/memory-store.ts'
import { MemoryMesh } from '../../../dht/memory-registry.ts'
import { testLogger } from '../gateway/fixtures/log.ts'
import { HeldRegistry, registerFor, until } from './fixtures.ts'

const USERS = 60

async function storedRegistrations (mesh: MemoryMesh, store: MemoryStore): Promise<void> {
  const registry = new HeldRegistry(mesh, { nodeId: 'node-a' })
  const first = new Registrar({ registry, store, logger: testLogger() }, { domains: ['example.com'] })
  await first.start()
  for (let i = 0; i < USERS; i++) assert.equal((await first.handle(registerFor(`u${i}`, { expires: 600 }))).status, 200)
  first.stop()
}

describe('registrar restart', () => {
  test('re-claims in the background, at most reclaimConcurrency at once; a REGISTER meanwhile merges with the stored bindings', async () => {
    const mesh = new MemoryMesh()
    const store = new MemoryStore()
    await storedRegistrations(mesh, store)
    const registry = new HeldRegistry(mesh, { nodeId: 'node-a' })
    registry.held = true
    const log = testLogger()
    const registrar = new Registrar({ registry, store, logger: log }, { domains: ['example.com'], reclaimConcurrency: 8, reclaimLogIntervalMs: 0 })
    // start() does not wait for the claims (they are held)
    await registrar.start()
    await until(() => registry.waiting === 8, 2000, 'the first re-claims')
    assert.equal(registrar.registrations, 0)
    assert.equal(registrar.reclaim.total, USERS)
    // u59 is not being re-claimed yet: its user agent registers a second device
    const aor = 'sip:u59@example.com'
    const second = registrar.handle(registerFor('u59', { contact: '<sip:u59@10.9.9.9:5060>', callId: 'other-device', expires: 300 }))
    registry.letGo()
    const r = await second
    assert.equal(r.status, 200)
    assert.equal(r.headers?.filter(([n]) => n === 'Contact').length, 2, 'the stored device and the new one')
    await registrar.reclaimed()
    assert.ok(registry.maxInProgress <= 8 + 1, `at most 8 re-claims (+ the REGISTER) at once, saw ${registry.maxInProgress}`)
    assert.equal(registrar.registrations, USERS)
    assert.deepEqual(registrar.lookup(aor).map(b => b.uri).sort(), ['sip:u59@10.9.9.9:5060', 'sip:u59@127.0.0.1:5070'])
    assert.equal(decodeRegistration(store.map.get(STORE_PREFIX + aor)!)?.bindings.length, 2, 'both stored')
    assert.deepEqual(registrar.reclaim, { total: USERS, claimed: USERS - 1, lost: 0, failed: 0, superseded: 1, expired: 0, done: true })
    for (let i = 0; i < USERS; i++) assert.equal((await registry.resolve(`sip:u${i}@example.com`))?.node, 'node-a')
    assert.ok(log.lines.some(l => l.msg === 're-claiming stored registrations'), 'a progress line')
    assert.ok(log.lines.some(l => l.msg === 'stored registrations re-claimed' && l.fields?.claimed === USERS - 1))
    registrar.stop()
  })

  test('a REGISTER that removes the last stored binding before its re-claim releases the claim and the record', async () => {
    const mesh = new MemoryMesh()
    const store = new MemoryStore()
    await storedRegistrations(mesh, store)
    const registry = new HeldRegistry(mesh, { nodeId: 'node-a' })
    registry.held = true
    const registrar = new Registrar({ registry, store, logger: testLogger() }, { domains: ['example.com'], reclaimConcurrency: 1 })
    await registrar.start()
    await until(() => registry.waiting === 1, 2000, 'the first re-claim')
    const r = await registrar.handle(registerFor('u30', { expires: 0, cseq: 2 }))
    assert.equal(r.status, 200)
    assert.equal(r.headers?.filter(([n]) => n === 'Contact').length, 0)
    assert.equal(store.map.has(STORE_PREFIX + 'sip:u30@example.com'), false)
    assert.equal(await registry.resolve('sip:u30@example.com', { fresh: true }), undefined, 'released')
    registry.letGo()
    await registrar.reclaimed()
    assert.equal(registrar.registrations, USERS - 1)
    assert.equal(registrar.lookup('sip:u30@example.com').length, 0)
    registrar.stop()
  })
})
