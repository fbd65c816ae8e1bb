/**
 * Replica repair: a replica that missed claims (frozen, partitioned, or down and back) gets them
 * again as soon as it answers, not at the owners' next lease renewal (issue 9).
 *
 * The put client (`replication/put-protocol.ts`) tells this of every claim a peer did not store,
 * and of a silent peer answering again; peer liveness (`liveness.ts`) tells of a peer that was
 * down coming back. For each such peer this keeps what it owes:
 *
 * - the AoRs of the claims dropped for it, at most `maxRememberedPerPeer` (4,096) per peer and
 *   `maxRemembered` (32,768) over all peers, of at most `maxPeers` (64) peers: at roughly 150 B an
 *   AoR (its string and a Set slot), well under 1 MB for one frozen replica and about 5 MB at most;
 * - or, once more were dropped than it remembers, or for a peer liveness found down (claims were
 *   then not even put to it), "the region": every own record whose replica set includes the peer,
 *   found by a walk over the own records in slices (`sweep.ts` `planRegion`).
 *
 * When the peer answers again (or, for drops while it still answered, `settleMs` after them) the
 * owed claims are put to it: the current own record of each AoR (a claim renewed or released
 * since goes as it is now; an AoR no longer ours is skipped), in requests of `batch` (128) claims,
 * one at a time, each sent once the previous one was answered and a pause after it as long as that
 * answer took (at least `pauseMs`): one owner keeps a returning replica busy about half the time
 * at most, and this node's event loop holds at most one slice of work for it. A silent peer with
 * claims owed is probed with one claim every `probeMinMs`, doubling to `probeMaxMs` (no region walk
 * and no batch while it is away; a probe waits for the put timeout, and puts meanwhile are dropped
 * at once, so a silent peer holds one request); a peer that never answers is forgotten after
 * `forgetAfterMs` (the lease: by then the lease renewal has put every claim again), so it costs
 * one probe per `probeMaxMs` and its bounded memory until then.
 *
 * A replica that answers `stale` with another owner's newer claim is told to the registry
 * (`learn`), as a write's answer would be.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { claimKey, verifyClaimSync } from '../record/claim.ts'
import { decodeEnvelope, decodePayload } from '../record/claim-cbor.ts'
import { errorMessage } from '../errors.ts'
import { kadId } from '../replication/replicas.ts'
import { MAX_PUT_BATCH, PutStatus } from '../replication/put-protocol.ts'
import { planRegion } from './sweep.ts'
import type { PutAnswer, PutClient, PutDrops } from '../replication/put-protocol.ts'
import type { ReplicaFinder } from '../replication/replicas.ts'
import type { PeerLiveness } from '../liveness.ts'
import type { OwnRecord } from './sweep.ts'
import type { SignedClaim } from '../record/claim.ts'
import type { Logger, PeerId } from '@libp2p/interface'

export interface ReplicaRepairInit {
  /** most AoRs remembered per peer; beyond, the peer gets its whole region @default 4_096 */
  maxRememberedPerPeer?: number
  /** most AoRs remembered over all peers; beyond, a peer gets its whole region @default 32_768 */
  maxRemembered?: number
  /** most peers owed claims at once (the oldest is forgotten) @default 64 */
  maxPeers?: number
  /** claims per repair request (at most MAX_PUT_BATCH) @default 128 */
  batch?: number
  /** pause between two repair requests to one peer, ms @default 20 */
  pauseMs?: number
  /** wait after a peer answers again (or after drops while it answers) before repairing, ms @default 250 */
  settleMs?: number
  /** first probe of a silent peer owed claims, ms (doubling) @default 1_000 */
  probeMinMs?: number
  /** longest wait between probes, ms @default 30_000 */
  probeMaxMs?: number
  /** forget a peer that has not answered for this long, ms @default 1_800_000 (the default lease) */
  forgetAfterMs?: number
  /** own records looked at per slice of a region walk, the event loop yielded between (about 7 µs each: 3.5 ms a slice) @default 500 */
  regionSlice?: number
}

export interface ReplicaRepairComponents {
  client: Pick<PutClient, 'put' | 'isSilent' | 'observe'>
  replicas: Pick<ReplicaFinder, 'replicasNow' | 'kad'>
  /** this node's own records (read only) */
  own: ReadonlyMap<string, OwnRecord>
  log: Logger
  /** a newer claim of another owner a replica reported (verified) */
  learn: (aor: string, claim: SignedClaim) => void
}

