/**
 * The lease sweep: one pass over this node's own records every `tickMs`, instead of a timer or a
 * walk per claim.
 *
 * - A claim whose lease ends within `renewAheadMs` (less a per-claim jitter, so claims made
 *   together do not come due together) while its registration lasts longer is renewed: signed
 *   again with the same version and a new lease. Renewals of one pass go to the writer together,
 *   which sends them to each replica in one batch: the republish is grouped by replica set.
 * - A claim whose registration ended (its owner did not release it: the registrar is gone) or whose
 *   lease lapsed beyond repair is dropped from the own set.
 * - A release (tombstone) is kept, and re-put every `republishIntervalMs`, until its retention
 *   ends: it says the user is known to the mesh (kad-dht drops records 48 h after receipt).
 */
import type { SignedClaim } from '../record/claim.ts'

/** One of this node's own records. */
export interface OwnRecord {
  claim: SignedClaim
  /** a claim: until when the registration lasts (binding expiry + grace); a release: its retention */
  until: number
  /** replicas that stored it at the last write */
  replicas: number
  /** when it was last written to the replicas */
  putAt: number
}

export interface SweepPlan {
  renew: string[]
  republish: string[]
  drop: string[]
}

export interface SweepInit {
  renewAheadMs: number
  republishIntervalMs: number
  /** most renewals and re-puts in one pass (the rest wait for the next) */
  maxPerPass: number
}

/** What one pass must do at `now` (pure: the registry carries it out). */
export function planSweep (own: Iterable<[string, OwnRecord]>, now: number, init: SweepInit): SweepPlan {
  const plan: SweepPlan = { renew: [], republish: [], drop: [] }
  for (const [aor, e] of own) {
    const c = e.claim
    if (c.kind === 'claim') {
      if (e.until <= now) {
        plan.drop.push(aor)
        continue
      }
      if (e.until <= c.expiresAt) continue
      if (c.expiresAt - now >= init.renewAheadMs) continue
      // jitter: up to half the lead, from the signature's last byte (random enough, costs nothing)
      const signature = c.signature
      const lead = init.renewAheadMs - Math.floor(init.renewAheadMs / 2 * signature[signature.byteLength - 1] / 255)
      if (c.expiresAt - now < lead && plan.renew.length < init.maxPerPass) plan.renew.push(aor)
    } else {
      if (c.knownUntil <= now) {
        plan.drop.push(aor)
        continue
      }
      if (now - e.putAt >= init.republishIntervalMs && plan.republish.length < init.maxPerPass) plan.republish.push(aor)
    }
  }
  return plan
}

/**
 * The own records of a region: those whose replica set includes a given peer (`holds`), taken
 * from `own` in slices of at most `max` looked at, so that a caller walking 100,000 records can
 * yield between slices (pure: the repair carries it out). Returns the AoRs found and whether the
 * walk reached the end of `own`.
 */
export function planRegion (own: Iterator<[string, OwnRecord]>, holds: (aor: string) => boolean, max: number, now: number): { aors: string[], done: boolean } {
  const aors: string[] = []
  for (let i = 0; i < max; i++) {
    const next = own.next()
    if (next.done === true) return { aors, done: true }
    const [aor, e] = next.value
    // a claim whose lease or a release whose retention ended is not put again (the sweep drops it)
    const c = e.claim
    if ((c.kind === 'claim' ? c.expiresAt : c.knownUntil) <= now) continue
    if (holds(aor)) aors.push(aor)
  }
  return { aors, done: false }
}
