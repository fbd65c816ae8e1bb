/**
 * The claim registry over kad-dht (see `index.ts` for the design). This class is the `Registry`
 * port: it keeps what this node knows (the newest claim seen per AoR, its own records, watchers)
 * and hands the work to its rooms:
 *
 * - `replication/`: who the replicas of a key are, batched writes to them and to this node's store
 *   (`writer.ts`, over `put-protocol.ts`), and reads (`lookup.ts`);
 * - `notices/`: move and interest notices (`witness.ts`, over `protocol.ts`);
 * - `republish/sweep.ts`: lease renewal and the re-put of releases, one pass for all own records;
 * - `liveness.ts`: whether the owner of a route is up (P5).
 */
import { Key } from 'interface-datastore'
import { ClaimSigner, checkClaimSync, claimKey, compareClaims, isLive, normalizeAor, verifyClaimSync } from './record/claim.ts'
import { CLAIM_GET_PROTOCOL, CLAIM_INTEREST_PROTOCOL, CLAIM_NOTICE_PROTOCOL, claimGetHandler } from './notices/protocol.ts'
import { Witness } from './notices/witness.ts'
import { CLAIM_EXCHANGE_PROTOCOL, ClaimExchangeClient, claimExchangeHandler } from './notices/exchange.ts'
import { ReplicaFinder } from './replication/replicas.ts'
import { CLAIM_PUT_PROTOCOL, PutClient, PutStatus, putHandler } from './replication/put-protocol.ts'
import type { PutDrops } from './replication/put-protocol.ts'
import { ClaimWriter } from './replication/writer.ts'
import { ClaimReader } from './replication/lookup.ts'
import { planSweep } from './republish/sweep.ts'
import { ReplicaRepair } from './republish/repair.ts'
import { PeerLiveness } from './liveness.ts'
import { SlowClaims } from './slow-claims.ts'
import { signingThread } from './record/sign-batch.ts'
import { NotStartedError, errorMessage } from './errors.ts'
import { withSignal } from './signal.ts'
import { recordTime, storedRecord } from './record/stored-record.ts'
import type { PutAnswer } from './replication/put-protocol.ts'
import type { LookupOptions } from './replication/lookup.ts'
import type { WriteOutcome } from './replication/writer.ts'
import type { OwnRecord } from './republish/sweep.ts'
import type { ClaimWrite } from './datastore-guard.ts'
import type { SignedClaim } from './record/claim.ts'
import type { ClaimRegistry, DhtRegistryComponents, DhtRegistryInit } from './index.ts'
import type { Aor, ClaimOptions, ClaimResult, LocalBinding, Route, Unwatch } from '../sip-gateway/ports.ts'
import type { AbortOptions, Logger, PeerId } from '@libp2p/interface'

export type { LookupOptions }

/**
 * Where nodes before this layout kept a second copy of each own record (beside the DHT record in
 * the same store): read once at start, written as DHT records where newer, then deleted.
 */
const LEGACY_OWN_PREFIX = '/sipmesh/own'
/** most routes kept in the cache (the oldest go first) */
const MAX_CACHED = 500_000
const MAX_INTEREST_WAIT_MS = 3_600_000

interface CacheEntry {
  /** the newest claim this node has seen for the AoR (P2) */
  claim: SignedClaim
  /** when the DHT or a notice last confirmed it */
  fetchedAt: number
}

/** a new claim answered before every replica answered (see `DhtRegistry.earlyClaim`) */
interface EarlyClaim {
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

interface WatchEntry {
  fns: Set<(route: Route | undefined) => void>
  last: Route | undefined
  poll?: ReturnType<typeof setInterval>
  expiry?: ReturnType<typeof setTimeout>
}

/** Watchers are told when the owner or its address changes, not on every renewal. */
function sameRoute (a: Route | undefined, b: Route | undefined): boolean {
  if (a == null || b == null) return a === b
  return a.node === b.node && a.sip === b.sip
}

/** `c` when it is a live claim older than `mine` and newer than `prev`, else `prev` */
function newerOlderClaim (prev: SignedClaim | undefined, c: SignedClaim, mine: SignedClaim): SignedClaim | undefined {
  return c.kind === 'claim' && compareClaims(c, mine) < 0 && isLive(c) && (prev == null || compareClaims(c, prev) > 0) ? c : prev
}

export class DhtRegistry implements ClaimRegistry {
  readonly nodeId: string
  sip: string
  /** counters, for tests and metrics (a stable object: metrics read its fields at scrape time) */
  readonly stats = { claims: 0, lateLosses: 0, refreshes: 0, renewals: 0, republished: 0, lookups: 0, earlyReads: 0, lateCorrections: 0, noticesSent: 0, noticesReceived: 0, noticesRejected: 0, putsReceived: 0, sweepMs: 0 }

  private readonly components: DhtRegistryComponents
  private readonly log: Logger
  private readonly peerId: PeerId
  private readonly signer: ClaimSigner
  private readonly grace: number
  private readonly lease: number
  private readonly renewAhead: number
  private readonly knownRetention: number
  private readonly cacheTtl: number
  private readonly negativeTtl: number
  private readonly republishInterval: number
  private readonly sweepInterval: number
  private readonly watchInterval: number
  private readonly queryTimeout: number
  private readonly resolveQuorum: number
  private readonly joinWait: number
  private readonly putProtocol: string

  private readonly cache = new Map<Aor, CacheEntry>()
  private readonly negative = new Map<Aor, number>()
  private readonly own = new Map<Aor, OwnRecord>()
  private readonly watchers = new Map<Aor, WatchEntry>()
  private readonly displacedHandlers = new Set<(aor: Aor, by: Route) => void>()
  /** the quorum lookup running for an AoR (resolves of a cold AoR share it) */
  private readonly resolving = new Map<Aor, Promise<SignedClaim | undefined>>()

