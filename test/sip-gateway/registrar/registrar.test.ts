// Registrar edge cases (RFC 3261 10.3) against the in-memory registry and store.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { Registrar, STORE_PREFIX } from '../../../sip-gateway/registrar/registrar.ts'
import type { Reply } from '../../../sip-gateway/registrar/registrar.ts'
import { MemoryStore } from '../../../sip-gateway/memory-store.ts'
import { SipRequest, Headers, aorOf, parseNameAddr } from '../../../sip-gateway/codec/index.ts'
import { SipStatusError } from '../../../sip-gateway/errors.ts'
import { MemoryMesh, MemoryRegistry } from '../../../dht/memory-registry.ts'
import { testLogger } from '../gateway/fixtures/log.ts'
import { INVALID_AOR_ERROR } from '../../../sip-gateway/ports.ts'

const AOR = 'sip:alice@example.com'

function register (o: { contact?: string | string[], expires?: number, callId?: string, cseq?: number, to?: string, uri?: string, extra?: Array<[string, string]> } = {}): SipRequest {
  const h = new Headers()
  h.append('Via', 'SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK' + Math.random().toString(36).slice(2))
  h.append('From', `<${AOR}>;tag=1`)
  h.append('To', o.to ?? `<${AOR}>`)
  h.append('Call-ID', o.callId ?? 'call-1')
  h.append('CSeq', `${o.cseq ?? 1} REGISTER`)
  const contacts = o.contact === undefined ? ['<sip:alice@127.0.0.1:5070>'] : Array.isArray(o.contact) ? o.contact : [o.contact]
  for (const c of contacts) h.append('Contact', c)
  if (o.expires !== undefined) h.append('Expires', String(o.expires))
  for (const [n, v] of o.extra ?? []) h.append(n, v)
  return new SipRequest('REGISTER', o.uri ?? 'sip:example.com', h)
}

function setup (init: Partial<ConstructorParameters<typeof Registrar>[1]> = {}, mesh = new MemoryMesh(), nodeId = 'node-a', store = new MemoryStore()) {
  const registry = new MemoryRegistry(mesh, { nodeId, sip: `${nodeId}.test:5060` })
  const registrar = new Registrar({ registry, store, logger: testLogger() }, { domains: ['example.com'], minExpires: 60, maxExpires: 3600, ...init })
  return { registry, registrar, store, mesh }
}

const contactsOf = (r: Reply) => (r.headers ?? []).filter(([n]) => n === 'Contact').map(([, v]) => v)

async function rejects (p: Promise<unknown>, status: number): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof SipStatusError && err.status === status)
}

