/**
 * Batched claim writes (dht/replication/): concurrent claims coalesce into batches to each replica
 * and still settle on one owner per AoR; the claim-put protocol refuses hostile input.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { encode } from 'cborg'
import * as lp from 'it-length-prefixed'
import { Mesh, waitFor } from '../fixtures/mesh.ts'
import { signClaim } from '../../dht/record/claim.ts'
import { CLAIM_PUT_PROTOCOL, PutClient, PutStatus, decodeRequest, MAX_PUT_BATCH } from '../../dht/replication/put-protocol.ts'
import type { MeshNode } from '../../node/libp2p.ts'

let counter = 0
const uniqueAor = (): string => `sip:b${process.pid}x${counter++}@example.com`
const hour = (): number => Date.now() + 3_600_000
const quietLog = Object.assign(() => {}, { enabled: false, trace: () => {}, error: () => {}, newScope: () => quietLog }) as never

describe('batched claim writes on a 3-node loopback mesh', () => {
  let mesh: Mesh
  let n: MeshNode[]
  before(async () => {
    mesh = await Mesh.spawn(3)
    n = [...mesh.nodes]
  })
  after(async () => { await mesh?.stop() })

  test('200 AoRs claimed at once by two nodes: batched to the replicas, one owner each, agreed everywhere (P1)', async () => {
    const aors = Array.from({ length: 200 }, uniqueAor)
    const before0 = n[0].registry.writeStats()
    const before1 = n[1].registry.writeStats()
    const results = await Promise.all(aors.flatMap(aor => [n[0], n[1]].map(async node => ({ aor, node, r: await node.registry.claim(aor, { expiresAt: hour() }) }))))
    const after0 = n[0].registry.writeStats()
    const after1 = n[1].registry.writeStats()
    for (const [b, a] of [[before0, after0], [before1, after1]]) {
      const claims = a.claims - b.claims
      const requests = a.peerBatches - b.peerBatches
      assert.ok(claims >= 200, `${claims} claims written`)
      // each node writes to 2 peers; one request per claim and peer would be 400
      assert.ok(requests <= 40, `${requests} requests to peers for ${claims} claims: not batched`)
    }
    // one winner each; every node resolves it (fresh lookups of every fourth AoR: a lookup opens
    // streams, and 600 of them would only test this machine's load)
    await Promise.all(aors.map(async (aor, i) => {
      const won = results.filter(x => x.aor === aor && x.r.won)
      assert.equal(won.length, 1, `${aor}: ${won.length} winners`)
      const owners = new Set<string>()
      for (const node of n) owners.add((await node.registry.resolve(aor, { fresh: i % 4 === 0 }))?.node ?? 'none')
      assert.deepEqual([...owners], [won[0].node.peerId.toString()], aor)
    }))
    // the loser of each race does not keep it
    const lost = results.filter(x => !x.r.won)
    assert.equal(lost.length, 200)
    for (const { aor, node } of lost) assert.ok(!node.registry.owned().includes(aor))
  })

  test('a claim-put request that is not CBOR, too large, or forged is refused; the node keeps serving', async () => {
    const target = n[2]
    // not CBOR: the stream is aborted, nothing stored
    const s1 = await n[0].libp2p.dialProtocol(target.peerId, CLAIM_PUT_PROTOCOL)
    s1.send(lp.encode.single(new TextEncoder().encode('hello')).subarray())
    await waitFor(() => s1.status !== 'open', 3_000, 'the bad stream to be closed')
    // a batch over the limit is refused by the decoder
    assert.throws(() => decodeRequest(encode([1, 1, Array.from({ length: MAX_PUT_BATCH + 1 }, () => new Uint8Array(10))])), /over/)
    assert.throws(() => decodeRequest(encode([1, 1, ['not bytes']])), /not bytes/)
    assert.throws(() => decodeRequest(encode({ a: 1 })), /not \[1, id, claims\]/)
    // a claim naming node 1 as owner, signed by node 0 and sent by node 0: invalid (signature)
    const client = new PutClient(n[0].libp2p, quietLog)
    const ctl = new AbortController()
    client.start(ctl.signal)
    try {
      const aor = uniqueAor()
      const now = Date.now()
      const honest = await signClaim({ kind: 'claim', aor, owner: n[1].peerId, sip: '127.0.0.1:6001', version: BigInt(now), issuedAt: now, expiresAt: now + 60_000 }, n[1].privateKey)
      const forged = new Uint8Array(honest.bytes)
      forged[forged.length - 1] ^= 0xff
      const mine = await signClaim({ kind: 'claim', aor: uniqueAor(), owner: n[0].peerId, sip: '127.0.0.1:6000', version: BigInt(now), issuedAt: now, expiresAt: now + 60_000 }, n[0].privateKey)
      const answers = await client.put(target.peerId, [forged, new Uint8Array([1, 2, 3]), mine.bytes])
      assert.deepEqual(answers.map(a => a.status), [PutStatus.invalid, PutStatus.invalid, PutStatus.stored])
      assert.equal(await target.registry.resolve(aor, { fresh: true }), undefined, 'the forged claim is nowhere')
      // the node still takes claims
      const ok = await n[1].registry.claim(uniqueAor(), { expiresAt: hour() })
      assert.ok(ok.won && ok.replicas >= 2)
    } finally {
      ctl.abort()
      client.close()
    }
  })
})

describe('claim-put: puts to one peer while a request is out share the next request', () => {
  let mesh: Mesh
  before(async () => { mesh = await Mesh.spawn(2) })
  after(async () => { await mesh?.stop() })

  test('300 callers putting at once: a few requests, each caller its own answers in order', async () => {
    const [a, b] = mesh.nodes
    const client = new PutClient(a.libp2p, quietLog)
    const ctl = new AbortController()
    client.start(ctl.signal)
    try {
      const now = Date.now()
      const sign = async (): Promise<Uint8Array> => (await signClaim({ kind: 'claim', aor: uniqueAor(), owner: a.peerId, sip: '127.0.0.1:6000', version: BigInt(now), issuedAt: now, expiresAt: now + 60_000 }, a.privateKey)).bytes
      // each caller: two valid claims around an invalid one, so a misrouted answer shows
      const calls = await Promise.all(Array.from({ length: 300 }, async () => [await sign(), new Uint8Array([9]), await sign()]))
      const answers = await Promise.all(calls.map(async claims => await client.put(b.peerId, claims)))
      for (const got of answers) assert.deepEqual(got.map(x => x.status), [PutStatus.stored, PutStatus.invalid, PutStatus.stored])
      assert.equal(client.stats.claims, 900)
      // the first request goes alone; the rest wait for its answer and go out in full requests
      assert.ok(client.stats.batches <= 1 + Math.ceil(900 / MAX_PUT_BATCH) + 2, `${client.stats.batches} requests for 300 callers`)
    } finally {
      ctl.abort()
      client.close()
    }
  })

  test('a put to a peer that does not take the protocol fails, and so does the next (dialled again, not left waiting)', async () => {
    const [a, b] = mesh.nodes
    const client = new PutClient(a.libp2p, quietLog, '/sipmesh/claim-put-nobody/1.0.0')
    const ctl = new AbortController()
    client.start(ctl.signal)
    try {
      await assert.rejects(client.put(b.peerId, [new Uint8Array([1])]))
      await assert.rejects(client.put(b.peerId, [new Uint8Array([1])]), 'a second try dials again and fails the same way')
    } finally {
      ctl.abort()
      client.close()
    }
  })
})
