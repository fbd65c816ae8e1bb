/**
 * The claim path: a refresh of an AoR this node holds answered from memory (`claimNow`), the
 * renewal of a held claim's lease, a new claim (signed, written, decided on the replicas' answers,
 * and claimed once more above a record whose owner's clock is ahead), the later answers of a claim
 * answered at the first replica's (`early-claim.ts`), and the release of a claim.
 */
import { normalizeAor, compareClaims, isLive } from '../record/claim.ts'
import { NotStartedError, errorMessage } from '../errors.ts'
import { earlyClaim, earlyDecided, newestOf } from './early-claim.ts'
import type { EarlyClaim, LateAnswers } from './early-claim.ts'
import type { Apply, RouteCache } from '../routes/route-cache.ts'
import type { OwnRecords, Signing } from '../own/own-records.ts'
import type { ClaimWriter, WriteOutcome } from '../replication/writer.ts'
import type { ReplicaFinder } from '../replication/replicas.ts'
import type { Witness } from '../notices/witness.ts'
import type { JoinWait } from '../join-wait.ts'
import type { SlowClaims } from '../slow-claims.ts'
import type { RunState } from '../signal.ts'
import type { SignedClaim } from '../record/claim.ts'
import type { Aor, ClaimOptions, ClaimResult, LocalBinding } from '../../sip-gateway/ports.ts'
import type { AbortOptions, Logger, PeerId } from '@libp2p/interface'

/** `c` when it is a live claim older than `mine` and newer than `prev`, else `prev` */
function newerOlderClaim (prev: SignedClaim | undefined, c: SignedClaim, mine: SignedClaim): SignedClaim | undefined {
  return c.kind === 'claim' && compareClaims(c, mine) < 0 && isLive(c) && (prev == null || compareClaims(c, prev) > 0) ? c : prev
}

export interface ClaimPathComponents {
  peerId: PeerId
  routes: RouteCache
  own: OwnRecords
  writer: Pick<ClaimWriter, 'write'>
  replicas: Pick<ReplicaFinder, 'kad' | 'routingTableSize'>
  witness: Pick<Witness, 'notify'>
  joins: JoinWait
  slowClaims: SlowClaims
  signing: Signing
  run: RunState
  log: Logger
  apply: Apply
}

export interface ClaimPathInit {
  expiryGraceMs: number
  leaseMs: number
  renewAheadMs: number
  knownRetentionMs: number
}

export interface ClaimStats { claims: number, lateLosses: number, refreshes: number }

export class ClaimPath implements LateAnswers {
  private readonly c: ClaimPathComponents
  private readonly routes: RouteCache
  private readonly own: OwnRecords
  private readonly run: RunState
  private readonly stats: ClaimStats
  private readonly grace: number
  private readonly lease: number
  private readonly renewAhead: number
  private readonly knownRetention: number

  constructor (components: ClaimPathComponents, init: ClaimPathInit, stats: ClaimStats) {
    this.c = components
    this.routes = components.routes
    this.own = components.own
    this.run = components.run
    this.stats = stats
    this.grace = init.expiryGraceMs
    this.lease = init.leaseMs
    this.renewAhead = init.renewAheadMs
    this.knownRetention = init.knownRetentionMs
  }

  /**
   * A new claim's signature: version max(now, anything seen + 1), a hybrid logical clock. (Not
   * async, and no array of the versions: it runs for every new registration.)
   */
  private signNew (aor: Aor, kind: 'claim' | 'release', expiresAt: number, floor?: bigint): Promise<SignedClaim> {
    const issuedAt = Date.now()
    let version = BigInt(issuedAt)
    const seen = this.routes.claimOf(aor)
    const held = this.own.get(aor)?.claim.version
    if (seen != null && seen.version >= version) version = seen.version + 1n
    if (held != null && held >= version) version = held + 1n
    if (floor != null && floor >= version) version = floor + 1n
    const exp = Math.max(expiresAt, issuedAt + 1)
    return this.c.signing.signer.signAsync({
      kind,
      aor,
      sip: kind === 'claim' ? this.c.signing.sip : '',
      version,
      issuedAt,
      expiresAt: exp,
      knownUntil: Math.max(exp, issuedAt + this.knownRetention, seen?.knownUntil ?? 0)
    })
  }

