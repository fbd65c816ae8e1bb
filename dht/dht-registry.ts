/**
 * The claim registry over kad-dht (see `index.ts` for the design).
 */
import { Key } from 'interface-datastore'
import { Libp2pRecord } from '@libp2p/record'
import { MessageType } from '@libp2p/kad-dht'
import { sha256 } from 'multiformats/hashes/sha2'
import { equals as uint8ArrayEquals } from 'uint8arrays/equals'
import { toString as uint8ArrayToString } from 'uint8arrays/to-string'
import { CLAIM_KEY_PREFIX, claimKey, compareClaims, isLive, normalizeAor, signClaim, verifyClaim } from './record/claim.ts'
import { CLAIM_GET_PROTOCOL, CLAIM_INTEREST_PROTOCOL, CLAIM_NOTICE_PROTOCOL, MAX_INTEREST_BYTES, claimGetHandler, noticeHandler, requestClaim, sendNotice } from './notice.ts'
import { decode, encode } from 'cborg'
import { compare as uint8ArrayCompare } from 'uint8arrays/compare'
import { xor } from 'uint8arrays/xor'
import { NotStartedError, errorMessage, errorName } from './errors.ts'
import { withSignal } from './signal.ts'
import type { SignedClaim } from './record/claim.ts'
import type { ClaimRegistry, DhtRegistryComponents, DhtRegistryInit } from './index.ts'
import type { Aor, ClaimResult, LocalBinding, Route, Unwatch } from '../sip-gateway/ports.ts'
import type { AbortOptions, Logger, PeerId } from '@libp2p/interface'
import type { QueryEvent } from '@libp2p/kad-dht'

/**
 * The parts of kad-dht 16's KadDHT class the fast path uses (public fields of the class, not of the
 * KadDHT interface). When they are missing the registry falls back to `put`/`get` walks.
 */
interface KadInternals {
  k: number
  routingTable: { size: number, closestPeers (kadId: Uint8Array, options?: { count?: number }): PeerId[] }
  network: { sendRequest (to: PeerId, msg: { type: MessageType, key: Uint8Array, record?: Uint8Array }, options: { signal: AbortSignal, path: { index: number, queued: number, running: number, total: number } }): AsyncGenerator<QueryEvent> }
}

const MAX_INTEREST_TTL_MS = 3_600_000
const MAX_INTEREST_AORS = 100_000
const MAX_INTEREST_PER_AOR = 1_000

const SMALL_MESH_RECHECK_MS = 30_000

const NO_PATH = { index: -1, queued: 0, running: 0, total: 0 }

function kadInternals (dht: unknown): KadInternals | undefined {
  const d = dht as Partial<KadInternals> | undefined
  if (d == null || typeof d.k !== 'number' || typeof d.routingTable?.closestPeers !== 'function' || typeof d.network?.sendRequest !== 'function') return undefined
  return d as KadInternals
}

function kadId (key: Uint8Array): Uint8Array {
  return (sha256.digest(key) as Awaited<ReturnType<typeof sha256.digest>>).digest
}

export interface LookupOptions extends AbortOptions {
  /**
   * Ask the `quorum` closest known peers first: in direct mode the rest only when one of them did
   * not answer; in a large mesh the kad-dht walk only when none had a record.
   */
  quorum?: number
  /** with `quorum` in a large mesh: never walk (a claim's pre-read) */
  noWalk?: boolean
}

export interface PutOutcome {
  /** peers that acknowledged storing the claim */
  replicas: number
  /** peers (or this node's own store) that refused it or failed */
  failures: number
}

const OWN_PREFIX = '/sipmesh/own'

interface CacheEntry {
  /** the newest claim this node has seen for the AoR (P2) */
  claim: SignedClaim
  /** when the DHT or a notice last confirmed it */
  fetchedAt: number
}

interface WatchEntry {
  fns: Set<(route: Route | undefined) => void>
  last: Route | undefined
  poll?: ReturnType<typeof setInterval>
  expiry?: ReturnType<typeof setTimeout>
}

function routeOf (c: SignedClaim | undefined, now = Date.now()): Route | undefined {
  if (c == null || !isLive(c, now)) return undefined
  return { aor: c.aor, node: c.owner.toString(), sip: c.sip, version: c.version, expiresAt: c.expiresAt }
}

/** Watchers are told when the owner or its address changes, not on every renewal. */
function sameRoute (a: Route | undefined, b: Route | undefined): boolean {
  if (a == null || b == null) return a === b
  return a.node === b.node && a.sip === b.sip
}

function ownKey (aor: Aor): Key {
  return new Key(`${OWN_PREFIX}/${uint8ArrayToString(claimKey(aor).subarray('/sipmesh/'.length))}`)
}

