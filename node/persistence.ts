/**
 * What a node keeps in its data directory:
 *
 *   <data-dir>/peer.key   the libp2p Ed25519 private key (protobuf), created on first run, mode 0600
 *   <data-dir>/datastore  LevelDB: kad-dht records and the peer store (libp2p), and the gateway's
 *                         durable entries under their own key prefix (`/sipmesh/store/`)
 *
 * so a restarted node has the same peer id, its stored records and its gateway state.
 */
import { mkdir, readFile, rename, writeFile, chmod } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { LevelDatastore } from 'datastore-level'
import { Key } from 'interface-datastore'
import type { AbortOptions, PrivateKey } from '@libp2p/interface'
import type { Datastore } from 'interface-datastore'
import type { DurableStore } from '../sip-gateway/ports.ts'

export const KEY_FILE = 'peer.key'
export const DATASTORE_DIR = 'datastore'

export class IdentityError extends Error {
  static readonly NAME = 'IdentityError'
  override readonly name = IdentityError.NAME
}

/** Read the node's private key from the data dir, or generate and store an Ed25519 key. */
export async function loadOrCreateIdentity (dataDir: string): Promise<{ privateKey: PrivateKey, created: boolean }> {
  await mkdir(dataDir, { recursive: true })
  const path = join(dataDir, KEY_FILE)
  let bytes: Uint8Array | undefined
  try {
    bytes = await readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new IdentityError(`cannot read the node key ${path}: ${(err as Error).message}`)
    }
  }
  if (bytes != null) {
    try {
      return { privateKey: privateKeyFromProtobuf(bytes), created: false }
    } catch (err) {
      // never replace a damaged identity silently: the operator decides
      throw new IdentityError(`the node key ${path} is damaged (${(err as Error).message}); move it away to start with a new identity`)
    }
  }
  const privateKey = await generateKeyPair('Ed25519')
  const tmp = `${path}.${process.pid}.tmp`
  await writeFile(tmp, privateKeyToProtobuf(privateKey), { mode: 0o600 })
  await chmod(tmp, 0o600)
  await rename(tmp, path)
  return { privateKey, created: true }
}

/** the absent-key error of FastMissLevelDatastore: matched by name, as every reader does */
class AbsentKeyError extends Error {
  override readonly name = 'NotFoundError'
  readonly code = 'ERR_NOT_FOUND'
}
const ABSENT = new AbsentKeyError('Not Found')

/**
 * LevelDB whose `get` of an absent key throws one shared NotFoundError instead of constructing one
 * (with its stack trace) per miss: kad-dht and the claim guard read absent keys on every new claim,
 * and building those errors was 3% of a registering node's CPU profile (issue 9). The level
 * database answers a miss with `undefined`, not an error, so nothing else is built either.
 */
export class FastMissLevelDatastore extends LevelDatastore {
  override async get (key: Key, options?: AbortOptions): Promise<Uint8Array> {
    options?.signal?.throwIfAborted()
    let data: Uint8Array | undefined
    try {
      data = await this.db.get(key.toString())
    } catch (err) {
      throw Object.assign(new Error(String(err)), { name: 'GetFailedError' })
    }
    if (data == null) throw ABSENT
    return data
  }
}

/** the memory LevelDB holds (memtables, block cache), bytes; 0 when it cannot tell (closed, not LevelDB) */
export function datastoreMemory (datastore: unknown): number {
  if (!(datastore instanceof LevelDatastore)) return 0
  try {
    const db = datastore.db as { getProperty?: (name: string) => string }
    return Number(db.getProperty?.('leveldb.approximate-memory-usage') ?? 0) || 0
  } catch {
    return 0
  }
}

