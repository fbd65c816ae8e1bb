/**
 * Reads and writes that do not wait on a frozen replica (issue 9). A "frozen" replica here is a
 * real node whose claim-exchange handler (the reads) and claim-put handler (the writes) take
 * requests and answer none until the test opens their gate (never: frozen), as a node stopped by
 * SIGSTOP does: its connections stay open and nobody knows it is gone.
 *
 * - A resolve on the other nodes answers from the replicas that did (and this node's copy) after a
 *   short grace, well under the 5 s exchange timeout; a lookup that waits for every answer (no
 *   `onLate`) still takes the timeout: the freeze is real.
 * - A late answer that brings a newer claim corrects the cached route, and its read repair tells
 *   the owner it displaced (P3).
 * - The put queue to a silent peer is bounded: a burst beyond MAX_QUEUED_PUT_CLAIMS fails at once,
 *   what queued behind an unanswered request fails when it times out, and puts while the next
 *   request is out fail at once; every drop is counted by reason.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Mesh, waitFor } from '../fixtures/mesh.ts'
import { gate, quietLog, storedValue, writeOf, type Gate } from './fixtures/replica-gate.ts'
import { claimKey, signClaim, verifyClaimSync } from '../../dht/record/claim.ts'
import { NOTICE_TIMEOUT_MS } from '../../dht/notices/protocol.ts'
import { CLAIM_PUT_PROTOCOL, MAX_PUT_BATCH, MAX_QUEUED_PUT_CLAIMS, PUT_TIMEOUT_MS, PutClient, PutStatus } from '../../dht/replication/put-protocol.ts'
import { READ_GRACE_MAX_MS } from '../../dht/replication/lookup.ts'
import type { MeshNode } from '../../node/libp2p.ts'

let counter = 0
const uniqueAor = (): string => `sip:z${process.pid}x${counter++}@example.com`
const hour = (): number => Date.now() + 3_600_000
const FIRST = { firstReplica: true }
/** "well under the exchange timeout": the grace is at most READ_GRACE_MAX_MS */
const FAST_MS = 2_000

/** node 3 frozen: neither its reads nor its puts are answered until `open()` */
const freeze = async (node: MeshNode): Promise<Gate> => await gate(node, { reads: true })

describe('a resolve with one replica frozen (4 nodes)', () => {
  let mesh: Mesh
  let n: MeshNode[]
  let frozen: Gate
  before(async () => {
    mesh = await Mesh.spawn(4)
    n = [...mesh.nodes]
    frozen = await freeze(n[3])
  })
  after(async () => {
    frozen?.open()
    await mesh?.stop()
  })

  test('answered from the others well under the exchange timeout; a read that waits for every answer takes the timeout', async () => {
    const aor = uniqueAor()
    const claimed = await n[0].registry.claim(aor, { expiresAt: hour() }, FIRST)
    assert.equal(claimed.won, true)
    const readsBefore = frozen.reads()
    const early = n[2].registry.stats.earlyReads
    const t0 = Date.now()
    const route = await n[2].registry.resolve(aor, { fresh: true })
    const ms = Date.now() - t0
    assert.equal(route?.node, n[0].peerId.toString())
    assert.ok(ms < FAST_MS, `resolved after ${ms} ms (the exchange timeout is ${NOTICE_TIMEOUT_MS} ms)`)
    assert.ok(frozen.reads() > readsBefore, 'the frozen replica was asked')
    assert.equal(n[2].registry.stats.earlyReads, early + 1)
    // the control: a lookup that waits for every answer waits for the frozen replica's timeout
    const t1 = Date.now()
    const found = await n[1].registry.lookup(aor, { quorum: 3 })
    const waited = Date.now() - t1
    assert.equal(found?.owner.toString(), n[0].peerId.toString())
    assert.ok(waited >= NOTICE_TIMEOUT_MS - 500, `the waiting lookup took ${waited} ms`)
  })

  test('30 AoRs of three owners resolved at once on the other nodes, each well under the timeout', async () => {
    const aors = Array.from({ length: 30 }, uniqueAor)
    await Promise.all(aors.map(async (aor, i) => await n[i % 3].registry.claim(aor, { expiresAt: hour() }, FIRST)))
    const t0 = Date.now()
    const routes = await Promise.all(aors.map(async (aor, i) => await n[(i + 1) % 3].registry.resolve(aor, { fresh: true })))
    const ms = Date.now() - t0
    assert.ok(ms < FAST_MS, `30 resolves took ${ms} ms`)
    routes.forEach((r, i) => { assert.equal(r?.node, n[i % 3].peerId.toString(), `AoR ${i}`) })
  })

  test('a MESSAGE-style cold resolve of an unknown AoR answers "none" early too', async () => {
    const t0 = Date.now()
    assert.equal(await n[1].registry.resolve(uniqueAor(), { fresh: true }), undefined)
    assert.ok(Date.now() - t0 < FAST_MS, `answered after ${Date.now() - t0} ms`)
  })
})