  readonly replicas: ReplicaFinder
  readonly liveness: PeerLiveness
  readonly repair: ReplicaRepair
  private readonly client: PutClient
  readonly exchange: ClaimExchangeClient
  private readonly writer: ClaimWriter
  private readonly reader: ClaimReader
  private readonly witness: Witness
  /** new claims slower than a REGISTER should wait (counted, told at warn) */
  readonly slowClaims: SlowClaims
  private shutdown?: AbortController
  private sweepTimer?: ReturnType<typeof setInterval>
  private sweeping = false
  private passes = 0
  /** when the first claim may stop waiting for a DHT peer (set at start, cleared once routed) */
  private joinDeadline?: number
  /** own claims put while no DHT peer was known: re-put as soon as one is */
  private unreplicated = false
  private unLiveness?: () => void

  constructor (components: DhtRegistryComponents, init: DhtRegistryInit = {}) {
    this.components = components
    this.peerId = components.peerId
    this.nodeId = components.peerId.toString()
    this.log = components.logger.forComponent('sipmesh:dht:registry')
    this.signer = new ClaimSigner(components.privateKey)
    this.slowClaims = new SlowClaims(this.log)
    this.sip = init.sip ?? '127.0.0.1:5060'
    this.grace = init.expiryGraceMs ?? 30_000
    this.lease = init.leaseMs ?? 1_800_000
    this.sweepInterval = init.sweepIntervalMs ?? 10_000
    // at least three passes ahead, so that the jitter (up to half of it) leaves one and a half
    this.renewAhead = Math.min(this.lease / 2, init.renewAheadMs ?? Math.max(this.grace, 3 * this.sweepInterval))
    this.knownRetention = Math.max(init.knownRetentionMs ?? 30 * 24 * 3_600_000, 0)
    this.cacheTtl = init.cacheTtlMs ?? 10_000
    this.negativeTtl = init.negativeCacheTtlMs ?? 0
    this.republishInterval = init.republishIntervalMs ?? 6 * 3_600_000
    this.watchInterval = init.watchIntervalMs ?? 30_000
    this.queryTimeout = init.queryTimeoutMs ?? 10_000
    this.resolveQuorum = init.resolveQuorum ?? 3
    this.joinWait = init.joinWaitMs ?? 0
    this.putProtocol = init.putProtocol ?? CLAIM_PUT_PROTOCOL
    const directQueries = init.directQueries ?? 'auto'
    this.liveness = new PeerLiveness(components.libp2p, components.logger.forComponent('sipmesh:dht:liveness'), init.liveness, (peer) => this.holdsWatched(peer))
    this.replicas = new ReplicaFinder({ peerId: this.peerId, dht: components.dht, log: this.log }, {
      directQueries,
      queryTimeoutMs: this.queryTimeout,
      isDown: (peer) => this.liveness.isDown(peer),
      replicas: init.replicas ?? 5
    })
    this.client = new PutClient(components.libp2p, this.log, this.putProtocol)
    const interestProtocol = init.interestProtocol ?? CLAIM_INTEREST_PROTOCOL
    this.exchange = new ClaimExchangeClient(components.libp2p, this.log, { getProtocol: CLAIM_GET_PROTOCOL, interestProtocol })
    this.writer = new ClaimWriter({ datastore: components.datastore, replicas: this.replicas, client: this.client, log: this.log }, {
      datastorePrefix: init.datastorePrefix ?? '/dht'
    })
    this.repair = new ReplicaRepair({ client: this.client, replicas: this.replicas, own: this.own, log: components.logger.forComponent('sipmesh:dht:repair'), learn: (aor, c) => { this.apply(aor, c, true) } }, init.repair)
    this.reader = new ClaimReader({
      datastore: components.datastore,
      dht: components.dht,
      exchange: this.exchange,
      replicas: this.replicas,
      writer: this.writer,
      client: this.client,
      log: this.log
    }, { directQueries }, this.stats)
    this.witness = new Witness({ peerId: this.peerId, libp2p: components.libp2p, replicas: this.replicas, exchange: this.exchange, log: this.log }, {
      noticeProtocol: init.noticeProtocol ?? CLAIM_NOTICE_PROTOCOL,
      interestProtocol,
      noticeReplicas: init.noticeReplicas ?? 3,
      interestTtlMs: this.watchInterval * 3,
      onNotice: (from, c) => { this.receiveNotice(from, c) }
    }, this.stats)
  }

  // ---------------------------------------------------------------- lifecycle

  async start (options?: AbortOptions): Promise<void> {
    if (this.shutdown != null) return
    this.shutdown = new AbortController()
    const signal = this.shutdown.signal
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
    await this.components.libp2p.handle(this.putProtocol, putHandler(this.log, async (from, claims) => await this.acceptPuts(from, claims)), {
      maxInboundStreams: 64,
      maxOutboundStreams: 64
    })
    this.liveness.start()
    this.repair.start(this.liveness)
    this.unLiveness = this.liveness.onChange((peer) => { this.peerChanged(peer) })
    this.joinDeadline = this.joinWait > 0 ? Date.now() + this.joinWait : undefined
    await this.loadOwn(options)
    this.sweepTimer = setInterval(() => { void this.sweep() }, this.sweepInterval)
    this.sweepTimer.unref?.()
    // re-assert persisted claims as soon as the node has DHT peers, and find out then whether the
    // mesh is small enough for direct writes (the first claims would otherwise wait for that walk)
    void this.reassert()
    void this.whenRouted(30_000).then(routed => { if (routed) this.replicas.direct() })
  }