/** Open (creating when missing) the LevelDB datastore of a data dir. */
export async function openDatastore (dataDir: string): Promise<LevelDatastore> {
  const path = join(dataDir, DATASTORE_DIR)
  await mkdir(path, { recursive: true })
  const store = new FastMissLevelDatastore(path)
  try {
    await store.open()
  } catch (err) {
    const cause = (err as { cause?: Error }).cause
    const detail = cause != null ? `${(err as Error).message}: ${cause.message}` : (err as Error).message
    throw new IdentityError(`cannot open the datastore ${path} (is another node using this data dir?): ${detail}`)
  }
  return store
}

const STORE_PREFIX = '/sipmesh/store/'

/** LevelDB hands out Buffers; the store's users get plain Uint8Arrays (a view, no copy). */
function plain (value: Uint8Array): Uint8Array {
  return Object.getPrototypeOf(value) === Uint8Array.prototype ? value : new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
}

export interface DatastoreDurableStoreInit {
  /**
   * most writes (puts and deletes) committed in one LevelDB batch; more concurrent writes go to
   * the next batch
   *
   * @default 1024
   */
  maxBatch?: number
}

/** `key`: the datastore key as a string (an interface-datastore Key encodes it to bytes when made and decodes it at every `toString()`) */
interface Op { key: string, value: Uint8Array | undefined, seq: number }
type LevelOp = { type: 'put', key: string, value: Uint8Array } | { type: 'del', key: string }
interface PendingBatch {
  /** the last write of each key in this batch (a datastore batch need not keep the order of writes to one key) */
  ops: Map<string, Op>
  waiters: Array<{ resolve: () => void, reject: (err: unknown) => void }>
}

/**
 * The gateway's `DurableStore` over a libp2p datastore, under its own key prefix. Keys are stored
 * hex-encoded so any string is a valid key and the byte order of keys (LevelDB's order) is the
 * order of the original keys; a key prefix is a hex prefix.
 *
 * Writes are group-committed: concurrent `put`/`delete` calls are gathered into one datastore
 * batch (at most `maxBatch` writes) while the previous batch is being written, and each call
 * resolves only once the batch holding it is committed (so a caller that answers after `await
 * put()` answers for a durable write), or rejects with the batch's error, as does every call of
 * that batch. Writes are applied in call order (of two writes of one key in one batch only the
 * later is written). A `get` sees the writes not committed yet; `list`
 * waits for them. An absent key is read without constructing an error when the datastore is a
 * LevelDB one (its `db.get` returns undefined).
 */
export class DatastoreDurableStore implements DurableStore {
  private readonly datastore: Datastore
  private readonly maxBatch: number
  /** batches waiting to be committed, oldest first; the last one gathers new writes */
  private readonly queue: PendingBatch[] = []
  /** writes not committed yet, by hex key: the newest one (reads see it) */
  private readonly overlay = new Map<string, Op>()
  private committing = false
  private seq = 0
  private readonly idleWaiters: Array<() => void> = []
  /** LevelDB batches committed and writes in them (for benchmarks and tests) */
  readonly stats = { batches: 0, writes: 0 }
  private readonly rawGet: ((key: string) => Promise<Uint8Array | undefined>) | undefined
  /** LevelDB's own batch, string keys as they are (no Key objects), when the datastore is LevelDB */
  private readonly rawBatch: ((ops: LevelOp[]) => Promise<void>) | undefined

  constructor (datastore: Datastore, init: DatastoreDurableStoreInit = {}) {
    this.datastore = datastore
    this.maxBatch = init.maxBatch ?? 1024
    if (!(this.maxBatch >= 1)) throw new RangeError('maxBatch must be at least 1')
    const db = (datastore as { db?: { get?: unknown, batch?: unknown } }).db
    if (datastore instanceof LevelDatastore && typeof db?.get === 'function') {
      const level = db as { get: (key: string) => Promise<Uint8Array | undefined> }
      this.rawGet = async (key) => await level.get(key)
    }
    if (datastore instanceof LevelDatastore && typeof db?.batch === 'function') {
      const level = db as { batch: (ops: LevelOp[]) => Promise<void> }
      this.rawBatch = async (ops) => { await level.batch(ops) }
    }
  }

