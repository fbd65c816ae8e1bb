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

/**
 * A cancellable one-shot timer; `set` replaces a pending one. `fn` is called with `self` as
 * `this` (a method of the owner, which then needs no closure of its own per instance); the timer
 * itself is what Node's timer passes back, so a timer set costs no closure either.
 */
export class Timer {
  #handle: ReturnType<typeof setTimeout> | undefined
  #fn: (() => void) | undefined
  #self: unknown

  set<T> (ms: number, fn: (this: T) => void, self?: T): void {
    this.clear()
    this.#fn = fn as () => void
    this.#self = self
    this.#handle = setTimeout(Timer.#fire, ms, this)
    // a transaction timer must never keep the process alive on its own
    this.#handle.unref?.()
  }

  /** what Node's timer calls: the timer's function, once */
  static #fire (timer: Timer): void {
    const fn = timer.#fn
    const self = timer.#self
    timer.#handle = undefined
    timer.#fn = undefined
    timer.#self = undefined
    fn?.call(self)
  }

  clear (): void {
    if (this.#handle === undefined) return
    clearTimeout(this.#handle)
    this.#handle = undefined
    this.#fn = undefined
    this.#self = undefined
  }

  get pending (): boolean { return this.#handle !== undefined }
}
