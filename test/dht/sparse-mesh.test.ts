/**
 * The registry properties where not every node is a replica: 8 loopback TCP nodes with kad-dht's
 * k = 3, so each claim is stored by the 3 nodes closest to its key and the other 5 learn of changes
 * only over the network (move notices, interest notices, DHT walks). In the 5-node mesh of
 * dht-registry.test.ts every node stores every claim, so a displaced owner or a watcher could learn
 * of a change from its own datastore alone; here the tests pick nodes that hold no copy.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Libp2pRecord } from '@libp2p/record'
import { Key } from 'interface-datastore'
import { toString } from 'uint8arrays/to-string'
import { Mesh, waitFor } from '../fixtures/mesh.ts'
import { claimKey, decodeClaim } from '../../dht/record/claim.ts'
import type { MeshNode } from '../../node/libp2p.ts'
import type { SignedClaim } from '../../dht/record/claim.ts'

const K = 3
const NODES = 8
let counter = 0
const uniqueAor = (): string => `sip:s${process.pid}x${counter++}@example.com`
const hour = (): number => Date.now() + 3_600_000

async function storedClaim (node: MeshNode, aor: string): Promise<SignedClaim | undefined> {
  try {
    const key = new Key(`/dht/record/${toString(claimKey(aor), 'base32')}`, false)
    return decodeClaim(Libp2pRecord.deserialize(await node.datastore.inner.get(key)).value)
  } catch {
    return undefined
  }
}

describe(`registry on an ${NODES}-node loopback mesh with k = ${K} (most nodes hold no copy of a claim)`, () => {
  let mesh: Mesh
  let n: MeshNode[]

  before(async () => {
    mesh = await Mesh.spawn(NODES, { kBucketSize: K, registry: { expiryGraceMs: 200, watchIntervalMs: 60_000 } })
    n = [...mesh.nodes]
  })
  after(async () => { await mesh?.stop() })

  /** the nodes that store the AoR's claim, and those that do not */
  async function split (aor: string): Promise<{ holders: MeshNode[], others: MeshNode[] }> {
    const holders: MeshNode[] = []
    const others: MeshNode[] = []
    for (const node of n) ((await storedClaim(node, aor)) != null ? holders : others).push(node)
    return { holders, others }
  }

  test('a claim is stored by about k nodes, not by all, and every node resolves it', async () => {
    for (let i = 0; i < 5; i++) {
      const aor = uniqueAor()
      const res = await n[i].registry.claim(aor, { expiresAt: hour() })
      assert.ok(res.replicas >= 1, `replicas ${res.replicas}`)
      const { holders } = await split(aor)
      assert.ok(holders.length < NODES, `${holders.length} of ${NODES} nodes store it`)
      for (const node of n) assert.equal((await node.registry.resolve(aor, { fresh: true }))?.node, n[i].peerId.toString())
    }
  })

  for (const racers of [2, 3]) {
    test(`P1: ${racers} nodes claim one AoR at once, 8 rounds: one owner everywhere; a claimer told "won" that lost the race is told it was displaced`, async () => {
      for (let round = 0; round < 8; round++) {
        const aor = uniqueAor()
        const claimers = n.slice(round % 4, (round % 4) + racers)
        const displaced = new Set<string>()
        const uns = claimers.map(c => c.registry.onDisplaced((a) => { if (a === aor) displaced.add(c.peerId.toString()) }))
        try {
          const results = await Promise.all(claimers.map(async node => node.registry.claim(aor, { expiresAt: hour() })))
          const owners = await Promise.all(n.map(async node => (await node.registry.resolve(aor, { fresh: true }))?.node))
          assert.equal(new Set(owners).size, 1, `round ${round}: ${owners.join(' ')}`)
          const owner = owners[0]
          const i = claimers.findIndex(c => c.peerId.toString() === owner)
          assert.ok(i >= 0, 'the owner is one of the claimers')
          assert.equal(results[i].won, true)
          // a claimer whose put landed first may have been told "won"; the newer claim displaced it
          const wrong = claimers.filter((c, j) => j !== i && results[j].won).map(c => c.peerId.toString())
          await waitFor(() => wrong.every(id => displaced.has(id)), 1_000, `round ${round}: ${wrong.length} early winners told of the move`)
          for (const c of claimers) {
            assert.equal(c.registry.owned().includes(aor), c.peerId.toString() === owner, 'only the owner keeps the claim')
          }
        } finally { for (const un of uns) un() }
      }
    })
  }

  test('P3: a displaced owner that is no replica of the new claim is told within 1 s, over the network', async () => {
    let checked = 0
    for (let attempt = 0; attempt < 40 && checked < 3; attempt++) {
      const aor = uniqueAor()
      const from = n[attempt % NODES]
      const to = n[(attempt + 3) % NODES]
      const first = await from.registry.claim(aor, { expiresAt: hour() })
      let toldAt = 0
      const received = from.registry.stats.noticesReceived
      const puts = from.registry.stats.putsReceived
      const un = from.registry.onDisplaced((a, by) => { if (a === aor && by.node === to.peerId.toString()) toldAt = Date.now() })
      try {
        const start = Date.now()
        await to.registry.claim(aor, { expiresAt: hour() })
        // (before the notice is acted on: the displaced owner then stores the new claim itself)
        const heldFirst = (await storedClaim(from, aor))?.version === first.route.version
        await waitFor(() => toldAt > 0, 1_000, 'move notice')
        assert.ok(toldAt - start < 1_000)
        assert.ok(!from.registry.owned().includes(aor))
        assert.equal((await from.registry.resolve(aor))?.node, to.peerId.toString(), 'cache follows the notice')
        // when the new claim was not put to the old owner (no claim reached it as a replica while
        // it was made, and its store still held its own claim), only a notice over the network
        // can have told it
        if (!heldFirst || from.registry.stats.putsReceived !== puts) continue
        assert.ok(from.registry.stats.noticesReceived > received)
        checked++
      } finally { un() }
    }
    assert.equal(checked, 3, 'found displaced owners that are no replica of the new claim')
  })

  test('interest: a watcher that stores no copy is told of a claim within 1 s', async () => {
    let checked = 0
    for (let attempt = 0; attempt < 40 && checked < 3; attempt++) {
      const aor = uniqueAor()
      const claimer = n[attempt % NODES]
      const candidates = n.filter(x => x !== claimer)
      const watcher = candidates[attempt % candidates.length]
      let toldAt = 0
      const received = watcher.registry.stats.noticesReceived
      const un = watcher.registry.watch(aor, (route) => { if (route?.node === claimer.peerId.toString()) toldAt = Date.now() })
      try {
        await new Promise(resolve => setTimeout(resolve, 300)) // the interest registration is out
        const start = Date.now()
        await claimer.registry.claim(aor, { expiresAt: hour() })
        if ((await storedClaim(watcher, aor)) != null) continue // a replica: it would see its own store
        await waitFor(() => toldAt > 0, 1_000, 'interest notice')
        assert.ok(toldAt - start < 1_000)
        assert.ok(watcher.registry.stats.noticesReceived > received)
        checked++
      } finally { un() }
    }
    assert.equal(checked, 3, 'found watchers that store no copy')
  })

  test('P2: a stale claim put from a node without a copy is refused by every replica; no node resolves it', async () => {
    const aor = uniqueAor()
    await n[0].registry.claim(aor, { expiresAt: hour() })
    const oldBytes = (await storedClaim(n[0], aor))!.bytes
    const v2 = await n[1].registry.claim(aor, { expiresAt: hour() })
    const { others } = await split(aor)
    const h2: MeshNode[] = []
    for (const node of n) if ((await storedClaim(node, aor))?.version === v2.route.version) h2.push(node)
    assert.ok(others.length > 0 && h2.length > 0)
    const replayer = others[0]
    let acks = 0
    for await (const ev of replayer.libp2p.services.dht.put(claimKey(aor), oldBytes, { signal: AbortSignal.timeout(5_000) })) {
      if (ev.name === 'PEER_RESPONSE' && ev.messageName === 'PUT_VALUE') acks++
    }
    assert.equal(acks, 0, 'no replica accepted the stale put')
    for (const node of h2) assert.equal((await storedClaim(node, aor))?.version, v2.route.version, 'replicas keep the newer claim')
    for (const node of n) assert.equal((await node.registry.resolve(aor, { fresh: true }))?.version, v2.route.version)
  })
})