  // Buffer's hex codec, not uint8arrays' base16 (the same lowercase hex): 0.2-0.4 µs a key
  // against 3.1-3.5 µs, on every write
  private key (key: string): string {
    return STORE_PREFIX + Buffer.from(key, 'utf8').toString('hex')
  }

  async get (key: string): Promise<Uint8Array | undefined> {
    const k = this.key(key)
    const pending = this.overlay.get(k)
    if (pending !== undefined) return pending.value === undefined ? undefined : pending.value.slice()
    if (this.rawGet !== undefined) {
      const v = await this.rawGet(k)
      return v == null ? undefined : plain(v)
    }
    try {
      return plain(await this.datastore.get(new Key(k, false)))
    } catch (err) {
      if ((err as Error).name === 'NotFoundError') return undefined
      throw err
    }
  }

  // (not async, nor is write: one promise per write, not three, and no async function's frame
  // saved per write; every new registration writes, issue 9)
  put (key: string, value: Uint8Array): Promise<void> {
    return this.write(this.key(key), value)
  }

  delete (key: string): Promise<void> {
    return this.write(this.key(key), undefined)
  }

  /** resolves once every write issued so far is committed (or failed) */
  async flush (): Promise<void> {
    if (this.queue.length === 0 && !this.committing) return
    await new Promise<void>(resolve => { this.idleWaiters.push(resolve) })
  }

  private write (key: string, value: Uint8Array | undefined): Promise<void> {
    const op: Op = { key, value, seq: ++this.seq }
    let batch = this.queue[this.queue.length - 1]
    // the batch being committed is out of the queue; a full one takes no more
    if (batch === undefined || (batch.ops.size >= this.maxBatch && !batch.ops.has(key))) {
      batch = { ops: new Map(), waiters: [] }
      this.queue.push(batch)
    }
    batch.ops.delete(key)
    batch.ops.set(key, op)
    this.overlay.set(key, op)
    const done = new Promise<void>((resolve, reject) => { batch.waiters.push({ resolve, reject }) })
    if (!this.committing) {
      this.committing = true
      // gather the writes issued in this same tick before the first commit
      queueMicrotask(() => { void this.commitLoop() })
    }
    return done
  }

  private async commitLoop (): Promise<void> {
    for (let batch = this.queue.shift(); batch !== undefined; batch = this.queue.shift()) {
      let error: unknown
      try {
        if (this.rawBatch !== undefined) {
          const ops: LevelOp[] = []
          for (const op of batch.ops.values()) ops.push(op.value === undefined ? { type: 'del', key: op.key } : { type: 'put', key: op.key, value: op.value })
          await this.rawBatch(ops)
        } else {
          const b = this.datastore.batch()
          for (const op of batch.ops.values()) {
            if (op.value === undefined) b.delete(new Key(op.key, false))
            else b.put(new Key(op.key, false), op.value)
          }
          await b.commit()
        }
        this.stats.batches++
        this.stats.writes += batch.ops.size
      } catch (err) {
        error = err ?? new Error('batch commit failed')
      }
      for (const op of batch.ops.values()) if (this.overlay.get(op.key) === op) this.overlay.delete(op.key)
      for (const w of batch.waiters) {
        if (error === undefined) w.resolve()
        else w.reject(error)
      }
    }
    this.committing = false
    for (const w of this.idleWaiters.splice(0)) w()
  }

  async * list (prefix: string): AsyncIterable<[key: string, value: Uint8Array]> {
    await this.flush()
    const hexPrefix = STORE_PREFIX + Buffer.from(prefix, 'utf8').toString('hex')
    for await (const { key, value } of this.datastore.query({ prefix: hexPrefix })) {
      const k = key.toString()
      if (!k.startsWith(hexPrefix)) continue
      yield [Buffer.from(k.slice(STORE_PREFIX.length), 'hex').toString('utf8'), plain(value)]
    }
  }
}
