/**
 * Move and interest notices: who is told when a claim changes the route of an AoR.
 *
 * - The new owner tells the previous owner it knows of (`notify`).
 * - A replica that stores a claim displacing another owner tells that owner, and tells the nodes
 *   that registered interest in the AoR with it when the route changed; only the few replicas
 *   closest to the key (`noticeReplicas`) do, so a change is told a few times, not k times.
 * - A node watching an AoR registers its interest with the replicas of the key (`register`).
 *
 * Every notice carries the winning signed claim; the receiver verifies it before acting on it.
 */
import { decode } from 'cborg'
import { toString as uint8ArrayToString } from 'uint8arrays/to-string'
import { claimKey, normalizeAor, verifyClaimSync } from '../record/claim.ts'
import { MAX_INTEREST_BYTES, noticeHandler, sendNotice } from './protocol.ts'
import { errorMessage } from '../errors.ts'
import type { ReplicaFinder } from '../replication/replicas.ts'
import type { ClaimExchangeClient } from './exchange.ts'
import type { SignedClaim } from '../record/claim.ts'
import type { Libp2p, Logger, PeerId } from '@libp2p/interface'

const MAX_INTEREST_TTL_MS = 3_600_000
const MAX_INTEREST_AORS = 100_000
const MAX_INTEREST_PER_AOR = 1_000
const MAX_SENT_REMEMBERED = 10_000

export interface WitnessComponents {
  peerId: PeerId
  libp2p: Pick<Libp2p, 'handle' | 'unhandle' | 'dialProtocol'>
  replicas: ReplicaFinder
  /** interest registrations go over it (one long-lived stream per peer) */
  exchange: Pick<ClaimExchangeClient, 'interest'>
  log: Logger
}

export interface WitnessInit {
  noticeProtocol: string
  interestProtocol: string
  noticeReplicas: number
  /** how long an interest registration lasts (the watcher renews it) */
  interestTtlMs: number
  /** a verified notice of a claim, newer or not (the registry decides) */
  onNotice: (from: PeerId, claim: SignedClaim) => void
}

export class Witness {
  readonly #c: WitnessComponents
  readonly #init: WitnessInit
  /** as a replica: who wants to hear about which AoR, until when */
  readonly #interests = new Map<string, Map<string, { peer: PeerId, until: number }>>()
  readonly #sent = new Set<string>()
  #signal?: AbortSignal
  readonly stats: { noticesSent: number, noticesRejected: number }

  constructor (components: WitnessComponents, init: WitnessInit, stats = { noticesSent: 0, noticesRejected: 0 }) {
    this.#c = components
    this.#init = init
    this.stats = stats
  }

  async start (signal: AbortSignal): Promise<void> {
    this.#signal = signal
    await this.#c.libp2p.handle(this.#init.noticeProtocol, noticeHandler(this.#c.log, (from, bytes) => { this.#receiveNotice(from, bytes) }), { maxInboundStreams: 256, maxOutboundStreams: 256 })
    await this.#c.libp2p.handle(this.#init.interestProtocol, noticeHandler(this.#c.log, (from, bytes) => { this.#receiveInterest(from, bytes) }, MAX_INTEREST_BYTES), { maxInboundStreams: 256, maxOutboundStreams: 256 })
  }

  async stop (): Promise<void> {
    this.#signal = undefined
    this.#interests.clear()
    await this.#c.libp2p.unhandle(this.#init.noticeProtocol).catch(() => {})
    await this.#c.libp2p.unhandle(this.#init.interestProtocol).catch(() => {})
  }

