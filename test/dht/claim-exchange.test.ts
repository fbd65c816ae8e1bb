/**
 * The claim exchange (dht/notices/exchange.ts): claim reads and interest registrations between two
 * real loopback nodes over one long-lived stream per peer, batched per event-loop turn; concurrent
 * resolves of one AoR share one lookup; older peers are served with the one-shot protocols; hostile
 * input aborts the stream that carried it and the node keeps serving.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { encode } from 'cborg'
import * as lp from 'it-length-prefixed'
import { Mesh, waitFor } from '../fixtures/mesh.ts'
import {
  CLAIM_EXCHANGE_PROTOCOL, MAX_AOR_CHARS, MAX_EXCHANGE_MESSAGE_BYTES, MAX_INTEREST_BATCH, decodeExchangeAnswer,
  decodeExchangeRequest
} from '../../dht/notices/exchange.ts'
import type { MeshNode } from '../../node/libp2p.ts'
import type { Route } from '../../sip-gateway/ports.ts'

let counter = 0
const uniqueAor = (): string => `sip:x${process.pid}n${counter++}@example.com`
const hour = (): number => Date.now() + 3_600_000

describe('claim exchange between two loopback nodes', () => {
  let mesh: Mesh
  let owner: MeshNode
  let reader: MeshNode
  before(async () => {
    mesh = await Mesh.spawn(2)
    ;[owner, reader] = mesh.nodes
  })
  after(async () => { await mesh?.stop() })

  test('100 cold resolves at once: one stream, a few writes, every AoR resolved to its owner', async () => {
    const aors = Array.from({ length: 100 }, uniqueAor)
    await Promise.all(aors.map(async aor => { assert.ok((await owner.registry.claim(aor, { expiresAt: hour() })).won) }))
    const before = { ...reader.registry.exchange.stats }
    const routes = await Promise.all(aors.map(async aor => await reader.registry.resolve(aor)))
    for (const r of routes) assert.equal(r?.node, owner.peerId.toString())
    const after = reader.registry.exchange.stats
    assert.ok(after.gets - before.gets >= 100, `${after.gets - before.gets} reads`)
    assert.ok(after.streamsOpened <= 1, `${after.streamsOpened} streams opened`)
    assert.ok(after.writes - before.writes <= 10, `${after.writes - before.writes} writes for 100 reads: not batched`)
  })

  test('concurrent resolves of one cold AoR share one lookup; a fresh one looks again', async () => {
    const aor = uniqueAor()
    await owner.registry.claim(aor, { expiresAt: hour() })
    const lookups = reader.registry.stats.lookups
    const routes = await Promise.all(Array.from({ length: 5 }, async () => await reader.registry.resolve(aor)))
    for (const r of routes) assert.equal(r?.node, owner.peerId.toString())
    assert.equal(reader.registry.stats.lookups - lookups, 1)
    await reader.registry.resolve(aor, { fresh: true })
    assert.equal(reader.registry.stats.lookups - lookups, 2)
  })

  test('interest over the exchange: a watcher of an unclaimed AoR is told of its claim within 1 s', async () => {
    const aors = Array.from({ length: 20 }, uniqueAor)
    const seen = new Map<string, Route>()
    const before = reader.registry.exchange.stats.interestRequests
    const unwatch = aors.map(aor => reader.registry.watch(aor, (route) => { if (route !== undefined) seen.set(aor, route) }))
    try {
      await waitFor(() => reader.registry.exchange.stats.interestRequests > before, 3_000, 'the interests to be sent')
      // 20 watches in one turn: one request (the watch poll is 30 s away)
      assert.equal(reader.registry.exchange.stats.interestRequests - before, 1)
      await new Promise(resolve => setTimeout(resolve, 200))
      const t0 = Date.now()
      await Promise.all(aors.map(async aor => { await owner.registry.claim(aor, { expiresAt: hour() }) }))
      await waitFor(() => seen.size === aors.length, 1_000, 'every watcher to be told')
      assert.ok(Date.now() - t0 < 1_500)
      for (const r of seen.values()) assert.equal(r.node, owner.peerId.toString())
    } finally {
      for (const u of unwatch) u()
    }
  })

  test('hostile requests: not CBOR, unknown, oversized, too many AoRs, an AoR too long; each aborts its stream, the node keeps serving', async () => {
    const bad = [
      lp.encode.single(new TextEncoder().encode('hello')).subarray(),
      lp.encode.single(encode([1, 1, 9, 'x'])).subarray(),
      lp.encode.single(encode([1, 1, 0, new Uint8Array(4096)])).subarray(),
      lp.encode.single(encode([1, 1, 1, Array.from({ length: MAX_INTEREST_BATCH + 1 }, (_, i) => `sip:u${i}@example.com`), 1000])).subarray(),
      lp.encode.single(encode([1, 1, 1, ['sip:' + 'a'.repeat(MAX_AOR_CHARS) + '@example.com'], 1000])).subarray(),
      // a length prefix over the cap, then nothing
      lp.encode.single(new Uint8Array(MAX_EXCHANGE_MESSAGE_BYTES + 1)).subarray(0, 8)
    ]
    for (const bytes of bad) {
      const s = await reader.libp2p.dialProtocol(owner.peerId, CLAIM_EXCHANGE_PROTOCOL)
      s.send(bytes)
      await waitFor(() => s.status !== 'open', 3_000, 'the bad stream to be closed')
    }
    const aor = uniqueAor()
    await owner.registry.claim(aor, { expiresAt: hour() })
    assert.equal((await reader.registry.resolve(aor, { fresh: true }))?.node, owner.peerId.toString())
  })

  test('the message checks', () => {
    assert.throws(() => decodeExchangeRequest(encode({ a: 1 })), /not \[1, id/)
    assert.throws(() => decodeExchangeRequest(encode([1, -1, 0, new Uint8Array(3)])), /not \[1, id/)
    assert.throws(() => decodeExchangeRequest(encode([1, 1, 0, 'not bytes'])), /not bytes/)
    assert.throws(() => decodeExchangeRequest(encode([1, 1, 1, ['sip:a@example.com'], -5])), /bad ttl/)
    assert.throws(() => decodeExchangeRequest(encode([1, 1, 1, [7], 5])), /not a string/)
    assert.throws(() => decodeExchangeRequest(new Uint8Array([0xff, 0x00])), /not CBOR/)
    assert.deepEqual(decodeExchangeRequest(encode([1, 7, 1, ['sip:a@example.com'], 5])), { id: 7, op: 1, aors: ['sip:a@example.com'], ttlMs: 5 })
    assert.throws(() => decodeExchangeAnswer(encode([1, 1, new Uint8Array(100_000)])), /too long/)
    assert.throws(() => decodeExchangeAnswer(encode([1, 1, 'x'])), /not bytes/)
    assert.deepEqual(decodeExchangeAnswer(encode([1, 3, false])), { id: 3, value: undefined, failed: true })
    assert.deepEqual(decodeExchangeAnswer(encode([1, 3, null])), { id: 3, value: undefined, failed: false })
  })

  test('a peer without the exchange (an older node) is read and told with the one-shot protocols', async () => {
    const aor = uniqueAor()
    await owner.registry.claim(aor, { expiresAt: hour() })
    // (the last test: the owner stays without the exchange)
    await owner.libp2p.unhandle(CLAIM_EXCHANGE_PROTOCOL)
    {
      // a fresh stream is needed for the peer to refuse the protocol: drop the open one
      for (const c of reader.libp2p.getConnections(owner.peerId)) for (const s of c.streams) if (s.protocol === CLAIM_EXCHANGE_PROTOCOL) s.abort(new Error('test'))
      await waitFor(() => reader.libp2p.getConnections(owner.peerId).every(c => c.streams.every(s => s.protocol !== CLAIM_EXCHANGE_PROTOCOL)), 2_000, 'the exchange stream to close')
      const legacy = reader.registry.exchange.stats.legacy
      const route = await reader.registry.resolve(aor, { fresh: true })
      assert.equal(route?.node, owner.peerId.toString())
      assert.equal(reader.registry.exchange.stats.legacy - legacy, 1)
    }
  })
})