/** what one peer is owed */
interface Owed {
  peer: PeerId
  aors: Set<string>
  /** every own record of its region is owed (too many drops, or it was down) */
  region: boolean
  /** when it first owed something since it last was repaired */
  since: number
  timer?: ReturnType<typeof setTimeout>
  running: boolean
  /** the next probe's delay while it is silent */
  probeMs: number
  /** why: the drop reasons and liveness, for the log line */
  why: Set<string>
}

export interface RepairStats {
  /** repair rounds begun (one per peer and return) */
  rounds: number
  /** of those, rounds over a region (not remembered AoRs) */
  regionRounds: number
  /** claims put again, and requests that carried them */
  claims: number
  requests: number
  /** answered stored / stale (the replica already held it or newer) */
  stored: number
  stale: number
  /** peers given up on (never answered within forgetAfterMs, or pushed out by maxPeers) */
  forgotten: number
  /** AoRs remembered now, over every peer */
  remembered: number
}

/** The AoR of a claim envelope, without verifying it (it is one of ours: the put client had it). */
function aorOf (bytes: Uint8Array): string | undefined {
  try {
    const env = decodeEnvelope(bytes, 128)
    return decodePayload(bytes, env.payloadAt, env.payloadEnd).aor
  } catch {
    return undefined
  }
}

/** the libp2p Logger, with the optional `info` our components' loggers carry (node/logger.ts) */
type InfoLogger = Logger & { info?: (formatter: string, ...args: unknown[]) => void }

const SILENT_REASONS = new Set<keyof PutDrops>(['timeout', 'no_stream', 'peer_silent'])

export class ReplicaRepair {
  readonly #c: ReplicaRepairComponents
  readonly #info: (formatter: string, ...args: unknown[]) => void
  readonly #maxRemembered: number
  readonly #maxPeers: number
  readonly #maxTotal: number
  readonly #batch: number
  readonly #pauseMs: number
  readonly #settleMs: number
  readonly #probeMin: number
  readonly #probeMax: number
  readonly #forgetAfter: number
  readonly #slice: number
  readonly #owed = new Map<string, Owed>()
  #shutdown?: AbortController
  #unLiveness?: () => void
  readonly stats: RepairStats = { rounds: 0, regionRounds: 0, claims: 0, requests: 0, stored: 0, stale: 0, forgotten: 0, remembered: 0 }

  constructor (components: ReplicaRepairComponents, init: ReplicaRepairInit = {}) {
    this.#c = components
    const log = components.log as InfoLogger
    this.#info = log.info != null ? log.info.bind(log) : log
    this.#maxRemembered = init.maxRememberedPerPeer ?? 4_096
    this.#maxPeers = init.maxPeers ?? 64
    this.#maxTotal = init.maxRemembered ?? 32_768
    this.#batch = Math.min(MAX_PUT_BATCH, Math.max(1, init.batch ?? 128))
    this.#pauseMs = init.pauseMs ?? 20
    this.#settleMs = init.settleMs ?? 250
    this.#probeMin = init.probeMinMs ?? 1_000
    this.#probeMax = Math.max(this.#probeMin, init.probeMaxMs ?? 30_000)
    this.#forgetAfter = init.forgetAfterMs ?? 1_800_000
    this.#slice = Math.max(1, init.regionSlice ?? 500)
  }

