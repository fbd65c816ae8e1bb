/**
 * A datastore wrapper that makes kad-dht keep the newest claim.
 *
 * kad-dht 16 stores a record received by PUT_VALUE (and its own `put`, and `get`'s corrections)
 * with `datastore.put(key, Libp2pRecord.serialize())` where `key` is
 * `<datastorePrefix>/record/<base32 of the DHT key bytes>` (datastorePrefix defaults to `/dht`),
 * without consulting the selector: a stale put replaces a newer record (js-libp2p#3377). This
 * guard reads the stored record first and refuses (throws StaleClaimError, so the putter sees a
 * failed PUT_VALUE) a claim that is older by `compareClaims` than a stored, still-valid claim.
 * An identical claim is accepted (it refreshes kad-dht's time-received, which is what republishing
 * relies on). Everything else passes through untouched.
 */
import { Libp2pRecord } from '@libp2p/record'
import { toString as uint8ArrayToString } from 'uint8arrays/to-string'
import { CLAIM_KEY_PREFIX, compareClaims, decodeClaim } from './record/claim.ts'
import { StaleClaimError, errorMessage, errorName } from './errors.ts'
import { KeyFilter } from './key-filter.ts'
import type { SignedClaim } from './record/claim.ts'
import { Key as KeyClass } from 'interface-datastore'
import type { AbortOptions, Logger, PeerId } from '@libp2p/interface'
import type { Batch, Datastore, Key, KeyQuery, Pair, Query } from 'interface-datastore'

/**
 * One claim record to store (`record`: the serialized Libp2pRecord kad-dht keeps under `key`, the
 * datastore key as a string: an interface-datastore Key encodes its string to bytes when made and
 * decodes them again at every `toString()`, three times per claim on this path).
 */
export interface ClaimWrite {
  key: string
  record: Uint8Array
  claim: SignedClaim
}

export interface ClaimWriteResult {
  stored: boolean
  /** stored: the retained claim it replaced (if any); refused: the newer claim kept */
  other?: SignedClaim
  /** refused: how long ago (ms, this store's clock) the newer claim was stored */
  otherAge?: number
}

type LevelOp = { type: 'put', key: string, value: Uint8Array } | { type: 'del', key: string }

/**
 * The LevelDB handle under datastore-level, when there is one: its `getMany` is one native call,
 * and its `batch` takes string keys as they are.
 */
interface LevelLike {
  db?: {
    getMany?: (keys: string[]) => Promise<Array<Uint8Array | undefined>>
    batch?: (ops: LevelOp[]) => Promise<void>
    values?: (range: { gt: string, lt: string, valueEncoding: 'view' }) => AsyncIterable<Uint8Array>
  }
}

export interface DatastoreGuardInit {
  /**
   * kad-dht's `datastorePrefix`
   *
   * @default '/dht'
   */
  datastorePrefix?: string
  /** logger for refused writes */
  log?: Logger
  /**
   * Called after every accepted claim write with the claim it replaced (undefined when there was
   * none, or it was expired or undecodable). The registry uses it to tell a displaced owner and
   * the nodes interested in the AoR (this replica witnessed the change).
   */
  onStore?(previous: SignedClaim | undefined, next: SignedClaim): void
}

function claimOfRecord (value: Uint8Array): SignedClaim | undefined {
  return storedClaimOf(value)?.claim
}

/** The claim of a stored record with the time it was received, or undefined. */
function storedClaimOf (value: Uint8Array): { claim: SignedClaim, receivedAt: number } | undefined {
  let rec: Libp2pRecord
  try {
    rec = Libp2pRecord.deserialize(value)
  } catch {
    return undefined
  }
  if (uint8ArrayToString(rec.key.subarray(0, CLAIM_KEY_PREFIX.length)) !== CLAIM_KEY_PREFIX) return undefined
  try {
    return { claim: decodeClaim(rec.value), receivedAt: rec.timeReceived.getTime() }
  } catch {
    return undefined
  }
}

