// The list exchange's mesh side (lists/exchange.ts): what a node does with pushes of list edits,
// deletions and moves from a list's home, including malformed, oversized and stale ones, and the
// version it answers a fetch with. Runs the real ListExchange, ListStore and memory registry; the
// agent's requests are not attached, so nothing is sent out (the multi-node flow is in
// test/sip-gateway/presence/lists.test.ts and test/e2e/lists.test.ts).
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { ListExchange, LIST_CONTENT_TYPE, LIST_EVENT, LIST_HOME_HEADER, LIST_VERSION_HEADER, MAX_LIST_BODY } from '../../../../sip-gateway/presence/lists/exchange.ts'
import { ListStore } from '../../../../sip-gateway/presence/lists/store.ts'
import type { ResourceList } from '../../../../sip-gateway/presence/lists/list.ts'
import { AgentRequests } from '../../../../sip-gateway/presence/requests.ts'
import { MemoryStore } from '../../../../sip-gateway/memory-store.ts'
import { MemoryMesh, MemoryRegistry } from '../../../../dht/memory-registry.ts'
import type { SipRequest, SipResponse } from '../../../../sip-gateway/codec/index.ts'
import { meshPublish } from '../mesh-publish.ts'
import type { ServerTransaction } from '../../../../sip-gateway/transaction/layer.ts'
import type { Logger } from '../../../../sip-gateway/ports.ts'

const silentLogger: Logger = { debug () {}, info () {}, warn () {}, error () {}, child () { return silentLogger } }
const LIST = 'sip:team@example.com'

function publish (o: { version?: string, body?: string | Uint8Array, contentType?: string, expires?: string, home?: string, uri?: string } = {}): SipRequest {
  const body = o.body === undefined ? new Uint8Array(0) : typeof o.body === 'string' ? Buffer.from(o.body) : o.body
  return meshPublish(o.uri ?? LIST, LIST_EVENT, [
    [LIST_VERSION_HEADER, o.version], ['Expires', o.expires], [LIST_HOME_HEADER, o.home],
    ['Content-Type', body.length > 0 ? o.contentType ?? LIST_CONTENT_TYPE : undefined]
  ], body)
}

async function holder (): Promise<{ exchange: ListExchange, lists: ListStore, answer: (r: SipRequest, fromMesh?: boolean) => SipResponse, answerLater: (r: SipRequest) => Promise<SipResponse>, applied: Array<ResourceList | undefined>, removed: string[], inUse: { value: boolean }, stop: () => Promise<void> }> {
  const registry = new MemoryRegistry(new MemoryMesh(), { nodeId: 'node-c', sip: '127.0.0.1:0' })
  const lists = new ListStore({ store: new MemoryStore(), logger: silentLogger })
  const applied: Array<ResourceList | undefined> = []
  const inUse = { value: true }
  const removed: string[] = []
  let last: SipResponse | undefined
  const exchange = new ListExchange({
    lists,
    registry,
    requests: new AgentRequests({ registry, logger: silentLogger }),
    logger: silentLogger,
    domains: new Set(['example.com']),
    respond: (_tx, r) => { last = r },
    applied: (_uri, list) => { applied.push(list) },
    inUse: () => inUse.value,
    remove: async (uri) => { removed.push(uri); return await lists.delete(uri) }
  })
  const answer = (r: SipRequest, fromMesh = true): SipResponse => {
    last = undefined
    exchange.handle(r, {} as unknown as ServerTransaction, fromMesh, 'node-a')
    assert.ok(last !== undefined, 'answered')
    return last
  }
  const answerLater = async (r: SipRequest): Promise<SipResponse> => {
    last = undefined
    exchange.handle(r, {} as unknown as ServerTransaction, true, 'node-a')
    for (let i = 0; i < 100 && last === undefined; i++) await new Promise(resolve => setTimeout(resolve, 5))
    assert.ok(last !== undefined, 'answered')
    return last
  }
  return { exchange, lists, answer, answerLater, applied, removed, inUse, stop: async () => { await registry.stop() } }
}

const json = (members: string[]): string => JSON.stringify({ members })