  /**
   * The refresh of a live claim this node holds whose lease needs no renewal: answered from local
   * state at once, the lease taken on to the binding's expiry (the sweep renews it). Undefined
   * when `claim` must run (not held, displaced, a lease to renew, not started).
   */
  claimNow (aorIn: Aor, binding: LocalBinding): ClaimResult | undefined {
    if (!this.run.running) return undefined
    let aor: Aor
    try { aor = normalizeAor(aorIn) } catch { return undefined }
    const held = this.own.get(aor)
    if (held == null || held.claim.kind !== 'claim') return undefined
    const now = Date.now()
    const until = binding.expiresAt + this.grace
    if (!(held.claim.expiresAt > now) || this.routes.claimOf(aor) !== held.claim) return undefined
    if (!(held.claim.expiresAt - now > this.renewAhead || held.claim.expiresAt >= until)) return undefined
    held.until = until
    this.stats.claims++
    this.stats.refreshes++
    const route = this.routes.routeOf(held.claim, now)!
    return { won: true, route, previous: route, replicas: held.replicas }
  }

  /**
   * Claim an AoR for a binding. A new claim (the AoR not held here, the node joined) runs without
   * an async function's frame: its steps are reactions on the signature and on the write (a frame
   * saved across each await was the largest allocation of a new claim, issue 9); a held claim's
   * renewal, the wait to join and a claim above a record that stood go through `claimHeld`.
   */
  claim (aorIn: Aor, binding: LocalBinding, options?: ClaimOptions): Promise<ClaimResult> {
    try {
      const answered = this.claimNow(aorIn, binding)
      if (answered !== undefined) return Promise.resolve(answered)
      const aor = normalizeAor(aorIn)
      if (!this.run.running) throw new NotStartedError()
      const now = Date.now()
      const held = this.own.get(aor)
      if (this.c.joins.waiting || (held != null && held.claim.kind === 'claim' && held.claim.expiresAt > now && this.routes.claimOf(aor) === held.claim)) {
        return this.claimHeld(aor, binding, options)
      }
      this.stats.claims++
      return this.claimNew(aor, binding.expiresAt + this.grace, now, options?.firstReplica === true)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** `claim` of an AoR held here (a refresh, or the renewal of its lease), or before the node joined */
  private async claimHeld (aor: Aor, binding: LocalBinding, options?: ClaimOptions): Promise<ClaimResult> {
    this.stats.claims++
    const now = Date.now()
    const until = binding.expiresAt + this.grace
    const held = this.own.get(aor)
    if (held != null && held.claim.kind === 'claim' && held.claim.expiresAt > now && this.routes.claimOf(aor) === held.claim) {
      held.until = until
      const route = this.routes.routeOf(held.claim, now)!
      // a refresh of an AoR this node holds: answered from local state, the sweep renews the lease
      if (held.claim.expiresAt - now > this.renewAhead || held.claim.expiresAt >= until) {
        this.stats.refreshes++
        return { won: true, route, previous: route, replicas: held.replicas }
      }
      if (await this.own.renew(aor)) {
        const e = this.own.get(aor)!
        return { won: true, route: this.routes.routeOf(e.claim)!, previous: route, replicas: e.replicas }
      }
      // displaced meanwhile: the latest registration (this one) takes over with a new claim
    }
    if (this.c.joins.waiting) await this.c.joins.joined(options)
    return await this.claimNew(aor, until, now, options?.firstReplica === true)
  }

  /** A new claim of `aor` until `until`: signed, written, and decided on the answers (`claimWritten`). */
  private claimNew (aor: Aor, until: number, now: number, early: boolean): Promise<ClaimResult> {
    const t0 = performance.now()
    const before = this.routes.claimOf(aor)
    return this.signNew(aor, 'claim', Math.min(now + this.lease, until)).then(mine => {
      const signed = performance.now() - t0
      const late = early ? earlyClaim(this, aor, mine, before) : undefined
      return this.c.writer.write(mine, { since: now, early: late?.look }).then(out => this.claimWritten(aor, until, t0, signed, before, mine, late, out, early))
    })
  }

  /** A new claim's write answered (by this node's store and the first replica, or by all). */
  private claimWritten (aor: Aor, until: number, t0: number, signed: number, before: SignedClaim | undefined, mine: SignedClaim, late: EarlyClaim | undefined, out: WriteOutcome, early: boolean): ClaimResult | Promise<ClaimResult> {
    const newest = newestOf(mine, out, before)
    const total = performance.now() - t0
    // (no object per claim for the fast ones)
    if (total >= this.c.slowClaims.thresholdMs) this.c.slowClaims.record(aor, { signed, stored: out.storedMs, answered: out.answered ? out.answeredMs : total - signed, total, replicas: out.replicas })
    if (newest !== mine && (newest === before || out.stood.includes(newest))) return this.claimOverStood(aor, until, before, newest, early)
    return this.claimDecided(aor, until, before, mine, late, out, newest)
  }

  /**
   * A record that already stood when we began (we knew it, or a replica had stored it before our
   * write reached it) won only by its version: its owner's clock is ahead of ours. The latest
   * registration takes over, so claim once more above it. (A claim that raced ours and won stays
   * the winner: see `claimWritten`.)
   */
  private async claimOverStood (aor: Aor, until: number, before: SignedClaim | undefined, stood: SignedClaim, early: boolean): Promise<ClaimResult> {
    this.c.log('claim of %s lost to an earlier record v%s, claiming above it', aor, stood.version)
    const mine = await this.signNew(aor, 'claim', Math.min(Date.now() + this.lease, until), stood.version)
    const late = early ? earlyClaim(this, aor, mine, before) : undefined
    const out = await this.c.writer.write(mine, { early: late?.look })
    out.others.push(stood)
    return this.claimDecided(aor, until, before, mine, late, out, newestOf(mine, out, before))
  }

  /** A new claim decided: `mine` won when it is the newest; this node's records and the result. */
  private claimDecided (aor: Aor, until: number, before: SignedClaim | undefined, mine: SignedClaim, late: EarlyClaim | undefined, out: WriteOutcome, newest: SignedClaim): ClaimResult {
    const won = newest === mine
    // the owner we took it from: the newest other owner's live claim older than ours
    // (no array of them per claim: a new claim usually has none)
    let prev: SignedClaim | undefined
    for (const c of out.others) prev = newerOlderClaim(prev, c, mine)
    if (before != null) prev = newerOlderClaim(prev, before, mine)
    if (won) {
      this.own.set(aor, { claim: mine, until, replicas: out.replicas, putAt: Date.now() })
      if (out.replicas === 0 && this.c.replicas.kad() != null && this.c.replicas.routingTableSize === 0) this.c.joins.replicateLater()
    } else {
      this.own.end(aor)
      this.own.lost(newest)
    }
    this.c.apply(aor, newest, true)
    if (won && prev != null && !prev.owner.equals(this.c.peerId)) void this.c.witness.notify(prev.owner, mine)
    // answered before every replica did: the others' answers are acted on when they come
    if (late != null) earlyDecided(this, this.c.log, late, won, prev)
    return { won, route: this.routes.routeOf(newest) ?? this.routes.routeOf(mine)!, previous: this.routes.routeOf(prev), replicas: out.replicas }
  }

  /**
   * Every replica answered a claim that was answered won at the first replica's: act on what the
   * later answers say, as the claim would have before its answer. A claim of another node that
   * won the race displaces ours (the displaced path: bindings dropped, handlers told, P3); a
   * record that stood before our claim (its owner's clock ahead of ours) is claimed above; a
   * previous owner only the later answers named is told of the move.
   */
  lateAnswers (late: EarlyClaim, out: WriteOutcome): void {
    const { aor, claim: mine, before, told } = late
    const e = this.own.get(aor)
    const ours = e != null && e.claim.version === mine.version && e.claim.owner.equals(mine.owner)
    if (ours && e.claim === mine) e.replicas = out.replicas
    const newest = newestOf(mine, out, before)
    if (newest === mine) {
      let prev: SignedClaim | undefined
      for (const c of out.others) prev = newerOlderClaim(prev, c, mine)
      if (ours && prev != null && !prev.owner.equals(this.c.peerId) && (told == null || !prev.owner.equals(told.owner))) void this.c.witness.notify(prev.owner, mine)
      return
    }
    this.stats.lateLosses++
    if (ours && this.run.running && out.stood.includes(newest)) {
      this.c.log('claim of %s: a later replica kept an earlier record v%s, claiming above it', aor, newest.version)
      void this.claimAbove(aor, mine, newest, before).catch((err: unknown) => {
        this.c.log.error('re-claim of %s above v%s failed: %s', aor, newest.version, errorMessage(err))
      })
      return
    }
    this.c.log('claim of %s answered at the first replica lost to v%s of %p', aor, newest.version, newest.owner)
    // our claim is still the own record: apply() sees it superseded and runs the displaced path
    this.c.apply(aor, newest, true)
  }

  /** The late half of the clock-skew rule (see `claim`): claim once more above a record that stood. */
  private async claimAbove (aor: Aor, mine: SignedClaim, stood: SignedClaim, before: SignedClaim | undefined): Promise<void> {
    const e = this.own.get(aor)
    if (e == null || e.claim.version !== mine.version || e.claim.kind !== 'claim') return
    const next = await this.signNew(aor, 'claim', Math.min(Date.now() + this.lease, e.until), stood.version)
    const signedFor = this.own.get(aor)
    if (signedFor == null || signedFor.claim.version !== mine.version || signedFor.claim.kind !== 'claim') return
    const out = await this.c.writer.write(next)
    out.others.push(stood)
    const newest = newestOf(next, out, before)
    const cur = this.own.get(aor)
    if (newest === next && cur != null && cur.claim.version === mine.version) {
      this.own.set(aor, { claim: next, until: cur.until, replicas: out.replicas, putAt: Date.now() })
      this.c.apply(aor, next, true)
      let prev: SignedClaim | undefined
      for (const c of out.others) prev = newerOlderClaim(prev, c, next)
      if (prev != null && !prev.owner.equals(this.c.peerId)) void this.c.witness.notify(prev.owner, next)
      return
    }
    // lost after all: the newest record stands, and our claim, still the own record, is displaced
    this.c.apply(aor, newest, true)
    // released meanwhile, while our claim above the stood record went out: release it too
    if (newest === next && this.own.get(aor)?.claim.kind === 'release') await this.release(aor)
  }

  async release (aorIn: Aor, _options?: AbortOptions): Promise<void> {
    const aor = normalizeAor(aorIn)
    const e = this.own.get(aor)
    const cur = this.routes.claimOf(aor) ?? e?.claim
    if (cur == null || !cur.owner.equals(this.c.peerId) || cur.kind !== 'claim') {
      if (e != null && e.claim.kind === 'claim') {
        this.own.end(aor)
        if (cur != null && !cur.owner.equals(this.c.peerId)) this.own.lost(cur)
      }
      return
    }
    // a tombstone must outlive the claim it covers, or the older claim would resurface
    const tomb = await this.signNew(aor, 'release', Math.max(cur.expiresAt, Date.now() + 1_000), cur.version)
    this.own.set(aor, { claim: tomb, until: tomb.knownUntil, replicas: 0, putAt: Date.now() })
    this.own.ended(aor)
    this.c.apply(aor, tomb, true)
    const out = await this.c.writer.write(tomb)
    const held = this.own.get(aor)
    if (held?.claim === tomb) held.replicas = out.replicas
    this.own.learn(aor, out)
  }
}