export class ClaimGuardDatastore implements Datastore {
  readonly inner: Datastore
  private readonly recordPrefix: string
  private readonly log?: Logger
  private readonly locks = new Map<string, Promise<unknown>>()
  onStore?: (previous: SignedClaim | undefined, next: SignedClaim) => void
  /** how many writes were refused (for tests and metrics) */
  refused = 0
  /** claim writes whose stored record was not read: the key filter knew there was none (tests, benchmarks) */
  unread = 0
  /**
   * the record keys this store may hold (key-filter.ts), filled by one scan of the store on the
   * first claim write and by every write after; trusted once the scan is done
   */
  readonly #filter: KeyFilter
  #filterReady = false
  #filterLoad?: Promise<void>

  constructor (inner: Datastore, init: DatastoreGuardInit = {}) {
    this.inner = inner
    this.recordPrefix = `${init.datastorePrefix ?? '/dht'}/record/`
    this.log = init.log
    this.onStore = init.onStore
    this.#filter = new KeyFilter({ skipPrefix: this.recordPrefix.length })
  }

  /**
   * Fill the key filter from the record keys the store holds (once; in the background). Until it
   * is done every claim write reads its stored record; if it fails, they all keep doing so.
   */
  #loadFilter (): void {
    if (this.#filterLoad != null) return
    this.#filterLoad = (async () => {
      try {
        for await (const key of this.inner.queryKeys({ prefix: this.recordPrefix.slice(0, -1) })) this.#filter.add(key.toString())
        this.#filterReady = true
      } catch (err) {
        this.log?.('could not read the stored record keys (every claim write reads its record): %s', errorMessage(err))
      }
    })()
  }

  /** resolves once the key filter is filled (or could not be): tests */
  async filterLoaded (): Promise<boolean> {
    this.#loadFilter()
    await this.#filterLoad
    return this.#filterReady
  }

  /**
   * Whether this write may go ahead; throws StaleClaimError otherwise. Returns the claims involved
   * (undefined when the value is not a claim record).
   */
  private async check (key: Key, value: Uint8Array, options?: AbortOptions): Promise<{ prev?: SignedClaim, next: SignedClaim } | undefined> {
    const next = claimOfRecord(value)
    if (next == null) return undefined
    let stored: Uint8Array
    try {
      stored = await this.inner.get(key, options)
    } catch (err) {
      if (errorName(err) === 'NotFoundError') return { next }
      throw err
    }
    const prev = claimOfRecord(stored)
    // a claim past its retention blocks nothing
    if (prev == null || prev.knownUntil <= Date.now()) return { next }
    if (compareClaims(next, prev) < 0) {
      this.refused++
      this.log?.('refused stale claim for %s: version %s over stored %s', next.aor, next.version, prev.version)
      throw new StaleClaimError(`stale claim for ${next.aor}: version ${next.version} is older than stored ${prev.version}`)
    }
    return { prev, next }
  }

  private async serialize<T> (key: Key, fn: () => Promise<T>): Promise<T> {
    const k = key.toString()
    const before = this.locks.get(k) ?? Promise.resolve()
    const run = before.then(fn, fn)
    const tail = run.catch(() => {})
    this.locks.set(k, tail)
    try {
      return await run
    } finally {
      if (this.locks.get(k) === tail) this.locks.delete(k)
    }
  }

  async put (key: Key, val: Uint8Array, options?: AbortOptions): Promise<Key> {
    const ks = key.toString()
    if (!ks.startsWith(this.recordPrefix)) return this.inner.put(key, val, options)
    this.#loadFilter()
    return this.serialize(key, async () => {
      const claims = await this.check(key, val, options)
      this.#filter.add(ks)
      const k = await this.inner.put(key, val, options)
      if (claims != null && this.onStore != null) {
        try {
          this.onStore(claims.prev, claims.next)
        } catch (err) {
          this.log?.('onStore handler failed: %s', errorMessage(err))
        }
      }
      return k
    })
  }

  /**
   * Store a batch of claim records with the same rule as `put` (older than the stored claim:
   * refused), in one write of the inner store together with `extra` (other keys to put or delete,
   * e.g. the registrar's entries). Writes of one key are serialized with `put`'s.
   */
  async putClaims (writes: ClaimWrite[], extra: { put?: Array<[string, Uint8Array]>, del?: string[] } = {}, options?: AbortOptions): Promise<ClaimWriteResult[]> {
    // each key once, and per key the claim it holds as the batch goes (arrays by key index: this
    // runs for every claim a node stores, its own and as a replica)
    const index = new Map<string, number>()
    const keys: string[] = []
    for (const w of writes) {
      if (!index.has(w.key)) {
        index.set(w.key, keys.length)
        keys.push(w.key)
      }
    }
    let release!: () => void
    const done = new Promise<void>(resolve => { release = resolve })
    const before: Array<Promise<unknown>> = []
    for (const k of keys) {
      const prev = this.locks.get(k)
      if (prev != null) before.push(prev)
      this.locks.set(k, done)
    }
    this.#loadFilter()
    try {
      if (before.length > 0) await Promise.all(before)
      const stored = await this.storedRecords(keys, options)
      const now = Date.now()
      const held: Array<SignedClaim | undefined> = new Array(keys.length)
      const heldAt: number[] = new Array(keys.length)
      for (let i = 0; i < keys.length; i++) {
        const c = stored[i] == null ? undefined : storedClaimOf(stored[i]!)
        if (c != null && c.claim.knownUntil > now) {
          held[i] = c.claim
          heldAt[i] = c.receivedAt
        }
      }
      const results: ClaimWriteResult[] = new Array(writes.length)
      const ops: LevelOp[] = []
      for (let j = 0; j < writes.length; j++) {
        const w = writes[j]
        const i = index.get(w.key)!
        const prev = held[i]
        if (prev != null && compareClaims(w.claim, prev) < 0) {
          this.refused++
          results[j] = { stored: false, other: prev, otherAge: Math.max(0, now - heldAt[i]) }
          continue
        }
        ops.push({ type: 'put', key: w.key, value: w.record })
        // in the filter before the write: a key it holds that the store does not is only a read
        this.#filter.add(w.key)
        held[i] = w.claim
        heldAt[i] = now
        results[j] = { stored: true, other: prev }
      }
      for (const [k, v] of extra.put ?? []) ops.push({ type: 'put', key: k, value: v })
      for (const k of extra.del ?? []) ops.push({ type: 'del', key: k })
      await this.commit(ops, options)
      if (this.onStore != null) {
        for (let j = 0; j < writes.length; j++) {
          const r = results[j]
          if (!r.stored) continue
          try {
            this.onStore(r.other, writes[j].claim)
          } catch (err) {
            this.log?.('onStore handler failed: %s', errorMessage(err))
          }
        }
      }
      return results
    } finally {
      release()
      for (const k of keys) if (this.locks.get(k) === done) this.locks.delete(k)
    }
  }

  /** Write some operations in one batch: LevelDB's own when the store is LevelDB (no Key objects). */
  private async commit (ops: LevelOp[], options?: AbortOptions): Promise<void> {
    const db = (this.inner as LevelLike).db
    if (typeof db?.batch === 'function') {
      options?.signal?.throwIfAborted()
      await db.batch(ops)
      return
    }
    const b = this.inner.batch()
    for (const op of ops) {
      if (op.type === 'put') b.put(new KeyClass(op.key, false), op.value)
      else b.delete(new KeyClass(op.key, false))
    }
    await b.commit(options)
  }

  /**
   * The claim records this store holds (this node's own and those it keeps for other owners), at
   * most `max` records read, in key order (for the admin API's `/claims`, not for routing).
   */
  async * claims (max: number, options?: AbortOptions): AsyncGenerator<{ claim: SignedClaim, receivedAt: number }> {
    let read = 0
    for await (const value of this.recordValues(options)) {
      if (read++ >= max) return
      const c = storedClaimOf(value)
      if (c !== undefined) yield c
    }
  }

  /**
   * The claim records this store holds whose owner is `owner` (a node's own records, at start). On
   * a mesh most records a node holds are other owners': a record whose bytes do not contain the
   * owner's peer id (a claim holds it as it is) is passed over without decoding, and the values are
   * read straight from LevelDB when the store is LevelDB (no Key and pair objects): 4 µs per record
   * against 13-14 µs through `claims()` (90,000 records, a third of them own).
   */
  async * claimsOf (owner: PeerId, options?: AbortOptions): AsyncGenerator<SignedClaim> {
    const id = owner.toMultihash().bytes
    const needle = Buffer.from(id.buffer, id.byteOffset, id.byteLength)
    const db = (this.inner as LevelLike).db
    const values: AsyncIterable<Uint8Array> = typeof db?.values === 'function'
      ? db.values({ gt: this.recordPrefix, lt: this.recordPrefix.slice(0, -1) + '0', valueEncoding: 'view' })
      : this.recordValues(options)
    for await (const value of values) {
      options?.signal?.throwIfAborted()
      if (Buffer.from(value.buffer, value.byteOffset, value.byteLength).indexOf(needle) === -1) continue
      const c = claimOfRecord(value)
      if (c?.owner.equals(owner) === true) yield c
    }
  }

  private async * recordValues (options?: AbortOptions): AsyncGenerator<Uint8Array> {
    for await (const { key, value } of this.inner.query({ prefix: this.recordPrefix.slice(0, -1) }, options)) {
      // (a prefix query of '/dht/record' also matches '/dht/records...')
      if (key.toString().startsWith(this.recordPrefix)) yield value
    }
  }

  /**
   * The stored records of some keys (undefined: none): those the key filter may hold are read,
   * in one call when the store is LevelDB; the others are surely absent.
   */
  private async storedRecords (keys: string[], options?: AbortOptions): Promise<Array<Uint8Array | undefined>> {
    if (!this.#filterReady) return await this.getRecords(keys, options)
    const read: string[] = []
    const at: number[] = []
    for (let i = 0; i < keys.length; i++) {
      if (this.#filter.mightHold(keys[i])) {
        read.push(keys[i])
        at.push(i)
      }
    }
    this.unread += keys.length - read.length
    const out: Array<Uint8Array | undefined> = new Array(keys.length)
    if (read.length === 0) return out
    const got = await this.getRecords(read, options)
    for (let j = 0; j < at.length; j++) out[at[j]] = got[j]
    return out
  }

  /** The stored values of some keys (undefined: none), in one call when the store is LevelDB. */
  private async getRecords (keys: string[], options?: AbortOptions): Promise<Array<Uint8Array | undefined>> {
    const db = (this.inner as LevelLike).db
    if (typeof db?.getMany === 'function') return await db.getMany(keys)
    return await Promise.all(keys.map(async k => {
      try {
        return await this.inner.get(new KeyClass(k), options)
      } catch (err) {
        if (errorName(err) === 'NotFoundError') return undefined
        throw err
      }
    }))
  }

  async * putMany (source: Iterable<Pair> | AsyncIterable<Pair>, options?: AbortOptions): AsyncGenerator<Key> {
    for await (const { key, value } of source) {
      yield await this.put(key, value, options)
    }
  }

  get (key: Key, options?: AbortOptions): Uint8Array | Promise<Uint8Array> {
    return this.inner.get(key, options)
  }

  getMany (source: Iterable<Key> | AsyncIterable<Key>, options?: AbortOptions): Generator<Pair> | AsyncGenerator<Pair> {
    return this.inner.getMany(source, options)
  }

  has (key: Key, options?: AbortOptions): boolean | Promise<boolean> {
    return this.inner.has(key, options)
  }

  delete (key: Key, options?: AbortOptions): void | Promise<void> {
    return this.inner.delete(key, options)
  }

  deleteMany (source: Iterable<Key> | AsyncIterable<Key>, options?: AbortOptions): Generator<Key> | AsyncGenerator<Key> {
    return this.inner.deleteMany(source, options)
  }

  batch (): Batch {
    const ops: Array<{ put: true, key: Key, value: Uint8Array } | { put: false, key: Key }> = []
    return {
      put: (key, value) => { ops.push({ put: true, key, value }) },
      delete: (key) => { ops.push({ put: false, key }) },
      commit: async (options?: AbortOptions) => {
        // guarded record writes go one by one; everything else in one inner batch
        const b = this.inner.batch()
        for (const op of ops) {
          if (op.put && op.key.toString().startsWith(this.recordPrefix)) {
            await this.put(op.key, op.value, options)
          } else if (op.put) {
            b.put(op.key, op.value)
          } else {
            b.delete(op.key)
          }
        }
        await b.commit(options)
      }
    }
  }

  query (query: Query, options?: AbortOptions): Generator<Pair> | AsyncGenerator<Pair> {
    return this.inner.query(query, options)
  }

  queryKeys (query: KeyQuery, options?: AbortOptions): Generator<Key> | AsyncGenerator<Key> {
    return this.inner.queryKeys(query, options)
  }
}
