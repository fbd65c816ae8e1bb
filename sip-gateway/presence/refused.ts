/**
 * Watchers refused outright, for presence.winfo (RFC 3857 3.2: a subscription the rules reject
 * goes from `init` to `terminated` with event `rejected`). A watcher whose SUBSCRIBE the owner
 * node answered 403 (its rules block her) holds no subscription, so without this record she would
 * never appear in the presentity's watcher information. She is listed `terminated`/`rejected` for
 * `keepMs` after her last attempt (in the NOTIFY the attempt causes, and in the full state a new
 * winfo subscriber gets meanwhile), then forgotten. Watchers refused at another node need no
 * record here: the identity their node asked the owner about carries the decision (backend.ts).
 * Bounded: `maxPerPresentity` watchers per presentity (the oldest goes), `maxPresentities` in all.
 */
import type { Aor } from '../ports.ts'

export interface RefusedWatchersInit {
  /** how long a refused watcher is listed, ms @default 30000 */
  keepMs?: number
  /** @default 64 */
  maxPerPresentity?: number
  /** @default 10000 */
  maxPresentities?: number
}

export class RefusedWatchers {
  readonly #keepMs: number
  readonly #maxPer: number
  readonly #maxAll: number
  /** presentity → watcher → until (ms) */
  readonly #refused = new Map<Aor, Map<string, number>>()
  readonly #changed: (aor: Aor) => void
  #timer?: ReturnType<typeof setTimeout>

  /** `changed`: the list of a presentity changed (a watcher refused, or forgotten) */
  constructor (changed: (aor: Aor) => void, init: RefusedWatchersInit = {}) {
    this.#changed = changed
    this.#keepMs = init.keepMs ?? 30_000
    this.#maxPer = init.maxPerPresentity ?? 64
    this.#maxAll = init.maxPresentities ?? 10_000
  }

  /** `watcher` was refused a subscription to `aor` */
  note (aor: Aor, watcher: string): void {
    let m = this.#refused.get(aor)
    if (m === undefined) {
      if (this.#refused.size >= this.#maxAll) this.#refused.delete(this.#refused.keys().next().value as Aor)
      this.#refused.set(aor, m = new Map())
    }
    m.delete(watcher)
    if (m.size >= this.#maxPer) m.delete(m.keys().next().value as string)
    m.set(watcher, Date.now() + this.#keepMs)
    this.#arm()
    this.#changed(aor)
  }

  /** `watcher` now holds a subscription: no longer listed as refused */
  forget (aor: Aor, watcher: string): void {
    const m = this.#refused.get(aor)
    if (m?.delete(watcher) !== true) return
    if (m.size === 0) this.#refused.delete(aor)
  }

  /** the watchers refused a subscription to `aor` lately */
  * of (aor: Aor): Iterable<string> {
    const m = this.#refused.get(aor)
    if (m === undefined) return
    const now = Date.now()
    for (const [w, until] of m) if (until > now) yield w
  }

  stop (): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#refused.clear()
  }

  /** one timer for all: the next expiry */
  #arm (): void {
    if (this.#timer !== undefined) return
    this.#timer = setTimeout(() => { this.#timer = undefined; this.#sweep() }, this.#keepMs)
    this.#timer.unref?.()
  }

  #sweep (): void {
    const now = Date.now()
    for (const [aor, m] of [...this.#refused]) {
      let gone = false
      for (const [w, until] of [...m]) if (until <= now) { m.delete(w); gone = true }
      if (m.size === 0) this.#refused.delete(aor)
      if (gone) this.#changed(aor)
    }
    if (this.#refused.size > 0) this.#arm()
  }
}
