/**
 * The offline message store (SPEC: MESSAGE row, "Nothing lost"; issue 5 item 1): MESSAGE requests
 * for a known user with no live registration are kept durably, in arrival order per user, until
 * the user's device answers 2xx, they are handed to another node, or they expire.
 *
 * - `store()` resolves only once the record is written (the DurableStore's `put` resolved), so the
 *   gateway may answer 202 Accepted right after it. A message id seen before for the user (still
 *   pending, or delivered/handed over: a tombstone) is not stored again.
 * - Per-user order: keys sort by (time of receipt, per-user counter), see record.ts, so
 *   `list(prefix)` returns a user's messages in arrival order after a restart too.
 * - Quota per user (count and bytes) and for the node as a whole: over it `store()` throws
 *   OfflineQuotaError (480 with a reason phrase, see errors.ts) and nothing is written.
 * - Retention: a periodic sweep deletes messages older than `retentionMs` (counted from the first
 *   receipt, kept across transfers) and tombstones as old.
 * - `deliverBacklog()` sends a user's backlog in order, removing each message only after the
 *   sender reported a 2xx. A transient failure (timeout, busy, offline, 5xx: see delivery.ts)
 *   stops the run and keeps that message and the rest for a later run, in order; a permanent
 *   refusal of one message (415, 488, 513, 603...) removes that message, logged at warn and
 *   counted (`stats().refused`), and the run goes on with the next, so one message a device
 *   will never take cannot hold up the others. One delivery (or hand-over) per user at a time,
 *   so no message is sent twice by concurrent calls.
 * - `take()` / `drain()` / `import()`: a user's backlog handed to another node as serialisable
 *   records; the receiving side dedupes by id (pending or tombstoned), so a retried transfer
 *   delivers nothing twice.
 *
 * Corrupt stored entries are skipped and logged, never fatal; they are deleted by the retention
 * sweep once the time in their key is past retention.
 *
 * All state the quotas need is indexed in memory at `start()` (per message: key, id, size, time;
 * not the body), so the store's memory is bounded by the global cap.
 */
import type { AbortOptions, DurableStore, Logger } from '../ports.ts'
import { InvalidOfflineMessageError, OfflineMessageTooLargeError, OfflineQuotaError, OfflineStoreStoppedError, QuotaScope } from './errors.ts'
import { KeyedLock } from './keyed-lock.ts'
import { Delivery, deliveryOf } from './delivery.ts'
import {
  LIMITS, MSG_PREFIX, TOMB_PREFIX, checkAor, decodeRecord, encodeRecord, messageKey, parseMessageKey,
  parseTombstoneKey, toRecord, tombstoneKey, userPrefix
} from './record.ts'
import type { OfflineMessage, OfflineRecord } from './record.ts'

export const DAY_MS = 24 * 60 * 60 * 1000

/** Timer functions, replaceable in tests (node:test mock timers also work, through the globals). */
export interface Timers {
  setInterval (fn: () => void, ms: number): unknown
  clearInterval (handle: unknown): void
}

export interface OfflineStoreInit {
  /**
   * How long a message is kept, ms from its first receipt. Independent of the 30-day "known user"
   * window of KnownUsers: a week covers a device left off over a holiday weekend while keeping
   * a stale backlog from flooding a device that comes back much later.
   * @default 7 days
   */
  retentionMs?: number
  /** how often the retention sweep runs, ms. @default 1 hour */
  sweepIntervalMs?: number
  /** most messages kept for one user. @default 1000 */
  maxMessagesPerUser?: number
  /** most bytes (encoded records) kept for one user. @default 4 MiB */
  maxBytesPerUser?: number
  /** most messages kept on this node. @default 100000 */
  maxMessages?: number
  /** most bytes (encoded records) kept on this node. @default 256 MiB */
  maxBytes?: number
  /**
   * Largest body accepted, bytes (larger: 513). RFC 3428 limits pager-mode bodies to 1300 bytes
   * on routes that are not congestion-controlled; the gateway applies that rule before storing,
   * this is the store's own ceiling for TCP/WebSocket-borne messages.
   * @default 64 KiB
   */
  maxBodyBytes?: number
  /**
   * Most tombstones (ids of delivered or handed-over messages) kept per user; the oldest go first.
   * A tombstone otherwise lives as long as a message (`retentionMs`): a record older than that is
   * refused as expired anyway. At least the per-user quota, so that a whole backlog handed over
   * stays recognised if the transfer is retried.
   * @default max(1000, 2 * maxMessagesPerUser)
   */
  maxTombstonesPerUser?: number
  /** Retry-After hint carried by OfflineQuotaError, seconds. @default 3600 */
  retryAfter?: number
  /** clock, ms since the epoch. @default Date.now (read on every call, so mocked Date works) */
  now?: () => number
  /** @default the global setInterval / clearInterval */
  timers?: Timers
}

