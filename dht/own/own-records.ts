/**
 * This node's own records (its claims and the releases of them) and their lease: found in the
 * store at start, renewed and re-put by the lease sweep (`republish/sweep.ts` plans each pass),
 * re-asserted once the node has DHT peers. The claim path (`claims/`) makes and ends them.
 */
import { checkClaimSync, compareClaims, verifyClaimSync } from '../record/claim.ts'
import { planSweep } from '../republish/sweep.ts'
import { errorMessage } from '../errors.ts'
import type { Key } from 'interface-datastore'
import type { ClaimSigner, SignedClaim } from '../record/claim.ts'
import type { OwnRecord } from '../republish/sweep.ts'
import type { ClaimWriter, WriteOutcome } from '../replication/writer.ts'
import type { ReplicaFinder } from '../replication/replicas.ts'
import type { JoinWait } from '../join-wait.ts'
import type { Apply } from '../routes/route-cache.ts'
import type { RunState } from '../signal.ts'
import type { DhtRegistryComponents } from '../index.ts'
import type { Aor } from '../../sip-gateway/ports.ts'
import type { AbortOptions, Logger, PeerId } from '@libp2p/interface'

/**
 * Where nodes before this layout kept a second copy of each own record (beside the DHT record in
 * the same store): read once at start, written as DHT records where newer, then deleted.
 */
const LEGACY_OWN_PREFIX = '/sipmesh/own'

/** What this node signs its claims with, and the SIP address it puts in them (may be set later). */
export interface Signing {
  readonly signer: ClaimSigner
  sip: string
}

export interface OwnRecordsComponents {
  peerId: PeerId
  datastore: DhtRegistryComponents['datastore']
  writer: ClaimWriter
  replicas: ReplicaFinder
  joins: JoinWait
  signing: Signing
  run: RunState
  log: Logger
  apply: Apply
  /** one sweep pass ran over the own records (the route cache prunes itself) */
  swept: (now: number) => void
  /** this node's claim of an AoR ended (released, displaced, lost, lapsed) */
  ended: (aor: Aor) => void
}

export interface OwnRecordsInit {
  leaseMs: number
  renewAheadMs: number
  knownRetentionMs: number
  republishIntervalMs: number
}

export interface OwnStats { renewals: number, republished: number, sweepMs: number }

export class OwnRecords {
  private readonly c: OwnRecordsComponents
  private readonly init: OwnRecordsInit
  private readonly stats: OwnStats
  private readonly own = new Map<Aor, OwnRecord>()
  private sweeping = false

  constructor (components: OwnRecordsComponents, init: OwnRecordsInit, stats: OwnStats) {
    this.c = components
    this.init = init
    this.stats = stats
  }

  get (aor: Aor): OwnRecord | undefined {
    return this.own.get(aor)
  }

  has (aor: Aor): boolean {
    return this.own.has(aor)
  }

  set (aor: Aor, record: OwnRecord): void {
    this.own.set(aor, record)
  }

  /** The own record of an AoR is gone (another owner's claim, or the registration ended). */
  end (aor: Aor): void {
    this.own.delete(aor)
    this.c.ended(aor)
  }

  /** This node's claim of an AoR ended, its record kept (a release). */
  ended (aor: Aor): void {
    this.c.ended(aor)
  }

  /** the records themselves, read only (the replica repair walks them) */
  get records (): ReadonlyMap<Aor, OwnRecord> {
    return this.own
  }

  get size (): number {
    return this.own.size
  }

  /** AoRs this node currently holds a live claim on. */
  owned (): Aor[] {
    const out: Aor[] = []
    const now = Date.now()
    for (const [aor, e] of this.own) if (e.claim.kind === 'claim' && e.claim.expiresAt > now) out.push(aor)
    return out
  }

  /**
   * Re-put the persisted own records once this node has DHT peers (waits up to `waitMs`), and
   * once more when it has settled in (the routing table was still filling).
   */
  async reassert (waitMs = 30_000): Promise<void> {
    if (this.own.size === 0) return
    if (!await this.c.joins.whenRouted(waitMs)) return
    await this.republishAll()
    await this.c.joins.pause(2_000)
    await this.republishAll()
  }

  /** Re-put every own record as it is (same signature); notices and answers tell of a lost one. */
  async republishAll (): Promise<void> {
    if (!this.c.run.running) return
    await Promise.all([...this.own.keys()].map(async aor => { await this.republishOne(aor) }))
  }

  private async republishOne (aor: Aor): Promise<void> {
    const e = this.own.get(aor)
    if (e == null) return
    e.putAt = Date.now()
    this.stats.republished++
    const out = await this.c.writer.write(e.claim)
    e.replicas = out.replicas
    this.learn(aor, out)
  }

  /** One pass over the own records: renew leases coming due, re-put releases, drop what ended. */
  async sweep (): Promise<void> {
    if (!this.c.run.running || this.sweeping) return
    this.sweeping = true
    const t0 = performance.now()
    // keep the small-mesh verdict fresh in the background, so no claim waits for its walk
    this.c.replicas.direct()
    try {
      const now = Date.now()
      const plan = planSweep(this.own, now, { renewAheadMs: this.init.renewAheadMs, republishIntervalMs: this.init.republishIntervalMs, maxPerPass: 20_000 })
      for (const aor of plan.drop) this.end(aor)
      this.c.swept(now)
      this.stats.sweepMs += performance.now() - t0
      await Promise.all([
        ...plan.renew.map(async aor => { await this.renew(aor) }),
        ...plan.republish.map(async aor => { await this.republishOne(aor) })
      ])
    } catch (err) {
      this.c.log.error('lease sweep failed: %s', errorMessage(err))
    } finally {
      this.sweeping = false
    }
  }

