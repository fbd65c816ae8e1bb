// A refresh of a claim the registry answers at once (Registry.claimNow) is answered in the same
// turn (handleNow returns the reply, not a promise) when the stored record covers it; anything else
// (a new AoR, a claim to renew, a record to write, a registry that throws) still waits or fails as
// before, and RFC 3261 10.3's checks hold on the fast path.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { Registrar, type Reply } from '../../../sip-gateway/registrar/registrar.ts'
import { MemoryStore } from '../../../sip-gateway/memory-store.ts'
import { MemoryMesh, MemoryRegistry } from '../../../dht/memory-registry.ts'
import type { ClaimResult, LocalBinding } from '../../../sip-gateway/ports.ts'
import { SipStatusError } from '../../../sip-gateway/errors.ts'
import { testLogger } from '../gateway/fixtures/log.ts'
import { registerFor } from './fixtures.ts'

/** the memory registry, with the refresh of a claim it won answered at once (as the DHT registry does) */
class AtOnce extends MemoryRegistry {
  readonly won = new Map<string, ClaimResult>()
  asked: LocalBinding[] = []
  claims = 0
  mode: 'answer' | 'decline' | 'throw' = 'answer'
  override async claim (aor: string, binding: LocalBinding): Promise<ClaimResult> {
    this.claims++
    const r = await super.claim(aor, binding)
    if (r.won) this.won.set(aor, r)
    return r
  }

  claimNow (aor: string, binding: LocalBinding): ClaimResult | undefined {
    if (this.mode === 'throw') throw new Error('registry broken')
    if (this.mode === 'decline') return undefined
    this.asked.push(binding)
    return this.won.get(aor)
  }
}

class CountingStore extends MemoryStore {
  puts = 0
  override async put (key: string, value: Uint8Array): Promise<void> { this.puts++; await super.put(key, value) }
}

function setup (clock = { now: Date.now() }) {
  const registry = new AtOnce(new MemoryMesh(), { nodeId: 'node-a', sip: 'node-a.test:5060' })
  const store = new CountingStore()
  const registrar = new Registrar({ registry, store, logger: testLogger() }, { domains: ['example.com'], minExpires: 60, maxExpires: 3600, now: () => clock.now })
  return { registry, store, registrar, clock }
}

const isReply = (r: Reply | Promise<Reply>): r is Reply => !(r instanceof Promise)

