/**
 * One timer for every registration's expiry: a wheel of slots of `granularityMs` (a slot per
 * second by default), each slot a plain array of keys, swept by one interval timer. Adding a key
 * costs one array push; a registration refreshed to a later expiry keeps its slot (lazy: the slot
 * fires, the owner finds nothing due and puts the key in the slot of its new expiry), so a refresh
 * costs nothing here. Instead of a `setTimeout` (a Timeout object, a closure and its context, and a
 * map entry to cancel it) per AoR.
 *
 * The owner tracks which slot each of its keys is in (`slotOf`) and ignores the stale entries a
 * key leaves behind when it moves to an earlier slot, so a key fires at most once per slot.
 */

export interface ExpiryWheelInit {
  /** width of a slot, ms: an expiry fires at most this late (plus the sweep's own delay). @default 1000 */
  granularityMs?: number
  /** the clock. @default Date.now */
  now?: () => number
}

export class ExpiryWheel {
  readonly granularityMs: number
  readonly #now: () => number
  readonly #slots = new Map<number, string[]>()
  readonly #onDue: (keys: string[], slot: number) => void
  #swept: number
  #timer: ReturnType<typeof setInterval> | undefined

  /** `onDue` gets the keys of each slot whose time has come (stale entries included: check `slot`) */
  constructor (onDue: (keys: string[], slot: number) => void, init: ExpiryWheelInit = {}) {
    this.granularityMs = init.granularityMs ?? 1000
    if (!(this.granularityMs >= 1)) throw new RangeError('granularityMs must be at least 1')
    this.#now = init.now ?? Date.now
    this.#onDue = onDue
    this.#swept = this.slotOf(this.#now()) - 1
  }

  /**
   * the slot an expiry at `at` (ms) goes to: the one it falls in. A slot fires once its start has
   * passed, so possibly before `at`: the owner then finds nothing due and adds the key again,
   * which puts it in the next slot to fire.
   */
  slotOf (at: number): number {
    return Math.floor(at / this.granularityMs)
  }

  /** put `key` in the slot of `at`; returns the slot (the owner remembers it) */
  add (key: string, at: number): number {
    // a slot already swept (an expiry in the past) fires at the next sweep
    const slot = Math.max(this.slotOf(at), this.#swept + 1)
    const keys = this.#slots.get(slot)
    if (keys === undefined) this.#slots.set(slot, [key])
    else keys.push(key)
    return slot
  }

  /** entries in the wheel (stale ones included) */
  get size (): number {
    let n = 0
    for (const keys of this.#slots.values()) n += keys.length
    return n
  }

  start (): void {
    if (this.#timer !== undefined) return
    this.#timer = setInterval(() => { this.sweep() }, this.granularityMs)
    this.#timer.unref?.()
  }

  stop (): void {
    clearInterval(this.#timer)
    this.#timer = undefined
  }

  /** fire every slot whose time has come (the interval calls it; tests may too) */
  sweep (): void {
    const current = Math.floor(this.#now() / this.granularityMs)
    if (current <= this.#swept) return
    const due: number[] = []
    if (current - this.#swept <= 4 * this.#slots.size + 64) {
      for (let s = this.#swept + 1; s <= current; s++) if (this.#slots.has(s)) due.push(s)
    } else {
      for (const s of this.#slots.keys()) if (s <= current) due.push(s)
      due.sort((a, b) => a - b)
    }
    this.#swept = current
    for (const s of due) {
      const keys = this.#slots.get(s)
      this.#slots.delete(s)
      if (keys !== undefined) this.#onDue(keys, s)
    }
  }
}
