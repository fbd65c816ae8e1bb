// Resource list validation (admin API JSON), RFC 4826 documents (ad hoc lists) and the persisted
// list store: limits, hostile input, nested lists refused.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { ListError, MAX_LIST_MEMBERS, parseResourceList } from '../../../../sip-gateway/presence/lists/list.ts'
import { parseResourceLists, ResourceListsError, RESOURCE_LISTS_NS } from '../../../../sip-gateway/presence/lists/resource-lists.ts'
import { ListStore, LIST_STORE_PREFIX } from '../../../../sip-gateway/presence/lists/store.ts'
import { MemoryStore } from '../../../../sip-gateway/memory-store.ts'
import type { Logger } from '../../../../sip-gateway/ports.ts'

const domains = new Set(['example.com'])
const silentLogger: Logger = { debug () {}, info () {}, warn () {}, error () {}, child () { return silentLogger } }
const fails = (fn: () => unknown, status: number, code: string): void => {
  assert.throws(fn, (err: unknown) => err instanceof ListError && err.status === status && err.code === code)
}

describe('resource list JSON', () => {
  test('members are normalized and de-duplicated, the owner kept', () => {
    const l = parseResourceList('sip:Friends@EXAMPLE.com', { members: ['sip:bob@Example.COM', 'sip:bob@example.com;transport=tcp', 'tel:+123'], owner: 'sip:alice@example.com' }, domains)
    assert.deepEqual(l, { uri: 'sip:Friends@example.com', members: ['sip:bob@example.com', 'tel:+123'], owner: 'sip:alice@example.com' })
  })

  test('bad and hostile input is refused with a status and a stable code', () => {
    fails(() => parseResourceList('sip:l@other.org', { members: [] }, domains), 400, 'bad_aor')
    fails(() => parseResourceList('not a uri', { members: [] }, domains), 400, 'bad_aor')
    fails(() => parseResourceList('sip:example.com', { members: [] }, domains), 400, 'bad_aor')
    fails(() => parseResourceList('sip:l@example.com', [], domains), 400, 'bad_list')
    fails(() => parseResourceList('sip:l@example.com', null, domains), 400, 'bad_list')
    fails(() => parseResourceList('sip:l@example.com', { members: 'sip:a@x' }, domains), 400, 'bad_list')
    fails(() => parseResourceList('sip:l@example.com', { members: [], extra: 1 }, domains), 400, 'bad_list')
    fails(() => parseResourceList('sip:l@example.com', { members: [42] }, domains), 400, 'bad_aor')
    fails(() => parseResourceList('sip:l@example.com', { members: ['sip:' + 'a'.repeat(600) + '@x'] }, domains), 400, 'bad_aor')
    fails(() => parseResourceList('sip:l@example.com', { members: ['sip:x'] }, domains), 400, 'bad_aor')
    fails(() => parseResourceList('sip:l@example.com', { members: ['sip:L@example.com'.replace('L', 'l')] }, domains), 400, 'nested_list')
    fails(() => parseResourceList('sip:l@example.com', { members: [], owner: 7 }, domains), 400, 'bad_aor')
    const many = Array.from({ length: 10_000 }, (_, i) => `sip:u${i}@example.com`)
    fails(() => parseResourceList('sip:l@example.com', { members: many }, domains), 413, 'too_large')
    assert.equal(parseResourceList('sip:l@example.com', { members: many.slice(0, MAX_LIST_MEMBERS) }, domains).members.length, MAX_LIST_MEMBERS)
  })
})

describe('resource-lists documents (RFC 4826)', () => {
  const doc = (inner: string): string => `<?xml version="1.0"?><resource-lists xmlns="${RESOURCE_LISTS_NS}"><list>${inner}</list></resource-lists>`
  test('entries of nested lists are flattened and de-duplicated', () => {
    assert.deepEqual(parseResourceLists(doc('<entry uri="sip:a@x"/><list name="w"><entry uri="sip:b@x"><display-name>B</display-name></entry><entry uri="sip:a@X"/></list>')), ['sip:a@x', 'sip:b@x'])
  })

  test('hostile and malformed documents are refused', () => {
    const bad = [
      '', 'plain', '<resource-lists', doc('<entry uri="sip:a@x">'),
      `<!DOCTYPE l [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>${doc('<entry uri="&b;"/>')}`,
      '<resource-lists xmlns="urn:other"><list/></resource-lists>',
      `<resource-lists xmlns="${RESOURCE_LISTS_NS}"/>`,
      doc('<entry/>'), doc('<entry uri="http://x/y"/>'),
      doc('<entry-ref ref="resource-lists/users/sip:bob@x/index/~~/resource-lists/list%5b@name=%22a%22%5d"/>'),
      doc('<external anchor="http://127.0.0.1/evil"/>'),
      doc('<list>'.repeat(40) + '</list>'.repeat(40)),
      doc(Array.from({ length: 10_000 }, (_, i) => `<entry uri="sip:u${i}@x"/>`).join(''))
    ]
    for (const b of bad) assert.throws(() => parseResourceLists(b), ResourceListsError, b.slice(0, 60))
    const over = doc(Array.from({ length: 30 }, (_, i) => `<entry uri="sip:u${i}@x"/>`).join(''))
    assert.throws(() => parseResourceLists(over, { maxEntries: 20 }), (e: unknown) => e instanceof ResourceListsError && e.status === 413)
  })
})

describe('ListStore', () => {
  test('lists persist across a restart; nested lists and too many lists are refused', async () => {
    const store = new MemoryStore()
    const a = new ListStore({ store, logger: silentLogger }, { maxLists: 2 })
    const changed: string[] = []
    a.onChange(u => changed.push(u))
    await a.put({ uri: 'sip:l1@example.com', members: ['sip:bob@example.com'], owner: 'sip:alice@example.com' })
    await a.put({ uri: 'sip:l2@example.com', members: ['sip:carol@example.com'] })
    await assert.rejects(a.put({ uri: 'sip:l3@example.com', members: [] }), (e: unknown) => e instanceof ListError && e.status === 413)
    await assert.rejects(a.put({ uri: 'sip:l2@example.com', members: ['sip:l1@example.com'] }), (e: unknown) => e instanceof ListError && e.code === 'nested_list')
    await assert.rejects(a.put({ uri: 'sip:bob@example.com', members: [] }), (e: unknown) => e instanceof ListError && e.code === 'nested_list')
    await a.put({ uri: 'sip:l2@example.com', members: ['sip:dan@example.com'] })
    assert.deepEqual(changed, ['sip:l1@example.com', 'sip:l2@example.com', 'sip:l2@example.com'])
    store.map.set(LIST_STORE_PREFIX + 'junk', new TextEncoder().encode('{not json'))

    const b = new ListStore({ store, logger: silentLogger })
    assert.deepEqual(await b.load(), { loaded: 2, skipped: 1 })
    assert.deepEqual(b.get('sip:l1@example.com'), { uri: 'sip:l1@example.com', members: ['sip:bob@example.com'], owner: 'sip:alice@example.com' })
    assert.deepEqual(b.get('sip:l2@example.com')?.members, ['sip:dan@example.com'])
    assert.equal(await b.delete('sip:l2@example.com'), true)
    assert.equal(await b.delete('sip:l2@example.com'), false)
    // carol's old list is gone: carol may now be a list herself
    await b.put({ uri: 'sip:carol@example.com', members: [] })
    const c = new ListStore({ store, logger: silentLogger })
    await c.load()
    assert.equal(c.has('sip:l2@example.com'), false)
    assert.equal(c.has('sip:carol@example.com'), true)
  })
})
