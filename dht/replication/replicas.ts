/**
 * Which peers hold a claim key: the k peers closest to it by XOR distance.
 *
 * - Direct mode: the whole mesh is smaller than k and this node's routing table holds all of it,
 *   so a walk would end at exactly those peers; the replicas are read off the routing table (no
 *   round trip). "Holds all of it" is checked by a walk at most every 30 s: a node that just
 *   joined a large mesh also has a small routing table, and must not take it for the mesh.
 * - A large mesh: a kad-dht walk towards the key, kept for a while (renewals and re-puts of the
 *   key reuse it) and shared by concurrent claims of the key. Walks are not shared between keys:
 *   the k closest peers of two keys differ, and a node that registers interest must reach the
 *   same replicas the claimer writes to, so both must find the true closest set.
 */
import { sha256 } from '../record/digest.ts'
import { compare as uint8ArrayCompare } from 'uint8arrays/compare'
import { xor } from 'uint8arrays/xor'
import { toString as uint8ArrayToString } from 'uint8arrays/to-string'
import { MessageType } from '@libp2p/kad-dht'
import { errorMessage } from '../errors.ts'
import { withSignal } from '../signal.ts'
import type { AbortOptions, Logger, PeerId } from '@libp2p/interface'
import type { KadDHT, QueryEvent } from '@libp2p/kad-dht'

/**
 * The parts of kad-dht 16's KadDHT class used here (public fields of the class, not of the KadDHT
 * interface). When they are missing the registry falls back to kad-dht's own walks.
 */
export interface KadInternals {
  k: number
  routingTable: { size: number, closestPeers (kadId: Uint8Array, options?: { count?: number }): PeerId[] }
  network: { sendRequest (to: PeerId, msg: { type: MessageType, key: Uint8Array, record?: Uint8Array }, options: { signal: AbortSignal, path: { index: number, queued: number, running: number, total: number } }): AsyncGenerator<QueryEvent> }
}

export function kadInternals (dht: unknown): KadInternals | undefined {
  const d = dht as Partial<KadInternals> | undefined
  if (d == null || typeof d.k !== 'number' || typeof d.routingTable?.closestPeers !== 'function' || typeof d.network?.sendRequest !== 'function') return undefined
  return d as KadInternals
}

/** The Kademlia id of a DHT key (what XOR distances are measured on). */
export function kadId (key: Uint8Array): Uint8Array {
  return sha256(key)
}

/**
 * How long a small-mesh verdict holds for a routing table of unchanged size. Its walk reaches every
 * node of a small mesh (that is what it checks), so it is a cost per node that grows with N: kept
 * rare. A peer that joins changes the routing table's size, which asks again at once.
 */
const SMALL_MESH_RECHECK_MS = 300_000
/** the least and most grace the small-mesh walk gives its last peer to answer, ms (see `#verifySmallMesh`) */
const SMALL_MESH_GRACE_MIN_MS = 20
const SMALL_MESH_GRACE_MAX_MS = 500
/** how long a key's walk is reused */
const WALK_TTL_MS = 60_000
const MAX_WALKS_KEPT = 10_000

export interface ReplicaFinderComponents {
  peerId: PeerId
  dht: KadDHT
  log: Logger
}

export interface ReplicaFinderInit {
  /** see DhtRegistryInit.directQueries */
  directQueries: boolean | 'auto'
  /** longest walk */
  queryTimeoutMs: number
  /** peers not to count on (known down) */
  isDown?: (peer: PeerId) => boolean
  /** how many peers (besides the writer itself) store a key, at most k; see DhtRegistryInit.replicas */
  replicas?: number
}

export class ReplicaFinder {
  readonly #peerId: PeerId
  readonly #selfId: Uint8Array
  readonly #dht: KadDHT
  readonly #log: Logger
  readonly #direct: boolean | 'auto'
  readonly #timeout: number
  readonly #isDown: (peer: PeerId) => boolean
  readonly #replicas: number
  #smallMesh?: { size: number, at: number, verified: boolean }
  #smallMeshCheck?: Promise<void>
  readonly #walks = new Map<string, { peers: PeerId[], at: number }>()
  readonly #walking = new Map<string, Promise<PeerId[]>>()
  /** every peer of a small routing table, for the current synchronous run (see #everyPeer) */
  #every?: PeerId[]
  /** walks made (for the scale benchmark) */
  walks = 0