export interface OfflineStoreComponents {
  store: DurableStore
  logger: Logger
}

export interface StoreResult {
  id: string
  /** false when the id was already pending or already delivered: nothing was written */
  stored: boolean
}

export interface ImportResult {
  imported: number
  /** already pending here, or delivered / handed over before (tombstoned) */
  duplicates: number
  /** older than the retention period */
  expired: number
  /** invalid records, or records for another AoR than the one imported */
  rejected: number
}

export interface DeliverResult {
  delivered: number
  /** messages refused for good by the device in this run, and removed */
  refused: number
  /** messages still pending for the user after this run */
  remaining: number
  /** true when a send failed transiently (or threw, or the run was aborted) and delivery stopped there */
  stopped: boolean
}

export interface SweepResult {
  expired: number
  tombstones: number
  corrupt: number
}

export interface OfflineStats {
  users: number
  messages: number
  bytes: number
  /** corrupt entries found and not yet swept */
  corrupt: number
  /** messages a device refused for good and that were removed undelivered, since start (a counter) */
  refused: number
  /** messages written by `store()` (not `import()`), since start (a counter) */
  stored: number
  /** messages `deliverBacklog()` delivered (a device answered 2xx) and removed, since start (a counter) */
  delivered: number
}

/** The final response a delivery attempt ended with (a device's, or one the sender synthesized: 408, 503). */
export interface SendAnswer { status: number, reason?: string }

/**
 * Sends one stored message to the user's device(s). Resolves with the final response (its
 * status decides, see delivery.ts), or `true` for delivered and `false` / undefined for "keep it,
 * try again later" (no reachable contact). A throw counts as a transient failure.
 */
export type SendFn = (record: OfflineRecord, options: AbortOptions) => Promise<SendAnswer | boolean | undefined>

/** Hands a user's records to another node; resolves once they are stored durably there. */
export type HandOverFn = (aor: string, records: OfflineRecord[], options: AbortOptions) => Promise<void>

interface Entry {
  key: string
  id: string
  size: number
  receivedAt: number
}

interface UserState {
  /** pending messages, sorted by key (= delivery order) */
  entries: Entry[]
  ids: Map<string, Entry>
  bytes: number
  /** greatest key time used, so a clock stepping back cannot reorder */
  lastTime: number
  /** greatest counter used */
  counter: number
  /** id → ms when delivered / handed over; insertion order is age order */
  tombs: Map<string, number>
}

const State = { Idle: 'idle', Started: 'started', Stopped: 'stopped' } as const
type State = typeof State[keyof typeof State]

/** Clock skew accepted on the receipt time of an imported record, ms. */
const MAX_FUTURE_MS = DAY_MS

const enc = new TextEncoder()
const dec = new TextDecoder()

export class OfflineStore {
  readonly #db: DurableStore
  readonly #log: Logger
  readonly #retentionMs: number
  readonly #sweepIntervalMs: number
  readonly #maxPerUser: number
  readonly #maxBytesPerUser: number
  readonly #maxMessages: number
  readonly #maxBytes: number
  readonly #maxBodyBytes: number
  readonly #maxTombs: number
  readonly #retryAfter: number
  readonly #now: () => number
  readonly #timers: Timers
  readonly #users = new Map<string, UserState>()
  /** serializes changes to one user's backlog (store, remove, import, sweep) */
  readonly #mutate = new KeyedLock()
  /** one delivery or hand-over per user at a time */
  readonly #deliver = new KeyedLock()
  #corrupt: Array<{ key: string, time: number }> = []
  #count = 0
  #bytes = 0
  #refused = 0
  #stored = 0
  #delivered = 0
  #state: State = State.Idle
  #timer: unknown
  #sweeping: Promise<SweepResult> | undefined
  #shutdown = new AbortController()