describe('list exchange: pushes from a list home', () => {
  test('an edit is applied once; an older or equal version never wins; a deletion leaves a tombstone', async () => {
    const h = await holder()
    try {
      assert.equal(h.answer(publish({ version: '5', body: json(['sip:a@example.com']) })).status, 200)
      assert.deepEqual(h.applied.map(l => l?.members), [['sip:a@example.com']])
      assert.equal(h.applied[0]?.version, 5)
      // stale and repeated pushes: answered 200, nothing applied
      assert.equal(h.answer(publish({ version: '4', body: json(['sip:old@example.com']) })).status, 200)
      assert.equal(h.answer(publish({ version: '5', body: json(['sip:b@example.com']) })).status, 200)
      assert.equal(h.answer(publish({ version: '3', expires: '0' })).status, 200)
      assert.equal(h.applied.length, 1)
      // a newer deletion is applied; an edit older than it does not bring the list back
      assert.equal(h.answer(publish({ version: '6', expires: '0' })).status, 200)
      assert.deepEqual(h.applied.slice(1), [undefined])
      assert.equal(h.answer(publish({ version: '5', body: json(['sip:c@example.com']) })).status, 200)
      assert.equal(h.applied.length, 2)
      assert.equal(await h.exchange.find(LIST), undefined, 'the tombstone answers new subscriptions: no list')
      // a later edit (a new PUT after the deletion) is taken
      assert.equal(h.answer(publish({ version: '7', body: json(['sip:d@example.com']) })).status, 200)
      assert.deepEqual(h.applied.at(-1)?.members, ['sip:d@example.com'])
      assert.deepEqual((await h.exchange.find(LIST))?.members, ['sip:d@example.com'])
    } finally { await h.stop() }
  })

  test('a node holding no copy and no subscription answers 404, so the home forgets it', async () => {
    const h = await holder()
    try {
      h.inUse.value = false
      assert.equal(h.answer(publish({ version: '5', body: json(['sip:a@example.com']) })).status, 404)
      assert.equal(h.answer(publish({ version: '5', expires: '0' })).status, 404)
      assert.equal(h.applied.length, 0)
    } finally { await h.stop() }
  })

  test('malformed, oversized and hostile pushes: 4xx, nothing applied', async () => {
    const h = await holder()
    try {
      const body = json(['sip:a@example.com'])
      for (const version of [undefined, '', 'abc', '-1', '1.5', '1e400', '99999999999999999999', '0x10']) {
        assert.equal(h.answer(publish({ version, body })).status, 400, `version ${String(version)}`)
      }
      assert.equal(h.answer(publish({ version: '5', body, contentType: 'application/json' })).status, 415)
      for (const bad of ['{"members": [', '[]', '{"members": "sip:a@example.com"}', '{"members": [], "extra": 1}', '{"members": ["http://x"]}', '\u0000\u0001', JSON.stringify({ members: [LIST] })]) {
        assert.equal(h.answer(publish({ version: '5', body: bad })).status, 400, bad)
      }
      assert.equal(h.answer(publish({ version: '5', body: new Uint8Array([0xff, 0xfe, 0x7b]) })).status, 400, 'not UTF-8')
      assert.equal(h.answer(publish({ version: '5', body: JSON.stringify({ members: Array.from({ length: 5000 }, (_, i) => `sip:user${i}@example.com`) }) })).status, 413)
      assert.ok(MAX_LIST_BODY < 5000 * 24)
      // a move naming no node, this node itself, or an absurd id
      for (const home of ['', 'node-c', 'x'.repeat(200)]) assert.equal(h.answer(publish({ version: '5', expires: '0', home })).status, 400, `home ${home.slice(0, 10)}`)
      // a push to a URI that is not a list address
      assert.equal(h.answer(publish({ version: '5', body, uri: 'not a uri' })).status, 400)
      // user agents may not push at all
      assert.equal(h.answer(publish({ version: '9', body }), false).status, 403)
      assert.equal(h.applied.length, 0)
      // still working
      assert.equal(h.answer(publish({ version: '5', body })).status, 200)
      assert.equal(h.applied.length, 1)
    } finally { await h.stop() }
  })

  test('the home answers a fetch with its list and version; a push for a list it is home of changes nothing', async () => {
    const h = await holder()
    try {
      const version = h.exchange.nextVersion(LIST)
      assert.ok(version >= Date.now() - 1000)
      await h.lists.put({ uri: LIST, members: ['sip:a@example.com'], version })
      const r = h.answer(publish())
      assert.equal(r.status, 200)
      assert.equal(r.headers.get(LIST_VERSION_HEADER), String(version))
      assert.deepEqual(JSON.parse(Buffer.from(r.body).toString()), { members: ['sip:a@example.com'] })
      assert.ok(h.exchange.nextVersion(LIST) > version, 'a later edit gets a higher version')
      assert.equal(h.answer(publish({ version: String(version + 10), body: json(['sip:z@example.com']) })).status, 200)
      assert.deepEqual(h.lists.get(LIST)?.members, ['sip:a@example.com'])
      assert.equal(h.applied.length, 0)
    } finally { await h.stop() }
  })

  test('a deletion sent to the home (a DELETE made at another node) deletes the list; an older or a move does not', async () => {
    const h = await holder()
    try {
      const version = h.exchange.nextVersion(LIST)
      await h.lists.put({ uri: LIST, members: ['sip:a@example.com'], version })
      // older than the list, or a move, or with a body: not a deletion of it
      assert.equal(h.answer(publish({ version: String(version - 1), expires: '0' })).status, 200)
      assert.equal(h.answer(publish({ version: String(version + 5), expires: '0', home: 'node-x' })).status, 200)
      assert.deepEqual(h.removed, [])
      assert.ok(h.lists.has(LIST))
      // a newer deletion: the list goes, 200
      assert.equal((await h.answerLater(publish({ version: String(version + 1), expires: '0' }))).status, 200)
      assert.deepEqual(h.removed, [LIST])
      assert.equal(h.lists.has(LIST), false)
      // from a user agent: refused, nothing removed
      await h.lists.put({ uri: LIST, members: ['sip:a@example.com'], version: version + 10 })
      assert.equal(h.answer(publish({ version: String(version + 20), expires: '0' }), false).status, 403)
      assert.ok(h.lists.has(LIST))
    } finally { await h.stop() }
  })
})