  async stop (): Promise<void> {
    if (this.shutdown == null) return
    this.shutdown.abort()
    this.shutdown = undefined
    clearInterval(this.sweepTimer)
    for (const w of this.watchers.values()) {
      clearInterval(w.poll)
      clearTimeout(w.expiry)
    }
    this.watchers.clear()
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
  async reassert (waitMs = 30_000): Promise<void> {
    if (this.own.size === 0) return
    if (!await this.whenRouted(waitMs)) return
    await this.republishAll()
    await this.pause(2_000)
    await this.republishAll()
  }

  /** Re-put every own record as it is (same signature); notices and answers tell of a lost one. */
  async republishAll (): Promise<void> {
    if (this.shutdown == null) return
    await Promise.all([...this.own.keys()].map(async aor => { await this.republishOne(aor) }))
  }

  private async republishOne (aor: Aor): Promise<void> {
    const e = this.own.get(aor)
    if (e == null) return
    e.putAt = Date.now()
    this.stats.republished++
    const out = await this.writer.write(e.claim)
    e.replicas = out.replicas
    this.learn(aor, out)
  }

  /** Wait (up to `waitMs`, polling) until the routing table holds a DHT peer. */
  private async whenRouted (waitMs: number): Promise<boolean> {
    const deadline = Date.now() + waitMs
    while (this.replicas.kad() != null && this.replicas.routingTableSize === 0) {
      if (this.shutdown == null || Date.now() >= deadline) return false
      await this.pause(50)
    }
    return this.shutdown != null
  }

  /** Sleep for `ms`, or less when the registry stops. */
  private async pause (ms: number): Promise<void> {
    const signal = this.shutdown?.signal
    if (signal == null || signal.aborted) return
    await new Promise<void>(resolve => {
      const done = (): void => { clearTimeout(timer); signal.removeEventListener('abort', done); resolve() }
      const timer = setTimeout(done, ms)
      timer.unref?.()
      signal.addEventListener('abort', done, { once: true })
    })
  }

  /**
   * A node that was just started with bootstrap peers or mDNS has an empty routing table for a
   * few hundred ms: a claim put then reaches no replica and nobody else can resolve it. The first
   * claims wait for a peer (until `joinWaitMs` after start); a claim that still went out to nobody
   * is re-put once a peer turns up.
   */
  private async joined (options?: AbortOptions): Promise<void> {
    if (this.joinDeadline == null) return
    if (this.replicas.kad() == null || this.replicas.routingTableSize > 0) {
      this.joinDeadline = undefined
      return
    }
    const left = this.joinDeadline - Date.now()
    if (left <= 0) {
      this.joinDeadline = undefined
      return
    }
    const routed = await this.whenRouted(left)
    options?.signal?.throwIfAborted()
    if (routed) this.joinDeadline = undefined
  }

  /** After a put that no peer stored because none was known: re-put own records once one is. */
  private replicateLater (): void {
    if (this.unreplicated) return
    this.unreplicated = true
    void this.whenRouted(MAX_INTEREST_WAIT_MS).then(async (routed) => {
      this.unreplicated = false
      if (routed) await this.republishAll()
    }).catch((err: unknown) => { this.log('re-put after join failed: %s', errorMessage(err)) })
  }

  /** Run one bounded operation: aborted by stop(), the caller's signal or the query timeout. */
  private async op<T> (options: AbortOptions | undefined, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    if (this.shutdown == null) throw new NotStartedError()
    return withSignal(this.queryTimeout, [this.shutdown.signal, options?.signal], fn)
  }

  // ---------------------------------------------------------------- the sweep

  /** One pass over the own records: renew leases coming due, re-put releases, drop what ended. */
  async sweep (): Promise<void> {
    if (this.shutdown == null || this.sweeping) return
    this.sweeping = true
    const t0 = performance.now()
    // keep the small-mesh verdict fresh in the background, so no claim waits for its walk
    this.replicas.direct()
    try {
      const now = Date.now()
      const plan = planSweep(this.own, now, { renewAheadMs: this.renewAhead, republishIntervalMs: this.republishInterval, maxPerPass: 20_000 })
      for (const aor of plan.drop) {
        this.own.delete(aor)
        this.ownEnded(aor)
      }
      // the cache holds the own claims too: look through it every sixth pass only
      if (++this.passes % 6 === 0) {
        for (const [aor, e] of this.cache) {
          if (!this.worthKeeping(aor, e.claim, now)) this.cache.delete(aor)
        }
      }
      this.stats.sweepMs += performance.now() - t0
      await Promise.all([
        ...plan.renew.map(async aor => { await this.renew(aor) }),
        ...plan.republish.map(async aor => { await this.republishOne(aor) })
      ])
    } catch (err) {
      this.log.error('lease sweep failed: %s', errorMessage(err))
    } finally {
      this.sweeping = false
    }
  }

  /** Renew an own claim's lease (same version, later issue time). False when it is no longer ours. */
  private async renew (aor: Aor): Promise<boolean> {
    const e = this.own.get(aor)
    if (e == null || e.claim.kind !== 'claim') return false
    const now = Date.now()
    const c = e.claim
    const issuedAt = Math.max(now, c.issuedAt + 1)
    const next = this.signer.sign({
      kind: 'claim',
      aor,
      sip: this.sip,
      version: c.version,
      issuedAt,
      expiresAt: Math.max(Math.min(issuedAt + this.lease, e.until), issuedAt + 1),
      knownUntil: Math.max(c.knownUntil, issuedAt + this.knownRetention)
    })
    this.stats.renewals++
    e.claim = next
    e.putAt = now
    this.apply(aor, next, true)
    const out = await this.writer.write(next)
    e.replicas = out.replicas
    this.learn(aor, out)
    return this.own.get(aor)?.claim === next
  }

  /** Take in what the replicas reported of other owners' claims (a newer one displaces us). */
  private learn (aor: Aor, out: WriteOutcome): void {
    for (const other of out.others) this.apply(aor, other, true)
  }

  // ---------------------------------------------------------------- replica side

  /**
   * Claims another node sent us to store (we are a replica of their keys). A claim of the sender's
   * own is not signature-checked here: the Noise channel already proved the sender holds the
   * owner's key, and Ed25519 verification is 2-3x the cost of signing (two replicas verifying
   * every new claim was most of a 3-node mesh's CPU). Every reader verifies what it reads, and
   * claims relayed by anyone else (corrections, notices) are verified on receipt.
   */
  private async acceptPuts (from: PeerId, claims: Uint8Array[]): Promise<PutAnswer[]> {
    const answers: PutAnswer[] = new Array(claims.length)
    const writes: ClaimWrite[] = []
    const at: number[] = []
    const time = recordTime(Date.now())
    let invalid = 0
    let reason = ''
    claims.forEach((bytes, i) => {
      try {
        const c = verifyClaimSync(bytes, { skipSignature: true })
        if (!c.owner.equals(from)) verifyClaimSync(bytes)
        const key = claimKey(c.aor)
        writes.push({ key: this.writer.recordKey(key), record: storedRecord(key, bytes, time), claim: c })
        at.push(i)
      } catch (err) {
        invalid++
        reason = errorMessage(err)
        answers[i] = { status: PutStatus.invalid }
      }
    })
    this.stats.putsReceived += claims.length
    if (invalid > 0) {
      if (/expired/.test(reason)) this.log('refused %d claims from %p: %s', invalid, from, reason)
      else this.log.error('refused %d claims from %p: %s', invalid, from, reason)
    }
    const results = writes.length > 0 ? await this.components.datastore.putClaims(writes) : []
    results.forEach((r, j) => {
      const c = writes[j].claim
      const other = r.other != null && !r.other.owner.equals(c.owner) ? r.other.bytes : undefined
      answers[at[j]] = r.stored ? { status: PutStatus.stored, other } : { status: PutStatus.stale, other: r.other?.bytes, age: r.otherAge }
    })
    return answers
  }

  // ---------------------------------------------------------------- local knowledge

  /** The route of a claim as this node sees it: none when void, released or its owner is down. */
  private routeOf (c: SignedClaim | undefined, now = Date.now()): Route | undefined {
    if (c == null || !isLive(c, now)) return undefined
    if (!c.owner.equals(this.peerId) && this.liveness.isDown(c.owner)) return undefined
    return { aor: c.aor, node: c.owner.toString(), sip: c.sip, version: c.version, expiresAt: c.expiresAt }
  }

  /**
   * Merge a claim into what this node knows (P2: never go back), then tell watchers and, when
   * another owner's newer claim replaced ours, the displaced handlers. Returns the newest claim.
   */
  private apply (aor: Aor, c: SignedClaim | undefined, confirmed: boolean): SignedClaim | undefined {
    const now = Date.now()
    const cur = this.cache.get(aor)
    let best = cur != null && cur.claim.knownUntil > now ? cur.claim : undefined
    if (c != null && c.knownUntil > now && (best == null || compareClaims(c, best) > 0)) best = c
    if (best == null || !this.worthKeeping(aor, best, now)) {
      this.cache.delete(aor)
      if (best == null && this.negativeTtl > 0) this.negative.set(aor, now)
    } else {
      this.negative.delete(aor)
      if (cur == null || cur.claim !== best || confirmed) {
        if (cur == null && this.cache.size >= MAX_CACHED) this.cache.delete(this.cache.keys().next().value!)
        this.cache.set(aor, { claim: best, fetchedAt: confirmed || cur == null ? now : cur.fetchedAt })
      }
    }
    const mine = this.own.get(aor)?.claim
    if (mine != null && best != null && !best.owner.equals(this.peerId) && compareClaims(best, mine) > 0) {
      this.own.delete(aor)
      this.ownEnded(aor)
      this.storeLoss(best)
      const by = this.routeOf(best)
      if (mine.kind === 'claim') {
        this.log('displaced from %s by %s', aor, best.owner)
        if (by != null) {
          for (const h of [...this.displacedHandlers]) {
            try { h(aor, by) } catch (err) { this.log.error('onDisplaced handler threw: %s', errorMessage(err)) }
          }
        }
      }
    }
    this.fireWatchers(aor)
    return best
  }

  /**
   * What the cache keeps: this node's own records, and other owners' claims while their lease
   * runs (P2 holds for as long as a claim can route; a record kept only to say "known" is asked
   * for again when needed, so the cache does not grow with every AoR resolved in 30 days).
   */
  private worthKeeping (aor: Aor, c: SignedClaim, now: number): boolean {
    return c.expiresAt > now || this.own.has(aor) || this.watchers.has(aor)
  }

  private fireWatchers (aor: Aor): void {
    const w = this.watchers.get(aor)
    if (w == null) return
    const route = this.routeOf(this.cache.get(aor)?.claim)
    clearTimeout(w.expiry)
    if (route != null) {
      w.expiry = setTimeout(() => { this.apply(aor, undefined, false) }, Math.max(0, route.expiresAt - Date.now()) + 5)
      w.expiry.unref?.()
    }
    if (sameRoute(route, w.last)) return
    w.last = route
    for (const fn of [...w.fns]) {
      try { fn(route) } catch (err) { this.log.error('watch callback threw: %s', errorMessage(err)) }
    }
  }

  /** Whether a peer holds the route of an AoR this node watches. */
  /**
   * The peers whose connections this node keeps however idle (node/idle-connections.ts): the
   * owners of the routes it watches (liveness, P5) and its `neighbours` closest peers in the
   * routing table.
   */
  keptPeers (neighbours: number): PeerId[] {
    const kept = this.replicas.closestKnown(this.peerId.toMultihash().bytes, neighbours)
    for (const aor of this.watchers.keys()) {
      const owner = this.cache.get(aor)?.claim.owner
      if (owner !== undefined && !owner.equals(this.peerId)) kept.push(owner)
    }
    return kept
  }

  private holdsWatched (peer: PeerId): boolean {
    for (const aor of this.watchers.keys()) {
      if (this.cache.get(aor)?.claim.owner.equals(peer) === true) return true
    }
    return false
  }

  /** A peer went down or came back: the watchers of the AoRs it holds are told. */
  private peerChanged (peer: string): void {
    for (const aor of this.watchers.keys()) {
      if (this.cache.get(aor)?.claim.owner.toString() === peer) this.fireWatchers(aor)
    }
  }

  /**
   * The guard accepted a claim into this node's store (as a replica, or our own write): act on a
   * move away from us or on a watched AoR, and let the witness tell who must know.
   */
  private stored (prev: SignedClaim | undefined, next: SignedClaim): void {
    if (this.shutdown == null) return
    const moved = prev != null && prev.kind === 'claim' && !prev.owner.equals(next.owner)
    const changed = prev == null || prev.kind !== next.kind || !prev.owner.equals(next.owner) || prev.sip !== next.sip
    if ((moved && prev.owner.equals(this.peerId)) || (changed && this.watchers.has(next.aor))) {
      queueMicrotask(() => { this.apply(next.aor, next, true) })
    }
    this.witness.stored(prev, next)
  }

  private receiveNotice (from: PeerId, c: SignedClaim): void {
    const cur = this.cache.get(c.aor)
    if (cur != null && cur.claim.knownUntil > Date.now() && compareClaims(c, cur.claim) <= 0) {
      this.log('notice from %p for %s is not newer than what we have', from, c.aor)
      return
    }
    this.stats.noticesReceived++
    this.apply(c.aor, c, true)
  }

  /**
   * Another owner's newer claim took an AoR from this node: it replaces our record in this node's
   * store as well (the guard keeps whichever is newer), so that a restart does not take the lost
   * claim for its own and route the AoR here until the replicas answer its re-assertion.
   */
  private storeLoss (newer: SignedClaim): void {
    if (this.shutdown == null || newer.owner.equals(this.peerId)) return
    void this.writer.write(newer, { localOnly: true })
  }

  /**
   * Find this node's own records at start: the claim records its store holds whose owner is this
   * node (the DHT record is the only copy: no second write per claim). A record whose lease ended
   * or whose retention ran out is not taken (it stays in the store as any replica's record would).
   * An own claim another node took over meanwhile is re-asserted and refused by the replicas, who
   * answer with the newer claim: the node learns it was displaced as it does for a move while it
   * was away. Then the copies an older layout kept under `/sipmesh/own/` are taken in once.
   */
  private async loadOwn (options?: AbortOptions): Promise<void> {
    const now = Date.now()
    let ended = 0
    try {
      for await (const claim of this.components.datastore.claimsOf(this.peerId, options)) {
        try {
          this.takeOwn(claim, now)
        } catch {
          // a past registration's record (kept for its retention) or one not well-formed
          ended++
        }
      }
      if (ended > 0) this.log('%d own records in the store are no longer held (lease or retention ended)', ended)
    } catch (err) {
      this.log.error('could not load own claims: %s', errorMessage(err))
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
    if (!c.owner.equals(this.peerId)) throw new Error('not an own record')
    if (c.kind === 'claim' && c.expiresAt <= now) throw new Error('lease ended')
    const held = this.own.get(c.aor)?.claim
    if (held == null || compareClaims(c, held) > 0) {
      this.own.set(c.aor, { claim: c, until: c.kind === 'claim' ? c.expiresAt : c.knownUntil, replicas: 0, putAt: 0 })
      this.apply(c.aor, c, false)
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
      for await (const { key, value } of this.components.datastore.query({ prefix: LEGACY_OWN_PREFIX }, options)) {
        let c: SignedClaim
        try {
          c = verifyClaimSync(value, { skipSignature: true })
          if (!c.owner.equals(this.peerId)) throw new Error('not an own record')
          if (c.kind === 'claim' && c.expiresAt <= now) throw new Error('lease ended')
        } catch (err) {
          this.log('dropping persisted claim %s: %s', key, errorMessage(err))
          done.push(key)
          continue
        }
        const held = this.own.get(c.aor)?.claim
        if (held != null && compareClaims(c, held) <= 0) done.push(key)
        else newer.push({ key, claim: c })
      }
      const outs = await Promise.all(newer.map(async ({ claim }) => await this.writer.write(claim, { localOnly: true })))
      newer.forEach(({ key, claim }, i) => {
        const out = outs[i]
        // refused: a newer claim of another owner stands (learned below); failed: kept for next time
        if (out.failures === 0 || out.others.length > 0) done.push(key)
        if (out.others.length === 0) this.takeOwn(claim, now)
        this.learn(claim.aor, out)
      })
      if (done.length > 0) {
        const b = this.components.datastore.batch()
        for (const key of done) b.delete(key)
        await b.commit(options)
        this.log('moved %d own records of the older layout (%d written as DHT records)', done.length, newer.length)
      }
    } catch (err) {
      this.log.error('could not read own claims of the older layout: %s', errorMessage(err))
    }
  }

  // ---------------------------------------------------------------- the Registry port

  /**
   * A new claim's signature: version max(now, anything seen + 1), a hybrid logical clock. (Not
   * async, and no array of the versions: it runs for every new registration.)
   */
  private signNew (aor: Aor, kind: 'claim' | 'release', expiresAt: number, floor?: bigint): Promise<SignedClaim> {
    const issuedAt = Date.now()
    let version = BigInt(issuedAt)
    const seen = this.cache.get(aor)?.claim
    const held = this.own.get(aor)?.claim.version
    if (seen != null && seen.version >= version) version = seen.version + 1n
    if (held != null && held >= version) version = held + 1n
    if (floor != null && floor >= version) version = floor + 1n
    const exp = Math.max(expiresAt, issuedAt + 1)
    return this.signer.signAsync({
      kind,
      aor,
      sip: kind === 'claim' ? this.sip : '',
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
    if (this.shutdown == null) return undefined
    let aor: Aor
    try { aor = normalizeAor(aorIn) } catch { return undefined }
    const held = this.own.get(aor)
    if (held == null || held.claim.kind !== 'claim') return undefined
    const now = Date.now()
    const until = binding.expiresAt + this.grace
    if (!(held.claim.expiresAt > now) || this.cache.get(aor)?.claim !== held.claim) return undefined
    if (!(held.claim.expiresAt - now > this.renewAhead || held.claim.expiresAt >= until)) return undefined
    held.until = until
    this.stats.claims++
    this.stats.refreshes++
    const route = this.routeOf(held.claim, now)!
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
      if (this.shutdown == null) throw new NotStartedError()
      const now = Date.now()
      const held = this.own.get(aor)
      if (this.joinDeadline != null || (held != null && held.claim.kind === 'claim' && held.claim.expiresAt > now && this.cache.get(aor)?.claim === held.claim)) {
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
    if (held != null && held.claim.kind === 'claim' && held.claim.expiresAt > now && this.cache.get(aor)?.claim === held.claim) {
      held.until = until
      const route = this.routeOf(held.claim, now)!
      // a refresh of an AoR this node holds: answered from local state, the sweep renews the lease
      if (held.claim.expiresAt - now > this.renewAhead || held.claim.expiresAt >= until) {
        this.stats.refreshes++
        return { won: true, route, previous: route, replicas: held.replicas }
      }
      if (await this.renew(aor)) {
        const e = this.own.get(aor)!
        return { won: true, route: this.routeOf(e.claim)!, previous: route, replicas: e.replicas }
      }
      // displaced meanwhile: the latest registration (this one) takes over with a new claim
    }
    if (this.joinDeadline != null) await this.joined(options)
    return await this.claimNew(aor, until, now, options?.firstReplica === true)
  }

  /** A new claim of `aor` until `until`: signed, written, and decided on the answers (`claimWritten`). */
  private claimNew (aor: Aor, until: number, now: number, early: boolean): Promise<ClaimResult> {
    const t0 = performance.now()
    const before = this.cache.get(aor)?.claim
    return this.signNew(aor, 'claim', Math.min(now + this.lease, until)).then(mine => {
      const signed = performance.now() - t0
      const late = early ? this.earlyClaim(aor, mine, before) : undefined
      return this.writer.write(mine, { since: now, early: late?.look }).then(out => this.claimWritten(aor, until, t0, signed, before, mine, late, out, early))
    })
  }

  /** A new claim's write answered (by this node's store and the first replica, or by all). */
  private claimWritten (aor: Aor, until: number, t0: number, signed: number, before: SignedClaim | undefined, mine: SignedClaim, late: EarlyClaim | undefined, out: WriteOutcome, early: boolean): ClaimResult | Promise<ClaimResult> {
    const newest = this.newestOf(mine, out, before)
    const total = performance.now() - t0
    // (no object per claim for the fast ones)
    if (total >= this.slowClaims.thresholdMs) this.slowClaims.record(aor, { signed, stored: out.storedMs, answered: out.answered ? out.answeredMs : total - signed, total, replicas: out.replicas })
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
    this.log('claim of %s lost to an earlier record v%s, claiming above it', aor, stood.version)
    const mine = await this.signNew(aor, 'claim', Math.min(Date.now() + this.lease, until), stood.version)
    const late = early ? this.earlyClaim(aor, mine, before) : undefined
    const out = await this.writer.write(mine, { early: late?.look })
    out.others.push(stood)
    return this.claimDecided(aor, until, before, mine, late, out, this.newestOf(mine, out, before))
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
      if (out.replicas === 0 && this.replicas.kad() != null && this.replicas.routingTableSize === 0) this.replicateLater()
    } else {
      this.own.delete(aor)
      this.ownEnded(aor)
      this.storeLoss(newest)
    }
    this.apply(aor, newest, true)
    if (won && prev != null && !prev.owner.equals(this.peerId)) void this.witness.notify(prev.owner, mine)
    // answered before every replica did: the others' answers are acted on when they come
    if (late != null) this.earlyDecided(late, won, prev)
    return { won, route: this.routeOf(newest) ?? this.routeOf(mine)!, previous: this.routeOf(prev), replicas: out.replicas }
  }

  /**
   * A new claim answered before every replica answered (`firstReplica`): its write's `early` look
   * takes the outcome as soon as the answers so far decide the claim: this node and one replica
   * store it and nobody named a newer claim, or somebody did (lost to a race, or an earlier record
   * ahead by clock: either is decided the same on the answers so far as on all of them). Once
   * every replica answered, a claim answered won that way takes in the rest (`lateAnswers`).
   * (One object and one function per claim: no promise or closure per stage.)
   */
  private earlyClaim (aor: Aor, claim: SignedClaim, before: SignedClaim | undefined): EarlyClaim {
    const e: EarlyClaim = {
      aor,
      claim,
      before,
      taken: false,
      decided: false,
      won: false,
      look: (o) => {
        if (!e.taken) {
          if (!o.answered && o.replicas === 0 && this.newestOf(claim, o, before) === claim) return false
          e.taken = true
          return true
        }
        // every replica answered; before claim() decided (it runs first: kept for it), or after
        if (!e.decided) e.all = o
        else if (e.won) this.lateAnswers(e, o)
        return true
      }
    }
    return e
  }

  /** claim() decided an early claim: the later answers of one answered won are acted on. */
  private earlyDecided (e: EarlyClaim, won: boolean, told: SignedClaim | undefined): void {
    e.decided = true
    e.won = won
    e.told = told
    if (!won || e.all == null) return
    try {
      this.lateAnswers(e, e.all)
    } catch (err) {
      this.log.error('late replica answers for %s: %s', e.aor, errorMessage(err))
    }
  }

  /**
   * Every replica answered a claim that was answered won at the first replica's: act on what the
   * later answers say, as the claim would have before its answer. A claim of another node that
   * won the race displaces ours (the displaced path: bindings dropped, handlers told, P3); a
   * record that stood before our claim (its owner's clock ahead of ours) is claimed above; a
   * previous owner only the later answers named is told of the move.
   */
  private lateAnswers (late: EarlyClaim, out: WriteOutcome): void {
    const { aor, claim: mine, before, told } = late
    const e = this.own.get(aor)
    const ours = e != null && e.claim.version === mine.version && e.claim.owner.equals(mine.owner)
    if (ours && e.claim === mine) e.replicas = out.replicas
    const newest = this.newestOf(mine, out, before)
    if (newest === mine) {
      let prev: SignedClaim | undefined
      for (const c of out.others) prev = newerOlderClaim(prev, c, mine)
      if (ours && prev != null && !prev.owner.equals(this.peerId) && (told == null || !prev.owner.equals(told.owner))) void this.witness.notify(prev.owner, mine)
      return
    }
    this.stats.lateLosses++
    if (ours && this.shutdown != null && out.stood.includes(newest)) {
      this.log('claim of %s: a later replica kept an earlier record v%s, claiming above it', aor, newest.version)
      void this.claimAbove(aor, mine, newest, before).catch((err: unknown) => {
        this.log.error('re-claim of %s above v%s failed: %s', aor, newest.version, errorMessage(err))
      })
      return
    }
    this.log('claim of %s answered at the first replica lost to v%s of %p', aor, newest.version, newest.owner)
    // our claim is still the own record: apply() sees it superseded and runs the displaced path
    this.apply(aor, newest, true)
  }

  /** The late half of the clock-skew rule (see `claim`): claim once more above a record that stood. */
  private async claimAbove (aor: Aor, mine: SignedClaim, stood: SignedClaim, before: SignedClaim | undefined): Promise<void> {
    const e = this.own.get(aor)
    if (e == null || e.claim.version !== mine.version || e.claim.kind !== 'claim') return
    const next = await this.signNew(aor, 'claim', Math.min(Date.now() + this.lease, e.until), stood.version)
    const signedFor = this.own.get(aor)
    if (signedFor == null || signedFor.claim.version !== mine.version || signedFor.claim.kind !== 'claim') return
    const out = await this.writer.write(next)
    out.others.push(stood)
    const newest = this.newestOf(next, out, before)
    const cur = this.own.get(aor)
    if (newest === next && cur != null && cur.claim.version === mine.version) {
      this.own.set(aor, { claim: next, until: cur.until, replicas: out.replicas, putAt: Date.now() })
      this.apply(aor, next, true)
      let prev: SignedClaim | undefined
      for (const c of out.others) prev = newerOlderClaim(prev, c, next)
      if (prev != null && !prev.owner.equals(this.peerId)) void this.witness.notify(prev.owner, next)
      return
    }
    // lost after all: the newest record stands, and our claim, still the own record, is displaced
    this.apply(aor, newest, true)
    // released meanwhile, while our claim above the stood record went out: release it too
    if (newest === next && this.own.get(aor)?.claim.kind === 'release') await this.release(aor)
  }

  /** The newest of our claim, what the replicas reported and what we knew. */
  private newestOf (mine: SignedClaim, out: WriteOutcome, known?: SignedClaim): SignedClaim {
    let best = mine
    const now = Date.now()
    for (const c of out.others) if (c.knownUntil > now && compareClaims(c, best) > 0) best = c
    if (known != null && known.knownUntil > now && compareClaims(known, best) > 0) best = known
    return best
  }

  async release (aorIn: Aor, _options?: AbortOptions): Promise<void> {
    const aor = normalizeAor(aorIn)
    const e = this.own.get(aor)
    const cur = this.cache.get(aor)?.claim ?? e?.claim
    if (cur == null || !cur.owner.equals(this.peerId) || cur.kind !== 'claim') {
      if (e != null && e.claim.kind === 'claim') {
        this.own.delete(aor)
        this.ownEnded(aor)
        if (cur != null && !cur.owner.equals(this.peerId)) this.storeLoss(cur)
      }
      return
    }
    // a tombstone must outlive the claim it covers, or the older claim would resurface
    const tomb = await this.signNew(aor, 'release', Math.max(cur.expiresAt, Date.now() + 1_000), cur.version)
    this.own.set(aor, { claim: tomb, until: tomb.knownUntil, replicas: 0, putAt: Date.now() })
    this.ownEnded(aor)
    this.apply(aor, tomb, true)
    const out = await this.writer.write(tomb)
    const held = this.own.get(aor)
    if (held?.claim === tomb) held.replicas = out.replicas
    this.learn(aor, out)
  }

  /** Every valid claim the DHT (and this node's store) holds for an AoR, newest first. */
  async lookupAll (aor: Aor, options?: LookupOptions): Promise<SignedClaim[]> {
    return await this.op(options, async (signal) => await this.reader.lookupAll(normalizeAor(aor), signal, options))
  }

  /** The newest valid claim the DHT holds for an AoR. */
  async lookup (aor: Aor, options?: LookupOptions): Promise<SignedClaim | undefined> {
    return (await this.lookupAll(aor, options))[0]
  }

  async resolve (aorIn: Aor, options?: AbortOptions & { fresh?: boolean }): Promise<Route | undefined> {
    const aor = normalizeAor(aorIn)
    const now = Date.now()
    let best: SignedClaim | undefined
    const e = this.cache.get(aor)
    if (options?.fresh !== true && e != null && e.claim.expiresAt > now) {
      // served from the cache, which notices keep current; past cacheTtl it is checked again in
      // the background (stale-while-revalidate) so that no message waits for a DHT round trip
      best = e.claim
      if (now - e.fetchedAt >= this.cacheTtl && !this.own.has(aor)) this.revalidate(aor)
    } else {
      const neg = this.negative.get(aor)
      if (options?.fresh !== true && e == null && neg != null && now - neg < this.negativeTtl) return undefined
      best = await this.lookupShared(aor, options)
    }
    if (best == null || !isLive(best)) return undefined
    // P5: a route to a node that is down is no route; a node we are not connected to is asked
    if (!best.owner.equals(this.peerId) && !await this.liveness.check(best.owner)) return undefined
    return this.routeOf(best)
  }

  /**
   * `resolve`'s answer from the cache, when it needs no wait: the same checks (a live claim, its
   * owner up) and the same background revalidation of an old entry. The cache is keyed by
   * normalized AoRs, so an AoR it holds needs no normalizing; any other is left to `resolve`.
   */
  routeNow (aor: Aor): Route | undefined {
    const e = this.cache.get(aor)
    if (e == null) return undefined
    const now = Date.now()
    const c = e.claim
    if (!isLive(c, now) || (!c.owner.equals(this.peerId) && this.liveness.checkNow(c.owner) !== true)) return undefined
    if (now - e.fetchedAt >= this.cacheTtl && !this.own.has(aor)) this.revalidate(aor)
    return this.routeOf(c, now)
  }

  /**
   * Look an AoR up in the DHT and take in what it holds: the newest claim known. One lookup per AoR
   * at a time: a resolve without its own signal joins the one running, unless it wants a `fresh`
   * answer (the running lookup may have asked the replicas before the caller began). A presentity
   * watched for the first time is resolved twice at once (its watch reports the current route and
   * the agent resolves it); each was a quorum read of the replicas (issue 11, the cold start).
   */
  private async lookupShared (aor: Aor, options?: AbortOptions & { fresh?: boolean }): Promise<SignedClaim | undefined> {
    const running = this.resolving.get(aor)
    if (running != null && options?.fresh !== true && options?.signal == null) return await running
    const lookup = this.lookup(aor, { signal: options?.signal, quorum: this.resolveQuorum, onLate: this.lateRead(aor) }).then(found => {
      const best = this.apply(aor, found, true)
      // we know a newer claim than the DHT served: put it back (heals a stale put, P2)
      if (best != null && (found == null || compareClaims(best, found) > 0)) void this.writer.write(best)
      return best
    })
    if (options?.signal != null) return await lookup
    const shared = lookup.finally(() => { if (this.resolving.get(aor) === shared) this.resolving.delete(aor) })
    this.resolving.set(aor, shared)
    return await shared
  }

  /**
   * A read answered without its silent replica (lookup.ts): the newer claim that replica's late
   * answer brought is taken in as a notice's would be (the cache, watchers, a displaced own claim).
   */
  private lateRead (aor: Aor): (claims: SignedClaim[]) => void {
    return (claims) => {
      if (this.shutdown == null) return
      this.log('a late replica answer for %s brought v%s of %p', aor, claims[0].version, claims[0].owner)
      this.apply(aor, claims[0], true)
    }
  }

  /** Look an AoR up again in the background (one at a time per AoR). */
  private revalidate (aor: Aor): void {
    if (this.resolving.has(aor) || this.shutdown == null) return
    this.lookupShared(aor).catch((err: unknown) => { this.log('revalidating %s failed: %s', aor, errorMessage(err)) })
  }

  /**
   * Whether the mesh knows this user: some node holds a record for the AoR (a claim, or the
   * release of one) within its retention (`knownRetentionMs` after the last registration).
   */
  async known (aorIn: Aor, options?: AbortOptions): Promise<boolean> {
    const aor = normalizeAor(aorIn)
    const now = Date.now()
    const e = this.cache.get(aor)
    if (e != null && e.claim.knownUntil > now) return true
    const found = this.apply(aor, await this.lookup(aor, { ...options, quorum: this.resolveQuorum, onLate: this.lateRead(aor) }), true)
    return found != null && found.knownUntil > now
  }

  watch (aorIn: Aor, onChange: (route: Route | undefined) => void): Unwatch {
    const aor = normalizeAor(aorIn)
    let w = this.watchers.get(aor)
    if (w == null) {
      const entry: WatchEntry = { fns: new Set(), last: undefined }
      w = entry
      this.watchers.set(aor, entry)
      entry.poll = setInterval(() => {
        if (this.shutdown == null) return
        this.resolve(aor, { fresh: true }).then(() => { this.fireWatchers(aor) }, () => {})
        this.registerInterest(aor)
      }, this.watchInterval)
      entry.poll.unref?.()
      this.registerInterest(aor)
    }
    const entry = w
    entry.fns.add(onChange)
    // report the current route, if any, like any other change
    queueMicrotask(() => {
      if (this.shutdown == null) return
      this.resolve(aor).then(() => { this.fireWatchers(aor) }, () => {})
    })
    return () => {
      entry.fns.delete(onChange)
      if (entry.fns.size === 0 && this.watchers.get(aor) === entry) {
        clearInterval(entry.poll)
        clearTimeout(entry.expiry)
        this.watchers.delete(aor)
      }
    }
  }

  /**
   * Ask the replicas of a watched AoR to tell this node of changes (interest), unless this node
   * holds the AoR's live claim: a new owner tells the owner it displaces itself (P3), so the
   * owner's interest was a request per presentity it serves for nothing (issue 11: a node serving
   * presentities watched from another node registered interest in each with that node). When the
   * claim ends here (released, displaced, lost, lapsed) a watched AoR registers it at once.
   */
  private registerInterest (aor: Aor): void {
    const mine = this.own.get(aor)?.claim
    if (mine != null && mine.kind === 'claim' && mine.expiresAt > Date.now()) return
    void this.witness.register(aor)
  }

  /** This node's claim of an AoR ended: a watched AoR's interest is registered now. */
  private ownEnded (aor: Aor): void {
    if (this.watchers.has(aor) && this.shutdown != null) this.registerInterest(aor)
  }

  onDisplaced (handler: (aor: Aor, by: Route) => void): Unwatch {
    this.displacedHandlers.add(handler)
    return () => { this.displacedHandlers.delete(handler) }
  }

  /** The newest signed claim this node knows for an AoR (for the admin API and tests). */
  newest (aorIn: Aor): SignedClaim | undefined {
    return this.cache.get(normalizeAor(aorIn))?.claim
  }

  /** AoRs this node currently holds a live claim on. */
  owned (): Aor[] {
    const out: Aor[] = []
    const now = Date.now()
    for (const [aor, e] of this.own) if (e.claim.kind === 'claim' && e.claim.expiresAt > now) out.push(aor)
    return out
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