describe('registrar: refresh answered at once', () => {
  test('the first REGISTER waits for its claim and write; a refresh within the record is answered in the same turn with the new expiry', async () => {
    const { registry, store, registrar, clock } = setup()
    await registrar.start()
    try {
      const first = registrar.handleNow(registerFor('alice', { expires: 600, cseq: 1 }))
      assert.ok(first instanceof Promise, 'a new AoR waits for its claim')
      assert.equal((await first).status, 200)
      assert.equal(registry.claims, 1)
      assert.equal(store.puts, 1)
      clock.now += 10_000
      const refresh = registrar.handleNow(registerFor('alice', { expires: 600, cseq: 2 }))
      assert.ok(isReply(refresh), 'answered in the same turn')
      assert.equal(refresh.status, 200)
      assert.equal(registry.claims, 1, 'no claim() call')
      assert.equal(store.puts, 1, 'no write')
      assert.equal(registry.asked.at(-1)?.expiresAt, clock.now + 600_000, 'the lease asked up to the new expiry')
      const contact = refresh.headers?.find(([n]) => n === 'Contact')?.[1]
      assert.match(contact ?? '', /;expires=600$/)
      assert.equal(registrar.lookup('sip:alice@example.com')[0].expiresAt, clock.now + 600_000)
      assert.equal(registrar.pending, 0, 'nothing left pending')
      // the AoR's lock was released: the next one is at once too
      clock.now += 1000
      assert.ok(isReply(registrar.handleNow(registerFor('alice', { expires: 600, cseq: 3 }))))
    } finally { registrar.stop() }
  })

  test('RFC 3261 10.3 on the fast path: an old CSeq of the same Call-ID is 500, a refused interval 423, and nothing changes', async () => {
    const { registrar, clock } = setup()
    await registrar.start()
    try {
      await registrar.handle(registerFor('alice', { expires: 600, cseq: 5 }))
      const bound = registrar.lookup('sip:alice@example.com')[0].expiresAt
      clock.now += 5000
      assert.throws(() => registrar.handleNow(registerFor('alice', { expires: 600, cseq: 5 })), (e: unknown) => e instanceof SipStatusError && e.status === 500)
      await assert.rejects(registrar.handle(registerFor('alice', { expires: 600, cseq: 4 })), (e: unknown) => e instanceof SipStatusError && e.status === 500)
      const brief = registrar.handleNow(registerFor('alice', { expires: 10, cseq: 6 }))
      assert.ok(isReply(brief))
      assert.equal(brief.status, 423)
      assert.equal(registrar.lookup('sip:alice@example.com')[0].expiresAt, bound, 'unchanged')
      assert.equal(registrar.pending, 0)
      // a new contact for the AoR changes the record: written first (a promise)
      const moved = registrar.handleNow(registerFor('alice', { contact: '<sip:alice@10.1.1.1:5060>', expires: 600, cseq: 7 }))
      assert.ok(moved instanceof Promise, 'a changed record waits for its write')
      assert.equal((await moved).status, 200)
    } finally { registrar.stop() }
  })

  test('a registry that declines goes through claim(); one that throws is 503 with Retry-After and binds nothing', async () => {
    const { registry, registrar, clock } = setup()
    await registrar.start()
    try {
      await registrar.handle(registerFor('alice', { expires: 600, cseq: 1 }))
      registry.mode = 'decline'
      clock.now += 1000
      const declined = registrar.handleNow(registerFor('alice', { expires: 600, cseq: 2 }))
      assert.ok(declined instanceof Promise)
      assert.equal((await declined).status, 200)
      assert.equal(registry.claims, 2)
      registry.mode = 'throw'
      clock.now += 1000
      const failed = await registrar.handle(registerFor('alice', { expires: 900, cseq: 3 }))
      assert.equal(failed.status, 503)
      assert.ok(failed.headers?.some(([n]) => n === 'Retry-After'))
      assert.equal(registrar.lookup('sip:alice@example.com')[0].expiresAt, clock.now - 1000 + 600_000, 'the failed refresh bound nothing')
      registry.mode = 'answer'
      clock.now += 1000
      const after = registrar.handleNow(registerFor('alice', { expires: 600, cseq: 4 }))
      assert.ok(isReply(after))
      assert.equal(after.status, 200)
      assert.equal(registrar.pending, 0)
    } finally { registrar.stop() }
  })
})

