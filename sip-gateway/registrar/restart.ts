/**
 * The registrations stored before a restart, claimed again in the background while the node
 * already answers SIP (issue 9 item 6). `start` reads them from the durable store (`loaded`
 * resolves then: a REGISTER waits for it, so that it can take its AoR's stored bindings over),
 * drops the expired and corrupt ones, then claims the rest `concurrency` at a time (the registry
 * coalesces concurrent claims), each under its AoR's lock (the host's `serialized`), with a
 * progress line every `logIntervalMs` and a summary at the end; `progress` has the figures.
 *
 * A REGISTER for an AoR that is still pending `take`s its stored bindings (and puts them back
 * with `putBack` when its claim failed); the re-claim then skips that AoR (`superseded`).
 */
import type { AbortOptions, ClaimResult, DurableStore, Logger } from '../ports.ts'
import { contactKey, decodeRegistration, EMPTY_PARAMS, STORE_PREFIX } from './bindings.ts'
import type { StoredBinding } from './bindings.ts'

/** Figures of the restart's re-claim of stored registrations. */
export interface ReclaimProgress {
  /** stored registrations still valid, to be claimed again */
  total: number
  /** claimed again (won) */
  claimed: number
  /** another node holds the AoR now: dropped */
  lost: number
  /** the claim failed (kept in the store for the next start) */
  failed: number
  /** a REGISTER for the AoR arrived first and took its stored bindings over */
  superseded: number
  /** stored registrations found expired and deleted */
  expired: number
  /** true once every stored registration has been handled */
  done: boolean
}

/** What the registrar lends the restart. */
export interface StoredRegistrationsComponents {
  store: DurableStore
  logger: Logger
  now: () => number
  /** run `fn` under the AoR's lock (after every REGISTER of it queued before) */
  serialized: (aor: string, fn: () => Promise<void>) => Promise<void>
  /** claim the AoR for these bindings and, when won, bind them */
  reclaim: (aor: string, bindings: Array<StoredBinding<never>>, signal: AbortSignal) => Promise<ClaimResult>
  /** delete the AoR's stored record */
  forget: (aor: string) => Promise<void>
}

export interface StoredRegistrationsInit {
  /** stored registrations claimed again at once. @default 256 */
  concurrency?: number
  /** a progress line at most this often, ms. @default 5000 */
  logIntervalMs?: number
}

export class StoredRegistrations {
  readonly progress: ReclaimProgress = { total: 0, claimed: 0, lost: 0, failed: 0, superseded: 0, expired: 0, done: true }
  /** resolves once the stored registrations have been read */
  loaded: Promise<void> = Promise.resolve()
  /** true once `loaded` has resolved (a REGISTER then waits for nothing) */
  isLoaded = true
  readonly #c: StoredRegistrationsComponents
  readonly #concurrency: number
  readonly #logInterval: number
  readonly #pending = new Map<string, Array<StoredBinding<never>>>()

