/**
 * @packageDocumentation
 *
 * The claim registry: who serves which SIP address-of-record (AoR) in the mesh.
 *
 * A *claim* says "AoR X is served by node N (peer id, SIP address host:port) as of version V,
 * until T". It is a small CBOR record signed by N's libp2p Ed25519 key (see `record/claim.ts`),
 * stored in kad-dht under `/sipmesh/<base32 sha256(aor)>`, checked by our validator and ranked by
 * our selector on every node (highest version, then later issue time, then larger owner id bytes,
 * then larger signature bytes). Every node wraps its datastore with `ClaimGuardDatastore`, which
 * refuses to overwrite a stored claim with an older one (kad-dht itself would, js-libp2p#3377).
 *
 * Operations (the `Registry` port of `sip-gateway/ports.ts`):
 *
 * - `claim`: read the current claim, pick version = max(now, seen + 1) (a hybrid logical clock:
 *   a later registration wins a race without an extra round trip), sign, put, count the replicas
 *   that stored it, read back, report won/lost with the winner. A won claim that displaced another
 *   owner sends that owner a *move notice* and notifies every node that registered interest.
 *   With `firstReplica` (a REGISTER) the answer comes once this node and one replica store the
 *   claim, or as soon as an answer names a newer claim; the later answers are acted on when they
 *   come (a lost race runs the displaced path, an earlier record ahead by clock is claimed above).
 * - `resolve`: cached (never older than any claim this node has seen), invalidated by notices,
 *   `fresh: true` forces a lookup.
 * - `release`: a signed tombstone (kind `release`, higher version) so everyone resolves nothing.
 * - renewal: own live claims are re-put every `republishIntervalMs` and persisted in the
 *   datastore, so a restarted node re-asserts the still-valid ones in `start()`.
 * - `watch`: registers interest with the replicas of the AoR's claim key (not while this node
 *   holds the AoR's live claim: the next owner tells it, P3), refreshed with a periodic re-resolve
 *   as a safety net; a replica that stores a claim changing the AoR's route tells the interested
 *   nodes, so the claimer pays nothing extra. `onDisplaced`: this node's claim was superseded
 *   (verified notice).
 * - Direct reads and interest registrations travel over one long-lived stream per peer
 *   (`/sipmesh/claim-exchange/1.0.0`, notices/exchange.ts), what one turn asks of a peer in one
 *   write; older peers are served with the one-shot `/sipmesh/claim-get/1.0.0` and
 *   `/sipmesh/claim-interest/1.0.0`, which stay registered. Concurrent resolves of one AoR share
 *   one lookup.
 *
 * Notices travel over `/sipmesh/claim-notice/1.0.0`: one length-prefixed message carrying the
 * winning signed claim; the receiver verifies it (signature, newer than what it has) before acting.
 * The new owner sends one to the previous owner it knows of; besides, the few replicas closest to
 * the key (`noticeReplicas`) send one when they store a claim that displaces another owner, which
 * covers owners the claimer did not know of (races).
 */
import { DhtRegistry } from './dht-registry.ts'
import type { ClaimGuardDatastore } from './datastore-guard.ts'
import type { PeerLivenessInit } from './liveness.ts'
import type { ReplicaRepairInit } from './republish/repair.ts'
import type { Registry } from '../sip-gateway/ports.ts'
import type { AbortOptions, ComponentLogger, Libp2p, PeerId, PrivateKey } from '@libp2p/interface'
import type { KadDHT } from '@libp2p/kad-dht'

export type { Registry, Route, ClaimResult, LocalBinding, Unwatch, Aor } from '../sip-gateway/ports.ts'
export { normalizeAor, claimKey, interestCid, signClaim, verifyClaim, decodeClaim, compareClaims, CLAIM_NAMESPACE, MAX_CLAIM_BYTES } from './record/claim.ts'
export type { SignedClaim, ClaimFields, ClaimKind } from './record/claim.ts'
export { claimValidator, claimSelector, claimRecordHandlers } from './record/validator.ts'
export { ClaimGuardDatastore } from './datastore-guard.ts'
export { InvalidClaimError, ExpiredClaimError, StaleClaimError, InvalidAorError, NotStartedError } from './errors.ts'
export { MemoryMesh, MemoryRegistry } from './memory-registry.ts'
export { DhtRegistry }

export { CLAIM_NOTICE_PROTOCOL, CLAIM_INTEREST_PROTOCOL } from './notices/protocol.ts'
export { CLAIM_EXCHANGE_PROTOCOL } from './notices/exchange.ts'
export { CLAIM_PUT_PROTOCOL } from './replication/put-protocol.ts'

/** A registry that runs: `start()` re-asserts persisted claims, `stop()` ends timers and handlers. */
export interface ClaimRegistry extends Registry {
  /** the SIP address (`host:port`) put into this node's claims */
  sip: string
  start (options?: AbortOptions): Promise<void>
  stop (): Promise<void>
}

