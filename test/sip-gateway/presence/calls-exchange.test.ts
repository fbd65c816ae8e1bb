// The calls relay's receiving side (presence/calls-exchange.ts) and ProxiedCalls.relay: what an
// owner does with a node's relayed calls of a user, including malformed, oversized and hostile
// pushes. Real ProxiedCalls, CallsExchange and memory registry; the agent's requests are not
// attached (the relay between nodes runs in dialog.test.ts and test/e2e/event-packages.test.ts).
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { CallsExchange, CALLS_EVENT, CALLS_ORIGIN_HEADER } from '../../../sip-gateway/presence/calls-exchange.ts'
import { ProxiedCalls, MAX_RELAYED_PER_USER } from '../../../sip-gateway/presence/packages/calls.ts'
import { AgentRequests } from '../../../sip-gateway/presence/requests.ts'
import { buildDialogInfo, DIALOG_INFO_CONTENT_TYPE, type DialogEntry } from '../../../sip-gateway/presence/dialog-info.ts'
import { MemoryMesh, MemoryRegistry } from '../../../dht/memory-registry.ts'
import type { SipRequest, SipResponse } from '../../../sip-gateway/codec/index.ts'
import { meshPublish } from './mesh-publish.ts'
import type { ServerTransaction } from '../../../sip-gateway/transaction/layer.ts'
import type { Logger } from '../../../sip-gateway/ports.ts'

const silentLogger: Logger = { debug () {}, info () {}, warn () {}, error () {}, child () { return silentLogger } }
const BOB = 'sip:bob@example.com'

function push (body: string | Uint8Array, o: { uri?: string, contentType?: string, origin?: string } = {}): SipRequest {
  return meshPublish(o.uri ?? BOB, CALLS_EVENT, [['Content-Type', o.contentType ?? DIALOG_INFO_CONTENT_TYPE], [CALLS_ORIGIN_HEADER, o.origin]], body)
}

/** an owner node's relay receiver: `answer` hands it a push from `node` and returns the status */
function owner (lingerMs?: number): { calls: ProxiedCalls, changed: string[], answer: (r: SipRequest, fromMesh?: boolean, node?: string) => number, stop: () => Promise<void> } {
  const changed: string[] = []
  const calls = new ProxiedCalls(aor => { changed.push(aor) }, { lingerMs })
  const registry = new MemoryRegistry(new MemoryMesh(), { nodeId: 'node-owner', sip: '127.0.0.1:0' })
  let last: SipResponse | undefined
  const x = new CallsExchange({ calls, registry, owns: () => true, requests: new AgentRequests({ registry, logger: silentLogger }), logger: silentLogger, domains: new Set(['example.com']), respond: (_tx, r) => { last = r } })
  const answer = (r: SipRequest, fromMesh = true, node = 'node-b'): number => {
    last = undefined
    x.handle(r, {} as unknown as ServerTransaction, fromMesh, node === '' ? undefined : node)
    return (last as SipResponse | undefined)?.status ?? 0
  }
  return { calls, changed, answer, stop: async () => { x.stop(); calls.stop(); await registry.stop() } }
}

const doc = (dialogs: DialogEntry[], entity = BOB, state: 'full' | 'partial' = 'full'): string => buildDialogInfo({ version: 0, state, entity, dialogs })

