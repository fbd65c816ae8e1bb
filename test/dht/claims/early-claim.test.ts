// The early-claim bookkeeping on its own (dht/claims/early-claim.ts): when a write's `early` look
// takes an outcome, and that the later answers reach the claim path once, whichever of claim()'s
// decision and the last replica's answer comes first, and only for a claim answered won.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { signClaim } from '../../../dht/record/claim.ts'
import { earlyClaim, earlyDecided, newestOf } from '../../../dht/claims/early-claim.ts'
import type { EarlyClaim, LateAnswers } from '../../../dht/claims/early-claim.ts'
import type { SignedClaim } from '../../../dht/record/claim.ts'
import type { WriteOutcome } from '../../../dht/replication/writer.ts'
import type { Logger } from '@libp2p/interface'

const aor = 'sip:early@example.com'
const mineKey = await generateKeyPair('Ed25519')
const otherKey = await generateKeyPair('Ed25519')

async function claim (key: typeof mineKey, version: bigint, knownFor = 3_600_000): Promise<SignedClaim> {
  const now = Date.now()
  return await signClaim({ kind: 'claim', aor, owner: peerIdFromPrivateKey(key), sip: '127.0.0.1:5060', version, issuedAt: now - 120_000, expiresAt: now + Math.min(60_000, knownFor), knownUntil: now + knownFor }, key)
}

function outcome (o: Partial<WriteOutcome> = {}): WriteOutcome {
  return { replicas: 0, failures: 0, others: [], stood: [], storedMs: 0, answeredMs: 0, answered: false, ...o }
}

/** the claim path's side: records every call of lateAnswers */
function host (): LateAnswers & { calls: Array<{ e: EarlyClaim, out: WriteOutcome }> } {
  const calls: Array<{ e: EarlyClaim, out: WriteOutcome }> = []
  return { calls, lateAnswers: (e, out) => { calls.push({ e, out }) } }
}

const errors: unknown[][] = []
const log = Object.assign(() => {}, { error: (...args: unknown[]) => { errors.push(args) }, trace: () => {}, enabled: false }) as unknown as Logger

describe('early claims', () => {
  test('newestOf: our claim unless a live record reported or known is newer; a record past its retention does not count', async () => {
    const mine = await claim(mineKey, 10n)
    const older = await claim(otherKey, 5n)
    const newer = await claim(otherKey, 20n)
    const gone = await claim(otherKey, 30n, -1)
    assert.equal(newestOf(mine, outcome({ others: [older] })), mine)
    assert.equal(newestOf(mine, outcome({ others: [older, newer] })), newer)
    assert.equal(newestOf(mine, outcome(), newer), newer)
    assert.equal(newestOf(mine, outcome({ others: [gone] }), gone), mine)
  })

  test('the look waits while nothing decides the claim, takes the first outcome that does, then keeps the whole outcome for claim()', async () => {
    const h = host()
    const mine = await claim(mineKey, 10n)
    const e = earlyClaim(h, aor, mine, undefined)
    assert.equal(e.look(outcome()), false, 'no replica yet, nobody newer: wait')
    assert.equal(e.taken, false)
    assert.equal(e.look(outcome({ replicas: 1 })), true, 'one replica stored it')
    assert.equal(e.taken, true)
    const all = outcome({ replicas: 3, answered: true })
    assert.equal(e.look(all), true)
    assert.equal(e.all, all, 'kept: claim() has not decided yet')
    assert.equal(h.calls.length, 0)
    earlyDecided(h, log, e, true, undefined)
    assert.deepEqual(h.calls.map(c => c.out), [all], 'acted on once claim() decided it won')
  })

  test('a newer claim reported decides at once, with no replica', async () => {
    const mine = await claim(mineKey, 10n)
    const e = earlyClaim(host(), aor, mine, undefined)
    assert.equal(e.look(outcome({ others: [await claim(otherKey, 20n)] })), true)
  })

  test('the last answers after claim() decided: acted on for a claim answered won, not for one lost', async () => {
    const mine = await claim(mineKey, 10n)
    const told = await claim(otherKey, 5n)
    const won = host()
    const e = earlyClaim(won, aor, mine, undefined)
    e.look(outcome({ replicas: 1 }))
    earlyDecided(won, log, e, true, told)
    assert.equal(e.told, told)
    assert.equal(won.calls.length, 0, 'nothing yet: the last replicas have not answered')
    const all = outcome({ replicas: 3, answered: true })
    e.look(all)
    assert.deepEqual(won.calls.map(c => c.out), [all])

    const lost = host()
    const l = earlyClaim(lost, aor, mine, undefined)
    l.look(outcome({ replicas: 1 }))
    l.look(outcome({ replicas: 3, answered: true }))
    earlyDecided(lost, log, l, false, undefined)
    l.look(outcome({ replicas: 3, answered: true }))
    assert.equal(lost.calls.length, 0)
  })

  test('a claim path that throws on the later answers is logged, not thrown into claim()', async () => {
    const mine = await claim(mineKey, 10n)
    const throwing: LateAnswers = { lateAnswers: () => { throw new Error('boom') } }
    const e = earlyClaim(throwing, aor, mine, undefined)
    e.look(outcome({ replicas: 1 }))
    e.look(outcome({ replicas: 3, answered: true }))
    errors.length = 0
    assert.doesNotThrow(() => { earlyDecided(throwing, log, e, true, undefined) })
    assert.equal(errors.length, 1)
    assert.match(String(errors[0][0]), /late replica answers/)
  })
})