describe('registrar', () => {
  test('binds, claims before answering, lists contacts with expires', async () => {
    const { registrar, registry } = setup()
    await registrar.start()
    const r = await registrar.handle(register({ expires: 600 }))
    assert.equal(r.status, 200)
    assert.deepEqual(contactsOf(r), ['<sip:alice@127.0.0.1:5070>;expires=600'])
    const route = await registry.resolve(AOR)
    assert.equal(route?.node, 'node-a', 'the claim is stored once 200 is returned')
    assert.equal(registrar.registrations, 1)
    registrar.stop()
  })

  test('several contacts, per-contact expires, max expiry shortens, query without Contact', async () => {
    const { registrar } = setup()
    await registrar.start()
    await registrar.handle(register({ contact: ['<sip:a@10.0.0.1>;expires=120', '<sip:a@10.0.0.2>'], expires: 99999 }))
    const r = await registrar.handle(register({ contact: [], cseq: 2 }))
    assert.deepEqual(contactsOf(r).sort(), ['<sip:a@10.0.0.1>;expires=120', '<sip:a@10.0.0.2>;expires=3600'])
    assert.equal(registrar.lookup(AOR).length, 2)
    registrar.stop()
  })

  test('refresh updates one binding; Expires: 0 removes it; the last removal releases the claim', async () => {
    const { registrar, registry } = setup()
    await registrar.start()
    await registrar.handle(register({ contact: ['<sip:a@10.0.0.1>', '<sip:a@10.0.0.2>'], expires: 300 }))
    let r = await registrar.handle(register({ contact: '<sip:a@10.0.0.1>', expires: 900, cseq: 2 }))
    assert.deepEqual(contactsOf(r).sort(), ['<sip:a@10.0.0.1>;expires=900', '<sip:a@10.0.0.2>;expires=300'])
    r = await registrar.handle(register({ contact: '<sip:a@10.0.0.2>;expires=0', cseq: 3 }))
    assert.deepEqual(contactsOf(r), ['<sip:a@10.0.0.1>;expires=900'])
    r = await registrar.handle(register({ contact: '<sip:a@10.0.0.1>', expires: 0, cseq: 4 }))
    assert.deepEqual(contactsOf(r), [])
    assert.equal(registrar.registrations, 0)
    assert.equal(await registry.resolve(AOR, { fresh: true }), undefined, 'released')
    registrar.stop()
  })

  test('Contact: * with Expires: 0 removes everything; without Expires: 0 or with other contacts: 400', async () => {
    const { registrar, store } = setup()
    await registrar.start()
    await registrar.handle(register({ contact: ['<sip:a@10.0.0.1>', '<sip:a@10.0.0.2>'] }))
    await rejects(registrar.handle(register({ contact: '*', cseq: 2 })), 400)
    await rejects(registrar.handle(register({ contact: '*', expires: 30, cseq: 2 })), 400)
    await rejects(registrar.handle(register({ contact: ['*', '<sip:a@10.0.0.3>'], expires: 0, cseq: 2 })), 400)
    const r = await registrar.handle(register({ contact: '*', expires: 0, cseq: 2 }))
    assert.equal(r.status, 200)
    assert.equal(registrar.lookup(AOR).length, 0)
    assert.equal(store.map.size, 0, 'nothing left in the store')
    registrar.stop()
  })

  test('same Call-ID with an older or equal CSeq is refused (500) and changes nothing', async () => {
    const { registrar } = setup()
    await registrar.start()
    await registrar.handle(register({ cseq: 5, expires: 600 }))
    await rejects(registrar.handle(register({ cseq: 5, expires: 0 })), 500)
    await rejects(registrar.handle(register({ cseq: 4, expires: 0 })), 500)
    await rejects(registrar.handle(register({ contact: '*', expires: 0, cseq: 3 })), 500)
    assert.equal(registrar.lookup(AOR).length, 1)
    // another Call-ID (a rebooted device) may update regardless of CSeq
    const r = await registrar.handle(register({ cseq: 1, callId: 'call-2', expires: 0 }))
    assert.equal(r.status, 200)
    assert.equal(registrar.lookup(AOR).length, 0)
    registrar.stop()
  })

  test('too brief: 423 with Min-Expires, all or nothing', async () => {
    const { registrar } = setup()
    await registrar.start()
    const r = await registrar.handle(register({ contact: ['<sip:a@10.0.0.1>', '<sip:a@10.0.0.2>;expires=10'], expires: 600 }))
    assert.equal(r.status, 423)
    assert.deepEqual(r.headers, [['Min-Expires', '60']])
    assert.equal(registrar.lookup(AOR).length, 0)
    registrar.stop()
  })

  test('foreign domain, foreign To, bad Expires, malformed Contact, Require, missing headers', async () => {
    const { registrar } = setup()
    await registrar.start()
    await rejects(registrar.handle(register({ uri: 'sip:other.org' })), 403)
    await rejects(registrar.handle(register({ to: '<sip:bob@other.org>' })), 404)
    await rejects(registrar.handle(register({ extra: [['Expires', 'soon']] })), 400)
    await rejects(registrar.handle(register({ extra: [['Expires', '-1']] })), 400)
    await rejects(registrar.handle(register({ contact: '<sip:a@10.0.0.1>;expires=99999999999999' })), 400)
    await rejects(registrar.handle(register({ contact: '<sip:a@bad host>' })), 400)
    await rejects(registrar.handle(register({ extra: [['Require', 'gruu']] })), 420)
    const noCallId = register()
    noCallId.headers.delete('Call-ID')
    await rejects(registrar.handle(noCallId), 400)
    await rejects(registrar.handle(register({ to: 'garbage<<' })), 400)
    assert.equal(registrar.registrations, 0)
    registrar.stop()
  })

  test('a claim that fails (rejected, or thrown at once) is 503 with Retry-After, binds nothing, and the AoR\'s turn goes on', async () => {
    for (const how of ['rejects', 'throws'] as const) {
      const mesh = new MemoryMesh()
      let failing = true
      class Failing extends MemoryRegistry {
        override claim (...args: Parameters<MemoryRegistry['claim']>): ReturnType<MemoryRegistry['claim']> {
          if (!failing) return super.claim(...args)
          if (how === 'throws') throw new Error('no replica at hand')
          return Promise.reject(new Error('no replica answered'))
        }
      }
      const registry = new Failing(mesh, { nodeId: 'node-a', sip: 'node-a.test:5060' })
      const registrar = new Registrar({ registry, store: new MemoryStore(), logger: testLogger() }, { domains: ['example.com'], minExpires: 60, maxExpires: 3600 })
      await registrar.start()
      // two at once for one AoR: the second waits its turn behind the failed first
      const [a, b] = await Promise.all([registrar.handle(register({ expires: 600 })), registrar.handle(register({ expires: 600, cseq: 2 }))])
      for (const r of [a, b]) {
        assert.equal(r.status, 503, how)
        assert.match(r.reason ?? '', /Registry Unavailable/)
        assert.ok((r.headers ?? []).some(([n]) => n === 'Retry-After'), how)
      }
      assert.equal(registrar.registrations, 0, how)
      assert.equal(registrar.pending, 0, how)
      failing = false
      assert.equal((await registrar.handle(register({ expires: 600, cseq: 3 }))).status, 200, how)
      assert.equal(registrar.pending, 0, how)
      registrar.stop()
    }
  })

  test('too many contacts: 403', async () => {
    const { registrar } = setup({ maxContactsPerAor: 2 })
    await registrar.start()
    await rejects(registrar.handle(register({ contact: ['<sip:a@10.0.0.1>', '<sip:a@10.0.0.2>', '<sip:a@10.0.0.3>'] })), 403)
    registrar.stop()
  })

  test('an AoR stays known once registered here: while bound, after unregistering, after expiry, and registered again', async () => {
    let now = Date.now()
    const { registrar } = setup({ minExpires: 1, now: () => now })
    await registrar.start()
    assert.equal(registrar.isKnown(AOR), false, 'never registered')
    await registrar.handle(register({ expires: 300 }))
    assert.equal(registrar.isKnown(AOR), true, 'bound')
    await registrar.handle(register({ expires: 0, cseq: 2 }))
    assert.equal(registrar.registrations, 0)
    assert.equal(registrar.isKnown(AOR), true, 'unregistered')
    await registrar.handle(register({ expires: 300, cseq: 3 }))
    assert.equal(registrar.isKnown(AOR), true, 'registered again')
    const bob = 'sip:bob@example.com'
    await registrar.handle(register({ expires: 1, to: `<${bob}>`, callId: 'call-bob' }))
    now += 1100
    for (let i = 0; i < 150 && registrar.lookup(bob).length > 0; i++) await new Promise(resolve => setTimeout(resolve, 10))
    for (let i = 0; i < 150 && registrar.registrations > 1; i++) await new Promise(resolve => setTimeout(resolve, 10))
    assert.equal(registrar.registrations, 1, 'bob expired')
    assert.equal(registrar.isKnown(bob), true, 'expired')
    assert.equal(registrar.isKnown('sip:carol@example.com'), false)
    registrar.stop()
  })

  test('bindings expire on their own and the claim is released', async () => {
    let now = Date.now()
    const { registrar, registry } = setup({ minExpires: 1, now: () => now })
    await registrar.start()
    await registrar.handle(register({ expires: 1 }))
    assert.equal(registrar.registrations, 1)
    now += 1100
    await new Promise(resolve => setTimeout(resolve, 1100))
    for (let i = 0; i < 50 && registrar.registrations > 0; i++) await new Promise(resolve => setTimeout(resolve, 10))
    assert.equal(registrar.registrations, 0)
    assert.equal(await registry.resolve(AOR, { fresh: true }), undefined)
    registrar.stop()
  })

  test('displacement: latest registration takes over, the displaced device gets 302 instead of re-claiming', async () => {
    const mesh = new MemoryMesh()
    const a = setup({}, mesh, 'node-a')
    const b = setup({}, mesh, 'node-b')
    await a.registrar.start(); await b.registrar.start()
    await a.registrar.handle(register({ callId: 'dev-1', contact: '<sip:alice@10.0.0.1>' }))
    const rb = await b.registrar.handle(register({ callId: 'dev-2', contact: '<sip:alice@10.0.0.2>' }))
    assert.equal(rb.status, 200)
    for (let i = 0; i < 100 && a.registrar.registrations > 0; i++) await new Promise(resolve => setTimeout(resolve, 5))
    assert.equal(a.registrar.registrations, 0, 'A dropped its bindings')
    // device 1 refreshes on A: redirected to B, no claim
    const refresh = await a.registrar.handle(register({ callId: 'dev-1', cseq: 2, contact: '<sip:alice@10.0.0.1>' }))
    assert.equal(refresh.status, 302)
    assert.deepEqual(refresh.headers, [['Contact', '<sip:alice@node-b.test:5060>']])
    assert.equal((await a.registry.resolve(AOR))?.node, 'node-b', 'no ping-pong')
    assert.equal(b.registrar.lookup(AOR).length, 1)
    a.registrar.stop(); b.registrar.stop()
  })

  test('first-keeps policy: a registration for an AoR held live elsewhere is redirected', async () => {
    const mesh = new MemoryMesh()
    const a = setup({}, mesh, 'node-a')
    const b = setup({ conflictPolicy: 'first-keeps' }, mesh, 'node-b')
    await a.registrar.start(); await b.registrar.start()
    await a.registrar.handle(register({ callId: 'dev-1' }))
    const r = await b.registrar.handle(register({ callId: 'dev-2', contact: '<sip:alice@10.0.0.2>' }))
    assert.equal(r.status, 302)
    assert.equal((await b.registry.resolve(AOR))?.node, 'node-a')
    assert.throws(() => setup({ conflictPolicy: 'nope' as 'first-keeps' }), RangeError)
    a.registrar.stop(); b.registrar.stop()
  })

  test('restart: still-valid stored registrations are re-claimed, expired and corrupt ones dropped', async () => {
    const mesh = new MemoryMesh()
    const store = new MemoryStore()
    const first = setup({}, mesh, 'node-a', store)
    await first.registrar.start()
    await first.registrar.handle(register({ expires: 600 }))
    first.registrar.stop()
    await first.registry.release(AOR) // as if the claim had lapsed while down
    store.map.set(STORE_PREFIX + 'sip:junk@example.com', new TextEncoder().encode('{not json'))
    store.map.set(STORE_PREFIX + 'sip:old@example.com', new TextEncoder().encode(JSON.stringify({ aor: 'sip:old@example.com', bindings: [{ uri: 'sip:x@1.2.3.4', params: {}, expiresAt: Date.now() - 1, callId: 'c', cseq: 1 }] })))
    const second = setup({}, mesh, 'node-a', store)
    await second.registrar.start()
    // re-claimed in the background
    await second.registrar.reclaimed()
    assert.equal(second.registrar.registrations, 1)
    assert.deepEqual(second.registrar.reclaim, { total: 1, claimed: 1, lost: 0, failed: 0, superseded: 0, expired: 2, done: true })
    assert.equal((await second.registry.resolve(AOR, { fresh: true }))?.node, 'node-a')
    assert.deepEqual([...store.map.keys()], [STORE_PREFIX + AOR])
    second.registrar.stop()
  })

  test('the contact index follows refreshes, changed and removed contacts, and a contact another AoR takes', async () => {
    const { registrar } = setup()
    await registrar.start()
    await registrar.handle(register({ contact: ['<sip:a@10.0.0.1>', '<sip:a@10.0.0.2>'], expires: 300 }))
    await registrar.handle(register({ contact: ['<sip:a@10.0.0.1>', '<sip:a@10.0.0.2>'], expires: 600, cseq: 2 }))
    assert.equal(registrar.findByContact('sip:a@10.0.0.1')?.aor, AOR)
    assert.equal(registrar.findByContact('sip:a@10.0.0.2')?.expiresAt, registrar.lookup(AOR).find(b => b.uri === 'sip:a@10.0.0.2')?.expiresAt)
    await registrar.handle(register({ contact: ['<sip:a@10.0.0.2>;expires=0', '<sip:a@10.0.0.3>'], cseq: 3 }))
    assert.equal(registrar.findByContact('sip:a@10.0.0.2'), undefined, 'removed')
    assert.equal(registrar.findByContact('sip:a@10.0.0.3')?.aor, AOR, 'added')
    const bob = 'sip:bob@example.com'
    await registrar.handle(register({ to: `<${bob}>`, contact: '<sip:a@10.0.0.1>', callId: 'bob-1' }))
    assert.equal(registrar.findByContact('sip:a@10.0.0.1')?.aor, bob, 'the AoR that bound it last')
    await registrar.handle(register({ contact: ['<sip:a@10.0.0.1>', '<sip:a@10.0.0.3>'], expires: 600, cseq: 4 }))
    assert.equal(registrar.findByContact('sip:a@10.0.0.1')?.aor, AOR, 'taken back by a refresh')
    await registrar.handle(register({ contact: '*', expires: 0, cseq: 5 }))
    assert.equal(registrar.findByContact('sip:a@10.0.0.1'), undefined)
    assert.equal(registrar.findByContact('sip:a@10.0.0.3'), undefined)
    registrar.stop()
  })

  test('concurrent REGISTERs for one AoR are serialized', async () => {
    const { registrar } = setup()
    await registrar.start()
    const rs = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => registrar.handle(register({ cseq: i + 1, contact: `<sip:a@10.0.1.${i}>` }))))
    // in order: the first 10 bind (the default cap), the next 10 are refused with 403
    assert.deepEqual(rs.map(r => r.status === 'fulfilled' ? r.value.status : (r.reason as SipStatusError).status),
      [...Array(10).fill(200), ...Array(10).fill(403)])
    assert.equal(registrar.lookup(AOR).length, 10)
    registrar.stop()
  })
})

