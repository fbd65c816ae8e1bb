import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import {
  AuthorizationRuleError, documentForWatcher, explain, frontEndDecision, neutralPresence, normalizeAor, normalizeDomain, parseRules,
  parseDocument, parseVersion, PresenceAuthorization, serializeRules, STORE_PREFIX
} from '../../../sip-gateway/presence/authorization.ts'
import type { BackEndOutcome, Decision } from '../../../sip-gateway/presence/authorization.ts'
import { registrationPresence } from '../../../sip-gateway/presence/compose.ts'
import { buildPidf } from '../../../sip-gateway/presence/pidf.ts'
import type { DurableStore } from '../../../sip-gateway/ports.ts'

/** A Map-backed DurableStore with an optional delay per write, to expose ordering bugs. */
class MapStore implements DurableStore {
  readonly data = new Map<string, Uint8Array>()
  delays: number[] = []
  async get (key: string): Promise<Uint8Array | undefined> { return this.data.get(key) }
  async put (key: string, value: Uint8Array): Promise<void> {
    const delay = this.delays.shift() ?? 0
    if (delay > 0) await new Promise(resolve => setTimeout(resolve, delay))
    this.data.set(key, value)
  }

  async delete (key: string): Promise<void> { this.data.delete(key) }
  async * list (prefix: string): AsyncIterable<[string, Uint8Array]> {
    for (const key of [...this.data.keys()].sort()) {
      if (key.startsWith(prefix)) yield [key, this.data.get(key) as Uint8Array]
    }
  }
}

const ALICE = 'sip:alice@example.com'

function ruleError (code: string): (err: unknown) => boolean {
  return (err: unknown) => err instanceof AuthorizationRuleError && err.name === 'AuthorizationRuleError' && err.code === code && err.status === 400
}

describe('rule input validation', () => {
  test('AoRs are normalised: scheme and domain lower-cased, user kept', () => {
    assert.equal(normalizeAor(' SIP:Bob@Example.COM '), 'sip:Bob@example.com')
    assert.equal(normalizeAor('sips:bob.smith%20x@sub.example.com'), 'sip:bob.smith%20x@sub.example.com')
    assert.equal(normalizeAor('sip:%61lice@Example.COM'), 'sip:alice@example.com')
    assert.equal(normalizeAor('sip:bob@192.0.2.1'), 'sip:bob@192.0.2.1')
  })

  for (const bad of ['', 'bob', 'bob@example.com', 'tel:+123', 'sip:@example.com', 'sip:bob@', 'sip:bob@example.com:5060',
    'sip:bob@example.com;transport=tcp', 'sip:b ob@example.com', 'sip:bob@-x.com', 'sip:bob@exa_mple.com', 'sip:bob@999.1.1.1',
    'sip:bob@a..b', '<sip:bob@example.com>', `sip:${'a'.repeat(300)}@x.com`, 'sip:bob@x.com\nInjected: yes']) {
    test(`rejects AoR ${JSON.stringify(bad).slice(0, 40)}`, () => assert.throws(() => normalizeAor(bad), ruleError('bad-aor')))
  }
  for (const bad of [undefined, 42, null, {}]) {
    test(`rejects non-string AoR ${String(bad)}`, () => assert.throws(() => normalizeAor(bad), ruleError('bad-aor')))
  }

  test('domains are validated', () => {
    assert.equal(normalizeDomain('Example.COM.'), 'example.com')
    for (const bad of ['', '.', 'a..b', '-a.com', 'a-.com', 'exa mple.com', `${'a'.repeat(64)}.com`, '__proto__', '1.2.3', 'example.com:80', 42]) {
      assert.throws(() => normalizeDomain(bad), ruleError('bad-domain'), String(bad))
    }
  })

  test('rule sets from JSON are validated strictly', () => {
    assert.deepEqual(parseRules({ default: 'block', watchers: { 'sip:Bob@EXAMPLE.org': 'allow' }, domains: { 'Example.net': 'polite-block' } }),
      { default: 'block', watchers: { 'sip:Bob@example.org': 'allow' }, domains: { 'example.net': 'polite-block' } })
    assert.throws(() => parseRules(null), ruleError('bad-rules'))
    assert.throws(() => parseRules([]), ruleError('bad-rules'))
    assert.throws(() => parseRules({ extra: 1 }), ruleError('bad-rules'))
    assert.throws(() => parseRules({ v: 2 }), ruleError('bad-rules'))
    assert.throws(() => parseRules({ watchers: [] }), ruleError('bad-rules'))
    assert.throws(() => parseRules({ default: 'maybe' }), ruleError('bad-decision'))
    assert.throws(() => parseRules({ watchers: { 'sip:a@b.c': 'confirm' } }), ruleError('bad-decision'))
    assert.throws(() => parseRules({ watchers: { 'not an aor': 'allow' } }), ruleError('bad-aor'))
    assert.throws(() => parseRules(JSON.parse('{"domains":{"__proto__":"allow"}}')), ruleError('bad-domain'))
    const many = Object.fromEntries(Array.from({ length: 11 }, (_, i) => [`sip:u${i}@x.com`, 'allow']))
    assert.throws(() => parseRules({ watchers: many }, 10), ruleError('too-many-rules'))
  })

  test('serialize → parse round trip (property)', () => {
    const decision = fc.constantFrom<Decision>('allow', 'block', 'polite-block')
    const label = fc.stringMatching(/^[a-z][a-z0-9]{0,5}$/)
    const domain = fc.array(label, { minLength: 1, maxLength: 3 }).map(l => l.join('.'))
    const aor = fc.tuple(fc.stringMatching(/^[a-z0-9._]{1,8}$/), domain).map(([u, d]) => `sip:${u}@${d}`)
    fc.assert(fc.property(fc.option(decision, { nil: undefined }), fc.dictionary(aor, decision), fc.dictionary(domain, decision), (def, watchers, domains) => {
      const plain = { watchers: { ...watchers }, domains: { ...domains } }
      const rules = def === undefined ? plain : { default: def, ...plain }
      assert.deepEqual(parseRules(JSON.parse(serializeRules(rules))), rules)
    }), { numRuns: 200 })
  })
})

