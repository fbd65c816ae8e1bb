/**
 * Reading claims: what this node stores, what the replicas of a key hold, and the repair of
 * replicas that answered with an older claim.
 *
 * - Direct mode (the whole mesh is in the routing table, see `replicas.ts`): ask the `quorum`
 *   closest peers with `/sipmesh/claim-get/1.0.0`, the others only when one of those did not
 *   answer.
 * - An answer that does not wait for one silent replica: once every peer asked but one has
 *   answered, the read waits a grace as long again as those answers took (READ_GRACE_MIN_MS to
 *   READ_GRACE_MAX_MS) and then answers from them and this node's copy. A replica that is frozen
 *   (SIGSTOP, a hung event loop) but not yet known dead kept every read of its keys for the 5 s
 *   exchange timeout, on every node, until liveness found it down (issue 9). The silent peer's
 *   answer (and the further peers', when it fails) is still taken in when it comes: a newer claim
 *   it carries goes to `onLate`, and the replicas that answered older ones are corrected.
 *
 *   What an early answer may miss, and why that is safe: a claim that only the silent replica
 *   holds among those asked. Every claim is put to all of its replicas, so that is (a) a claim
 *   whose puts to the others are still in flight (a read that began a moment earlier would miss
 *   it too: reads were never linearizable), or (b) a claim whose puts to the others failed, whose
 *   REGISTER was answered on the silent replica's answer before it froze; its owner's lease
 *   renewal puts it again (before the lease ends: 30 min at most by default). A frozen replica's
 *   answer never comes, so waiting for its timeout learned nothing more; a slow one's does, and
 *   `onLate` acts on it as on a notice (the cache takes the newer claim, watchers and a displaced
 *   owner are told, P3). P2 holds regardless: the registry keeps the newest claim it has seen,
 *   and an early answer older than that is never resolved (`apply` takes the newer of the two).
 * - A large mesh: first the few closest peers this node knows of (no walk; in a populated routing
 *   table they are usually replicas), the kad-dht walk only when none of them has a record (a
 *   claim's pre-read never walks: it only looks for a previous owner).
 */
import { Key } from 'interface-datastore'
import { Libp2pRecord } from '@libp2p/record'
import { equals as uint8ArrayEquals } from 'uint8arrays/equals'
import { toString as uint8ArrayToString } from 'uint8arrays/to-string'
import { CLAIM_KEY_PREFIX, claimKey, compareClaims, verifyClaimSync } from '../record/claim.ts'
import { errorMessage, errorName } from '../errors.ts'
import type { ClaimGuardDatastore } from '../datastore-guard.ts'
import type { PutClient } from './put-protocol.ts'
import type { ReplicaFinder } from './replicas.ts'
import type { ClaimWriter } from './writer.ts'
import type { ClaimExchangeClient } from '../notices/exchange.ts'
import type { SignedClaim } from '../record/claim.ts'
import type { AbortOptions, Logger, PeerId } from '@libp2p/interface'
import type { KadDHT } from '@libp2p/kad-dht'

export interface LookupOptions extends AbortOptions {
  /**
   * Ask the `quorum` closest known peers first: in direct mode the rest only when one of them did
   * not answer; in a large mesh the kad-dht walk only when none had a record.
   */
  quorum?: number
  /** with `quorum` in a large mesh: never walk */
  noWalk?: boolean
  /**
   * Answer without waiting for one peer that is silent past the grace (see the top of this
   * file); the claims the late answers bring, newest first, go here when the newest is newer
   * than the one answered (never called when nothing newer came). @default wait for every answer
   */
  onLate?: (claims: SignedClaim[]) => void
}

/** the least grace given to the last peer to answer, ms */
export const READ_GRACE_MIN_MS = 20
/** the most grace given to the last peer to answer, ms */
export const READ_GRACE_MAX_MS = 500

/** Answers to the reads of one lookup, as they come. */
interface Gathered {
  /** the answers so far (later ones are appended) */
  answers: Array<{ peer?: PeerId, value: Uint8Array }>
  /** resolves once every peer settled (false), or all but one answered and the grace passed (true) */
  enough: Promise<boolean>
  /** resolves with how many peers answered, once every one answered or failed */
  all: Promise<number>
  /** how many peers were asked */
  peers: number
}

export interface ClaimReaderComponents {
  datastore: ClaimGuardDatastore
  dht: KadDHT
  /** direct reads from peers (one long-lived stream per peer) */
  exchange: Pick<ClaimExchangeClient, 'get'>
  replicas: ReplicaFinder
  writer: ClaimWriter
  client: PutClient
  log: Logger
}