describe('registrar: a refresh read without parses gives what the parses give', () => {
  /** the AoR the full parse of a To value gives, or the status its refusal is */
  function parsedAor (to: string): string | number {
    let aor
    try { aor = aorOf(parseNameAddr(to).uri) } catch { return 400 }
    return aor.endsWith('@example.com') ? aor : 404
  }

  test('To values next to a registered AoR: the same AoR (refreshed), another one, or refused as the parse says', async () => {
    const tos = [
      `<${AOR}>`, `"Alice" <${AOR}>`, `<${AOR}>;tag=x`, '<sip:alice@EXAMPLE.com>', '<sip:%61lice@example.com>', '<sip:alice@example.com:5060>',
      '<sips:alice@example.com>', `${AOR}`, '<sip:alice@example.com;transport=udp>', '<sip:alice:pw@example.com>',
      '<sip:Alice@example.com>', '<sip:alice@example.co>', '<sip:alice@@example.com>', '<sip:@example.com>', '<sip:alice@>',
      '<sip:alice@example.com', `<${AOR}>>`, '<sip:al ice@example.com>', '<sip:alice@exa_mple.com>', '<sip:a;b@example.com>',
      '<sip:alice@example.com?x=1>', '<sip:alicé@example.com>', '<tel:+123>', '<sip:example.com>', '<sip:alice@other.org>',
      // users of every unreserved character, alone or together: new AoRs of the served domain
      '<sip:.@example.com>', '<sip:-@example.com>', "<sip:a'b@example.com>", '<sip:(x)@example.com>', '<sip:a!b~c*_d.e-f@example.com>',
      '<sip:bob@example.com>', '<sip:alice@sub.example.com>', '<sip:alice@example.com.>', '<sip:alice@.example.com>'
    ]
    for (const to of tos) {
      const { registrar } = setup()
      await registrar.start()
      await registrar.handle(register({ expires: 600 }))
      const before = registrar.lookup(AOR)[0].expiresAt
      const expected = parsedAor(to)
      // 'invalid': an AoR the registry cannot hold (400 at the gateway's error boundary)
      const outcome = await registrar.handle(register({ to, cseq: 2, expires: 1200 })).then(r => r.status, (err: Error) => err.name === INVALID_AOR_ERROR ? 'invalid' : (err as SipStatusError).status)
      if (typeof expected === 'number') {
        assert.equal(outcome, expected, to)
        assert.equal(registrar.registrations, 1, to)
      } else if (expected === AOR) {
        assert.equal(outcome, 200, to)
        assert.equal(registrar.registrations, 1, `${to}: alice's binding refreshed`)
        assert.ok(registrar.lookup(AOR)[0].expiresAt > before, to)
      } else if (outcome === 'invalid') {
        assert.notEqual(expected, AOR, to)
        assert.equal(registrar.registrations, 1, to)
      } else {
        assert.equal(outcome, 200, to)
        assert.equal(registrar.registrations, 2, `${to}: another AoR`)
        assert.equal(registrar.lookup(expected).length, 1, to)
      }
      registrar.stop()
    }
  })

  test('CSeq values: the number parseCSeq reads, or its refusal', async () => {
    const cases: Array<[cseq: string, ok: boolean]> = [
      ['2 REGISTER', true], ['0002 REGISTER', true], ['4294967295 REGISTER', true], ['2  REGISTER', true], ['2\tREGISTER', true],
      ['2 INVITE', true], ['4294967296 REGISTER', false], ['12345678901 REGISTER', false], ['2a REGISTER', false], [' REGISTER', false],
      ['REGISTER', false], ['2 REG ISTER', false], ['-2 REGISTER', false], ['2 REGISTER ', true]
    ]
    for (const [cseq, ok] of cases) {
      const { registrar } = setup()
      await registrar.start()
      await registrar.handle(register({ expires: 600 }))
      const req = register({ expires: 1200 })
      req.headers.set('CSeq', cseq)
      const outcome = await registrar.handle(req).then(r => r.status, (err: SipStatusError) => err.status)
      assert.equal(outcome, ok ? 200 : 400, cseq)
      // the same Call-ID with a CSeq at or below the one read: 500 (the number was read, not a default)
      if (ok) {
        const again = register({ expires: 1200 })
        again.headers.set('CSeq', cseq)
        await rejects(registrar.handle(again), 500)
      }
      registrar.stop()
    }
  })

  test('Contact lines: one, several, a list in one line, an empty one, * among others', async () => {
    const { registrar } = setup()
    await registrar.start()
    let r = await registrar.handle(register({ contact: '<sip:a@10.0.0.1>, <sip:a@10.0.0.2>', expires: 600 }))
    assert.deepEqual(contactsOf(r).sort(), ['<sip:a@10.0.0.1>;expires=600', '<sip:a@10.0.0.2>;expires=600'])
    r = await registrar.handle(register({ contact: ['<sip:a@10.0.0.3>', '<sip:a@10.0.0.1>;expires=0'], expires: 600, cseq: 2 }))
    assert.deepEqual(contactsOf(r).sort(), ['<sip:a@10.0.0.2>;expires=600', '<sip:a@10.0.0.3>;expires=600'])
    // an empty Contact line is no Contact: a query
    r = await registrar.handle(register({ contact: '', cseq: 3 }))
    assert.equal(r.status, 200)
    assert.equal(contactsOf(r).length, 2)
    await rejects(registrar.handle(register({ contact: '<sip:a@10.0.0.4>, *', expires: 0, cseq: 4 })), 400)
    await rejects(registrar.handle(register({ contact: ['*', '<sip:a@10.0.0.4>'], expires: 0, cseq: 4 })), 400)
    r = await registrar.handle(register({ contact: ' * ', expires: 0, cseq: 5 }))
    assert.deepEqual(contactsOf(r), [])
    registrar.stop()
  })
})