  start (liveness?: Pick<PeerLiveness, 'onChange'>): void {
    if (this.#shutdown != null) return
    this.#shutdown = new AbortController()
    this.#c.client.observe({
      dropped: (peer, claims, reason) => { this.#dropped(peer, claims, reason) },
      back: (peer) => { this.#back(peer.toString(), 'answered') }
    })
    this.#unLiveness = liveness?.onChange((peer, up) => {
      if (up) this.#back(peer, 'up')
      else this.#down(peer)
    })
  }

  stop (): void {
    this.#shutdown?.abort()
    this.#shutdown = undefined
    this.#c.client.observe(undefined)
    this.#unLiveness?.()
    for (const o of this.#owed.values()) clearTimeout(o.timer)
    this.#owed.clear()
    this.stats.remembered = 0
  }

  /** Peers owed claims now, and how many AoRs each (tests, admin). */
  owed (): Array<{ peer: string, aors: number, region: boolean, running: boolean }> {
    return [...this.#owed.values()].map(o => ({ peer: o.peer.toString(), aors: o.aors.size, region: o.region, running: o.running }))
  }

  #entry (peer: PeerId | string): Owed | undefined {
    if (this.#shutdown == null) return undefined
    const id = peer.toString()
    let o = this.#owed.get(id)
    if (o != null) return o
    if (this.#owed.size >= this.#maxPeers) {
      // forget the longest-owed peer that is not being repaired (the lease renewal covers it)
      for (const [k, v] of this.#owed) {
        if (v.running) continue
        this.#forget(k, v, 'too many peers owed claims')
        break
      }
      if (this.#owed.size >= this.#maxPeers) return undefined
    }
    let peerId: PeerId
    try {
      peerId = typeof peer === 'string' ? peerIdFromString(peer) : peer
    } catch {
      return undefined
    }
    o = { peer: peerId, aors: new Set(), region: false, since: Date.now(), running: false, probeMs: this.#probeMin, why: new Set() }
    this.#owed.set(id, o)
    return o
  }

  #forget (id: string, o: Owed, why: string): void {
    clearTimeout(o.timer)
    this.#owed.delete(id)
    this.stats.remembered -= o.aors.size
    this.stats.forgotten++
    this.#info('repair of %p given up (%s): %d remembered%s', o.peer, why, o.aors.size, o.region ? ', its region' : '')
  }

  #remember (o: Owed, aors: Iterable<string>): void {
    if (o.region) return
    for (const aor of aors) {
      if (o.aors.has(aor)) continue
      if (o.aors.size >= this.#maxRemembered || this.stats.remembered >= this.#maxTotal) {
        this.#toRegion(o)
        return
      }
      o.aors.add(aor)
      this.stats.remembered++
    }
  }

  #toRegion (o: Owed): void {
    this.stats.remembered -= o.aors.size
    o.aors.clear()
    o.region = true
  }

  #dropped (peer: PeerId, claims: Uint8Array[], reason: keyof PutDrops): void {
    const o = this.#entry(peer)
    if (o == null) return
    o.why.add(reason)
    if (!o.region) {
      const aors: string[] = []
      for (const bytes of claims) {
        // (a new claim dropped at once, its queue full, is not among the own records yet: only
        // own records are put again, looked up when the repair runs)
        const aor = aorOf(bytes)
        if (aor != null) aors.push(aor)
      }
      this.#remember(o, aors)
    }
    if (o.aors.size === 0 && !o.region) {
      if (!o.running && o.timer == null) this.#owed.delete(peer.toString())
      return
    }
    this.#schedule(o, SILENT_REASONS.has(reason) || this.#c.client.isSilent(peer))
  }

  /** liveness found the peer down: claims are no longer put to it, so it owes its whole region */
  #down (peer: string): void {
    const o = this.#entry(peer)
    if (o == null) return
    o.why.add('down')
    this.#toRegion(o)
    clearTimeout(o.timer)
    o.timer = undefined
  }

  #back (peer: string, why: string): void {
    const o = this.#owed.get(peer)
    if (o == null || this.#shutdown == null) return
    o.why.add(why)
    o.probeMs = this.#probeMin
    clearTimeout(o.timer)
    o.timer = undefined
    this.#schedule(o, false)
  }

  /** Run the repair after the settle time, or after the probe delay while the peer is silent. */
  #schedule (o: Owed, silent: boolean): void {
    if (o.running || o.timer != null || this.#shutdown == null) return
    if (Date.now() - o.since > this.#forgetAfter) {
      this.#forget(o.peer.toString(), o, `silent for over ${this.#forgetAfter} ms`)
      return
    }
    let delay = this.#settleMs
    if (silent) {
      delay = o.probeMs
      o.probeMs = Math.min(this.#probeMax, o.probeMs * 2)
    }
    o.timer = setTimeout(() => {
      o.timer = undefined
      void this.#run(o)
    }, delay)
    o.timer.unref?.()
  }

  /** Whether `peer` is a replica of `aor`'s key by this node's routing table (a superset when unsure). */
  #holds (peer: PeerId, aor: string): boolean {
    const key = claimKey(aor)
    const now = this.#c.replicas.replicasNow(key)
    if (now != null) return now.some(p => p.equals(peer))
    const kad = this.#c.replicas.kad()
    if (kad == null) return true
    return kad.routingTable.closestPeers(kadId(key), { count: kad.k }).some(p => p.equals(peer))
  }

  /** A region's AoRs: the own records it holds, found in slices with the event loop yielded between. */
  async #region (peer: PeerId, signal: AbortSignal): Promise<string[]> {
    const it = this.#c.own.entries()
    const out: string[] = []
    const now = Date.now()
    for (;;) {
      const slice = planRegion(it, aor => this.#holds(peer, aor), this.#slice, now)
      for (const aor of slice.aors) out.push(aor)
      if (slice.done || signal.aborted) return out
      await new Promise(resolve => setImmediate(resolve))
    }
  }

  async #run (o: Owed): Promise<void> {
    const signal = this.#shutdown?.signal
    if (signal == null || o.running) return
    o.running = true
    const id = o.peer.toString()
    // a silent peer is probed with one claim first: no region walk, no batch, while it is still away
    if (this.#c.client.isSilent(o.peer)) {
      const probe = this.#probeClaim(o)
      if (probe == null) {
        o.running = false
        this.#toRegion(o)
        this.#owed.delete(id)
        return
      }
      let answered = false
      try {
        await this.#c.client.put(o.peer, [probe.bytes])
        answered = true
      } catch { // still silent: probed again later
      }
      o.running = false
      if (!answered || this.#shutdown == null) {
        if (this.#shutdown != null) this.#schedule(o, true)
        return
      }
      o.running = true
    }
    const t0 = performance.now()
    const region = o.region
    const why = [...o.why].join(', ')
    let sent = 0
    let stored = 0
    let stale = 0
    let requests = 0
    let failed: string | undefined
    let aors: string[]
    if (region) {
      o.region = false
      aors = await this.#region(o.peer, signal)
    } else {
      aors = [...o.aors]
      this.stats.remembered -= o.aors.size
      o.aors.clear()
    }
    o.why.clear()
    this.stats.rounds++
    if (region) this.stats.regionRounds++
    this.#info('repair of %p starts: %d claims owed (%s; %s)', o.peer, aors.length, region ? 'its region' : 'remembered drops', why)
    let at = 0
    let rtt = 0
    try {
      while (at < aors.length && !signal.aborted) {
        const start = at
        const chunk: string[] = []
        const claims: SignedClaim[] = []
        while (at < aors.length && claims.length < this.#batch) {
          const aor = aors[at++]
          const e = this.#c.own.get(aor)
          if (e == null) continue
          const c = e.claim
          if ((c.kind === 'claim' ? c.expiresAt : c.knownUntil) <= Date.now()) continue
          chunk.push(aor)
          claims.push(c)
        }
        if (claims.length === 0) break
        let answers: PutAnswer[]
        const sentAt = performance.now()
        try {
          answers = await this.#c.client.put(o.peer, claims.map(c => c.bytes))
          rtt = performance.now() - sentAt
        } catch (err) {
          // silent again (or gone): what is left waits for its return; the chunk itself was told
          // to #dropped by the client when the drop was counted
          failed = errorMessage(err)
          at = start
          break
        }
        requests++
        sent += claims.length
        this.stats.requests++
        this.stats.claims += claims.length
        answers.forEach((a, j) => {
          if (a.status === PutStatus.stored) stored++
          else if (a.status === PutStatus.stale) stale++
          if (a.other != null) this.#learn(chunk[j], claims[j], a.other)
        })
        // at least as long as the answer took: one owner keeps the returning replica busy about
        // half the time at most, however slow it is to store them
        if (at < aors.length) await new Promise(resolve => setTimeout(resolve, Math.max(this.#pauseMs, rtt)))
      }
    } finally {
      this.stats.stored += stored
      this.stats.stale += stale
      o.running = false
    }
    const ms = Math.round(performance.now() - t0)
    if (this.#shutdown == null) return
    if (failed != null) {
      if (region) this.#toRegion(o)
      else this.#remember(o, aors.slice(at))
      this.#info('repair of %p stopped after %d of %d claims in %d ms (%s); it is probed again', o.peer, sent, aors.length, ms, failed)
      this.#schedule(o, true)
      return
    }
    this.#info('repair of %p done: %d claims re-put in %d requests (%d stored, %d already held) in %d ms', o.peer, sent, requests, stored, stale, ms)
    o.since = Date.now()
    if (o.aors.size > 0 || o.region) {
      // dropped again meanwhile
      this.#schedule(o, this.#c.client.isSilent(o.peer))
      return
    }
    if (this.#owed.get(id) === o) this.#owed.delete(id)
  }

  /** one live own record to probe a silent peer with: an owed one, else any (a replica stores any) */
  #probeClaim (o: Owed): SignedClaim | undefined {
    const now = Date.now()
    const live = (c: SignedClaim): boolean => (c.kind === 'claim' ? c.expiresAt : c.knownUntil) > now
    for (const aor of o.aors) {
      const c = this.#c.own.get(aor)?.claim
      if (c != null && live(c)) return c
    }
    for (const e of this.#c.own.values()) if (live(e.claim)) return e.claim
    return undefined
  }

  #learn (aor: string, mine: SignedClaim, other: Uint8Array): void {
    try {
      const c = verifyClaimSync(other, { key: claimKey(aor), allowExpired: true })
      if (!c.owner.equals(mine.owner)) this.#c.learn(aor, c)
    } catch (err) {
      this.#c.log('a replica reported a bad claim for %s: %s', aor, errorMessage(err))
    }
  }
}