  constructor (components: ReplicaFinderComponents, init: ReplicaFinderInit) {
    this.#peerId = components.peerId
    this.#selfId = kadId(components.peerId.toMultihash().bytes)
    this.#dht = components.dht
    this.#log = components.log
    this.#direct = init.directQueries
    this.#timeout = init.queryTimeoutMs
    this.#isDown = init.isDown ?? (() => false)
    this.#replicas = Math.max(1, init.replicas ?? Number.POSITIVE_INFINITY)
  }

  kad (): KadInternals | undefined {
    return kadInternals(this.#dht)
  }

  /** How many peers the routing table holds (0 without kad-dht internals). */
  get routingTableSize (): number {
    return this.kad()?.routingTable.size ?? 0
  }

  /** kad-dht internals when queries may go straight to the routing table's peers (direct mode). */
  direct (signal?: AbortSignal): KadInternals | undefined {
    if (this.#direct === false) return undefined
    const kad = this.kad()
    if (kad == null) return undefined
    if (this.#direct === true) return kad
    const size = kad.routingTable.size
    if (size === 0 || size >= kad.k) return undefined
    const now = Date.now()
    const known = this.#smallMesh != null && this.#smallMesh.size === size
    if (known && now - this.#smallMesh!.at < SMALL_MESH_RECHECK_MS) return this.#smallMesh!.verified ? kad : undefined
    if (this.#smallMeshCheck == null) this.#smallMeshCheck = this.#verifySmallMesh(kad, signal).finally(() => { this.#smallMeshCheck = undefined })
    // the periodic re-check runs in the background: until it answers, the last verdict for a
    // routing table of this size holds (claims must not wait for a walk every 30 s)
    return known && this.#smallMesh!.verified ? kad : undefined
  }

  /**
   * Walk towards our own id and see whether any DHT peer turns up that our routing table lacks.
   * Once every peer of the routing table but one has answered, the walk waits a grace as long
   * again as those answers took (SMALL_MESH_GRACE_MIN_MS..SMALL_MESH_GRACE_MAX_MS) and the verdict
   * is taken from the answers so far: one peer that is frozen (SIGSTOP) but not known dead held
   * the walk, and with it the first claims and reads after the routing table changed, for the
   * kad-dht query's 5 s (issue 9). What the silent peer would have named is what it alone knows
   * of (a peer that reached no other node of ours); the next check (a routing table of another
   * size, or SMALL_MESH_RECHECK_MS) asks again.
   */
  async #verifySmallMesh (kad: KadInternals, parent?: AbortSignal): Promise<void> {
    const size = kad.routingTable.size
    const known = new Set(kad.routingTable.closestPeers(this.#selfId, { count: kad.k }).map(p => p.toString()))
    known.add(this.#peerId.toString())
    let verified = true
    const answered = new Set<string>()
    const cut = new AbortController()
    let grace: ReturnType<typeof setTimeout> | undefined
    let graceOver = false
    const t0 = performance.now()
    try {
      await withSignal(this.#timeout, [parent, cut.signal], async (signal) => {
        for await (const ev of this.#dht.getClosestPeers(this.#peerId.toMultihash().bytes, { signal })) {
          const ids = ev.name === 'PEER_RESPONSE' ? ev.closer.map(p => p.id.toString()) : ev.name === 'FINAL_PEER' ? [ev.peer.id.toString()] : []
          if (ids.some(id => !known.has(id))) verified = false
          if (ev.name !== 'PEER_RESPONSE') continue
          answered.add(ev.from.toString())
          if (grace == null && size > 1 && answered.size >= size - 1) {
            const wait = Math.min(SMALL_MESH_GRACE_MAX_MS, Math.max(SMALL_MESH_GRACE_MIN_MS, performance.now() - t0))
            grace = setTimeout(() => { graceOver = true; cut.abort() }, wait)
          }
        }
      })
    } catch (err) {
      if (!graceOver) {
        this.#log('small-mesh check failed: %s', errorMessage(err))
        verified = false
      }
    } finally {
      clearTimeout(grace)
    }
    this.#smallMesh = { size, at: Date.now(), verified }
  }

  /** The `count` peers of the routing table closest to a key (no round trip). */
  closestKnown (key: Uint8Array, count: number): PeerId[] {
    const kad = this.kad()
    if (kad == null) return []
    return kad.routingTable.closestPeers(kadId(key), { count }).filter(p => !this.#isDown(p))
  }

  /**
   * The replicas of a key when they are known without waiting (nobody to ask, or a small mesh's
   * routing table), else undefined: the writer asks for every claim of a batch, and an async call
   * per claim was a promise and an async frame each on the new-claim path.
   */
  replicasNow (key: Uint8Array, signal?: AbortSignal): PeerId[] | undefined {
    const kad = this.kad()
    // alone (nobody in the routing table yet): nobody to walk to
    if (kad != null && kad.routingTable.size === 0) return []
    const direct = this.direct(signal)
    if (direct == null) return undefined
    const count = Math.min(direct.k, this.#replicas)
    // a mesh no larger than the replica count: every peer is a replica of every key
    if (direct.routingTable.size <= count) return this.#everyPeer(direct)
    return direct.routingTable.closestPeers(kadId(key), { count }).filter(p => !this.#isDown(p))
  }

  /** The peers (not this node) that should store a key. */
  async replicasOf (key: Uint8Array, options?: AbortOptions): Promise<PeerId[]> {
    const now = this.replicasNow(key, options?.signal)
    if (now != null) return now
    if (this.#smallMeshCheck != null) {
      // the mesh may be small: one walk to find out, instead of a walk per key meanwhile
      await this.#smallMeshCheck
      const after = this.replicasNow(key, options?.signal)
      if (after != null) return after
    }
    const kad = this.kad()
    const id = kadId(key)
    const walked = await this.#walked(key, options)
    const k = kad?.k ?? 20
    const byId = new Map<string, { peer: PeerId, d: Uint8Array }>()
    for (const peer of [...walked, ...(kad?.routingTable.closestPeers(id, { count: k }) ?? [])]) {
      if (peer.equals(this.#peerId) || this.#isDown(peer)) continue
      const s = peer.toString()
      if (!byId.has(s)) byId.set(s, { peer, d: xor(kadId(peer.toMultihash().bytes), id) })
    }
    return [...byId.values()].sort((a, b) => uint8ArrayCompare(a.d, b.d)).slice(0, Math.min(k, this.#replicas)).map(e => e.peer)
  }

  /**
   * Every peer of the routing table that is not down, read once per synchronous run: the writer
   * asks for the replicas of every claim of a batch in one run, and sorting the routing table by
   * distance to each key was 2% of a busy 3-node mesh node's time (issue 9).
   */
  #everyPeer (kad: KadInternals): PeerId[] {
    if (this.#every == null) {
      this.#every = kad.routingTable.closestPeers(this.#selfId, { count: kad.routingTable.size }).filter(p => !this.#isDown(p))
      queueMicrotask(() => { this.#every = undefined })
    }
    return this.#every.slice()
  }

  async #walked (key: Uint8Array, options?: AbortOptions): Promise<PeerId[]> {
    const k = uint8ArrayToString(key, 'base64')
    const cached = this.#walks.get(k)
    if (cached != null && Date.now() - cached.at < WALK_TTL_MS) return cached.peers
    let walk = this.#walking.get(k)
    if (walk == null) {
      walk = this.#walk(key, options).then(peers => {
        this.#walks.delete(k)
        if (this.#walks.size >= MAX_WALKS_KEPT) this.#walks.delete(this.#walks.keys().next().value!)
        if (peers.length > 0) this.#walks.set(k, { peers, at: Date.now() })
        return peers
      }).finally(() => { this.#walking.delete(k) })
      this.#walking.set(k, walk)
    }
    return await walk
  }

  async #walk (key: Uint8Array, options?: AbortOptions): Promise<PeerId[]> {
    const peers: PeerId[] = []
    this.walks++
    try {
      await withSignal(this.#timeout, [options?.signal], async (signal) => {
        for await (const ev of this.#dht.getClosestPeers(key, { signal })) {
          if (ev.name === 'FINAL_PEER') peers.push(ev.peer.id)
        }
      })
    } catch (err) {
      this.#log('walk towards a claim key failed: %s', errorMessage(err))
    }
    return peers
  }

  /** Forget the walks (the mesh changed a lot, or for tests). */
  forget (): void {
    this.#walks.clear()
  }

  /**
   * Whether this node is among the `count` closest to a key by its own routing table: only those
   * replicas send witness notices, so a change is told a few times, not k times.
   */
  isAmongClosest (key: Uint8Array, count: number): boolean {
    const kad = this.kad()
    if (kad == null) return true
    const target = kadId(key)
    const closest = kad.routingTable.closestPeers(target, { count })
    if (closest.length < count) return true
    const last = closest[closest.length - 1]
    return uint8ArrayCompare(xor(this.#selfId, target), xor(kadId(last.toMultihash().bytes), target)) < 0
  }
}

export const NO_PATH = { index: -1, queued: 0, running: 0, total: 0 }
export { MessageType }