describe('decide: precedence', () => {
  const rules = parseRules({
    default: 'polite-block',
    watchers: { 'sip:bob@example.org': 'allow', 'sip:eve@example.org': 'block' },
    domains: { 'example.org': 'block', 'sales.example.org': 'allow', 'partner.net': 'allow' }
  })
  const cases: Array<[string, Decision, string]> = [
    ['sip:bob@example.org', 'allow', 'watcher'], // exact AoR beats its domain's block
    ['sip:eve@example.org', 'block', 'watcher'],
    ['sip:carl@example.org', 'block', 'domain'],
    ['sip:dan@sales.example.org', 'allow', 'domain'], // the longest domain wins
    ['sip:fay@eu.sales.example.org', 'allow', 'domain'], // subdomains are covered
    ['sip:gus@partner.net', 'allow', 'domain'],
    ['sip:hal@notexample.org', 'polite-block', 'presentity-default'], // no suffix confusion
    ['sip:ian@other.com', 'polite-block', 'presentity-default'],
    ['SIP:Bob@EXAMPLE.ORG', 'block', 'domain'], // the user part is case-sensitive, the domain is not
    ['sips:bob@example.org', 'allow', 'watcher'], // sips: is the same AoR as sip: (codec's aorOf), so bob's own rule applies
    ['garbage', 'polite-block', 'presentity-default'],
    ['sip:x@sales.example.org:5060;transport=tcp', 'allow', 'domain'] // not an AoR, but its domain still matches
  ]
  for (const [watcher, decision, matched] of cases) {
    test(`${watcher} → ${decision} (${matched})`, () => {
      const e = explain(rules, watcher, 'allow')
      assert.equal(e.decision, decision)
      assert.equal(e.matched, matched)
    })
  }

  test('the node default applies when the presentity has no rule and no default', () => {
    assert.deepEqual(explain(undefined, 'sip:x@y.com', 'block'), { decision: 'block', matched: 'node-default' })
    assert.deepEqual(explain(parseRules({ domains: { 'z.com': 'allow' } }), 'sip:x@y.com', 'polite-block'), { decision: 'polite-block', matched: 'node-default' })
  })
})