  constructor (components: StoredRegistrationsComponents, init: StoredRegistrationsInit = {}) {
    this.#c = components
    this.#concurrency = init.concurrency ?? 256
    this.#logInterval = init.logIntervalMs ?? 5000
    if (!(this.#concurrency >= 1)) throw new RangeError('reclaimConcurrency must be at least 1')
  }

  /** read the stored registrations, then claim them again in the background */
  start (signal: AbortSignal): void {
    this.isLoaded = false
    this.loaded = this.#load(signal)
    // a failed read leaves it false: REGISTERs then wait on `loaded` and fail as they did
    this.loaded.then(() => { this.isLoaded = true }, () => {})
    this.loaded.then(async () => { await this.#reclaimAll(signal) }, () => {})
      .catch((err: unknown) => { this.#c.logger.error('re-claim of stored registrations failed', { err: String(err) }) })
  }

  /** resolves once every stored registration has been handled (or `signal` aborted) */
  async done (signal?: AbortSignal): Promise<void> {
    await this.loaded
    while (!this.progress.done && signal?.aborted !== true) await new Promise(resolve => setTimeout(resolve, 20))
  }

  /** the stored bindings of an AoR not claimed again yet */
  pending (aor: string): Array<StoredBinding<never>> | undefined {
    return this.#pending.get(aor)
  }

  /** a REGISTER takes the AoR's stored bindings over: the re-claim skips it */
  take (aor: string): void {
    this.#pending.delete(aor)
  }

  /** that REGISTER's claim failed: the stored bindings wait for the re-claim again */
  putBack (aor: string, bindings: Array<StoredBinding<never>>): void {
    this.#pending.set(aor, bindings)
  }

  async #load (signal: AbortSignal): Promise<void> {
    const now = this.#c.now()
    const p = this.progress
    Object.assign(p, { total: 0, claimed: 0, lost: 0, failed: 0, superseded: 0, expired: 0, done: false })
    const drops: Array<Promise<void>> = []
    try {
      for await (const [key, value] of this.#c.store.list(STORE_PREFIX)) {
        if (signal.aborted) return
        const rec = decodeRegistration(value)
        const aor = rec?.aor
        const live = rec?.bindings.filter(b => b.expiresAt > now) ?? []
        if (aor === undefined || live.length === 0 || key !== STORE_PREFIX + aor) {
          p.expired++
          drops.push(this.#c.store.delete(key).catch(() => {}))
          continue
        }
        const bindings: Array<StoredBinding<never>> = []
        for (const b of live) {
          try {
            bindings.push({ aor, key: contactKey(b.uri), uri: b.uri, params: Object.keys(b.params).length === 0 ? EMPTY_PARAMS : b.params, expiresAt: b.expiresAt, callId: b.callId, cseq: b.cseq, durableUntil: b.expiresAt })
          } catch { /* a contact that no longer parses is dropped */ }
        }
        if (bindings.length === 0) continue
        this.#pending.set(aor, bindings)
        p.total++
      }
    } catch (err) {
      this.#c.logger.error('could not read stored registrations', { err: String(err) })
    }
    await Promise.all(drops)
    if (p.total > 0 || p.expired > 0) this.#c.logger.info('stored registrations read; re-claiming them in the background', { total: p.total, expired: p.expired })
  }

  async #reclaimAll (signal: AbortSignal): Promise<void> {
    const p = this.progress
    const t0 = performance.now()
    let lastLog = t0
    const aors = [...this.#pending.keys()]
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < aors.length && !signal.aborted) {
        const aor = aors[next++]
        await this.#c.serialized(aor, async () => { await this.#reclaimOne(aor, { signal }) })
        const now = performance.now()
        if (now - lastLog >= this.#logInterval) {
          lastLog = now
          this.#c.logger.info('re-claiming stored registrations', { done: p.claimed + p.lost + p.failed + p.superseded, total: p.total, claimed: p.claimed, lost: p.lost, failed: p.failed, ms: Math.round(now - t0) })
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(this.#concurrency, Math.max(1, aors.length)) }, worker))
    if (signal.aborted) return
    p.done = true
    if (p.total > 0) {
      const fields = { total: p.total, claimed: p.claimed, lost: p.lost, failed: p.failed, superseded: p.superseded, expired: p.expired, ms: Math.round(performance.now() - t0) }
      if (p.failed > 0) this.#c.logger.warn('stored registrations re-claimed, some claims failed (kept for the next start)', fields)
      else this.#c.logger.info('stored registrations re-claimed', fields)
    }
  }

  /** claim one stored registration again (under the AoR's lock) */
  async #reclaimOne (aor: string, options: Required<AbortOptions>): Promise<void> {
    const p = this.progress
    const stored = this.#pending.get(aor)
    // a REGISTER for it came first and took its bindings over
    if (stored === undefined) { p.superseded++; return }
    this.#pending.delete(aor)
    const live = stored.filter(b => b.expiresAt > this.#c.now())
    if (live.length === 0) {
      p.expired++
      await this.#c.forget(aor)
      return
    }
    let result
    try {
      result = await this.#c.reclaim(aor, live, options.signal)
    } catch (err) {
      p.failed++
      if (p.failed <= 10) this.#c.logger.warn('could not re-claim stored registration', { aor, err: String(err) })
      return
    }
    if (!result.won) {
      p.lost++
      this.#c.logger.info('stored registration taken over while down', { aor, owner: result.route.node })
      await this.#c.forget(aor)
      return
    }
    p.claimed++
  }
}