describe('a resolve answered early: the silent replica\'s late answer with a newer claim (4 nodes)', () => {
  let mesh: Mesh
  let n: MeshNode[]
  before(async () => {
    mesh = await Mesh.spawn(4)
    n = [...mesh.nodes]
  })
  after(async () => { await mesh?.stop() })

  test('corrects the cached route and the replicas, and the owner it supersedes is displaced (P3)', async () => {
    const aor = uniqueAor()
    // node 0's claim on every replica (node 3 still answers)
    const mine = await n[0].registry.claim(aor, { expiresAt: hour() })
    assert.equal(mine.won, true)
    assert.equal(await storedValue(n[3], claimKey(aor)) != null, true)
    const slow = await freeze(n[3])
    // a newer claim of node 1 that only node 3 holds (its witness kept quiet: a notice lost)
    const now = Date.now()
    const newer = await signClaim({ kind: 'claim', aor, owner: n[1].peerId, sip: '127.0.0.1:6001', version: mine.route.version + 1n, issuedAt: now, expiresAt: now + 3_600_000 }, n[1].privateKey)
    const hook = n[3].datastore.onStore
    n[3].datastore.onStore = undefined
    try {
      const [kept] = await n[3].datastore.putClaims([writeOf(newer)])
      assert.equal(kept.stored, true)
    } finally { n[3].datastore.onStore = hook }
    let told: string | undefined
    const un = n[0].registry.onDisplaced((a, by) => { if (a === aor) told = by.node })
    const routes: Array<string | undefined> = []
    const unwatch = n[2].registry.watch(aor, (r) => { routes.push(r?.node) })
    try {
      const t0 = Date.now()
      const early = await n[2].registry.resolve(aor, { fresh: true })
      const ms = Date.now() - t0
      assert.ok(ms < FAST_MS, `answered after ${ms} ms`)
      // what the answering replicas held: the early answer may miss the newer claim (see lookup.ts)
      assert.equal(early?.node, n[0].peerId.toString())
      assert.equal(n[2].registry.stats.lateCorrections, 0)
      await new Promise(resolve => setTimeout(resolve, READ_GRACE_MAX_MS))
      slow.open()
      await waitFor(() => n[2].registry.newest(aor)?.version === newer.version, 5_000, 'the late answer to correct node 2')
      assert.ok(n[2].registry.stats.lateCorrections >= 1)
      // the route now served from the cache, no lookup: node 1; the watcher was told
      assert.equal((await n[2].registry.resolve(aor))?.node, n[1].peerId.toString())
      await waitFor(() => routes.at(-1) === n[1].peerId.toString(), 5_000, 'the watcher to see the move')
      // the read repair took the newer claim to the replicas that held the older one: the owner
      // it supersedes learns it (displaced: bindings dropped, P3) and lets go
      await waitFor(() => told !== undefined, 10_000, 'node 0 to be displaced').catch(async (err: Error) => {
        const held = await storedValue(n[0], claimKey(aor))
        throw new Error(`${err.message}; node 0 stores v${held == null ? '-' : verifyClaimSync(held).version} (newer v${newer.version}), owns it: ${n[0].registry.owned().includes(aor)}, node 2's late corrections ${n[2].registry.stats.lateCorrections}, early reads ${n[2].registry.stats.earlyReads}`)
      })
      assert.equal(told, n[1].peerId.toString())
      assert.ok(!n[0].registry.owned().includes(aor))
      for (const node of [n[0], n[1], n[2]]) {
        await waitFor(async () => verifyClaimSync((await storedValue(node, claimKey(aor)))!).version === newer.version, 5_000, 'the replicas corrected')
      }
      // P2: having seen the newer claim, node 2 never resolves the older one again
      assert.equal((await n[2].registry.resolve(aor, { fresh: true }))?.node, n[1].peerId.toString())
    } finally {
      un()
      unwatch()
    }
  })
})