describe('PresenceAuthorization', () => {
  test('rules set through the API decide, persist, and load back in a new instance', async () => {
    const store = new MapStore()
    const auth = new PresenceAuthorization({ store, nodeDefault: 'allow' })
    assert.equal(auth.decide(ALICE, 'sip:bob@example.org'), 'allow')
    await auth.setRule(ALICE, { watcher: 'sip:bob@example.org' }, 'block')
    await auth.setRule(ALICE, { domain: 'spam.example' }, 'polite-block')
    await auth.setDefault('SIP:alice@EXAMPLE.com', 'block')
    assert.equal(auth.decide(ALICE, 'sip:bob@example.org'), 'block')
    assert.equal(auth.decide(ALICE, 'sip:x@spam.example'), 'polite-block')
    assert.equal(auth.decide(ALICE, 'sip:x@elsewhere.example'), 'block')
    assert.equal(auth.decide('sip:carol@example.com', 'sip:bob@example.org'), 'allow')
    assert.deepEqual([...store.data.keys()], [`${STORE_PREFIX}${ALICE}`])

    const again = new PresenceAuthorization({ store, nodeDefault: 'allow' })
    assert.deepEqual(await again.load(), { loaded: 1, skipped: 0 })
    assert.deepEqual(again.get(ALICE), auth.get(ALICE))
    assert.equal(again.decide(ALICE, 'sip:x@spam.example'), 'polite-block')
    assert.deepEqual(again.presentities(), [ALICE])

    await again.removeRule(ALICE, { watcher: 'sip:bob@example.org' })
    await again.removeRule(ALICE, { domain: 'spam.example' })
    await again.setDefault(ALICE, undefined)
    // an emptied rule set stays as an empty versioned document (a tombstone): an older copy from
    // another node cannot bring the old rules back
    assert.equal(store.data.size, 1, 'an empty rule set is kept with its version')
    assert.deepEqual(again.presentities(), [])
    assert.equal(await again.accept(ALICE, { rules: { default: 'block', watchers: {}, domains: {} }, version: 1n }), 'stale')
    assert.equal(again.decide(ALICE, 'sip:x@elsewhere.example'), 'allow')
  })

  test('bad input is refused before anything changes', async () => {
    const store = new MapStore()
    const auth = new PresenceAuthorization({ store, maxRulesPerPresentity: 2 })
    await assert.rejects(auth.setRule(ALICE, { watcher: 'bob' }, 'block'), ruleError('bad-aor'))
    await assert.rejects(auth.setRule('alice', { watcher: 'sip:bob@x.com' }, 'block'), ruleError('bad-aor'))
    await assert.rejects(auth.setRule(ALICE, { domain: 'x y' }, 'block'), ruleError('bad-domain'))
    await assert.rejects(auth.setRule(ALICE, { domain: 'x.com' }, 'deny' as Decision), ruleError('bad-decision'))
    await assert.rejects(auth.replace(ALICE, { watchers: { 'sip:a@b.com': 'allow' }, bogus: true }), ruleError('bad-rules'))
    assert.equal(store.data.size, 0)
    await auth.setRule(ALICE, { watcher: 'sip:a@x.com' }, 'allow')
    await auth.setRule(ALICE, { domain: 'x.com' }, 'allow')
    await auth.setRule(ALICE, { domain: 'x.com' }, 'block') // replacing a rule needs no room
    await assert.rejects(auth.setRule(ALICE, { domain: 'y.com' }, 'allow'), ruleError('too-many-rules'))
    assert.deepEqual(auth.get(ALICE), { watchers: { 'sip:a@x.com': 'allow' }, domains: { 'x.com': 'block' } })
    assert.throws(() => new PresenceAuthorization({ nodeDefault: 'maybe' as Decision }), ruleError('bad-decision'))
  })

  test('replace sets a whole rule set from admin JSON', async () => {
    const auth = new PresenceAuthorization()
    await auth.setDefault(ALICE, 'block')
    await auth.replace(ALICE, { watchers: { 'sip:bob@x.com': 'polite-block' } })
    assert.deepEqual(auth.get(ALICE), { watchers: { 'sip:bob@x.com': 'polite-block' }, domains: {} })
  })

  test('writes of one presentity reach the store in order even when the store is slow', async () => {
    const store = new MapStore()
    store.delays = [30, 0, 0]
    const auth = new PresenceAuthorization({ store })
    await Promise.all([
      auth.setDefault(ALICE, 'block'),
      auth.setDefault(ALICE, 'allow'),
      auth.setDefault(ALICE, 'polite-block')
    ])
    const stored = JSON.parse(new TextDecoder().decode(store.data.get(STORE_PREFIX + ALICE)))
    assert.equal(stored.default, 'polite-block')
  })

  test('a failing store leaves memory as the store has it, and the error surfaces', async () => {
    const store = new MapStore()
    const auth = new PresenceAuthorization({ store })
    await auth.setDefault(ALICE, 'block')
    const put = store.put.bind(store)
    store.put = async () => { throw new Error('disk full') }
    await assert.rejects(auth.setDefault(ALICE, 'allow'), /disk full/)
    assert.equal(auth.decide(ALICE, 'sip:x@y.com'), 'block')
    await assert.rejects(auth.setRule('sip:new@example.com', { watcher: 'sip:x@y.com' }, 'block'), /disk full/)
    assert.deepEqual(auth.presentities(), [ALICE])
    store.put = put
    await auth.setDefault(ALICE, 'allow')
    assert.equal(auth.decide(ALICE, 'sip:x@y.com'), 'allow')
  })

  test('an aborted signal stops a change before it happens', async () => {
    const auth = new PresenceAuthorization({ store: new MapStore() })
    await assert.rejects(auth.setDefault(ALICE, 'block', { signal: AbortSignal.abort() }), { name: 'AbortError' })
    assert.deepEqual(auth.presentities(), [])
  })

  test('corrupt persisted entries are skipped, not fatal', async () => {
    const store = new MapStore()
    const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
    store.data.set(`${STORE_PREFIX}${ALICE}`, enc('{"default":"block"}'))
    store.data.set(`${STORE_PREFIX}sip:b@x.com`, enc('{not json'))
    store.data.set(`${STORE_PREFIX}sip:c@x.com`, enc('{"default":"whatever"}'))
    store.data.set(`${STORE_PREFIX}not-an-aor`, enc('{"default":"block"}'))
    store.data.set(`${STORE_PREFIX}sip:d@x.com`, new Uint8Array([0xff, 0xfe]))
    const warnings: string[] = []
    const logger = { debug () {}, info () {}, warn (msg: string) { warnings.push(msg) }, error () {}, child () { return logger } }
    const auth = new PresenceAuthorization({ store, logger })
    assert.deepEqual(await auth.load(), { loaded: 1, skipped: 4 })
    assert.equal(warnings.length, 4)
    assert.equal(auth.decide(ALICE, 'sip:x@y.com'), 'block')
  })
})

