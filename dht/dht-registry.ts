/**
 * The claim registry over kad-dht (see `index.ts` for the design). This class is the `Registry`
 * port: it wires its rooms together and merges what any of them learns (`apply`):
 *
 * - `claims/`: the claim path (a refresh from memory, a new claim, its early answer, a release);
 * - `own/`: this node's own records and their lease (renewal, republish, the records at start);
 * - `routes/`: what this node knows per AoR (`route-cache.ts`) and reads (`reads.ts`);
 * - `notices/`: watchers and displacement (`watchers.ts`), move and interest notices
 *   (`witness.ts`, over `protocol.ts`);
 * - `replication/`: who the replicas of a key are, batched writes to them and to this node's store
 *   (`writer.ts`, over `put-protocol.ts`), reads (`lookup.ts`) and the puts of others
 *   (`incoming-puts.ts`);
 * - `republish/sweep.ts`: the plan of each lease sweep pass;
 * - `join-wait.ts`: the first claims' wait for a DHT peer; `liveness.ts`: whether the owner of a
 *   route is up (P5).
 */import { ClaimSigner, compareClaims, normalizeAor } from './record/claim.ts'
import { CLAIM_GET_PROTOCOL, CLAIM_INTEREST_PROTOCOL, CLAIM_NOTICE_PROTOCOL, claimGetHandler } from './notices/protocol.ts'
import { Witness } from './notices/witness.ts'
import { Watchers } from './notices/watchers.ts'
import { CLAIM_EXCHANGE_PROTOCOL, ClaimExchangeClient, claimExchangeHandler } from './notices/exchange.ts'
import { ReplicaFinder } from './replication/replicas.ts'
import { CLAIM_PUT_PROTOCOL, PutClient, putHandler } from './replication/put-protocol.ts'
import { ClaimWriter } from './replication/writer.ts'
import { ClaimReader } from './replication/lookup.ts'
import { acceptPuts } from './replication/incoming-puts.ts'
import { ClaimPath } from './claims/claim-path.ts'
import { OwnRecords } from './own/own-records.ts'
import { RouteCache } from './routes/route-cache.ts'
import { RouteReads } from './routes/reads.ts'
import { JoinWait } from './join-wait.ts'
import { ReplicaRepair } from './republish/repair.ts'
import { PeerLiveness } from './liveness.ts'
import { SlowClaims } from './slow-claims.ts'
import { signingThread } from './record/sign-batch.ts'
import { RunState } from './signal.ts'
import type { PutDrops } from './replication/put-protocol.ts'
import type { LookupOptions } from './replication/lookup.ts'
import type { Signing } from './own/own-records.ts'
import type { SignedClaim } from './record/claim.ts'
import type { ClaimRegistry, DhtRegistryComponents, DhtRegistryInit } from './index.ts'
import type { Aor, ClaimOptions, ClaimResult, LocalBinding, Route, Unwatch } from '../sip-gateway/ports.ts'
import type { AbortOptions, Logger, PeerId } from '@libp2p/interface'

export type { LookupOptions }

export class DhtRegistry implements ClaimRegistry {
  readonly nodeId: string
  /** counters, for tests and metrics (a stable object: metrics read its fields at scrape time) */
  readonly stats = { claims: 0, lateLosses: 0, refreshes: 0, renewals: 0, republished: 0, lookups: 0, earlyReads: 0, lateCorrections: 0, noticesSent: 0, noticesReceived: 0, noticesRejected: 0, putsReceived: 0, sweepMs: 0 }

  readonly replicas: ReplicaFinder
  readonly liveness: PeerLiveness
  /** re-puts what a replica missed once it answers again */
  readonly repair: ReplicaRepair
  readonly exchange: ClaimExchangeClient
  /** new claims slower than a REGISTER should wait (counted, told at warn) */
  readonly slowClaims: SlowClaims

  private readonly components: DhtRegistryComponents
  private readonly log: Logger
  private readonly peerId: PeerId
  private readonly signing: Signing
  private readonly sweepInterval: number
  private readonly putProtocol: string
  private readonly run = new RunState()
  private readonly client: PutClient
  private readonly writer: ClaimWriter
  private readonly reader: ClaimReader
  private readonly witness: Witness
  private readonly joins: JoinWait
  private readonly routes: RouteCache
  private readonly own: OwnRecords
  private readonly watchers: Watchers
  private readonly reads: RouteReads
  private readonly claims: ClaimPath
  private sweepTimer?: ReturnType<typeof setInterval>
  private unLiveness?: () => void