describe('the put queue while a silent peer\'s stream cannot be opened', () => {
  // A frozen process does not negotiate a new stream on its open connection: the dial waits for
  // its timeout (seen with SIGSTOP in scripts/bench-register-latency.ts). An in-process node always
  // negotiates, so the dial here is one that never settles until its signal aborts.
  test('what waited for the dial fails at its timeout (no_stream); puts while the next dial is under way fail at once (peer_silent); the bound holds meanwhile', async () => {
    let dials = 0
    const hanging = {
      dialProtocol: async (_peer: unknown, _protocol: unknown, options: { signal: AbortSignal }) => {
        dials++
        return await new Promise<never>((_resolve, reject) => {
          options.signal.addEventListener('abort', () => { reject(new Error('dial aborted')) }, { once: true })
        })
      }
    }
    const mesh = await Mesh.spawn(1)
    const timeoutMs = 300
    const client = new PutClient(hanging as never, quietLog, CLAIM_PUT_PROTOCOL, { timeoutMs, maxQueuedClaims: 100 })
    const ctl = new AbortController()
    client.start(ctl.signal)
    try {
      const peer = mesh.nodes[0].peerId
      const now = Date.now()
      const c = await signClaim({ kind: 'claim', aor: uniqueAor(), owner: peer, sip: '127.0.0.1:6001', version: BigInt(now), issuedAt: now, expiresAt: now + 60_000 }, mesh.nodes[0].privateKey)
      const results = await Promise.allSettled(Array.from({ length: 150 }, async () => await client.put(peer, [c.bytes])))
      assert.ok(results.every(r => r.status === 'rejected'))
      assert.equal(client.stats.dropped.queue_full, 50)
      assert.equal(client.stats.dropped.no_stream, 100)
      assert.equal(dials, 1)
      // the next put dials again (the probe); a put meanwhile fails at once, without a dial
      const probe = client.put(peer, [c.bytes])
      const t0 = Date.now()
      await assert.rejects(client.put(peer, [c.bytes]), { name: 'PutDroppedError' })
      assert.ok(Date.now() - t0 < timeoutMs / 2)
      assert.equal(client.stats.dropped.peer_silent, 1)
      await assert.rejects(probe)
      assert.equal(client.stats.dropped.no_stream, 101)
      assert.equal(dials, 2)
    } finally {
      ctl.abort()
      client.close()
      await mesh.stop()
    }
  })
})