describe('versioned documents (last writer wins)', () => {
  const doc = (version: bigint, d: Decision): { rules: { watchers: Record<string, Decision>, domains: Record<string, Decision> }, version: bigint } =>
    ({ rules: { watchers: { 'sip:bob@example.org': d }, domains: {} }, version })

  test('a change gets max(now, highest seen + 1); a received version moves the clock on', async () => {
    let now = 1000
    const auth = new PresenceAuthorization({ now: () => now })
    assert.equal((await auth.replace(ALICE, { default: 'block' })).version, 1000n)
    assert.equal((await auth.replace(ALICE, { default: 'allow' })).version, 1001n, 'same millisecond: +1')
    now = 500 // the clock stepped back
    assert.equal((await auth.replace(ALICE, { default: 'block' })).version, 1002n)
    assert.equal(await auth.accept('sip:carol@example.com', doc(5000n, 'block')), 'applied')
    assert.equal((await auth.replace(ALICE, { default: 'allow' })).version, 5001n, 'after a newer version from elsewhere')
    now = 9000
    assert.equal((await auth.replace(ALICE, {})).version, 9000n)
  })

  test('an older document arriving later does not replace a newer one; equal versions order by content', async () => {
    const store = new MapStore()
    const auth = new PresenceAuthorization({ store })
    assert.equal(await auth.accept(ALICE, doc(20n, 'block')), 'applied')
    assert.equal(await auth.accept(ALICE, doc(10n, 'allow')), 'stale')
    assert.equal(auth.decide(ALICE, 'sip:bob@example.org'), 'block')
    assert.equal(await auth.accept(ALICE, doc(20n, 'block')), 'same')
    // equal version, different rules: both nodes end with the same one whatever the order
    const other = new PresenceAuthorization()
    await other.accept(ALICE, doc(20n, 'polite-block'))
    await other.accept(ALICE, doc(20n, 'block'))
    await auth.accept(ALICE, doc(20n, 'polite-block'))
    assert.deepEqual(auth.document(ALICE), other.document(ALICE))
    assert.equal(await auth.accept(ALICE, doc(30n, 'allow')), 'applied')
    assert.equal(auth.decide(ALICE, 'sip:bob@example.org'), 'allow')
    // persisted with the version, loaded back as it was
    const again = new PresenceAuthorization({ store })
    await again.load()
    assert.deepEqual(again.document(ALICE), { rules: { watchers: { 'sip:bob@example.org': 'allow' }, domains: {} }, version: 30n })
    assert.equal(await again.accept(ALICE, doc(29n, 'block')), 'stale')
  })

  test('documents from JSON: the version is a decimal string; rules stored before versions load as version 0', async () => {
    assert.deepEqual(parseDocument(JSON.parse(serializeRules({ default: 'block', watchers: {}, domains: {} }, 123n))), { rules: { default: 'block', watchers: {}, domains: {} }, version: 123n })
    assert.equal(parseVersion({}), 0n)
    for (const bad of [12, '-1', '01', '1e3', 'x', '1'.repeat(21)]) assert.throws(() => parseDocument({ version: bad }), ruleError('bad-rules'), String(bad))
    const store = new MapStore()
    store.data.set(`${STORE_PREFIX}${ALICE}`, new TextEncoder().encode('{"v":1,"default":"block","watchers":{},"domains":{}}'))
    const auth = new PresenceAuthorization({ store })
    await auth.load()
    assert.equal(auth.document(ALICE)?.version, 0n)
    assert.equal(await auth.accept(ALICE, doc(1n, 'allow')), 'applied')
  })
})