export class DhtRegistry implements ClaimRegistry {
  readonly nodeId: string
  sip: string
  /** counters, for tests and metrics */
  readonly stats = { claims: 0, lookups: 0, noticesSent: 0, noticesReceived: 0, noticesRejected: 0 }

  private readonly components: DhtRegistryComponents
  private readonly log: Logger
  private readonly peerId: PeerId
  private readonly grace: number
  private readonly cacheTtl: number
  private readonly negativeTtl: number
  private readonly republishInterval: number
  private readonly watchInterval: number
  private readonly queryTimeout: number
  private readonly claimReadCache: number
  private readonly protocol: string
  private readonly datastorePrefix: string
  private readonly directQueries: boolean | 'auto'

  private readonly cache = new Map<Aor, CacheEntry>()
  private readonly negative = new Map<Aor, number>()
  private readonly lastVersion = new Map<Aor, bigint>()
  private readonly own = new Map<Aor, SignedClaim>()
  private readonly watchers = new Map<Aor, WatchEntry>()
  private readonly displacedHandlers = new Set<(aor: Aor, by: Route) => void>()
  private readonly sentNotices = new Set<string>()
  /** as a replica: who wants to hear about which AoR, until when */
  private readonly interests = new Map<Aor, Map<string, { peer: PeerId, until: number }>>()
  private readonly interestProtocol: string
  private readonly noticeReplicas: number
  private readonly resolveQuorum: number
  private shutdown?: AbortController
  private smallMesh?: { size: number, at: number, verified: boolean }
  private smallMeshCheck?: Promise<void>
  private republishTimer?: ReturnType<typeof setInterval>
  private readonly joinWait: number
  /** when the first claim may stop waiting for a DHT peer (set at start, cleared once routed) */
  private joinDeadline?: number
  /** own claims put while no DHT peer was known: re-put as soon as one is */
  private unreplicated = false

  constructor (components: DhtRegistryComponents, init: DhtRegistryInit = {}) {
    this.components = components
    this.peerId = components.peerId
    this.nodeId = components.peerId.toString()
    this.log = components.logger.forComponent('sipmesh:dht:registry')
    this.sip = init.sip ?? '127.0.0.1:5060'
    this.grace = init.expiryGraceMs ?? 30_000
    this.cacheTtl = init.cacheTtlMs ?? 10_000
    this.negativeTtl = init.negativeCacheTtlMs ?? 0
    this.republishInterval = init.republishIntervalMs ?? 600_000
    this.watchInterval = init.watchIntervalMs ?? 30_000
    this.queryTimeout = init.queryTimeoutMs ?? 10_000
    this.claimReadCache = init.claimReadCacheMs ?? 30_000
    this.protocol = init.noticeProtocol ?? CLAIM_NOTICE_PROTOCOL
    this.datastorePrefix = init.datastorePrefix ?? '/dht'
    this.directQueries = init.directQueries ?? 'auto'
    this.interestProtocol = init.interestProtocol ?? CLAIM_INTEREST_PROTOCOL
    this.noticeReplicas = init.noticeReplicas ?? 3
    this.resolveQuorum = init.resolveQuorum ?? 3
    this.joinWait = init.joinWaitMs ?? 0
  }

  // ---------------------------------------------------------------- lifecycle

  async start (options?: AbortOptions): Promise<void> {
    if (this.shutdown != null) return
    this.shutdown = new AbortController()
    this.components.datastore.onStore = (prev, next) => { this.stored(prev, next) }
    await this.components.libp2p.handle(this.protocol, noticeHandler(this.log, async (from, bytes) => { await this.receiveNotice(from, bytes) }), {
      maxInboundStreams: 256,
      maxOutboundStreams: 256
    })
    await this.components.libp2p.handle(CLAIM_GET_PROTOCOL, claimGetHandler(this.log, async (key) => await this.storedValue(key)), {
      maxInboundStreams: 256,
      maxOutboundStreams: 256
    })
    await this.components.libp2p.handle(this.interestProtocol, noticeHandler(this.log, (from, bytes) => { this.receiveInterest(from, bytes) }, MAX_INTEREST_BYTES), {
      maxInboundStreams: 256,
      maxOutboundStreams: 256
    })
    this.joinDeadline = this.joinWait > 0 ? Date.now() + this.joinWait : undefined
    await this.loadOwn(options)
    this.republishTimer = setInterval(() => { void this.republish() }, this.republishInterval)
    this.republishTimer.unref?.()
    // re-assert persisted claims as soon as the node has DHT peers
    void this.reassert()
  }