  constructor (components: DhtRegistryComponents, init: DhtRegistryInit = {}) {
    this.components = components
    const peerId = this.peerId = components.peerId
    this.nodeId = components.peerId.toString()
    const log = this.log = components.logger.forComponent('sipmesh:dht:registry')
    this.signing = { signer: new ClaimSigner(components.privateKey), sip: init.sip ?? '127.0.0.1:5060' }
    this.slowClaims = new SlowClaims(log)
    const grace = init.expiryGraceMs ?? 30_000
    const lease = init.leaseMs ?? 1_800_000
    this.sweepInterval = init.sweepIntervalMs ?? 10_000
    // at least three passes ahead, so that the jitter (up to half of it) leaves one and a half
    const renewAhead = Math.min(lease / 2, init.renewAheadMs ?? Math.max(grace, 3 * this.sweepInterval))
    const knownRetention = Math.max(init.knownRetentionMs ?? 30 * 24 * 3_600_000, 0)
    const watchInterval = init.watchIntervalMs ?? 30_000
    const queryTimeout = init.queryTimeoutMs ?? 10_000
    this.putProtocol = init.putProtocol ?? CLAIM_PUT_PROTOCOL
    const directQueries = init.directQueries ?? 'auto'
    this.liveness = new PeerLiveness(components.libp2p, components.logger.forComponent('sipmesh:dht:liveness'), init.liveness, (peer) => this.watchers.holdsWatched(peer))
    const replicas = this.replicas = new ReplicaFinder({ peerId, dht: components.dht, log }, {
      directQueries,
      queryTimeoutMs: queryTimeout,
      isDown: (peer) => this.liveness.isDown(peer),
      replicas: init.replicas ?? 5
    })
    this.client = new PutClient(components.libp2p, log, this.putProtocol)
    const interestProtocol = init.interestProtocol ?? CLAIM_INTEREST_PROTOCOL
    this.exchange = new ClaimExchangeClient(components.libp2p, log, { getProtocol: CLAIM_GET_PROTOCOL, interestProtocol })
    const writer = this.writer = new ClaimWriter({ datastore: components.datastore, replicas, client: this.client, log }, {
      datastorePrefix: init.datastorePrefix ?? '/dht'
    })
    this.reader = new ClaimReader({ datastore: components.datastore, dht: components.dht, exchange: this.exchange, replicas, writer, client: this.client, log }, { directQueries }, this.stats)
    const witness = this.witness = new Witness({ peerId, libp2p: components.libp2p, replicas, exchange: this.exchange, log }, {
      noticeProtocol: init.noticeProtocol ?? CLAIM_NOTICE_PROTOCOL,
      interestProtocol,
      noticeReplicas: init.noticeReplicas ?? 3,
      interestTtlMs: watchInterval * 3,
      onNotice: (from, c) => { this.receiveNotice(from, c) }
    }, this.stats)

    const run = this.run
    const apply = (aor: Aor, c: SignedClaim | undefined, confirmed: boolean): SignedClaim | undefined => this.apply(aor, c, confirmed)
    this.joins = new JoinWait({ replicas, run, log, republishAll: async () => { await this.own.republishAll() } }, { joinWaitMs: init.joinWaitMs })
    const routes = this.routes = new RouteCache({ peerId, liveness: this.liveness, keeps: (aor) => this.own.has(aor) || this.watchers.has(aor) }, { negativeCacheTtlMs: init.negativeCacheTtlMs })
    const own = this.own = new OwnRecords({
      peerId, datastore: components.datastore, writer, replicas, joins: this.joins, signing: this.signing, run, log, apply,
      swept: (now) => { routes.sweep(now) },
      ended: (aor) => { this.watchers.ownEnded(aor) }
    }, { leaseMs: lease, renewAheadMs: renewAhead, knownRetentionMs: knownRetention, republishIntervalMs: init.republishIntervalMs ?? 6 * 3_600_000 }, this.stats)
    this.repair = new ReplicaRepair({ client: this.client, replicas, own: own.records, log: components.logger.forComponent('sipmesh:dht:repair'), learn: (aor, c) => { this.apply(aor, c, true) } }, init.repair)
    this.watchers = new Watchers({ peerId, routes, own, replicas, witness, run, log, apply, resolve: (aor, options) => this.resolve(aor, options) }, { watchIntervalMs: watchInterval })
    this.reads = new RouteReads({ peerId, routes, reader: this.reader, writer, liveness: this.liveness, own, run, log, apply }, {
      cacheTtlMs: init.cacheTtlMs ?? 10_000,
      queryTimeoutMs: queryTimeout,
      resolveQuorum: init.resolveQuorum ?? 3
    })
    this.claims = new ClaimPath({ peerId, routes, own, writer, replicas, witness, joins: this.joins, slowClaims: this.slowClaims, signing: this.signing, run, log, apply }, {
      expiryGraceMs: grace,
      leaseMs: lease,
      renewAheadMs: renewAhead,
      knownRetentionMs: knownRetention
    }, this.stats)
  }