  /** Renew an own claim's lease (same version, later issue time). False when it is no longer ours. */
  async renew (aor: Aor): Promise<boolean> {
    const e = this.own.get(aor)
    if (e == null || e.claim.kind !== 'claim') return false
    const now = Date.now()
    const c = e.claim
    const issuedAt = Math.max(now, c.issuedAt + 1)
    const next = this.c.signing.signer.sign({
      kind: 'claim',
      aor,
      sip: this.c.signing.sip,
      version: c.version,
      issuedAt,
      expiresAt: Math.max(Math.min(issuedAt + this.init.leaseMs, e.until), issuedAt + 1),
      knownUntil: Math.max(c.knownUntil, issuedAt + this.init.knownRetentionMs)
    })
    this.stats.renewals++
    e.claim = next
    e.putAt = now
    this.c.apply(aor, next, true)
    const out = await this.c.writer.write(next)
    e.replicas = out.replicas
    this.learn(aor, out)
    return this.own.get(aor)?.claim === next
  }

  /** Take in what the replicas reported of other owners' claims (a newer one displaces us). */
  learn (aor: Aor, out: WriteOutcome): void {
    for (const other of out.others) this.c.apply(aor, other, true)
  }

  /**
   * Another owner's newer claim took an AoR from this node: it replaces our record in this node's
   * store as well (the guard keeps whichever is newer), so that a restart does not take the lost
   * claim for its own and route the AoR here until the replicas answer its re-assertion.
   */
  lost (newer: SignedClaim): void {
    if (!this.c.run.running || newer.owner.equals(this.c.peerId)) return
    void this.c.writer.write(newer, { localOnly: true })
  }

  /**
   * Find this node's own records at start: the claim records its store holds whose owner is this
   * node (the DHT record is the only copy: no second write per claim). A record whose lease ended
   * or whose retention ran out is not taken (it stays in the store as any replica's record would).
   * An own claim another node took over meanwhile is re-asserted and refused by the replicas, who
   * answer with the newer claim: the node learns it was displaced as it does for a move while it
   * was away. Then the copies an older layout kept under `/sipmesh/own/` are taken in once.
   */
  async load (options?: AbortOptions): Promise<void> {
    const now = Date.now()
    let ended = 0
    try {
      for await (const claim of this.c.datastore.claimsOf(this.c.peerId, options)) {
        try {
          this.takeOwn(claim, now)
        } catch {
          // a past registration's record (kept for its retention) or one not well-formed
          ended++
        }
      }
      if (ended > 0) this.c.log('%d own records in the store are no longer held (lease or retention ended)', ended)
    } catch (err) {
      this.c.log.error('could not load own claims: %s', errorMessage(err))
    }
    await this.migrateLegacyOwn(now, options)
  }

  /**
   * Take an own record in (throws when it is not one to keep). Our own data directory: its form
   * and key are checked, not each signature (100,000 verifications would hold a restart up for
   * seconds); every reader still verifies it.
   */
  private takeOwn (decoded: SignedClaim, now: number): void {
    const c = checkClaimSync(decoded, { skipSignature: true })
    if (!c.owner.equals(this.c.peerId)) throw new Error('not an own record')
    if (c.kind === 'claim' && c.expiresAt <= now) throw new Error('lease ended')
    const held = this.own.get(c.aor)?.claim
    if (held == null || compareClaims(c, held) > 0) {
      this.own.set(c.aor, { claim: c, until: c.kind === 'claim' ? c.expiresAt : c.knownUntil, replicas: 0, putAt: 0 })
      this.c.apply(c.aor, c, false)
    }
  }

  /**
   * A data directory of the older layout: the own copies under `/sipmesh/own/` are read once; one
   * newer than the DHT record this store holds for its AoR is written as that record (the guard
   * refuses it when a newer claim of another owner is there: then it is not ours), and every copy
   * is deleted once its record is stored. A copy that could not be stored stays for the next start.
   */
  private async migrateLegacyOwn (now: number, options?: AbortOptions): Promise<void> {
    const done: Key[] = []
    const newer: Array<{ key: Key, claim: SignedClaim }> = []
    try {
      for await (const { key, value } of this.c.datastore.query({ prefix: LEGACY_OWN_PREFIX }, options)) {
        let c: SignedClaim
        try {
          c = verifyClaimSync(value, { skipSignature: true })
          if (!c.owner.equals(this.c.peerId)) throw new Error('not an own record')
          if (c.kind === 'claim' && c.expiresAt <= now) throw new Error('lease ended')
        } catch (err) {
          this.c.log('dropping persisted claim %s: %s', key, errorMessage(err))
          done.push(key)
          continue
        }
        const held = this.own.get(c.aor)?.claim
        if (held != null && compareClaims(c, held) <= 0) done.push(key)
        else newer.push({ key, claim: c })
      }
      const outs = await Promise.all(newer.map(async ({ claim }) => await this.c.writer.write(claim, { localOnly: true })))
      newer.forEach(({ key, claim }, i) => {
        const out = outs[i]
        // refused: a newer claim of another owner stands (learned below); failed: kept for next time
        if (out.failures === 0 || out.others.length > 0) done.push(key)
        if (out.others.length === 0) this.takeOwn(claim, now)
        this.learn(claim.aor, out)
      })
      if (done.length > 0) {
        const b = this.c.datastore.batch()
        for (const key of done) b.delete(key)
        await b.commit(options)
        this.c.log('moved %d own records of the older layout (%d written as DHT records)', done.length, newer.length)
      }
    } catch (err) {
      this.c.log.error('could not read own claims of the older layout: %s', errorMessage(err))
    }
  }
}