export class ClaimReader {
  readonly #c: ClaimReaderComponents
  readonly #direct: boolean | 'auto'
  readonly stats: { lookups: number, earlyReads: number, lateCorrections: number }

  constructor (components: ClaimReaderComponents, init: { directQueries: boolean | 'auto' }, stats = { lookups: 0, earlyReads: 0, lateCorrections: 0 }) {
    this.#c = components
    this.#direct = init.directQueries
    this.stats = stats
  }

  /** The claim envelope this node stores under a DHT key of our namespace, if any. */
  async storedValue (key: Uint8Array): Promise<Uint8Array | undefined> {
    if (uint8ArrayToString(key.subarray(0, CLAIM_KEY_PREFIX.length)) !== CLAIM_KEY_PREFIX) throw new Error('not a claim key')
    try {
      return Libp2pRecord.deserialize(await this.#c.datastore.get(new Key(this.#c.writer.recordKey(key), false))).value
    } catch (err) {
      if (errorName(err) === 'NotFoundError') return undefined
      throw err
    }
  }

  /** Verify raw records and return every valid claim, newest first. */
  #verifyAll (aor: string, key: Uint8Array, values: Iterable<Uint8Array>): SignedClaim[] {
    const seen = new Set<string>()
    const out: SignedClaim[] = []
    for (const bytes of values) {
      const id = uint8ArrayToString(bytes, 'base64')
      if (seen.has(id)) continue
      seen.add(id)
      try {
        out.push(verifyClaimSync(bytes, { key }))
      } catch (err) {
        this.#c.log('lookup of %s: ignored a record: %s', aor, errorMessage(err))
      }
    }
    return out.sort((a, b) => compareClaims(b, a))
  }

