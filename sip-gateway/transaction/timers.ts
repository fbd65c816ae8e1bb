/**
 * RFC 3261 timer values (section 17 and table 4 of appendix A). All derived timers scale with
 * T1, so tests and fast local meshes can shrink them.
 */
export interface TimerSettings {
  /** RTT estimate. @default 500 */
  t1: number
  /** maximum retransmit interval for non-INVITE requests and INVITE responses. @default 4000 */
  t2: number
  /** maximum duration a message remains in the network. @default 5000 */
  t4: number
}

export const defaultTimers: Readonly<TimerSettings> = Object.freeze({ t1: 500, t2: 4000, t4: 5000 })

export function timerSettings (init: Partial<TimerSettings> = {}): TimerSettings {
  const t = { ...defaultTimers, ...init }
  for (const [k, v] of Object.entries(t)) {
    if (!Number.isFinite(v) || v <= 0) throw new RangeError(`timer ${k} must be a positive number`)
  }
  return t
}

/** A cancellable one-shot timer; `set` replaces a pending one. */
export class Timer {
  #handle: ReturnType<typeof setTimeout> | undefined

  set (ms: number, fn: () => void): void {
    this.clear()
    this.#handle = setTimeout(() => { this.#handle = undefined; fn() }, ms)
    // a transaction timer must never keep the process alive on its own
    this.#handle.unref?.()
  }

  clear (): void {
    if (this.#handle !== undefined) clearTimeout(this.#handle)
    this.#handle = undefined
  }

  get pending (): boolean { return this.#handle !== undefined }
}