describe('calls relayed by another node after a move', () => {
  test('each push replaces the node\'s set; own calls win for one id; terminated ones linger, then go', async () => {
    const { calls, changed, answer, stop } = owner(100)
    try {
      assert.equal(answer(push(doc([{ id: 'c1', callId: 'call-1', state: 'confirmed' }, { id: 'c2', state: 'early' }]))), 200)
      assert.deepEqual(calls.of(BOB).map(d => `${d.id}:${d.state}`), ['c1:confirmed', 'c2:early'])
      assert.deepEqual(calls.own(BOB), [])
      // another node's set lives beside it; a push from node-b replaces only node-b's
      assert.equal(answer(push(doc([{ id: 'c3', state: 'trying' }])), true, 'node-c'), 200)
      assert.equal(answer(push(doc([{ id: 'c1', callId: 'call-1', state: 'terminated' }]))), 200)
      assert.deepEqual(calls.of(BOB).map(d => `${d.id}:${d.state}`).sort(), ['c1:terminated', 'c3:trying'])
      // an own call with the same id wins (the one this node proxies itself)
      calls.observe({ kind: 'invite', aor: BOB, direction: 'recipient', callId: 'own-call', remote: 'sip:carl@example.com', state: 'early' })
      const ownId = calls.own(BOB)[0].id
      assert.equal(answer(push(doc([{ id: ownId, state: 'confirmed' }])), true, 'node-c'), 200)
      assert.deepEqual(calls.of(BOB).filter(d => d.id === ownId).map(d => d.state), ['early'])
      // node-b's set was only terminated calls: gone after the linger
      await new Promise(resolve => setTimeout(resolve, 250))
      assert.equal(calls.of(BOB).some(d => d.id === 'c1'), false)
      // an empty push takes a node's set away
      assert.equal(answer(push(doc([])), true, 'node-c'), 200)
      assert.deepEqual(calls.of(BOB).map(d => d.id), [ownId])
      // a second move: the previous owner (node-b) hands over node-d's relayed set under node-d's
      // name; node-d's own next push replaces it rather than adding a stale copy
      assert.equal(answer(push(doc([{ id: 'd1', state: 'confirmed' }]), { origin: 'node-d' })), 200)
      assert.deepEqual(calls.relayedBy(BOB).map(([n, e]) => `${n}:${e.map(d => d.state).join()}`), ['node-d:confirmed'])
      assert.equal(answer(push(doc([{ id: 'd1', state: 'terminated' }])), true, 'node-d'), 200)
      assert.deepEqual(calls.of(BOB).filter(d => d.id === 'd1').map(d => d.state), ['terminated'])
      assert.ok(changed.length >= 5)
    } finally { await stop() }
  })

  test('malformed, oversized and hostile pushes: 4xx, nothing kept; user agents may not push', async () => {
    const { calls, answer, stop } = owner()
    try {
      const ok = doc([{ id: 'c1', state: 'confirmed' }])
      assert.equal(answer(push(ok), false), 403, 'from a user agent')
      assert.equal(answer(push(ok), true, ''), 403, 'no mesh node named')
      assert.equal(answer(push(ok, { uri: 'sip:bob@other.org' })), 404)
      assert.equal(answer(push(ok, { uri: 'sip:example.com' })), 404)
      assert.equal(answer(push(ok, { contentType: 'application/pidf+xml' })), 415)
      const hostile = [
        '<dialog-info',
        '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="sip:bob@example.com">&b;</dialog-info>',
        doc([{ id: 'c1', state: 'confirmed' }], 'sip:mallory@example.com'),
        doc([{ id: 'c1', state: 'confirmed' }], BOB, 'partial'),
        doc(Array.from({ length: MAX_RELAYED_PER_USER + 1 }, (_, i) => ({ id: `c${i}`, state: 'early' as const }))),
        doc([{ id: 'c1', state: 'confirmed' }]).replace('confirmed', 'ringing'),
        'x'.repeat(40_000),
        new Uint8Array([0xff, 0xfe, 0x00, 0x3c])
      ]
      for (const body of hostile) assert.equal(answer(push(body)), 400, String(body).slice(0, 60))
      for (const origin of ['', 'node-owner', 'n'.repeat(200)]) assert.equal(answer(push(ok, { origin })), 400, `origin ${origin.slice(0, 12)}`)
      assert.deepEqual(calls.of(BOB), [])
      assert.equal(answer(push(ok)), 200, 'still serving')
      assert.equal(calls.of(BOB).length, 1)
    } finally { await stop() }
  })
})
