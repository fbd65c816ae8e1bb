/**
 * The kad-dht validator and selector for the `/sipmesh/` key namespace.
 */
import { compareClaims, decodeClaim, verifyClaim, CLAIM_NAMESPACE } from './claim.ts'
import type { SignedClaim } from './claim.ts'
import type { Logger } from '@libp2p/interface'
import { ExpiredClaimError, errorMessage } from '../errors.ts'

export type ClaimValidateFn = (key: Uint8Array, value: Uint8Array) => Promise<void>
export type ClaimSelectFn = (key: Uint8Array, records: Uint8Array[]) => number

/**
 * A kad-dht validator: full verification (form, size, normalized AoR matching the key, expiry,
 * owner's signature). Throws InvalidClaimError with the reason, which is logged: through
 * `log.error` (a warning node/ writes at every level) for a record that is forged, malformed or
 * misplaced, through `log` (debug) for one that merely expired, which is routine.
 */
export function claimValidator (log?: Logger): ClaimValidateFn {
  return async (key, value) => {
    try {
      await verifyClaim(value, { key })
    } catch (err) {
      if (err instanceof ExpiredClaimError) log?.('refused claim record: %s', errorMessage(err))
      else log?.error('refused claim record: %s', errorMessage(err))
      throw err
    }
  }
}

/**
 * A kad-dht selector: the index of the newest claim by `compareClaims`. Records that do not decode
 * lose against any that do.
 */
export function claimSelector (): ClaimSelectFn {
  return (_key, records) => {
    let best = -1
    let bestClaim: SignedClaim | undefined
    for (let i = 0; i < records.length; i++) {
      let c: SignedClaim
      try {
        c = decodeClaim(records[i])
      } catch {
        continue
      }
      if (bestClaim == null || compareClaims(c, bestClaim) > 0) {
        best = i
        bestClaim = c
      }
    }
    return best < 0 ? 0 : best
  }
}

/** `{ validators, selectors }` to pass to kadDHT for our namespace. */
export function claimRecordHandlers (log?: Logger): { validators: Record<string, ClaimValidateFn>, selectors: Record<string, ClaimSelectFn> } {
  return {
    validators: { [CLAIM_NAMESPACE]: claimValidator(log) },
    selectors: { [CLAIM_NAMESPACE]: claimSelector() }
  }
}
