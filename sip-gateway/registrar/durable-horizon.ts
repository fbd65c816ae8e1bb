/**
 * How far a binding's stored expiry may run ahead of the one granted, so that most refreshes
 * need no disk write (issue 9: the LevelDB write was a sixth of a refresh's CPU).
 *
 * The rule, for what a kill -9 leaves behind: a binding answered 200 is on disk, and after a
 * restart it lives at least until the expiry last granted to its client (so the client, which
 * refreshes before that expiry, never finds itself unreachable) and at most `slack` later, where
 * slack = min(the configured slack, the interval granted). To keep it, a record is written with
 * each binding's expiry moved on by its slack (its "durable horizon"), and a REGISTER that only
 * moves expiries (and CSeq) is not written while every new expiry lies within its binding's
 * horizon and no more than its slack short of it. Anything else (a new, removed or changed
 * contact, another Call-ID, a shorter expiry beyond the slack) is written before the 200.
 * A stale CSeq on disk is harmless: the client's later refreshes carry higher ones.
 */
import type { StoredBinding } from './bindings.ts'

/** the expiry to store for a binding granted until `expiresAt` when written at `now` */
export function horizonOf (expiresAt: number, now: number, slackMs: number): number {
  return expiresAt + Math.min(slackMs, Math.max(0, expiresAt - now))
}

/**
 * whether the stored record already covers `bindings`, the AoR's bindings after a REGISTER, by
 * the rule above: `stored` are the bindings the record was written with (their `durableUntil`
 * set, 0 for one never written); a binding carries its predecessor's `durableUntil` only when its
 * contact, parameters and Call-ID are those of the stored one
 */
export function coveredByRecord (bindings: ReadonlyArray<StoredBinding<unknown>>, stored: ReadonlyArray<StoredBinding<unknown>> | undefined, now: number, slackMs: number): boolean {
  if (stored === undefined || bindings.length !== stored.length) return false
  for (let i = 0; i < bindings.length; i++) {
    const b = bindings[i]
    const horizon = b.durableUntil
    if (!(b.expiresAt <= horizon) || horizon - b.expiresAt > Math.min(slackMs, b.expiresAt - now)) return false
  }
  return true
}