describe('the put queue to a frozen peer is bounded (4 nodes)', () => {
  let mesh: Mesh
  let n: MeshNode[]
  before(async () => {
    mesh = await Mesh.spawn(4)
    n = [...mesh.nodes]
  })
  after(async () => { await mesh?.stop() })

  test('a burst beyond the bound fails at once, the queue behind a timeout fails with it, a put while the probe is out fails at once; every drop counted', async () => {
    const frozen = await freeze(n[3])
    const timeoutMs = 1_500
    const client = new PutClient(n[1].libp2p, quietLog, CLAIM_PUT_PROTOCOL, { timeoutMs })
    const ctl = new AbortController()
    client.start(ctl.signal)
    try {
      const now = Date.now()
      const c = await signClaim({ kind: 'claim', aor: uniqueAor(), owner: n[1].peerId, sip: '127.0.0.1:6001', version: BigInt(now), issuedAt: now, expiresAt: now + 60_000 }, n[1].privateKey)
      const burst = 3_000
      const settled: Array<{ ok: boolean, name?: string, at: number }> = []
      const t0 = Date.now()
      const puts = Array.from({ length: burst }, async () => {
        try {
          await client.put(n[3].peerId, [c.bytes])
          settled.push({ ok: true, at: Date.now() - t0 })
        } catch (err) {
          settled.push({ ok: false, name: (err as Error).name, at: Date.now() - t0 })
        }
      })
      // (the stream opens meanwhile) MAX_QUEUED_PUT_CLAIMS waiting, the rest refused at once
      const over = burst - MAX_QUEUED_PUT_CLAIMS
      await waitFor(() => settled.length >= over, 1_000, 'the claims over the bound to fail at once')
      assert.equal(client.stats.dropped.queue_full, over)
      assert.ok(settled.every(s => !s.ok && s.name === 'PutDroppedError'))
      // then the first request goes out with a full batch, the rest waits behind it
      await waitFor(() => frozen.puts() === MAX_PUT_BATCH, 5_000, 'the frozen peer to be sent the first request')
      const sentBy = Date.now() - t0
      // the request times out: it and everything behind it fail together
      await Promise.all(puts)
      assert.equal(client.stats.dropped.timeout, MAX_PUT_BATCH)
      assert.equal(client.stats.dropped.peer_silent, MAX_QUEUED_PUT_CLAIMS - MAX_PUT_BATCH)
      assert.ok(settled.every(s => !s.ok), 'none stored')
      const last = Math.max(...settled.map(s => s.at))
      // (queued behind it in 512-claim requests, the last would have waited four timeouts)
      assert.ok(last < sentBy + 2 * timeoutMs, `the last put failed ${last - sentBy} ms after the first request went out`)
      assert.equal(client.stats.batches, 1, 'one request on the wire')
      // the peer is silent: the next put probes it, and a put while the probe is out fails at once
      const probe = client.put(n[3].peerId, [c.bytes])
      await assert.rejects(client.put(n[3].peerId, [c.bytes]), { name: 'PutDroppedError' })
      assert.equal(client.stats.dropped.peer_silent, MAX_QUEUED_PUT_CLAIMS - MAX_PUT_BATCH + 1)
      // it wakes up: the probe is answered, and puts flow again
      frozen.open()
      assert.deepEqual((await probe).map(a => a.status), [PutStatus.stored])
      assert.deepEqual((await client.put(n[3].peerId, [c.bytes])).map(a => a.status), [PutStatus.stored])
    } finally {
      ctl.abort()
      client.close()
    }
  })

  test('new claims on a node with a frozen replica: all answered early, the drops counted, every claim resolves on the others', async () => {
    const frozen = await freeze(n[3])
    try {
      const drops = (): number => { const d = n[0].registry.putDrops(); return d.timeout + d.peer_silent + d.queue_full }
      const before = drops()
      const first = Array.from({ length: 50 }, uniqueAor)
      const t0 = Date.now()
      const r1 = await Promise.all(first.map(async aor => await n[0].registry.claim(aor, { expiresAt: hour() }, FIRST)))
      assert.ok(r1.every(r => r.won))
      assert.ok(Date.now() - t0 < FAST_MS, `50 claims answered after ${Date.now() - t0} ms`)
      // the put to node 3 times out; the claims made meanwhile (queued) and after it (while the
      // probe is out) are dropped, not queued for 10 s turns each
      await waitFor(() => n[0].registry.putDrops().timeout > 0, PUT_TIMEOUT_MS + 5_000, 'the put to the frozen replica to time out')
      // the next claims' put to node 3 is the probe; the claims after it, while it is out, are dropped at once
      const second = Array.from({ length: 50 }, uniqueAor)
      const third = Array.from({ length: 50 }, uniqueAor)
      for (const wave of [second, third]) {
        const t1 = Date.now()
        const r = await Promise.all(wave.map(async aor => await n[0].registry.claim(aor, { expiresAt: hour() }, FIRST)))
        assert.ok(r.every(x => x.won))
        assert.ok(Date.now() - t1 < FAST_MS, `50 claims answered after ${Date.now() - t1} ms`)
      }
      await waitFor(() => n[0].registry.putDrops().peer_silent >= 50, 5_000, 'claims put while node 3 is silent to be dropped')
      assert.ok(drops() - before >= 100, `${drops() - before} claims to node 3 dropped`)
      for (const [i, aor] of [...first, ...second, ...third].entries()) {
        if (i % 10 !== 0) continue
        assert.equal((await n[1 + (i % 2)].registry.resolve(aor, { fresh: true }))?.node, n[0].peerId.toString())
      }
    } finally { frozen.open() }
  })
})