export interface DhtRegistryInit {
  /**
   * This node's SIP address (`host:port`) written into its claims; may be set later via `sip`.
   *
   * @default '127.0.0.1:5060'
   */
  sip?: string
  /**
   * Added to a registration's expiry: a claim's lease never runs past it, so a claim outlives its
   * registration by at most this much even when its owner cannot release it.
   *
   * @default 30_000
   */
  expiryGraceMs?: number
  /**
   * Longest lease of a claim. A refresh of an AoR this node holds writes nothing; the lease sweep
   * renews leases (same version, new lease) before they end, while the registration lasts.
   * Routing to a node that died stops through peer liveness long before a lease ends (P5).
   *
   * @default 1_800_000 (30 min)
   */
  leaseMs?: number
  /**
   * How long before a lease ends the sweep renews it (a per-claim jitter takes up to half of it
   * off, so claims made together are not renewed together); at most half the lease.
   *
   * @default max(expiryGraceMs, 3 * sweepIntervalMs)
   */
  renewAheadMs?: number
  /**
   * How long after the last registration every node keeps an AoR's record (its claim or the
   * release of it), so the mesh knows the user (offline IM) without a record of its own.
   *
   * @default 30 days
   */
  knownRetentionMs?: number
  /**
   * How often the lease sweep passes over this node's own records (must be well under
   * `renewAheadMs / 2`).
   *
   * @default 10_000
   */
  sweepIntervalMs?: number
  /**
   * How many peers besides the claimer store each claim: the closest to its key (at most kad-dht's
   * k). kad-dht's k = 20 suits churning public networks; an operator's mesh of long-lived servers
   * needs fewer copies, and every copy is a write on another node (with 20, every node of a mesh
   * under 21 nodes stored every claim, so a claim cost grew with N).
   *
   * @default 5
   */
  replicas?: number
  /**
   * Peer liveness timings (P5), see `liveness.ts`.
   */
  liveness?: PeerLivenessInit
  /**
   * Replica repair timings and bounds (claims dropped for a peer are put to it again when it
   * answers), see `republish/repair.ts`.
   */
  repair?: ReplicaRepairInit
  /**
   * Protocol name of batched claim writes.
   *
   * @default '/sipmesh/claim-put/1.0.0'
   */
  putProtocol?: string
  /**
   * How long a resolved route is served from the cache before a lookup (moves and releases
   * invalidate it earlier through notices).
   *
   * @default 10_000
   */
  cacheTtlMs?: number
  /**
   * How long "nobody holds it" is cached; 0 disables negative caching.
   *
   * @default 0
   */
  negativeCacheTtlMs?: number
  /**
   * How often this node re-puts its own releases (kad-dht drops records 48 h after receipt and
   * never republishes; claims are re-put at every lease renewal).
   *
   * @default 21_600_000 (6 h)
   */
  republishIntervalMs?: number
  /**
   * How often a watched AoR is re-resolved as a safety net behind notices.
   *
   * @default 30_000
   */
  watchIntervalMs?: number
  /**
   * How long one DHT query (get, put, provide, findProviders) may run.
   *
   * @default 10_000
   */
  queryTimeoutMs?: number
  /**
   * kad-dht's datastorePrefix (where claims persist as `<prefix>/record/...`). Our own claims
   * are those records whose owner is this node, found by one scan at start (a data directory of
   * the older layout, with copies under `/sipmesh/own/...`, is moved over once).
   *
   * @default '/dht'
   */
  datastorePrefix?: string
  /**
   * Skip the DHT read before a claim when this node confirmed the AoR's claim this recently (its
   * own renewals, notices, resolves). The HLC version needs no read for correctness; the read
   * finds the previous owner (for `previous` and the direct move notice) and lets a claim win over
   * an owner whose clock runs ahead. 0 always reads.
   *
   * @default 30_000
   */
  claimReadCacheMs?: number
  /**
   * Send reads (`/sipmesh/claim-get/1.0.0`) and PUT_VALUE straight to the peers of this node's
   * routing table instead of kad-dht walks: `'auto'` does so while the routing table is smaller
   * than k and a walk (re-checked every 30 s) found no DHT peer outside it, i.e. the whole mesh is
   * smaller than k and every walk would end at those peers anyway; `true` always, `false` never.
   *
   * @default 'auto'
   */
  directQueries?: boolean | 'auto'
  /**
   * How long after `start()` a claim made while the routing table is still empty waits for the
   * first DHT peer, so that a registration answered right after a node joined is stored in the
   * mesh and not only on this node (a claim that still reached nobody is re-put once a peer is
   * known). `createMeshNode` sets it when bootstrap peers or mDNS are configured; a node started
   * alone should not wait.
   *
   * @default 0
   */
  joinWaitMs?: number
  /**
   * A resolve that goes to the DHT answers once this many replicas responded (direct mode); the
   * other answers still update the cache when they arrive. Claims wait for every replica, unless
   * made with `firstReplica` (a REGISTER's: see `ClaimOptions`).
   *
   * @default 3
   */
  resolveQuorum?: number
  /**
   * Protocol name of interest registrations to peers that do not speak the claim exchange.
   *
   * @default '/sipmesh/claim-interest/1.0.0'
   */
  interestProtocol?: string
  /**
   * How many of the replicas closest to an AoR's key (each by its own routing table) send the
   * witness notices (move, interest) when they store a claim that changes the route.
   *
   * @default 3
   */
  noticeReplicas?: number
  /**
   * Protocol name of notices.
   *
   * @default '/sipmesh/claim-notice/1.0.0'
   */
  noticeProtocol?: string
}

/** What the DHT registry needs from the libp2p node. */
export interface DhtRegistryComponents {
  peerId: PeerId
  privateKey: PrivateKey
  logger: ComponentLogger
  dht: KadDHT
  /** the guarded datastore given to libp2p */
  datastore: ClaimGuardDatastore
  /** stream handling, dialling and connection events (peer liveness) */
  libp2p: Pick<Libp2p, 'handle' | 'unhandle' | 'dialProtocol' | 'peerStore' | 'dial' | 'getConnections' | 'addEventListener' | 'removeEventListener' | 'peerId'>
}

/** One-line factory, in the libp2p style. */
export function dhtRegistry (init: DhtRegistryInit = {}): (components: DhtRegistryComponents) => DhtRegistry {
  return (components) => new DhtRegistry(components, init)
}