  /**
   * Ask peers at once; `enough` resolves when every peer answered or failed, or (with `early`)
   * when all but one answered and the grace passed: as long again as those answers took, within
   * READ_GRACE_MIN_MS..READ_GRACE_MAX_MS. A peer that fails (not: is silent) counts as settled.
   */
  #gather (peers: PeerId[], key: Uint8Array, signal: AbortSignal, answers: Array<{ peer?: PeerId, value: Uint8Array }>, early: boolean): Gathered {
    let answered = 0
    let settled = 0
    let enough!: (early: boolean) => void
    const enoughP = new Promise<boolean>(resolve => { enough = resolve })
    let grace: ReturnType<typeof setTimeout> | undefined
    const t0 = performance.now()
    if (peers.length === 0) enough(false)
    const all = Promise.all(peers.map(async peer => {
      try {
        const value = await this.#c.exchange.get(peer, key, { signal })
        answered++
        if (value != null) answers.push({ peer, value })
      } catch {
        // an unreachable peer just does not answer
      }
      settled++
      if (settled === peers.length) {
        clearTimeout(grace)
        enough(false)
      } else if (early && grace == null && answered >= 1 && answered === peers.length - 1) {
        const wait = Math.min(READ_GRACE_MAX_MS, Math.max(READ_GRACE_MIN_MS, performance.now() - t0))
        grace = setTimeout(() => {
          if (settled === peers.length) return
          this.stats.earlyReads++
          enough(true)
        }, wait)
      }
    })).then(() => answered)
    return { answers, enough: enoughP, all, peers: peers.length }
  }

  async #ask (peers: PeerId[], key: Uint8Array, signal: AbortSignal, answers: Array<{ peer?: PeerId, value: Uint8Array }>): Promise<number> {
    let answered = 0
    await Promise.all(peers.map(async peer => {
      try {
        const value = await this.#c.exchange.get(peer, key, { signal })
        answered++
        if (value != null) answers.push({ peer, value })
      } catch {
        // an unreachable peer just does not answer
      }
    }))
    return answered
  }

  /** Every valid claim the DHT (and this node's store) holds for an AoR, newest first. */
  async lookupAll (aor: string, signal: AbortSignal, options?: LookupOptions): Promise<SignedClaim[]> {
    const key = claimKey(aor)
    this.stats.lookups++
    const answers: Array<{ peer?: PeerId, value: Uint8Array }> = []
    const local = await this.storedValue(key).catch(() => undefined)
    if (local != null) answers.push({ value: local })
    const kad = this.#c.replicas.direct(signal)
    if (kad != null) {
      const peers = this.#c.replicas.closestKnown(key, kad.k)
      const quorum = Math.min(options?.quorum ?? peers.length, peers.length)
      const first = peers.slice(0, quorum)
      const onLate = options?.onLate
      const g = this.#gather(first, key, signal, answers, onLate != null)
      if (!await g.enough) {
        // every peer settled: as before, the further peers when one of the first failed
        if (await g.all < first.length) await this.#ask(peers.slice(quorum), key, signal, answers)
        options?.signal?.throwIfAborted()
        return this.#settle(aor, key, answers)
      }
      options?.signal?.throwIfAborted()
      return this.#answerEarly(aor, key, answers, g, peers.slice(quorum), signal, onLate!, true)
    }
    if (this.#direct !== false && this.#c.replicas.routingTableSize > 0 && options?.quorum != null) {
      const g = this.#gather(this.#c.replicas.closestKnown(key, options.quorum), key, signal, answers, options.onLate != null)
      if (await g.enough) {
        // answered without one silent peer: as in direct mode, its answer is taken in later
        const claims = this.#verifyAll(aor, key, answers.map(a => a.value))
        if (claims.length > 0 || options.noWalk === true) {
          options.signal?.throwIfAborted()
          return this.#answerEarly(aor, key, answers, g, [], signal, options.onLate!, false)
        }
      }
      await g.all
      const claims = this.#verifyAll(aor, key, answers.map(a => a.value))
      if (claims.length > 0 || options.noWalk === true) return claims
    }
    const values = answers.map(a => a.value)
    try {
      for await (const ev of this.#c.dht.get(key, { signal })) {
        if (ev.name === 'VALUE') values.push(ev.value)
        else if (ev.name === 'PEER_RESPONSE' && ev.record != null) values.push(ev.record.value)
      }
    } catch (err) {
      // kad-dht throws QueryError when a correction fails, after it found the values
      if (values.length === 0 && errorName(err) !== 'NotFoundError') this.#c.log('lookup of %s failed: %s', aor, errorMessage(err))
    }
    options?.signal?.throwIfAborted()
    return this.#verifyAll(aor, key, values)
  }

  /** The claims of every answer, newest first; the answers that were not the newest are corrected. */
  #settle (aor: string, key: Uint8Array, answers: Array<{ peer?: PeerId, value: Uint8Array }>): SignedClaim[] {
    const claims = this.#verifyAll(aor, key, answers.map(a => a.value))
    const best = claims[0]
    if (best != null) {
      const stale = answers.filter(a => !uint8ArrayEquals(a.value, best.bytes))
      if (stale.length > 0) void this.#correct(best, stale.map(a => a.peer))
    }
    return claims
  }

  /**
   * Answer from what came before the grace ran out; take in the silent peer's answer when it comes
   * (or, when it fails, the further peers'), and hand a newer claim to `onLate`.
   */
  #answerEarly (aor: string, key: Uint8Array, answers: Array<{ peer?: PeerId, value: Uint8Array }>, g: Gathered, further: PeerId[], signal: AbortSignal, onLate: (claims: SignedClaim[]) => void, repair: boolean): SignedClaim[] {
    const seen = answers.length
    const claims = repair ? this.#settle(aor, key, answers.slice()) : this.#verifyAll(aor, key, answers.map(a => a.value))
    const answeredBest = claims[0]
    void (async () => {
      if (await g.all < g.peers) await this.#ask(further, key, signal, answers)
      if (answers.length === seen) return
      const late = this.#verifyAll(aor, key, answers.map(a => a.value))
      const best = late[0]
      if (best == null) return
      if (answeredBest != null && compareClaims(best, answeredBest) <= 0) {
        // nothing newer: only the late answers that held something older are corrected
        const stale = answers.slice(seen).filter(a => !uint8ArrayEquals(a.value, answeredBest.bytes))
        if (repair && stale.length > 0) await this.#correct(answeredBest, stale.map(a => a.peer))
        return
      }
      this.stats.lateCorrections++
      onLate(late)
      // a newer claim learned late goes to every replica that answered an older one, whichever
      // path the read took: an owner it supersedes is among them, and only this tells it before
      // the newer claim's next renewal (P3)
      this.#settle(aor, key, answers)
    })().catch((err: unknown) => { this.#c.log.error('late answers for %s: %s', aor, errorMessage(err)) })
    return claims
  }

  /** Send the newest claim to replicas (undefined: this node) that answered with something else. */
  async #correct (best: SignedClaim, targets: Array<PeerId | undefined>): Promise<void> {
    await Promise.all(targets.map(async peer => {
      try {
        if (peer == null) await this.#c.writer.write(best, { localOnly: true })
        else await this.#c.client.put(peer, [best.bytes])
      } catch (err) {
        this.#c.log('correcting %s at %s: %s', best.aor, peer?.toString() ?? 'self', errorMessage(err))
      }
    }))
  }
}