  /** the SIP address (`host:port`) put into this node's claims */
  get sip (): string {
    return this.signing.sip
  }

  set sip (sip: string) {
    this.signing.sip = sip
  }

  // ---------------------------------------------------------------- lifecycle

  async start (options?: AbortOptions): Promise<void> {
    if (!this.run.start()) return
    const signal = this.run.signal!
    this.client.start(signal)
    this.exchange.start(signal)
    signingThread.prepare()
    this.components.datastore.onStore = (prev, next) => { this.stored(prev, next) }
    await this.witness.start(signal)
    await this.components.libp2p.handle(CLAIM_GET_PROTOCOL, claimGetHandler(this.log, async (key) => await this.reader.storedValue(key)), {
      maxInboundStreams: 256,
      maxOutboundStreams: 256
    })
    await this.components.libp2p.handle(CLAIM_EXCHANGE_PROTOCOL, claimExchangeHandler(this.log, {
      get: async (key) => await this.reader.storedValue(key),
      interest: (from, aors, ttlMs) => { this.witness.interest(from, aors, ttlMs) }
    }), { maxInboundStreams: 32, maxOutboundStreams: 32 })
    const puts = { datastore: this.components.datastore, writer: this.writer, log: this.log }
    await this.components.libp2p.handle(this.putProtocol, putHandler(this.log, async (from, claims) => await acceptPuts(puts, this.stats, from, claims)), {
      maxInboundStreams: 64,
      maxOutboundStreams: 64
    })
    this.liveness.start()
    this.repair.start(this.liveness)
    this.unLiveness = this.liveness.onChange((peer) => { this.watchers.peerChanged(peer) })
    this.joins.start()
    await this.own.load(options)
    this.sweepTimer = setInterval(() => { void this.own.sweep() }, this.sweepInterval)
    this.sweepTimer.unref?.()
    // re-assert persisted claims as soon as the node has DHT peers, and find out then whether the
    // mesh is small enough for direct writes (the first claims would otherwise wait for that walk)
    void this.own.reassert()
    void this.joins.whenRouted(30_000).then(routed => { if (routed) this.replicas.direct() })
  }

  async stop (): Promise<void> {
    if (!this.run.stop()) return
    clearInterval(this.sweepTimer)
    this.watchers.stop()
    this.unLiveness?.()
    this.liveness.stop()
    this.repair.stop()
    this.client.close()
    this.exchange.close()
    this.components.datastore.onStore = undefined
    await this.witness.stop()
    await this.components.libp2p.unhandle(CLAIM_GET_PROTOCOL).catch(() => {})
    await this.components.libp2p.unhandle(CLAIM_EXCHANGE_PROTOCOL).catch(() => {})
    await this.components.libp2p.unhandle(this.putProtocol).catch(() => {})
  }

  /**
   * Re-put the persisted own records once this node has DHT peers (waits up to `waitMs`), and
   * once more when it has settled in (the routing table was still filling).
   */
  reassert (waitMs = 30_000): Promise<void> {
    return this.own.reassert(waitMs)
  }

  /** Re-put every own record as it is (same signature); notices and answers tell of a lost one. */
  republishAll (): Promise<void> {
    return this.own.republishAll()
  }

  /** One pass over the own records: renew leases coming due, re-put releases, drop what ended. */
  sweep (): Promise<void> {
    return this.own.sweep()
  }

  // ---------------------------------------------------------------- what this node learns

  /**
   * Merge a claim into what this node knows (P2: never go back), then tell watchers and, when
   * another owner's newer claim replaced ours, the displaced handlers. Returns the newest claim.
   */
  private apply (aor: Aor, c: SignedClaim | undefined, confirmed: boolean): SignedClaim | undefined {
    const best = this.routes.merge(aor, c, confirmed)
    const mine = this.own.get(aor)?.claim
    if (mine != null && best != null && !best.owner.equals(this.peerId) && compareClaims(best, mine) > 0) {
      this.own.end(aor)
      this.own.lost(best)
      const by = this.routes.routeOf(best)
      if (mine.kind === 'claim') {
        this.log('displaced from %s by %s', aor, best.owner)
        if (by != null) this.watchers.displaced(aor, by)
      }
    }
    this.watchers.fire(aor)
    return best
  }

