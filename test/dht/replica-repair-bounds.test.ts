/**
 * The replica repair's bounds, driven through its put-client port (the mesh tests are in
 * replica-repair.test.ts): what is remembered per peer, over all peers and how many peers, and
 * what a drop of bytes that are not a claim does (nothing).
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { ClaimSigner } from '../../dht/record/claim.ts'
import { PutStatus } from '../../dht/replication/put-protocol.ts'
import { ReplicaRepair } from '../../dht/republish/repair.ts'
import { quietLog } from './fixtures/replica-gate.ts'
import type { PutAnswer, PutObserver } from '../../dht/replication/put-protocol.ts'
import type { OwnRecord } from '../../dht/republish/sweep.ts'
import type { PeerId } from '@libp2p/interface'

async function setup (count: number): Promise<{ own: Map<string, OwnRecord>, bytes: Uint8Array[], signer: ClaimSigner }> {
  const signer = new ClaimSigner(await generateKeyPair('Ed25519'))
  const own = new Map<string, OwnRecord>()
  const bytes: Uint8Array[] = []
  const now = Date.now()
  for (let i = 0; i < count; i++) {
    const aor = `sip:b${i}@example.com`
    const claim = signer.sign({ kind: 'claim', aor, sip: '127.0.0.1:5060', version: BigInt(now + i), issuedAt: now, expiresAt: now + 3_600_000 })
    own.set(aor, { claim, until: now + 3_600_000, replicas: 0, putAt: now })
    bytes.push(claim.bytes)
  }
  return { own, bytes, signer }
}

/** a put client that is silent for every peer (puts fail) until `answer` is set */
function fakeClient (): { client: ConstructorParameters<typeof ReplicaRepair>[0]['client'], observer: () => PutObserver, puts: Array<{ peer: string, claims: number }>, answering: { on: boolean } } {
  let observer: PutObserver | undefined
  const puts: Array<{ peer: string, claims: number }> = []
  const answering = { on: false }
  return {
    client: {
      observe: (o) => { observer = o },
      isSilent: () => !answering.on,
      put: async (peer: PeerId, claims: Uint8Array[]): Promise<PutAnswer[]> => {
        puts.push({ peer: peer.toString(), claims: claims.length })
        if (!answering.on) throw new Error('silent')
        return claims.map(() => ({ status: PutStatus.stored }))
      }
    },
    observer: () => observer!,
    puts,
    answering
  }
}

const peers = async (n: number): Promise<PeerId[]> => await Promise.all(Array.from({ length: n }, async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519'))))

test('remembered AoRs are bounded per peer, over all peers, and in peers; garbage drops are ignored; a returning peer gets what it is owed', async () => {
  const { own, bytes } = await setup(300)
  const f = fakeClient()
  const ps = await peers(6)
  const repair = new ReplicaRepair({ client: f.client, replicas: { replicasNow: () => ps, kad: () => undefined }, own, log: quietLog, learn: () => {} }, {
    maxRememberedPerPeer: 100, maxRemembered: 250, maxPeers: 4, probeMinMs: 60_000, settleMs: 10, pauseMs: 0
  })
  repair.start()
  try {
    const o = f.observer()
    // not claims: ignored, nothing owed
    o.dropped(ps[0], [new Uint8Array([1, 2, 3]), new Uint8Array(0), new Uint8Array(600).fill(0xff)], 'timeout')
    assert.deepEqual(repair.owed(), [])
    // per peer: 100, then its region
    o.dropped(ps[0], bytes.slice(0, 100), 'timeout')
    assert.equal(repair.owed()[0].aors, 100)
    o.dropped(ps[0], bytes.slice(100, 101), 'peer_silent')
    assert.deepEqual(repair.owed().map(x => [x.aors, x.region]), [[0, true]])
    assert.equal(repair.stats.remembered, 0)
    // over all peers: 250 at most, the peer that would pass it gets its region
    o.dropped(ps[1], bytes.slice(0, 100), 'timeout')
    o.dropped(ps[2], bytes.slice(0, 100), 'timeout')
    o.dropped(ps[3], bytes.slice(0, 100), 'timeout')
    assert.ok(repair.stats.remembered <= 250, `${repair.stats.remembered} remembered`)
    assert.equal(repair.owed().find(x => x.peer === ps[3].toString())?.region, true)
    // peers: 4 at most, the longest owed is forgotten for a new one
    o.dropped(ps[4], bytes.slice(0, 10), 'timeout')
    assert.equal(repair.owed().length, 4)
    assert.equal(repair.stats.forgotten, 1)
    assert.ok(!repair.owed().some(x => x.peer === ps[0].toString()))
    // peer 4 answers again: it gets its 10 claims, in one request, and owes nothing after
    f.answering.on = true
    o.back(ps[4])
    const deadline = Date.now() + 5_000
    while (repair.owed().some(x => x.peer === ps[4].toString()) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
    assert.deepEqual(f.puts.filter(p => p.peer === ps[4].toString()), [{ peer: ps[4].toString(), claims: 10 }])
    assert.equal(repair.stats.claims, 10)
    // peer 3 (its region) answers: every own record the peer is a replica of, 128 per request
    o.back(ps[3])
    while (repair.owed().some(x => x.peer === ps[3].toString()) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
    assert.deepEqual(f.puts.filter(p => p.peer === ps[3].toString()).map(p => p.claims), [128, 128, 44])
    assert.equal(repair.stats.regionRounds, 1)
  } finally {
    repair.stop()
  }
})