  /**
   * Re-put the persisted own claims once this node has DHT peers (waits up to `waitMs`). `start()`
   * runs it in the background; a claim displaced meanwhile is dropped (and reported) on the way.
   */
  async reassert (waitMs = 30_000): Promise<void> {
    if (this.own.size === 0) return
    if (!await this.whenRouted(waitMs)) return
    await this.republish()
    // the routing table was still filling: once more when the node has settled in
    await this.pause(2_000)
    await this.republish()
  }

  /**
   * Wait (up to `waitMs`, polling) until the routing table holds a DHT peer; false when stopped or
   * still alone at the deadline. Without kad-dht internals there is nothing to wait for.
   */
  private async whenRouted (waitMs: number): Promise<boolean> {
    const kad = kadInternals(this.components.dht)
    const deadline = Date.now() + waitMs
    while (kad != null && kad.routingTable.size === 0) {
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
    const kad = kadInternals(this.components.dht)
    if (kad == null || kad.routingTable.size > 0) {
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

  /** After a put that no peer stored because none was known: re-put own claims once one is. */
  private replicateLater (): void {
    if (this.unreplicated) return
    this.unreplicated = true
    void this.whenRouted(MAX_INTEREST_TTL_MS).then(async (routed) => {
      this.unreplicated = false
      if (routed) await this.republish()
    }).catch((err: unknown) => { this.log('re-put after join failed: %s', errorMessage(err)) })
  }

  async stop (): Promise<void> {
    if (this.shutdown == null) return
    this.shutdown.abort()
    this.shutdown = undefined
    clearInterval(this.republishTimer)
    for (const w of this.watchers.values()) {
      clearInterval(w.poll)
      clearTimeout(w.expiry)
    }
    this.watchers.clear()
    this.components.datastore.onStore = undefined
    this.interests.clear()
    await this.components.libp2p.unhandle(this.protocol).catch(() => {})
    await this.components.libp2p.unhandle(this.interestProtocol).catch(() => {})
    await this.components.libp2p.unhandle(CLAIM_GET_PROTOCOL).catch(() => {})
  }

  /** Run one bounded operation: aborted by stop(), the caller's signal or the query timeout. */
  private async op<T> (options: AbortOptions | undefined, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    if (this.shutdown == null) throw new NotStartedError()
    return withSignal(this.queryTimeout, [this.shutdown.signal, options?.signal], fn)
  }


  // ---------------------------------------------------------------- DHT primitives

  /**
   * Direct mode: the whole mesh is smaller than k and this node's routing table holds all of it,
   * so the walk would end at exactly those peers; queries then go straight to them (one round).
   * "Holds all of it" is checked by a walk (`verifySmallMesh`) at most every 30 s: a node that
   * just joined a large mesh also has a small routing table, and must not take it for the mesh.
   */
  private directKad (): KadInternals | undefined {
    if (this.directQueries === false) return undefined
    const kad = kadInternals(this.components.dht)
    if (kad == null) return undefined
    if (this.directQueries === true) return kad
    const size = kad.routingTable.size
    if (size === 0 || size >= kad.k) return undefined
    const now = Date.now()
    if (this.smallMesh != null && this.smallMesh.size === size && now - this.smallMesh.at < SMALL_MESH_RECHECK_MS) {
      return this.smallMesh.verified ? kad : undefined
    }
    if (this.smallMeshCheck == null) {
      this.smallMeshCheck = this.verifySmallMesh(kad).finally(() => { this.smallMeshCheck = undefined })
    }
    return undefined
  }

  /** Walk towards our own id and see whether any DHT peer turns up that our routing table lacks. */
  private async verifySmallMesh (kad: KadInternals): Promise<void> {
    if (this.shutdown == null) return
    const size = kad.routingTable.size
    const known = new Set(kad.routingTable.closestPeers(kadId(this.peerId.toMultihash().bytes), { count: kad.k }).map(p => p.toString()))
    known.add(this.nodeId)
    let verified = true
    try {
      await this.op(undefined, async (signal) => {
        for await (const ev of this.components.dht.getClosestPeers(this.peerId.toMultihash().bytes, { signal })) {
          const ids = ev.name === 'PEER_RESPONSE' ? ev.closer.map(p => p.id.toString()) : ev.name === 'FINAL_PEER' ? [ev.peer.id.toString()] : []
          if (ids.some(id => !known.has(id))) verified = false
        }
      })
    } catch (err) {
      this.log('small-mesh check failed: %s', errorMessage(err))
      verified = false
    }
    this.smallMesh = { size, at: Date.now(), verified }
  }

  private recordKey (key: Uint8Array): Key {
    return new Key(`${this.datastorePrefix}/record/${uint8ArrayToString(key, 'base32')}`, false)
  }

  /** The claim envelope this node stores under a DHT key of our namespace, if any. */
  private async storedValue (key: Uint8Array): Promise<Uint8Array | undefined> {
    if (uint8ArrayToString(key.subarray(0, CLAIM_KEY_PREFIX.length)) !== CLAIM_KEY_PREFIX) throw new Error('not a claim key')
    try {
      const rec = Libp2pRecord.deserialize(await this.components.datastore.get(this.recordKey(key)))
      return rec.value
    } catch (err) {
      if (errorName(err) === 'NotFoundError') return undefined
      throw err
    }
  }

  /** Verify raw records and return every valid claim, newest first. */
  private async verifyAll (aor: Aor, key: Uint8Array, values: Iterable<Uint8Array>): Promise<SignedClaim[]> {
    const seen = new Set<string>()
    const out: SignedClaim[] = []
    for (const bytes of values) {
      const id = uint8ArrayToString(bytes, 'base64')
      if (seen.has(id)) continue
      seen.add(id)
      try {
        out.push(await verifyClaim(bytes, { key }))
      } catch (err) {
        this.log('lookup of %s: ignored a record: %s', aor, errorMessage(err))
      }
    }
    return out.sort((a, b) => compareClaims(b, a))
  }

  /**
   * Every valid claim the DHT (and this node's store) holds for an AoR, newest first. With
   * `quorum`, a direct lookup asks the `quorum` closest peers first and the others only when one
   * of those had no record (or did not answer).
   */
  async lookupAll (aor: Aor, options?: LookupOptions): Promise<SignedClaim[]> {
    return this.op(options, async (signal) => this.lookupAllWith(aor, signal, options))
  }

  private async lookupAllWith (aor: Aor, signal: AbortSignal, options?: LookupOptions): Promise<SignedClaim[]> {
    const key = claimKey(aor)
    const values: Uint8Array[] = []
    this.stats.lookups++
    const kad = this.directKad()
    if (kad != null) {
      // who answered what, to correct stale replicas afterwards (kad-dht's get does this itself)
      const answers: Array<{ peer?: PeerId, value: Uint8Array }> = []
      try {
        answers.push({ value: Libp2pRecord.deserialize(await this.components.datastore.get(this.recordKey(key))).value })
      } catch {
        // nothing stored here
      }
      const peers = kad.routingTable.closestPeers(kadId(key), { count: kad.k })
      const ask = async (batch: PeerId[]): Promise<number> => {
        let answered = 0
        await Promise.all(batch.map(async peer => {
          try {
            const value = await requestClaim(this.components.libp2p, CLAIM_GET_PROTOCOL, peer, key, { signal })
            answered++
            if (value != null) answers.push({ peer, value })
          } catch {
            // an unreachable peer just does not answer
          }
        }))
        return answered
      }
      // the closest `quorum` peers first (the likeliest replicas); the others only when one of
      // those did not answer
      const quorum = Math.min(options?.quorum ?? peers.length, peers.length)
      const first = peers.slice(0, quorum)
      if (await ask(first) < first.length) await ask(peers.slice(quorum))
      options?.signal?.throwIfAborted()
      const claims = await this.verifyAll(aor, key, answers.map(a => a.value))
      const best = claims[0]
      if (best != null) {
        const stale = answers.filter(a => !uint8ArrayEquals(a.value, best.bytes))
        if (stale.length > 0) void this.correct(kad, best, stale.map(a => a.peer))
      }
      return claims
    }
    // a large mesh: first the few closest peers this node knows of (no walk; in a populated
    // routing table they are usually replicas), the kad-dht walk only when none of them has a
    // record (a claim's pre-read never walks: it only looks for a previous owner)
    const known = kadInternals(this.components.dht)
    if (known != null && this.directQueries !== false && known.routingTable.size > 0 && options?.quorum != null) {
      const offline: Uint8Array[] = []
      try {
        offline.push(Libp2pRecord.deserialize(await this.components.datastore.get(this.recordKey(key))).value)
      } catch {
        // nothing stored here
      }
      const peers = known.routingTable.closestPeers(kadId(key), { count: options.quorum })
      await Promise.all(peers.map(async peer => {
        try {
          const value = await requestClaim(this.components.libp2p, CLAIM_GET_PROTOCOL, peer, key, { signal })
          if (value != null) offline.push(value)
        } catch {
          // no answer
        }
      }))
      const claims = await this.verifyAll(aor, key, offline)
      if (claims.length > 0 || options.noWalk === true) return claims
    }
    try {
      for await (const ev of this.components.dht.get(key, { signal })) {
        if (ev.name === 'VALUE') values.push(ev.value)
        else if (ev.name === 'PEER_RESPONSE' && ev.record != null) values.push(ev.record.value)
      }
    } catch (err) {
      // kad-dht throws QueryError when a correction fails, after it found the values
      if (values.length === 0 && errorName(err) !== 'NotFoundError') this.log('lookup of %s failed: %s', aor, errorMessage(err))
    }
    options?.signal?.throwIfAborted()
    return this.verifyAll(aor, key, values)
  }

  /** The newest valid claim the DHT holds for an AoR. */
  async lookup (aor: Aor, options?: LookupOptions): Promise<SignedClaim | undefined> {
    return (await this.lookupAll(aor, options))[0]
  }

  /** Send the newest claim to replicas (undefined: this node) that answered with something else. */
  private async correct (kad: KadInternals, best: SignedClaim, targets: Array<PeerId | undefined>): Promise<void> {
    if (this.shutdown == null) return
    const key = claimKey(best.aor)
    const record = new Libp2pRecord(key, best.bytes, new Date()).serialize()
    await this.op(undefined, async (signal) => Promise.all(targets.map(async peer => {
      try {
        if (peer == null) {
          await this.components.datastore.put(this.recordKey(key), record, { signal })
          return
        }
        for await (const _ev of kad.network.sendRequest(peer, { type: MessageType.PUT_VALUE, key, record }, { signal, path: NO_PATH })) {
          // drain
        }
      } catch (err) {
        this.log('correcting %s at %s: %s', best.aor, peer?.toString() ?? 'self', errorMessage(err))
      }
    })))
  }

  /** Put a signed claim; counts the peers that acknowledged storing it and those that did not. */
  async put (claim: SignedClaim, options?: AbortOptions): Promise<PutOutcome> {
    return this.op(options, async (signal) => this.putWith(claim, signal, options))
  }

  private async putWith (claim: SignedClaim, signal: AbortSignal, options?: AbortOptions): Promise<PutOutcome> {
    const key = claimKey(claim.aor)
    const kad = this.directKad()
    if (kad != null) {
      const record = new Libp2pRecord(key, claim.bytes, new Date()).serialize()
      let failures = 0
      try {
        await this.components.datastore.put(this.recordKey(key), record, { signal })
      } catch (err) {
        // StaleClaimError: this node already stores a newer claim
        this.log('local store of %s v%s: %s', claim.aor, claim.version, errorMessage(err))
        failures++
      }
      const peers = kad.routingTable.closestPeers(kadId(key), { count: kad.k })
      const acks = await Promise.all(peers.map(async peer => {
        try {
          for await (const ev of kad.network.sendRequest(peer, { type: MessageType.PUT_VALUE, key, record }, { signal, path: NO_PATH })) {
            if (ev.name === 'PEER_RESPONSE') return ev.record != null && uint8ArrayEquals(ev.record.value, claim.bytes)
            if (ev.name === 'QUERY_ERROR') return false
          }
        } catch {
          // counted as a failure
        }
        return false
      }))
      const replicas = acks.filter(Boolean).length
      return { replicas, failures: failures + acks.length - replicas }
    }
    let replicas = 0
    let targets = 0
    let failures = 0
    try {
      for await (const ev of this.components.dht.put(key, claim.bytes, { signal })) {
        if (ev.name === 'FINAL_PEER') targets++
        if (ev.name === 'PEER_RESPONSE' && ev.messageName === 'PUT_VALUE' && ev.record != null && uint8ArrayEquals(ev.record.value, claim.bytes)) {
          replicas++
        }
      }
    } catch (err) {
      // StaleClaimError from our own datastore: we already hold a newer claim
      this.log('put of %s v%s: %s', claim.aor, claim.version, errorMessage(err))
      failures++
      options?.signal?.throwIfAborted()
    }
    return { replicas, failures: failures + Math.max(0, targets - replicas) }
  }

  // ---------------------------------------------------------------- local knowledge

  /**
   * Merge a claim into what this node knows (P2: never go back), then tell watchers and, when
   * another owner's newer claim replaced ours, the displaced handlers. Returns the newest claim.
   */
  private apply (aor: Aor, c: SignedClaim | undefined, confirmed: boolean): SignedClaim | undefined {
    const now = Date.now()
    const cur = this.cache.get(aor)
    let best = cur != null && cur.claim.expiresAt > now ? cur.claim : undefined
    if (c != null && c.expiresAt > now && (best == null || compareClaims(c, best) > 0)) best = c
    if (best == null) {
      this.cache.delete(aor)
      this.negative.set(aor, now)
    } else {
      this.negative.delete(aor)
      this.cache.set(aor, { claim: best, fetchedAt: confirmed || cur == null ? now : cur.fetchedAt })
      const lv = this.lastVersion.get(aor)
      if (lv == null || best.version > lv) this.lastVersion.set(aor, best.version)
    }
    const mine = this.own.get(aor)
    if (mine != null && best != null && best.kind === 'claim' && !best.owner.equals(this.peerId) && compareClaims(best, mine) > 0) {
      this.own.delete(aor)
      void this.forgetOwn(aor)
      const by = routeOf(best)
      this.log('displaced from %s by %s', aor, best.owner)
      if (by != null) {
        for (const h of [...this.displacedHandlers]) {
          try { h(aor, by) } catch (err) { this.log.error('onDisplaced handler threw: %s', errorMessage(err)) }
        }
      }
    }
    this.fireWatchers(aor)
    return best
  }

  private fireWatchers (aor: Aor): void {
    const w = this.watchers.get(aor)
    if (w == null) return
    const route = routeOf(this.cache.get(aor)?.claim)
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

  private async persistOwn (c: SignedClaim): Promise<void> {
    try {
      await this.components.datastore.put(ownKey(c.aor), c.bytes)
    } catch (err) {
      this.log.error('could not persist own claim of %s: %s', c.aor, errorMessage(err))
    }
  }

  private async forgetOwn (aor: Aor): Promise<void> {
    try {
      await this.components.datastore.delete(ownKey(aor))
    } catch {
      // not persisted: nothing to forget
    }
  }

  private async loadOwn (options?: AbortOptions): Promise<void> {
    try {
      for await (const { key, value } of this.components.datastore.query({ prefix: OWN_PREFIX }, options)) {
        try {
          const c = await verifyClaim(value)
          if (!c.owner.equals(this.peerId) || c.kind !== 'claim') throw new Error('not an own live claim')
          this.own.set(c.aor, c)
          this.apply(c.aor, c, false)
        } catch (err) {
          this.log('dropping persisted claim %s: %s', key, errorMessage(err))
          await this.components.datastore.delete(key)
        }
      }
    } catch (err) {
      this.log.error('could not load own claims: %s', errorMessage(err))
    }
  }

  /** Re-put every own live claim (same record, same version); notices tell us if one was lost. */
  async republish (options?: AbortOptions): Promise<void> {
    if (this.shutdown == null) return
    const now = Date.now()
    for (const [aor, c] of [...this.own]) {
      if (c.expiresAt <= now) {
        this.own.delete(aor)
        await this.forgetOwn(aor)
        continue
      }
      try {
        const out = await this.put(c, options)
        if (out.failures > 0) this.apply(aor, await this.lookup(aor, options), true)
      } catch (err) {
        this.log('republish of %s failed: %s', aor, errorMessage(err))
      }
    }
  }

  // ---------------------------------------------------------------- notices

  /**
   * Whether this node is among the `noticeReplicas` closest to a key by its own routing table: only
   * those replicas send witness notices, so a change is told a few times, not k times.
   */
  private isNotifyingReplica (key: Uint8Array): boolean {
    const kad = kadInternals(this.components.dht)
    if (kad == null) return true
    const target = kadId(key)
    const closest = kad.routingTable.closestPeers(target, { count: this.noticeReplicas })
    if (closest.length < this.noticeReplicas) return true
    const last = closest[closest.length - 1]
    return uint8ArrayCompare(xor(kadId(this.peerId.toMultihash().bytes), target), xor(kadId(last.toMultihash().bytes), target)) < 0
  }

  /**
   * The guard accepted a claim into this node's store (as a replica, or our own put): tell the
   * owner it displaced, and the nodes interested in the AoR when its route changed.
   */
  private stored (prev: SignedClaim | undefined, next: SignedClaim): void {
    if (this.shutdown == null) return
    const moved = prev != null && prev.kind === 'claim' && !prev.owner.equals(next.owner)
    const changed = prev == null || prev.kind !== next.kind || !prev.owner.equals(next.owner) || prev.sip !== next.sip
    if (moved && prev.owner.equals(this.peerId)) {
      queueMicrotask(() => { this.apply(next.aor, next, true) })
    }
    if (changed && this.watchers.has(next.aor)) {
      queueMicrotask(() => { this.apply(next.aor, next, true) })
    }
    if (!moved && !changed) return
    const interested = this.interests.get(next.aor)
    if (!moved && interested == null) return
    if (!this.isNotifyingReplica(claimKey(next.aor))) return
    if (moved) void this.notify(prev.owner, next)
    if (changed && interested != null) {
      const now = Date.now()
      for (const [id, { peer, until }] of interested) {
        if (until <= now) {
          interested.delete(id)
          continue
        }
        if (!peer.equals(next.owner)) void this.notify(peer, next)
      }
      if (interested.size === 0) this.interests.delete(next.aor)
    }
  }

  /** A watcher registered interest in an AoR with us (a replica of its claim key). */
  private receiveInterest (from: PeerId, bytes: Uint8Array): void {
    let aor: string
    let ttl: number
    try {
      const msg = decode(bytes, { strict: true, allowUndefined: false })
      if (!Array.isArray(msg) || msg.length !== 3 || msg[0] !== 1 || typeof msg[1] !== 'string' || typeof msg[2] !== 'number') throw new Error('not [1, aor, ttl]')
      aor = normalizeAor(msg[1])
      ttl = Math.min(Math.max(0, msg[2]), MAX_INTEREST_TTL_MS)
    } catch (err) {
      this.log('ignored interest from %p: %s', from, errorMessage(err))
      return
    }
    let m = this.interests.get(aor)
    if (m == null) {
      if (this.interests.size >= MAX_INTEREST_AORS) {
        this.log('interest table full, ignored %s from %p', aor, from)
        return
      }
      m = new Map()
      this.interests.set(aor, m)
    }
    if (m.size >= MAX_INTEREST_PER_AOR && !m.has(from.toString())) return
    m.set(from.toString(), { peer: from, until: Date.now() + ttl })
  }

  /** Tell the replicas of an AoR's claim key that this node wants to hear about changes. */
  private async registerInterest (aor: Aor): Promise<void> {
    if (this.shutdown == null) return
    const key = claimKey(aor)
    const msg = encode([1, aor, this.watchInterval * 3])
    let peers: PeerId[] = []
    const kad = this.directKad()
    if (kad != null) {
      peers = kad.routingTable.closestPeers(kadId(key), { count: kad.k })
    } else {
      try {
        await this.op(undefined, async (signal) => {
          for await (const ev of this.components.dht.getClosestPeers(key, { signal })) {
            if (ev.name === 'FINAL_PEER') peers.push(ev.peer.id)
          }
        })
      } catch (err) {
        this.log('could not find the replicas of %s: %s', aor, errorMessage(err))
      }
    }
    await Promise.all(peers.map(async peer => {
      try {
        await sendNotice(this.components.libp2p, this.interestProtocol, peer, msg, { signal: this.shutdown?.signal, maxBytes: MAX_INTEREST_BYTES })
      } catch (err) {
        this.log('could not register interest in %s with %p: %s', aor, peer, errorMessage(err))
      }
    }))
  }

  private async notify (peer: PeerId, c: SignedClaim): Promise<void> {
    if (peer.equals(this.peerId) || this.shutdown == null) return
    const id = `${c.aor}|${c.version}|${uint8ArrayToString(c.signature, 'base64')}|${peer.toString()}`
    if (this.sentNotices.has(id)) return
    this.sentNotices.add(id)
    if (this.sentNotices.size > 10_000) this.sentNotices.delete(this.sentNotices.values().next().value!)
    try {
      this.stats.noticesSent++
      await sendNotice(this.components.libp2p, this.protocol, peer, c.bytes, { signal: this.shutdown.signal })
    } catch (err) {
      this.log('could not notify %p of %s: %s', peer, c.aor, errorMessage(err))
    }
  }

  private async receiveNotice (from: PeerId, bytes: Uint8Array): Promise<void> {
    let c: SignedClaim
    try {
      c = await verifyClaim(bytes)
    } catch (err) {
      this.stats.noticesRejected++
      this.log('ignored notice from %p: %s', from, errorMessage(err))
      return
    }
    const cur = this.cache.get(c.aor)
    if (cur != null && cur.claim.expiresAt > Date.now() && compareClaims(c, cur.claim) <= 0) {
      this.log('notice from %p for %s is not newer than what we have', from, c.aor)
      return
    }
    this.stats.noticesReceived++
    this.apply(c.aor, c, true)
  }

  // ---------------------------------------------------------------- the Registry port

  /** Sign a claim (or release) with a hybrid-logical-clock version: max(now, anything seen + 1). */
  private async sign (aor: Aor, kind: 'claim' | 'release', expiresAt: number, floor?: bigint): Promise<SignedClaim> {
    const issuedAt = Date.now()
    let version = BigInt(issuedAt)
    for (const v of [this.lastVersion.get(aor), this.cache.get(aor)?.claim.version, floor]) {
      if (v != null && v >= version) version = v + 1n
    }
    const c = await signClaim({
      kind,
      aor,
      owner: this.peerId,
      sip: kind === 'claim' ? this.sip : '',
      version,
      issuedAt,
      expiresAt: Math.max(expiresAt, issuedAt + 1)
    }, this.components.privateKey)
    this.lastVersion.set(aor, version)
    return c
  }

  async claim (aorIn: Aor, binding: LocalBinding, options?: AbortOptions): Promise<ClaimResult> {
    const aor = normalizeAor(aorIn)
    this.stats.claims++
    const cached = this.cache.get(aor)
    const known = this.claimReadCache > 0 && cached != null && Date.now() - cached.fetchedAt < this.claimReadCache
    // the read only finds the previous owner (the HLC version needs no read), so it runs beside the put
    const prevP: Promise<SignedClaim[]> = known ? Promise.resolve([cached.claim]) : this.lookupAll(aor, { ...options, quorum: this.resolveQuorum, noWalk: true }).catch(() => [])
    await this.joined(options)
    let mine = await this.sign(aor, 'claim', binding.expiresAt + this.grace)
    let outcome = await this.put(mine, options)
    const before = await prevP
    const isMine = (c: SignedClaim): boolean => uint8ArrayEquals(c.signature, mine.signature)
    let prev = before.find(c => !isMine(c))
    const settle = async (): Promise<SignedClaim> => {
      let best = mine
      if (prev != null && compareClaims(prev, best) > 0) best = prev
      // a refusal means some replica holds a newer claim: read back to find the winner
      if (outcome.failures > 0) {
        const back = await this.lookup(aor, options)
        if (back != null && compareClaims(back, best) > 0) best = back
      }
      return best
    }
    let best = await settle()
    const winner = best
    if (winner !== mine && winner.kind === 'claim' && !winner.owner.equals(this.peerId) && before.some(c => uint8ArrayEquals(c.signature, winner.signature))) {
      // a claim that already stood when we began won only by its version (its owner's clock is
      // ahead of ours): the latest registration takes over, so claim once more above it
      this.log('claim of %s lost to an earlier claim v%s, claiming above it', aor, best.version)
      prev = best
      mine = await this.sign(aor, 'claim', binding.expiresAt + this.grace, best.version)
      outcome = await this.put(mine, options)
      best = await settle()
    }
    const won = best === mine
    if (won) {
      this.own.set(aor, mine)
      await this.persistOwn(mine)
      if (outcome.replicas === 0 && kadInternals(this.components.dht)?.routingTable.size === 0) this.replicateLater()
    } else {
      this.own.delete(aor)
      await this.forgetOwn(aor)
    }
    this.apply(aor, best, true)
    const previous = routeOf(prev)
    if (won) {
      if (prev != null && isLive(prev) && !prev.owner.equals(this.peerId)) void this.notify(prev.owner, mine)
    }
    return { won, route: routeOf(best) ?? routeOf(mine)!, previous, replicas: outcome.replicas }
  }

  async release (aorIn: Aor, options?: AbortOptions): Promise<void> {
    const aor = normalizeAor(aorIn)
    const mine = this.own.get(aor)
    this.own.delete(aor)
    await this.forgetOwn(aor)
    const cur = this.cache.get(aor)?.claim ?? mine
    if (cur == null || !cur.owner.equals(this.peerId) || cur.kind !== 'claim') return
    // a tombstone must outlive the claim it covers, or the older claim would resurface
    const tomb = await this.sign(aor, 'release', Math.max(cur.expiresAt, Date.now() + 1_000), cur.version)
    this.apply(aor, tomb, true)
    await this.put(tomb, options)
  }

  async resolve (aorIn: Aor, options?: AbortOptions & { fresh?: boolean }): Promise<Route | undefined> {
    const aor = normalizeAor(aorIn)
    const now = Date.now()
    if (options?.fresh !== true) {
      const e = this.cache.get(aor)
      if (e != null && e.claim.expiresAt > now && now - e.fetchedAt < this.cacheTtl) return routeOf(e.claim, now)
      const neg = this.negative.get(aor)
      if (e == null && neg != null && now - neg < this.negativeTtl) return undefined
    }
    const found = await this.lookup(aor, { ...options, quorum: this.resolveQuorum })
    const best = this.apply(aor, found, true)
    // we know a newer claim than the DHT served: put it back (heals a stale put, P2)
    if (best != null && (found == null || compareClaims(best, found) > 0)) this.put(best).catch(() => {})
    return routeOf(best)
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
        this.resolve(aor, { fresh: true }).catch(() => {})
        void this.registerInterest(aor)
      }, this.watchInterval)
      entry.poll.unref?.()
      void this.registerInterest(aor)
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

  onDisplaced (handler: (aor: Aor, by: Route) => void): Unwatch {
    this.displacedHandlers.add(handler)
    return () => { this.displacedHandlers.delete(handler) }
  }

  /** The newest signed claim this node knows for an AoR (for the admin API and tests). */
  known (aorIn: Aor): SignedClaim | undefined {
    return this.cache.get(normalizeAor(aorIn))?.claim
  }

  /** AoRs this node currently owns. */
  owned (): Aor[] {
    return [...this.own.keys()]
  }
}