  /**
   * The guard accepted a claim into this node's store (as a replica, or our own write): act on a
   * move away from us or on a watched AoR, and let the witness tell who must know.
   */
  private stored (prev: SignedClaim | undefined, next: SignedClaim): void {
    if (!this.run.running) return
    const moved = prev != null && prev.kind === 'claim' && !prev.owner.equals(next.owner)
    const changed = prev == null || prev.kind !== next.kind || !prev.owner.equals(next.owner) || prev.sip !== next.sip
    if ((moved && prev.owner.equals(this.peerId)) || (changed && this.watchers.has(next.aor))) {
      queueMicrotask(() => { this.apply(next.aor, next, true) })
    }
    this.witness.stored(prev, next)
  }

  private receiveNotice (from: PeerId, c: SignedClaim): void {
    const cur = this.routes.claimOf(c.aor)
    if (cur != null && cur.knownUntil > Date.now() && compareClaims(c, cur) <= 0) {
      this.log('notice from %p for %s is not newer than what we have', from, c.aor)
      return
    }
    this.stats.noticesReceived++
    this.apply(c.aor, c, true)
  }

  // ---------------------------------------------------------------- the Registry port

  /** A refresh answered from memory (see `ClaimPath.claimNow`); undefined when `claim` must run. */
  claimNow (aor: Aor, binding: LocalBinding): ClaimResult | undefined {
    return this.claims.claimNow(aor, binding)
  }

  claim (aor: Aor, binding: LocalBinding, options?: ClaimOptions): Promise<ClaimResult> {
    return this.claims.claim(aor, binding, options)
  }

  release (aor: Aor, options?: AbortOptions): Promise<void> {
    return this.claims.release(aor, options)
  }

  /** Every valid claim the DHT (and this node's store) holds for an AoR, newest first. */
  lookupAll (aor: Aor, options?: LookupOptions): Promise<SignedClaim[]> {
    return this.reads.lookupAll(aor, options)
  }

  /** The newest valid claim the DHT holds for an AoR. */
  lookup (aor: Aor, options?: LookupOptions): Promise<SignedClaim | undefined> {
    return this.reads.lookup(aor, options)
  }

  resolve (aor: Aor, options?: AbortOptions & { fresh?: boolean }): Promise<Route | undefined> {
    return this.reads.resolve(aor, options)
  }

  /** `resolve`'s answer from the cache when it needs no wait (see `RouteReads.routeNow`). */
  routeNow (aor: Aor): Route | undefined {
    return this.reads.routeNow(aor)
  }

  /** Whether the mesh knows this user (a record within its retention, see `RouteReads.known`). */
  known (aor: Aor, options?: AbortOptions): Promise<boolean> {
    return this.reads.known(aor, options)
  }

  watch (aor: Aor, onChange: (route: Route | undefined) => void): Unwatch {
    return this.watchers.watch(normalizeAor(aor), onChange)
  }

  onDisplaced (handler: (aor: Aor, by: Route) => void): Unwatch {
    return this.watchers.onDisplaced(handler)
  }

  /** The peers whose connections this node keeps however idle (see `Watchers.keptPeers`). */
  keptPeers (neighbours: number): PeerId[] {
    return this.watchers.keptPeers(neighbours)
  }

  /** The newest signed claim this node knows for an AoR (for the admin API and tests). */
  newest (aor: Aor): SignedClaim | undefined {
    return this.routes.claimOf(normalizeAor(aor))
  }

  /** AoRs this node currently holds a live claim on. */
  owned (): Aor[] {
    return this.own.owned()
  }

  /** How many own records (claims and releases) this node keeps and renews. */
  get ownRecords (): number {
    return this.own.size
  }

  /** Claims not sent to a replica, by reason (put-protocol.ts: a full queue, a silent peer, a timeout). */
  putDrops (): Readonly<PutDrops> {
    return this.client.stats.dropped
  }

  /** Batching figures of the writer and the put streams (benchmarks). */
  writeStats (): { batches: number, claims: number, largestBatch: number, peerBatches: number, peerClaims: number, walks: number, signingBatches: number } {
    return { ...this.writer.stats, peerBatches: this.client.stats.batches, peerClaims: this.client.stats.claims, walks: this.replicas.walks, signingBatches: signingThread.stats.batches }
  }
}
