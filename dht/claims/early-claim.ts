/**
 * A new claim answered before every replica answered (`firstReplica`): its write's `early` look
 * takes the outcome as soon as the answers so far decide the claim: this node and one replica
 * store it and nobody named a newer claim, or somebody did (lost to a race, or an earlier record
 * ahead by clock: either is decided the same on the answers so far as on all of them). Once
 * every replica answered, a claim answered won that way takes in the rest (`lateAnswers`).
 * (One object and one function per claim: no promise or closure per stage.)
 */
import { compareClaims } from '../record/claim.ts'
import { errorMessage } from '../errors.ts'
import type { SignedClaim } from '../record/claim.ts'
import type { WriteOutcome } from '../replication/writer.ts'
import type { Aor } from '../../sip-gateway/ports.ts'
import type { Logger } from '@libp2p/interface'

export interface EarlyClaim {
  aor: Aor
  claim: SignedClaim
  /** the newest claim known before it was made */
  before?: SignedClaim
  /** the write's `early` look */
  look: (o: WriteOutcome) => boolean
  /** the look took an outcome (the claim is answered on it) */
  taken: boolean
  /** claim() decided it */
  decided: boolean
  won: boolean
  /** the previous owner claim() told of the move */
  told?: SignedClaim
  /** the whole outcome, when it came before claim() decided */
  all?: WriteOutcome
}

/** Who acts on the later answers of an early claim answered won (the claim path). */
export interface LateAnswers {
  lateAnswers: (e: EarlyClaim, out: WriteOutcome) => void
}

/** The newest of our claim, what the replicas reported and what we knew. */
export function newestOf (mine: SignedClaim, out: WriteOutcome, known?: SignedClaim): SignedClaim {
  let best = mine
  const now = Date.now()
  for (const c of out.others) if (c.knownUntil > now && compareClaims(c, best) > 0) best = c
  if (known != null && known.knownUntil > now && compareClaims(known, best) > 0) best = known
  return best
}

/** The bookkeeping of an early claim (see above); `host` acts on the later answers. */
export function earlyClaim (host: LateAnswers, aor: Aor, claim: SignedClaim, before: SignedClaim | undefined): EarlyClaim {
  const e: EarlyClaim = {
    aor,
    claim,
    before,
    taken: false,
    decided: false,
    won: false,
    look: (o) => {
      if (!e.taken) {
        if (!o.answered && o.replicas === 0 && newestOf(claim, o, before) === claim) return false
        e.taken = true
        return true
      }
      // every replica answered; before claim() decided (it runs first: kept for it), or after
      if (!e.decided) e.all = o
      else if (e.won) host.lateAnswers(e, o)
      return true
    }
  }
  return e
}

/** claim() decided an early claim: the later answers of one answered won are acted on. */
export function earlyDecided (host: LateAnswers, log: Logger, e: EarlyClaim, won: boolean, told: SignedClaim | undefined): void {
  e.decided = true
  e.won = won
  e.told = told
  if (!won || e.all == null) return
  try {
    host.lateAnswers(e, e.all)
  } catch (err) {
    log.error('late replica answers for %s: %s', e.aor, errorMessage(err))
  }
}