describe('registrar: a refresh whose Contact is written as it was bound', () => {
  const AOR = 'sip:alice@example.com'
  test('the same Contact, with or without an expires parameter, refreshes the one binding (expires parameter before the header); removal with expires=0', async () => {
    const { registrar, clock } = setup()
    await registrar.start()
    try {
      await registrar.handle(registerFor('alice', { contact: '<sip:alice@10.0.0.1:5060;transport=udp>', expires: 600, cseq: 1 }))
      let cseq = 2
      const refresh = async (contact: string, expires?: number): Promise<Reply> => {
        clock.now += 1000
        return await registrar.handle(registerFor('alice', { contact, expires, cseq: cseq++ }))
      }
      assert.equal((await refresh('<sip:alice@10.0.0.1:5060;transport=udp>', 900)).status, 200)
      assert.equal(registrar.lookup(AOR).length, 1)
      assert.equal(registrar.lookup(AOR)[0].expiresAt, clock.now + 900_000)
      assert.equal((await refresh('<sip:alice@10.0.0.1:5060;transport=udp>;expires=120', 900)).status, 200)
      assert.equal(registrar.lookup(AOR)[0].expiresAt, clock.now + 120_000, 'the parameter before the header')
      assert.equal((await refresh('<sip:alice@10.0.0.1:5060;transport=udp>;EXPIRES=300', 900)).status, 200)
      assert.equal(registrar.lookup(AOR)[0].expiresAt, clock.now + 300_000, 'any spelling of the parameter')
      assert.equal((await refresh('<sip:alice@10.0.0.1:5060;transport=udp>;expires=99999999999', 900).catch((e: unknown) => e) as SipStatusError).status, 400, 'more than 10 digits refused')
      assert.equal((await refresh('<sip:alice@10.0.0.1:5060;transport=udp>;expires=12a', 900).catch((e: unknown) => e) as SipStatusError).status, 400)
      assert.equal((await refresh('<sip:alice@10.0.0.1:5060;transport=udp>;expires=5', 900)).status, 423)
      assert.equal(registrar.lookup(AOR)[0].expiresAt, clock.now - 3000 + 300_000, 'unchanged by the refused ones')
      assert.equal((await refresh('<sip:alice@10.0.0.1:5060;transport=udp>;expires=0')).status, 200)
      assert.equal(registrar.lookup(AOR).length, 0, 'removed')
    } finally { registrar.stop() }
  })

  test('a Contact written otherwise (display name, parameters, another URI, a prefix of it) is parsed: a binding of its own or the same one with its parameters', async () => {
    const { registrar, clock } = setup()
    await registrar.start()
    try {
      await registrar.handle(registerFor('alice', { contact: '<sip:alice@10.0.0.1:5060>', expires: 600, cseq: 1 }))
      clock.now += 1000
      await registrar.handle(registerFor('alice', { contact: '"Alice" <sip:alice@10.0.0.1:5060>;expires=700', cseq: 2 }))
      assert.equal(registrar.lookup(AOR).length, 1, 'a display name: the same binding')
      assert.equal(registrar.lookup(AOR)[0].expiresAt, clock.now + 700_000)
      clock.now += 1000
      await registrar.handle(registerFor('alice', { contact: '<sip:alice@10.0.0.1:5060>;+sip.instance="<urn:uuid:1>"', expires: 600, cseq: 3 }))
      assert.equal(registrar.lookup(AOR).length, 1)
      assert.deepEqual(registrar.lookup(AOR)[0].params, { '+sip.instance': '"<urn:uuid:1>"' }, 'its parameters kept')
      clock.now += 1000
      // the binding has parameters now: the same Contact without them is parsed, and they go
      await registrar.handle(registerFor('alice', { contact: '<sip:alice@10.0.0.1:5060>', expires: 600, cseq: 4 }))
      assert.deepEqual({ ...registrar.lookup(AOR)[0].params }, {})
      clock.now += 1000
      await registrar.handle(registerFor('alice', { contact: '<sip:alice@10.0.0.1:506>', expires: 600, cseq: 5 }))
      assert.equal(registrar.lookup(AOR).length, 2, 'a prefix of the URI is another contact')
      await assert.rejects(registrar.handle(registerFor('alice', { contact: '<sip:alice@10.0.0.1:5060', expires: 600, cseq: 6 })), (e: unknown) => e instanceof SipStatusError && e.status === 400)
    } finally { registrar.stop() }
  })
})

test('registrar: the bindings a lookup gave out are never changed by a later REGISTER (the refresh reads the registration\'s own array)', async () => {
  const { registrar, clock } = setup()
  await registrar.start()
  try {
    const AOR = 'sip:alice@example.com'
    await registrar.handle(registerFor('alice', { contact: '<sip:alice@10.0.0.1:5060>', expires: 600, cseq: 1 }))
    const seen = registrar.lookup(AOR)
    const at = seen[0].expiresAt
    clock.now += 1000
    await registrar.handle(registerFor('alice', { contact: '<sip:alice@10.0.0.1:5060>', expires: 900, cseq: 2 }))
    clock.now += 1000
    await registrar.handle(registerFor('alice', { contact: '<sip:alice@10.0.0.2:5060>', expires: 900, cseq: 3 }))
    clock.now += 1000
    await registrar.handle(registerFor('alice', { contact: '<sip:alice@10.0.0.1:5060>', expires: 0, cseq: 4 }))
    assert.equal(seen.length, 1)
    assert.equal(seen[0].uri, 'sip:alice@10.0.0.1:5060')
    assert.equal(seen[0].expiresAt, at)
    assert.deepEqual(registrar.lookup(AOR).map(b => b.uri), ['sip:alice@10.0.0.2:5060'])
  } finally { registrar.stop() }
})