describe('polite-block and the privacy rule', () => {
  test('a polite-blocked watcher sees exactly what an offline user looks like', () => {
    const entity = 'pres:alice@example.com'
    assert.equal(buildPidf(neutralPresence(entity)), buildPidf(registrationPresence(entity, 0)))
    assert.equal(neutralPresence(entity).tuples[0].status.basic, 'closed')
    assert.equal(neutralPresence(entity).notes.length + neutralPresence(entity).extra.length, 0)
  })

  test('documentForWatcher: real state only when allowed', () => {
    const entity = 'pres:alice@example.com'
    const pub = { key: '1', doc: { entity, tuples: [{ id: 'd', status: { basic: 'open' as const, extra: [] }, extra: [], notes: [{ text: 'in Tokyo' }] }], notes: [], extra: [] } }
    assert.equal(documentForWatcher('allow', entity, [pub], 1)?.tuples[0].notes[0].text, 'in Tokyo')
    assert.equal(documentForWatcher('allow', entity, [], 1)?.tuples[0].status.basic, 'open')
    assert.deepEqual(documentForWatcher('polite-block', entity, [pub], 1), neutralPresence(entity))
    assert.deepEqual(documentForWatcher('pending', entity, [pub], 1), neutralPresence(entity))
    assert.equal(documentForWatcher('block', entity, [pub], 1), undefined)
  })

  test('frontEndDecision: a denied back-end subscription denies the watcher whatever the local rules', () => {
    const table: Array<[Decision, BackEndOutcome, string]> = [
      ['allow', 'accepted', 'allow'],
      ['allow', 'none', 'allow'],
      ['allow', 'pending', 'pending'],
      ['allow', 'denied', 'block'],
      ['allow', 'loop', 'allow'],
      ['allow', 'failed', 'pending'],
      ['polite-block', 'accepted', 'polite-block'],
      ['polite-block', 'pending', 'polite-block'],
      ['polite-block', 'denied', 'block'],
      ['block', 'accepted', 'block'],
      ['block', 'denied', 'block']
    ]
    for (const [local, backEnd, want] of table) assert.equal(frontEndDecision(local, backEnd), want, `${local} + ${backEnd}`)
    fc.assert(fc.property(fc.constantFrom<Decision>('allow', 'block', 'polite-block'), local => frontEndDecision(local, 'denied') === 'block'))
  })
})
