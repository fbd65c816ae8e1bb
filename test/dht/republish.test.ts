/**
 * The lease sweep (dht/republish/sweep.ts): renewals while the registration lasts, none after it,
 * re-puts of releases, and the plan itself.
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { Mesh, waitFor } from '../fixtures/mesh.ts'
import { ClaimSigner } from '../../dht/record/claim.ts'
import { planSweep } from '../../dht/republish/sweep.ts'
import type { MeshNode } from '../../node/libp2p.ts'
import type { OwnRecord } from '../../dht/republish/sweep.ts'

let counter = 0
const uniqueAor = (): string => `sip:l${process.pid}x${counter++}@example.com`

describe('planSweep', () => {
  test('renews what comes due while the registration lasts, drops what ended, re-puts old releases', async () => {
    const signer = new ClaimSigner(await generateKeyPair('Ed25519'))
    const now = Date.now()
    const claim = (aor: string, expiresIn: number, kind: 'claim' | 'release' = 'claim', knownIn = 3_600_000): ReturnType<ClaimSigner['sign']> =>
      signer.sign({ kind, aor, sip: kind === 'claim' ? '127.0.0.1:5060' : '', version: BigInt(now), issuedAt: now - 1000, expiresAt: now + expiresIn, knownUntil: now + knownIn })
    const own = new Map<string, OwnRecord>([
      ['sip:due@x.com', { claim: claim('sip:due@x.com', 1_000), until: now + 3_600_000, replicas: 2, putAt: now }],
      ['sip:later@x.com', { claim: claim('sip:later@x.com', 600_000), until: now + 3_600_000, replicas: 2, putAt: now }],
      ['sip:last@x.com', { claim: claim('sip:last@x.com', 1_000), until: now + 1_000, replicas: 2, putAt: now }],
      ['sip:ended@x.com', { claim: claim('sip:ended@x.com', 1_000), until: now - 1, replicas: 2, putAt: now }],
      ['sip:gone@x.com', { claim: claim('sip:gone@x.com', 1_000, 'release'), until: now + 3_600_000, replicas: 2, putAt: now - 7_200_000 }],
      ['sip:fresh@x.com', { claim: claim('sip:fresh@x.com', 1_000, 'release'), until: now + 3_600_000, replicas: 2, putAt: now }]
    ])
    const plan = planSweep(own, now, { renewAheadMs: 30_000, republishIntervalMs: 3_600_000, maxPerPass: 100 })
    assert.deepEqual(plan.renew, ['sip:due@x.com'])
    assert.deepEqual(plan.drop, ['sip:ended@x.com'])
    assert.deepEqual(plan.republish, ['sip:gone@x.com'])
    assert.deepEqual(planSweep(own, now, { renewAheadMs: 30_000, republishIntervalMs: 3_600_000, maxPerPass: 0 }).renew, [], 'bounded per pass')
  })
})

describe('lease renewal on a 3-node loopback mesh (lease 1.5 s, sweep every 100 ms)', () => {
  let mesh: Mesh
  let n: MeshNode[]
  before(async () => {
    mesh = await Mesh.spawn(3, { registry: { leaseMs: 1_500, sweepIntervalMs: 100, renewAheadMs: 700, expiryGraceMs: 200 } })
    n = [...mesh.nodes]
  })
  after(async () => { await mesh?.stop() })

  test('a claim outlives many leases while its registration lasts, with the same version; then it ends', async () => {
    const aor = uniqueAor()
    const registration = Date.now() + 5_000
    const first = await n[0].registry.claim(aor, { expiresAt: registration })
    assert.ok(first.route.expiresAt <= Date.now() + 1_500)
    await new Promise(resolve => setTimeout(resolve, 3_500))
    const later = await n[1].registry.resolve(aor, { fresh: true })
    assert.equal(later?.node, n[0].peerId.toString(), 'still routed after two lease periods')
    assert.equal(later?.version, first.route.version, 'renewed, not claimed again')
    assert.ok(later!.expiresAt > first.route.expiresAt)
    // the registration (5 s + 200 ms grace) ends: no renewal past it
    await waitFor(async () => await n[2].registry.resolve(aor, { fresh: true }) === undefined, 6_000, 'the lease to end with the registration')
    assert.ok(Date.now() >= registration, 'not before the registration ended')
    assert.ok(!n[0].registry.owned().includes(aor))
    assert.equal(await n[2].registry.known(aor), true, 'the user stays known')
  })
})
