/**
 * Who counts as "known" for the offline store (SPEC, MESSAGE row): a user who registered within
 * the retention window (default 30 days) or who is listed in the credentials file. A MESSAGE for a
 * known user without a live registration is stored (202); for anybody else it is 404.
 *
 * This registry only knows what happened on THIS node: `markRegistered()` is called when an AoR
 * registers here, and the time is persisted. Mesh-wide knowledge (a user who last registered on
 * another node) comes from the marker claim that node made: see `sip-gateway/im/offline-im.ts`.
 *
 * Key: `sip-gateway/offline/known/<encodeURIComponent(aor)>` → ms since the epoch, decimal text.
 */
import type { DurableStore, Logger } from '../ports.ts'
import { DAY_MS } from './store.ts'
import type { Timers } from './store.ts'
import { checkAor, isAor } from './record.ts'

export const KNOWN_PREFIX = 'sip-gateway/offline/known/'

export interface KnownUsersInit {
  /** how long after its last registration a user stays known, ms. @default 30 days */
  retentionMs?: number
  /**
   * A registration refresh within this long of the persisted time is not written again (a
   * REGISTER every minute would otherwise write every minute); ms. @default 1 hour
   */
  writeGranularityMs?: number
  /** how often forgotten users are deleted from the store, ms. @default 6 hours */
  sweepIntervalMs?: number
  /** AoRs of the credentials file: always known. Replace later with `setCredentials`. */
  credentials?: Iterable<string>
  /** @default Date.now (read on every call) */
  now?: () => number
  /** @default the global setInterval / clearInterval */
  timers?: Timers
}

export interface KnownUsersComponents {
  store: DurableStore
  logger: Logger
}

export class KnownUsers {
  readonly #db: DurableStore
  readonly #log: Logger
  readonly #retentionMs: number
  readonly #granularity: number
  readonly #sweepIntervalMs: number
  readonly #now: () => number
  readonly #timers: Timers
  #credentials: Set<string>
  /** AoR → ms of its last registration on this node, as persisted */
  readonly #seen = new Map<string, number>()
  #timer: unknown
  #started = false

  constructor (components: KnownUsersComponents, init: KnownUsersInit = {}) {
    this.#db = components.store
    this.#log = components.logger.child({ component: 'known-users' })
    this.#retentionMs = init.retentionMs ?? 30 * DAY_MS
    this.#granularity = init.writeGranularityMs ?? 60 * 60 * 1000
    this.#sweepIntervalMs = init.sweepIntervalMs ?? 6 * 60 * 60 * 1000
    if (!(this.#retentionMs > 0) || !(this.#granularity >= 0) || !(this.#sweepIntervalMs > 0)) {
      throw new RangeError('KnownUsers: retentionMs and sweepIntervalMs must be positive, writeGranularityMs not negative')
    }
    this.#now = init.now ?? (() => Date.now())
    this.#timers = init.timers ?? {
      setInterval: (fn, ms) => setInterval(fn, ms),
      clearInterval: (h) => { clearInterval(h as ReturnType<typeof setInterval>) }
    }
    this.#credentials = new Set(init.credentials ?? [])
  }

  /** Load the persisted registration times (corrupt entries are skipped and logged), start sweeping. */
  async start (): Promise<void> {
    if (this.#started) return
    this.#seen.clear()
    const dec = new TextDecoder()
    for await (const [key, value] of this.#db.list(KNOWN_PREFIX)) {
      let aor: string | undefined
      try {
        aor = decodeURIComponent(key.slice(KNOWN_PREFIX.length))
      } catch { aor = undefined }
      const at = Number(dec.decode(value))
      if (aor === undefined || !isAor(aor) || !Number.isSafeInteger(at) || at < 0) {
        this.#log.warn('known-user entry corrupt, skipped', { key: key.slice(0, 300) })
        continue
      }
      this.#seen.set(aor, at)
    }
    this.#started = true
    await this.sweep()
    const handle = this.#timers.setInterval(() => {
      this.sweep().catch(err => { this.#log.error('known-users sweep failed', { err: String(err) }) })
    }, this.#sweepIntervalMs)
    ;(handle as { unref?: () => void } | undefined)?.unref?.()
    this.#timer = handle
  }

  async stop (): Promise<void> {
    if (!this.#started) return
    this.#started = false
    if (this.#timer !== undefined) this.#timers.clearInterval(this.#timer)
    this.#timer = undefined
  }

  /** Replace the AoRs of the credentials file (after a reload). Malformed AoRs are ignored. */
  setCredentials (aors: Iterable<string>): void {
    this.#credentials = new Set([...aors].filter(a => isAor(a)))
  }

  /** Record that `aor` registered on this node at `at` (default now); durable once resolved. */
  async markRegistered (aor: string, at: number = this.#now()): Promise<void> {
    checkAor(aor)
    const prev = this.#seen.get(aor)
    if (prev !== undefined && at >= prev && at - prev < this.#granularity) return
    if (prev !== undefined && at < prev) return
    this.#seen.set(aor, at)
    await this.#db.put(KNOWN_PREFIX + encodeURIComponent(aor), new TextEncoder().encode(String(at)))
  }

  /** true when `aor` is in the credentials file or registered here within the retention window */
  isKnown (aor: string): boolean {
    if (this.#credentials.has(aor)) return true
    const at = this.#seen.get(aor)
    return at !== undefined && at >= this.#now() - this.#retentionMs
  }

  /** ms of the last registration on this node that is still within the window, if any */
  lastRegistered (aor: string): number | undefined {
    const at = this.#seen.get(aor)
    return at !== undefined && at >= this.#now() - this.#retentionMs ? at : undefined
  }

  /** every user who registered here within the window, with the time of the last registration */
  * registered (): Generator<[aor: string, at: number]> {
    const cutoff = this.#now() - this.#retentionMs
    for (const [aor, at] of [...this.#seen]) if (at >= cutoff) yield [aor, at]
  }

  /** Forget (and delete) the users whose last registration is older than the window. */
  async sweep (): Promise<number> {
    const cutoff = this.#now() - this.#retentionMs
    let n = 0
    for (const [aor, at] of [...this.#seen]) {
      if (at >= cutoff) continue
      this.#seen.delete(aor)
      await this.#db.delete(KNOWN_PREFIX + encodeURIComponent(aor))
      n++
    }
    if (n > 0) this.#log.info('known users forgotten', { count: n })
    return n
  }
}
