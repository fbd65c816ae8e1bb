/**
 * Coalesced claim writes. Every claim (new, renewed, released, republished) goes through here:
 * the claims that arrive while the previous batch is being written are written together, to this
 * node's store in one guarded LevelDB batch (the record is the owner's only copy: the registry
 * finds its own records by owner at start) and to each replica in one `/sipmesh/claim-put`
 * request per peer over its long-lived stream.
 *
 * A write resolves once this node's store and every replica answered (or failed): the outcome
 * counts the replicas that stored it and the refusals, and carries the other owners' claims the
 * replicas reported (the one a claim replaced, or the newer one that refused it), verified here
 * before anyone relies on them. A caller that cannot wait for the slowest replica (a REGISTER
 * held up to the put timeout by one replica that is frozen but not yet known dead) passes
 * `early`, which sees the outcome as the answers come (from this node's store on) and can take
 * it before every replica answered; the outcome goes on filling in, and `early` sees it once
 * more when it is whole (issue 9).
 */
import { base32 } from '../record/digest.ts'
import { recordTime, storedRecord } from '../record/stored-record.ts'
import { claimKey, verifyClaimSync } from '../record/claim.ts'
import { errorMessage } from '../errors.ts'
import { MAX_PUT_BATCH, PutStatus } from './put-protocol.ts'
import type { PutAnswer, PutClient } from './put-protocol.ts'
import type { ReplicaFinder } from './replicas.ts'
import type { ClaimGuardDatastore, ClaimWrite } from '../datastore-guard.ts'
import type { SignedClaim } from '../record/claim.ts'
import type { Logger, PeerId } from '@libp2p/interface'

export interface WriteOutcome {
  /** peers that acknowledged storing the claim */
  replicas: number
  /** peers (or this node's own store) that refused it or failed */
  failures: number
  /** verified claims of other owners reported by the replicas (replaced, or newer and kept) */
  others: SignedClaim[]
  /**
   * of those, the newer ones a store already held before the write began (`since`): they stood
   * before the claim; a claim racing this one is not among them
   */
  stood: SignedClaim[]
  /** ms from the write until this node's store had it, and until every replica had answered */
  storedMs: number
  answeredMs: number
  /** every replica answered (or failed): the counts and claims above are final */
  answered: boolean
}

export interface WriteOptions {
  /** store locally only (no peers) */
  localOnly?: boolean
  /**
   * when the operation began (ms): a newer claim a store kept from before then "stood" before it
   * (see `WriteOutcome.stood`). @default when the write is sent
   */
  since?: number
  /**
   * resolve before every replica answered: the write shows its outcome so far to `early` once
   * this node's store answered and again after each replica's answer, and resolves as soon as it
   * returns true; when every replica has answered, a write resolved that way shows `early` the
   * whole outcome once more (`answered`). @default resolve once every replica answered
   */
  early?: (o: WriteOutcome) => boolean
}

interface Entry {
  claim: SignedClaim
  /** the claim's DHT key, hashed once for the local write, the replicas and their answers */
  key: Uint8Array
  options: WriteOptions
  resolve: (o: WriteOutcome) => void
  outcome: WriteOutcome
  /** when it was written (performance.now()) */
  at: number
  /** this node's store has answered */
  local: boolean
  /** `options.early` */
  early?: (o: WriteOutcome) => boolean
  /** resolved (by `early`) before every replica answered */
  resolved: boolean
}

export interface ClaimWriterComponents {
  datastore: ClaimGuardDatastore
  replicas: ReplicaFinder
  client: PutClient
  log: Logger
}

export interface ClaimWriterInit {
  /** kad-dht's datastorePrefix */
  datastorePrefix: string
  /** most claims in one local batch */
  maxBatch?: number
}

export class ClaimWriter {
  readonly #c: ClaimWriterComponents
  readonly #prefix: string
  readonly #maxBatch: number
  #queue: Entry[] = []
  #busy = false
  /** counters for metrics and benchmarks */
  readonly stats = { batches: 0, claims: 0, largestBatch: 0 }

  constructor (components: ClaimWriterComponents, init: ClaimWriterInit) {
    this.#c = components
    this.#prefix = init.datastorePrefix
    this.#maxBatch = init.maxBatch ?? 2048
  }

  /** The datastore key (as a string) of the record kad-dht keeps for a DHT key. */
  recordKey (key: Uint8Array): string {
    return `${this.#prefix}/record/${base32(key)}`
  }