  /** This node (as a replica or the putter) stored `next` over `prev`: tell who must know. */
  stored (prev: SignedClaim | undefined, next: SignedClaim): void {
    if (this.#signal == null) return
    const moved = prev != null && prev.kind === 'claim' && !prev.owner.equals(next.owner)
    const changed = prev == null || prev.kind !== next.kind || !prev.owner.equals(next.owner) || prev.sip !== next.sip
    if (!moved && !changed) return
    const interested = this.#interests.get(next.aor)
    if (!moved && interested == null) return
    if (!this.#c.replicas.isAmongClosest(claimKey(next.aor), this.#init.noticeReplicas)) return
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
      if (interested.size === 0) this.#interests.delete(next.aor)
    }
  }

  /** Send a notice of `c` to a peer (once per claim and peer). */
  async notify (peer: PeerId, c: SignedClaim): Promise<void> {
    const signal = this.#signal
    if (peer.equals(this.#c.peerId) || signal == null) return
    const id = `${c.aor}|${c.version}|${uint8ArrayToString(c.signature, 'base64')}|${peer.toString()}`
    if (this.#sent.has(id)) return
    this.#sent.add(id)
    if (this.#sent.size > MAX_SENT_REMEMBERED) this.#sent.delete(this.#sent.values().next().value!)
    try {
      this.stats.noticesSent++
      await sendNotice(this.#c.libp2p, this.#init.noticeProtocol, peer, c.bytes, { signal })
    } catch (err) {
      this.#c.log('could not notify %p of %s: %s', peer, c.aor, errorMessage(err))
    }
  }

  #receiveNotice (from: PeerId, bytes: Uint8Array): void {
    let c: SignedClaim
    try {
      c = verifyClaimSync(bytes)
    } catch (err) {
      this.stats.noticesRejected++
      this.#c.log('ignored notice from %p: %s', from, errorMessage(err))
      return
    }
    this.#init.onNotice(from, c)
  }

  /** A watcher registered interest in an AoR with us (a replica of its claim key), one-shot protocol. */
  #receiveInterest (from: PeerId, bytes: Uint8Array): void {
    try {
      const msg = decode(bytes, { strict: true, allowUndefined: false })
      if (!Array.isArray(msg) || msg.length !== 3 || msg[0] !== 1 || typeof msg[1] !== 'string' || typeof msg[2] !== 'number') throw new Error('not [1, aor, ttl]')
      this.interest(from, [msg[1]], msg[2])
    } catch (err) {
      this.#c.log('ignored interest from %p: %s', from, errorMessage(err))
    }
  }

  /** A watcher registered interest in some AoRs with us (a replica of their claim keys). */
  interest (from: PeerId, aors: string[], ttlMs: number): void {
    const ttl = Math.min(Math.max(0, ttlMs), MAX_INTEREST_TTL_MS)
    for (const a of aors) {
      let aor: string
      try {
        aor = normalizeAor(a)
      } catch (err) {
        this.#c.log('ignored interest from %p: %s', from, errorMessage(err))
        continue
      }
      this.#addInterest(from, aor, ttl)
    }
  }

  #addInterest (from: PeerId, aor: string, ttl: number): void {
    let m = this.#interests.get(aor)
    if (m == null) {
      if (this.#interests.size >= MAX_INTEREST_AORS) {
        this.#c.log('interest table full, ignored %s from %p', aor, from)
        return
      }
      m = new Map()
      this.#interests.set(aor, m)
    }
    if (m.size >= MAX_INTEREST_PER_AOR && !m.has(from.toString())) return
    m.set(from.toString(), { peer: from, until: Date.now() + ttl })
  }

  /** Tell the replicas of an AoR's claim key that this node wants to hear about changes. */
  async register (aor: string): Promise<void> {
    const signal = this.#signal
    if (signal == null) return
    let peers: PeerId[] = []
    try {
      peers = await this.#c.replicas.replicasOf(claimKey(aor), { signal })
    } catch (err) {
      this.#c.log('could not find the replicas of %s: %s', aor, errorMessage(err))
    }
    await Promise.all(peers.map(async peer => {
      try {
        await this.#c.exchange.interest(peer, aor, this.#init.interestTtlMs)
      } catch (err) {
        this.#c.log('could not register interest in %s with %p: %s', aor, peer, errorMessage(err))
      }
    }))
  }
}