  constructor (components: OfflineStoreComponents, init: OfflineStoreInit = {}) {
    this.#db = components.store
    this.#log = components.logger.child({ component: 'offline-store' })
    this.#retentionMs = positive('retentionMs', init.retentionMs ?? 7 * DAY_MS)
    this.#sweepIntervalMs = positive('sweepIntervalMs', init.sweepIntervalMs ?? 60 * 60 * 1000)
    this.#maxPerUser = positive('maxMessagesPerUser', init.maxMessagesPerUser ?? 1000)
    this.#maxBytesPerUser = positive('maxBytesPerUser', init.maxBytesPerUser ?? 4 * 1024 * 1024)
    this.#maxMessages = positive('maxMessages', init.maxMessages ?? 100_000)
    this.#maxBytes = positive('maxBytes', init.maxBytes ?? 256 * 1024 * 1024)
    this.#maxBodyBytes = positive('maxBodyBytes', init.maxBodyBytes ?? 64 * 1024)
    this.#maxTombs = positive('maxTombstonesPerUser', init.maxTombstonesPerUser ?? Math.max(1000, 2 * this.#maxPerUser))
    this.#retryAfter = positive('retryAfter', init.retryAfter ?? 3600)
    this.#now = init.now ?? (() => Date.now())
    this.#timers = init.timers ?? {
      setInterval: (fn, ms) => setInterval(fn, ms),
      clearInterval: (h) => { clearInterval(h as ReturnType<typeof setInterval>) }
    }
  }

  /** Index what the durable store holds, run a first sweep, then sweep every `sweepIntervalMs`. */
  async start (): Promise<void> {
    if (this.#state === State.Started) return
    this.#shutdown = new AbortController()
    this.#users.clear()
    this.#corrupt = []
    this.#count = 0
    this.#bytes = 0
    await this.#load()
    this.#state = State.Started
    await this.sweep()
    const handle = this.#timers.setInterval(() => {
      this.sweep().catch(err => { this.#log.error('offline sweep failed', { err: String(err) }) })
    }, this.#sweepIntervalMs)
    ;(handle as { unref?: () => void } | undefined)?.unref?.()
    this.#timer = handle
  }

  /** Stop sweeping, abort deliveries in progress and wait until every operation has settled. */
  async stop (): Promise<void> {
    if (this.#state !== State.Started) return
    this.#state = State.Stopped
    if (this.#timer !== undefined) this.#timers.clearInterval(this.#timer)
    this.#timer = undefined
    this.#shutdown.abort()
    await this.#sweeping?.catch(() => {})
    await Promise.all([this.#deliver.idle(), this.#mutate.idle()])
  }

  /**
   * Keep `message` for `aor`. Resolves once it is durable (or known already: `stored: false`).
   * Throws InvalidOfflineMessageError (400), OfflineMessageTooLargeError (513),
   * OfflineQuotaError (480) or OfflineStoreStoppedError (503); nothing is written then.
   */
  async store (aor: string, message: OfflineMessage): Promise<StoreResult> {
    this.#ensureStarted()
    const rec = toRecord(aor, message, this.#now(), this.#maxBodyBytes)
    const value = encodeRecord(rec)
    if (value.byteLength > this.#maxBodyBytes + 16 * 1024) {
      throw new OfflineMessageTooLargeError(`stored record of ${value.byteLength} bytes is too large`)
    }
    return await this.#mutate.run(aor, async () => {
      this.#ensureStarted()
      const u = this.#user(aor)
      try {
        if (u.ids.has(rec.id) || u.tombs.has(rec.id)) {
          this.#log.debug('offline message already known', { aor, id: rec.id })
          return { id: rec.id, stored: false }
        }
        this.#checkQuota(aor, u, 1, value.byteLength, true)
        const time = Math.max(rec.receivedAt, u.lastTime)
        await this.#insert(aor, u, rec, value, time)
        this.#stored++
        return { id: rec.id, stored: true }
      } finally {
        this.#forgetIfEmpty(aor, u)
      }
    })
  }

  /** The user's pending messages, oldest first (a snapshot taken when iteration starts). */
  async * pending (aor: string): AsyncGenerator<OfflineRecord> {
    this.#ensureStarted()
    checkAor(aor)
    const u = this.#users.get(aor)
    if (u === undefined) return
    for (const e of [...u.entries]) {
      if (u.ids.get(e.id) !== e) continue // removed meanwhile
      const rec = await this.#read(aor, e)
      if (rec !== undefined) yield rec
    }
  }

  /** How many messages are pending for `aor`. */
  count (aor: string): number {
    return this.#users.get(aor)?.entries.length ?? 0
  }

  /** The AoRs with pending messages. */
  users (): string[] {
    return [...this.#users].filter(([, u]) => u.entries.length > 0).map(([aor]) => aor)
  }

  stats (): OfflineStats {
    return { users: this.users().length, messages: this.#count, bytes: this.#bytes, corrupt: this.#corrupt.length, refused: this.#refused, stored: this.#stored, delivered: this.#delivered }
  }

  /**
   * Forget a message after the device's 2xx: a tombstone keeps its id (so a retransmission or a
   * retried transfer is not stored again), then the message is deleted. false when not pending.
   */
  async remove (aor: string, id: string): Promise<boolean> {
    this.#ensureStarted()
    checkAor(aor)
    return await this.#mutate.run(aor, async () => await this.#remove(aor, id, true))
  }

  /** A copy of the user's backlog as serialisable records, in order; nothing is removed. */
  async export (aor: string): Promise<OfflineRecord[]> {
    const out: OfflineRecord[] = []
    for await (const rec of this.pending(aor)) out.push(rec)
    return out
  }

  /**
   * Hand the user's backlog to another node, in order, `batchSize` records per `handOver` call:
   * `handOver` must resolve only once the other node stored the batch (its `import()` resolved);
   * then the batch is removed here, with tombstones. When `handOver` throws, the batches before
   * it stay handed over, that batch and the rest stay here, and the error is rethrown. Excludes
   * deliveries for the same user while it runs. Returns how many records were handed over.
   */
  async take (aor: string, handOver: HandOverFn, options: AbortOptions & { batchSize?: number } = {}): Promise<number> {
    this.#ensureStarted()
    checkAor(aor)
    const batchSize = positive('batchSize', options.batchSize ?? 500)
    return await this.#deliver.run(aor, async () => {
      const signal = anySignal(this.#shutdown.signal, options.signal)
      let total = 0
      const done = new Set<string>()
      while (true) {
        this.#ensureStarted()
        signal.throwIfAborted()
        const batch: OfflineRecord[] = []
        for await (const rec of this.pending(aor)) {
          if (done.has(rec.id)) continue // a removal that failed after its hand-over
          batch.push(rec)
          if (batch.length >= batchSize) break
        }
        if (batch.length === 0) break
        await handOver(aor, batch, { signal })
        for (const r of batch) done.add(r.id)
        total += batch.length
        await this.#mutate.run(aor, async () => {
          for (const r of batch) await this.#remove(aor, r.id, true)
        })
      }
      if (total > 0) this.#log.info('offline backlog handed over', { aor, count: total })
      return total
    })
  }

  /**
   * `take()` for every user with a backlog (a node leaving the mesh). A failed hand-over is
   * logged and leaves that user's backlog here; the others continue.
   */
  async drain (handOver: HandOverFn, options: AbortOptions & { batchSize?: number } = {}): Promise<{ users: number, messages: number, failed: number }> {
    let users = 0
    let messages = 0
    let failed = 0
    for (const aor of this.users()) {
      if (options.signal?.aborted === true) break
      try {
        const n = await this.take(aor, handOver, options)
        if (n > 0) { users++; messages += n }
      } catch (err) {
        failed++
        this.#log.warn('offline hand-over failed', { aor, err: String(err) })
      }
    }
    return { users, messages, failed }
  }

  /**
   * Store records handed over by another node for `aor`, merged into the user's backlog by time of
   * receipt. Dedupes by id (pending or tombstoned here). The node-wide cap applies to the batch
   * as a whole (over it: OfflineQuotaError and nothing is imported); the per-user quota does not
   * (each record passed it where it was first stored). Resolves once every record is durable.
   */
  async import (aor: string, records: OfflineRecord[]): Promise<ImportResult> {
    this.#ensureStarted()
    checkAor(aor)
    if (!Array.isArray(records)) throw new InvalidOfflineMessageError('records is not an array')
    return await this.#mutate.run(aor, async () => {
      this.#ensureStarted()
      const now = this.#now()
      const result: ImportResult = { imported: 0, duplicates: 0, expired: 0, rejected: 0 }
      const u = this.#user(aor)
      try {
        return await this.#importInto(aor, u, records, now, result)
      } finally {
        this.#forgetIfEmpty(aor, u)
      }
    })
  }

  async #importInto (aor: string, u: UserState, records: OfflineRecord[], now: number, result: ImportResult): Promise<ImportResult> {
    const accepted: Array<{ rec: OfflineRecord, value: Uint8Array }> = []
    const seen = new Set<string>()
    for (const given of records) {
      let rec: OfflineRecord
      try {
        if (given?.aor !== aor) throw new InvalidOfflineMessageError('record for another AoR')
        rec = toRecord(aor, given, given.receivedAt, this.#maxBodyBytes)
      } catch (err) {
        result.rejected++
        this.#log.warn('offline import: invalid record', { aor, err: String(err) })
        continue
      }
      if (rec.receivedAt > now + MAX_FUTURE_MS) {
        result.rejected++
        this.#log.warn('offline import: receipt time in the future', { aor, id: rec.id })
        continue
      }
      if (rec.receivedAt < now - this.#retentionMs) { result.expired++; continue }
      if (u.ids.has(rec.id) || u.tombs.has(rec.id) || seen.has(rec.id)) { result.duplicates++; continue }
      seen.add(rec.id)
      accepted.push({ rec, value: encodeRecord(rec) })
    }
    const bytes = accepted.reduce((n, a) => n + a.value.byteLength, 0)
    this.#checkQuota(aor, u, accepted.length, bytes, false)
    for (const { rec, value } of accepted) {
      await this.#insert(aor, u, rec, value, rec.receivedAt)
      result.imported++
    }
    return result
  }

  #forgetIfEmpty (aor: string, u: UserState): void {
    if (u.entries.length === 0 && u.tombs.size === 0 && this.#users.get(aor) === u) this.#users.delete(aor)
  }

  /**
   * Send the user's backlog in order through `send`, removing each message after `send`
   * reported a 2xx. A transient failure (see delivery.ts: false, undefined, a throw, 408, 480,
   * 486, 5xx, 600...) or an abort stops the run there and keeps that message and the rest. A
   * permanent refusal (400, 403, 413, 415, 488, 513, 603...) removes that message (with a
   * tombstone, so a copy arriving again is not stored again), logs it at warn with its id and
   * sender, counts it in `stats().refused`, and the run goes on with the next message.
   * Messages stored while it runs are delivered too. Concurrent calls for one user run one after
   * the other, so nothing is sent twice. `max` bounds how many are delivered in this run.
   */
  async deliverBacklog (aor: string, send: SendFn, options: AbortOptions & { max?: number } = {}): Promise<DeliverResult> {
    this.#ensureStarted()
    checkAor(aor)
    return await this.#deliver.run(aor, async () => {
      const signal = anySignal(this.#shutdown.signal, options.signal)
      const max = options.max ?? Number.POSITIVE_INFINITY
      const skipped = new Set<Entry>()
      let delivered = 0
      let refused = 0
      let stopped = false
      while (delivered < max) {
        if (signal.aborted || this.#state !== State.Started) { stopped = true; break }
        const u = this.#users.get(aor)
        const e = u?.entries.find(x => !skipped.has(x))
        if (u === undefined || e === undefined) break
        if (e.receivedAt < this.#now() - this.#retentionMs) {
          skipped.add(e) // the sweep deletes it
          continue
        }
        const rec = await this.#read(aor, e)
        if (rec === undefined) { skipped.add(e); continue }
        let answer: SendAnswer | boolean | undefined
        try {
          answer = await send(rec, { signal })
        } catch (err) {
          this.#log.info('offline delivery failed', { aor, id: rec.id, err: String(err) })
        }
        const outcome = typeof answer === 'object' ? deliveryOf(answer.status) : answer === true ? Delivery.Delivered : Delivery.Retry
        if (outcome === Delivery.Retry) {
          if (typeof answer === 'object') this.#log.info('offline delivery deferred', { aor, id: rec.id, status: answer.status })
          stopped = true
          break
        }
        await this.#mutate.run(aor, async () => await this.#remove(aor, rec.id, true))
        if (outcome === Delivery.Delivered) {
          delivered++
          this.#delivered++
          continue
        }
        refused++
        this.#refused++
        const status = (answer as SendAnswer).status
        this.#log.warn('offline message refused by the device, dropped', { aor, id: rec.id, from: rec.from, status, reason: (answer as SendAnswer).reason })
      }
      if (delivered + refused > 0) this.#log.info('offline backlog delivered', { aor, delivered, refused, remaining: this.count(aor) })
      return { delivered, refused, remaining: this.count(aor), stopped }
    })
  }

  /** Delete expired messages, tombstones and corrupt entries now (the timer calls this). */
  async sweep (): Promise<SweepResult> {
    this.#ensureStarted()
    if (this.#sweeping !== undefined) return await this.#sweeping
    this.#sweeping = this.#sweep()
    try {
      return await this.#sweeping
    } finally {
      this.#sweeping = undefined
    }
  }

  async #sweep (): Promise<SweepResult> {
    const cutoff = this.#now() - this.#retentionMs
    const result: SweepResult = { expired: 0, tombstones: 0, corrupt: 0 }
    for (const aor of [...this.#users.keys()]) {
      if (this.#state !== State.Started) break
      await this.#mutate.run(aor, async () => {
        const u = this.#users.get(aor)
        if (u === undefined) return
        for (const e of u.entries.filter(x => x.receivedAt < cutoff)) {
          if (await this.#remove(aor, e.id, false)) result.expired++
        }
        for (const [id, at] of [...u.tombs]) {
          if (at >= cutoff) continue
          await this.#db.delete(tombstoneKey(aor, id))
          u.tombs.delete(id)
          result.tombstones++
        }
        this.#forgetIfEmpty(aor, u)
      })
    }
    const keep: Array<{ key: string, time: number }> = []
    for (const c of this.#corrupt) {
      if (c.time < cutoff && this.#state === State.Started) {
        await this.#db.delete(c.key)
        result.corrupt++
      } else {
        keep.push(c)
      }
    }
    this.#corrupt = keep
    if (result.expired + result.tombstones + result.corrupt > 0) this.#log.info('offline sweep', { ...result })
    return result
  }

  #ensureStarted (): void {
    if (this.#state !== State.Started) throw new OfflineStoreStoppedError()
  }

  #user (aor: string): UserState {
    let u = this.#users.get(aor)
    if (u === undefined) {
      u = { entries: [], ids: new Map(), bytes: 0, lastTime: 0, counter: 0, tombs: new Map() }
      this.#users.set(aor, u)
    }
    return u
  }

  #checkQuota (aor: string, u: UserState, count: number, bytes: number, perUser: boolean): void {
    if (perUser && u.entries.length + count > this.#maxPerUser) {
      throw new OfflineQuotaError(QuotaScope.User, `${aor} has ${u.entries.length} messages (max ${this.#maxPerUser})`, this.#retryAfter)
    }
    if (perUser && u.bytes + bytes > this.#maxBytesPerUser) {
      throw new OfflineQuotaError(QuotaScope.User, `${aor} has ${u.bytes} bytes (max ${this.#maxBytesPerUser})`, this.#retryAfter)
    }
    if (this.#count + count > this.#maxMessages || this.#bytes + bytes > this.#maxBytes) {
      throw new OfflineQuotaError(QuotaScope.Global, `node holds ${this.#count} messages, ${this.#bytes} bytes`, this.#retryAfter)
    }
  }

  /** Write one record (under the user's lock, quota checked); indexed once durable. */
  async #insert (aor: string, u: UserState, rec: OfflineRecord, value: Uint8Array, time: number): Promise<void> {
    if (u.counter >= LIMITS.MAX_COUNTER) throw new OfflineQuotaError(QuotaScope.User, `${aor} message counter exhausted`, this.#retryAfter)
    const counter = u.counter + 1
    const key = messageKey(aor, Math.min(time, LIMITS.MAX_TIME), counter)
    const size = value.byteLength
    // reserve first: stores for other users run concurrently and check the node-wide cap
    u.counter = counter
    this.#count++
    this.#bytes += size
    u.bytes += size
    try {
      await this.#db.put(key, value)
    } catch (err) {
      this.#count--
      this.#bytes -= size
      u.bytes -= size
      throw err
    }
    if (time > u.lastTime) u.lastTime = time
    const entry: Entry = { key, id: rec.id, size, receivedAt: rec.receivedAt }
    insertSorted(u.entries, entry)
    u.ids.set(rec.id, entry)
  }

  /** Delete a pending message (under the user's lock), with a tombstone first when asked. */
  async #remove (aor: string, id: string, tombstone: boolean): Promise<boolean> {
    const u = this.#users.get(aor)
    const e = u?.ids.get(id)
    if (u === undefined || e === undefined) return false
    if (tombstone) {
      const at = this.#now()
      await this.#db.put(tombstoneKey(aor, id), enc.encode(String(at)))
      u.tombs.delete(id)
      u.tombs.set(id, at)
      while (u.tombs.size > this.#maxTombs) {
        const oldest = u.tombs.keys().next().value as string
        u.tombs.delete(oldest)
        await this.#db.delete(tombstoneKey(aor, oldest))
      }
    }
    // from here on the message counts as gone, even if the delete below fails: with a tombstone
    // it is dropped at the next start; without one the next sweep retries it
    u.ids.delete(id)
    const i = u.entries.indexOf(e)
    if (i >= 0) u.entries.splice(i, 1)
    u.bytes -= e.size
    this.#count--
    this.#bytes -= e.size
    try {
      await this.#db.delete(e.key)
    } catch (err) {
      if (!tombstone) this.#corrupt.push({ key: e.key, time: 0 })
      throw err
    }
    return true
  }

  async #read (aor: string, e: Entry): Promise<OfflineRecord | undefined> {
    const value = await this.#db.get(e.key)
    if (value === undefined) return undefined
    const rec = decodeRecord(value)
    if (rec === undefined || rec.aor !== aor || rec.id !== e.id) {
      this.#log.warn('offline message corrupt, skipped', { aor, key: e.key })
      return undefined
    }
    return rec
  }

  async #load (): Promise<void> {
    let tombs = 0
    for await (const [key, value] of this.#db.list(TOMB_PREFIX)) {
      const k = parseTombstoneKey(key)
      const at = Number(dec.decode(value))
      if (k === undefined || !Number.isSafeInteger(at)) {
        this.#log.warn('offline tombstone corrupt, skipped', { key: key.slice(0, 300) })
        continue
      }
      const u = this.#user(k.aor)
      u.tombs.set(k.id, at)
      tombs++
    }
    for (const u of this.#users.values()) u.tombs = new Map([...u.tombs].sort((a, b) => a[1] - b[1]))

    const stale: string[] = []
    for await (const [key, value] of this.#db.list(MSG_PREFIX)) {
      const k = parseMessageKey(key)
      if (k === undefined) {
        this.#log.warn('offline entry with a foreign key, skipped', { key: key.slice(0, 300) })
        continue
      }
      const u = this.#user(k.aor)
      if (k.time > u.lastTime) u.lastTime = k.time
      if (k.counter > u.counter) u.counter = k.counter
      const rec = decodeRecord(value)
      if (rec === undefined || rec.aor !== k.aor) {
        this.#log.warn('offline message corrupt, skipped', { key })
        this.#corrupt.push({ key, time: k.time })
        continue
      }
      if (u.tombs.has(rec.id) || u.ids.has(rec.id)) {
        stale.push(key) // delivered just before a crash, or a duplicate
        continue
      }
      const entry: Entry = { key, id: rec.id, size: value.byteLength, receivedAt: rec.receivedAt }
      u.entries.push(entry) // list() yields in key order
      u.ids.set(rec.id, entry)
      u.bytes += entry.size
      this.#count++
      this.#bytes += entry.size
    }
    for (const key of stale) await this.#db.delete(key)
    for (const [aor, u] of this.#users) {
      if (u.entries.length === 0 && u.tombs.size === 0) this.#users.delete(aor)
    }
    this.#log.info('offline store loaded', { users: this.users().length, messages: this.#count, bytes: this.#bytes, tombstones: tombs, corrupt: this.#corrupt.length, stale: stale.length })
  }

  /** for tests: the key prefix of a user's messages */
  static userPrefix (aor: string): string {
    return userPrefix(aor)
  }
}

function insertSorted (entries: Entry[], entry: Entry): void {
  let lo = 0
  let hi = entries.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (entries[mid].key < entry.key) lo = mid + 1
    else hi = mid
  }
  entries.splice(lo, 0, entry)
}

function positive (name: string, v: number): number {
  if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) throw new RangeError(`${name} must be a positive number`)
  return v
}

function anySignal (a: AbortSignal, b: AbortSignal | undefined): AbortSignal {
  return b === undefined ? a : AbortSignal.any([a, b])
}