  /** Write one claim with the others of its batch. Never rejects. (Not async: one promise per claim, not two.) */
  write (claim: SignedClaim, options: WriteOptions = {}): Promise<WriteOutcome> {
    return new Promise<WriteOutcome>(resolve => {
      this.#queue.push({ claim, key: claimKey(claim.aor), options, resolve, outcome: { replicas: 0, failures: 0, others: [], stood: [], storedMs: 0, answeredMs: 0, answered: false }, at: performance.now(), local: false, early: options.early, resolved: false })
      if (!this.#busy) {
        this.#busy = true
        // let the rest of this turn's claims join
        setImmediate(() => { void this.#drain() })
      }
    })
  }

  /** Write batches until the queue is empty: claims that came in meanwhile make the next batch. */
  async #drain (): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue.splice(0, this.#maxBatch)
        this.stats.batches++
        this.stats.claims += batch.length
        if (batch.length > this.stats.largestBatch) this.stats.largestBatch = batch.length
        // the local write and the replicas' run side by side; the next local batch waits for this one
        const remote = this.#sendToReplicas(batch)
        await this.#storeLocally(batch)
        const stored = performance.now()
        for (const e of batch) {
          e.outcome.storedMs = stored - e.at
          e.local = true
          if (e.early != null && !e.resolved) this.#look(e)
        }
        void remote.then(() => {
          const answered = performance.now()
          for (const e of batch) {
            e.outcome.answeredMs = answered - e.at
            e.outcome.answered = true
            if (!e.resolved) e.resolve(e.outcome)
            else this.#look(e)
          }
        })
      }
    } finally {
      this.#busy = false
    }
  }

  /** Show the outcome to an entry's `early`: resolve it when it takes it (see `WriteOptions.early`). */
  #look (e: Entry): void {
    let take: boolean
    try {
      take = e.early!(e.outcome)
    } catch (err) {
      this.#c.log.error('a claim write\'s early look threw: %s', errorMessage(err))
      take = false
    }
    if (take && !e.resolved) {
      e.resolved = true
      e.resolve(e.outcome)
    }
  }

  async #storeLocally (batch: Entry[]): Promise<void> {
    const writes: ClaimWrite[] = []
    const time = recordTime(Date.now())
    for (const e of batch) writes.push({ key: this.recordKey(e.key), record: storedRecord(e.key, e.claim.bytes, time), claim: e.claim })
    try {
      const sentAt = Date.now()
      const results = await this.#c.datastore.putClaims(writes)
      const now = Date.now()
      results.forEach((r, i) => {
        const e = batch[i]
        if (!r.stored) e.outcome.failures++
        if (r.other != null && !r.other.owner.equals(e.claim.owner)) {
          e.outcome.others.push(r.other)
          if (!r.stored && (r.otherAge ?? 0) > now - (e.options.since ?? sentAt)) e.outcome.stood.push(r.other)
        }
      })
    } catch (err) {
      this.#c.log.error('could not store %d claims: %s', batch.length, errorMessage(err))
      for (const e of batch) e.outcome.failures++
    }
  }

  async #sendToReplicas (batch: Entry[]): Promise<void> {
    const byPeer = new Map<string, { peer: PeerId, entries: Entry[] }>()
    const add = (e: Entry, peers: PeerId[]): void => {
      for (const peer of peers) {
        const id = peer.toString()
        let g = byPeer.get(id)
        if (g == null) {
          g = { peer, entries: [] }
          byPeer.set(id, g)
        }
        g.entries.push(e)
      }
    }
    // most keys' replicas are known at once (a small mesh, or nobody): only the others wait for a walk
    const walk: Entry[] = []
    for (const e of batch) {
      if (e.options.localOnly === true) continue
      const peers = this.#c.replicas.replicasNow(e.key)
      if (peers != null) add(e, peers)
      else walk.push(e)
    }
    await Promise.all(walk.map(async e => {
      try {
        add(e, await this.#c.replicas.replicasOf(e.key))
      } catch (err) {
        this.#c.log('no replicas for %s: %s', e.claim.aor, errorMessage(err))
      }
    }))
    await Promise.all([...byPeer.values()].map(async ({ peer, entries }) => {
      for (let i = 0; i < entries.length; i += MAX_PUT_BATCH) {
        const chunk = entries.slice(i, i + MAX_PUT_BATCH)
        let answers: PutAnswer[]
        const sentAt = Date.now()
        try {
          answers = await this.#c.client.put(peer, chunk.map(e => e.claim.bytes))
        } catch (err) {
          this.#c.log('claim-put to %p failed: %s', peer, errorMessage(err))
          for (const e of chunk) e.outcome.failures++
          continue
        }
        answers.forEach((a, j) => {
          const e = chunk[j]
          if (a.status === PutStatus.stored) e.outcome.replicas++
          else e.outcome.failures++
          if (a.other != null) {
            try {
              const other = verifyClaimSync(a.other, { key: e.key, allowExpired: true })
              if (!other.owner.equals(e.claim.owner)) {
                e.outcome.others.push(other)
                if (a.status === PutStatus.stale && (a.age ?? 0) > Date.now() - (e.options.since ?? sentAt)) e.outcome.stood.push(other)
              }
            } catch (err) {
              this.#c.log('%p reported a bad claim for %s: %s', peer, e.claim.aor, errorMessage(err))
            }
          }
          if (e.early != null && e.local && !e.resolved) this.#look(e)
        })
      }
    }))
  }
}
