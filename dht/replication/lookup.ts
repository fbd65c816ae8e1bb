/**
 * Reading claims: what this node stores, what the replicas of a key hold, and the repair of
 * replicas that answered with an older claim.
 *
 * - Direct mode (the whole mesh is in the routing table, see `replicas.ts`): ask the `quorum`
 *   closest peers with `/sipmesh/claim-get/1.0.0`, the others only when one of those did not
 *   answer.
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
  readonly stats: { lookups: number }

  constructor (components: ClaimReaderComponents, init: { directQueries: boolean | 'auto' }, stats = { lookups: 0 }) {
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
      if (await this.#ask(first, key, signal, answers) < first.length) await this.#ask(peers.slice(quorum), key, signal, answers)
      options?.signal?.throwIfAborted()
      const claims = this.#verifyAll(aor, key, answers.map(a => a.value))
      const best = claims[0]
      if (best != null) {
        const stale = answers.filter(a => !uint8ArrayEquals(a.value, best.bytes))
        if (stale.length > 0) void this.#correct(best, stale.map(a => a.peer))
      }
      return claims
    }
    if (this.#direct !== false && this.#c.replicas.routingTableSize > 0 && options?.quorum != null) {
      await this.#ask(this.#c.replicas.closestKnown(key, options.quorum), key, signal, answers)
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
