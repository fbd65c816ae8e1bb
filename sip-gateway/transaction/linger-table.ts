/**
 * What is left of completed transactions while they linger: RFC 3261 17.2.2 (timer J: a
 * non-INVITE server transaction over UDP answers retransmitted requests with its final response)
 * and 17.1.2.2 (timer K: a non-INVITE client transaction over UDP absorbs retransmitted final
 * responses). That is all a completed transaction does then, so only its key and what it needs to
 * do it (the response bytes and flow, or nothing) are kept, not the transaction with its timers,
 * closures, request and user; a relayed message then keeps nothing alive for seconds and nothing
 * is promoted to the old generation for it.
 *
 * Every entry of one table lingers equally long, so the order of the sets is the order of expiry:
 * the values sit in a Map under their keys, and the keys with their expiry in a ring in the order
 * they were set (two growable arrays: no object per entry), which one interval drops from the
 * front while the table holds any. A table holds a relay's messages of the last 32 s (timer J),
 * hundreds of thousands at load: a set costs the one Map write, no wrapper object and no lookup
 * of the key first. A key set again while it lingers (which the transaction layer never does: its
 * keys are unique while they linger) lingers from its last set: the rare case is counted apart.
 */
export class LingerTable<V> {
  readonly #values = new Map<string, V>()
  readonly #ms: number
  readonly #now: () => number
  /** the ring of keys in the order they were set, and when each expires (same index) */
  #keys: Array<string | undefined> = new Array<string | undefined>(64)
  #until = new Float64Array(64)
  #head = 0
  #count = 0
  /** keys set again while lingering: how many of their earlier ring entries are still ahead */
  readonly #again = new Map<string, number>()
  #timer: ReturnType<typeof setInterval> | undefined

  /** `ms`: how long each entry lingers; `now`: the clock (tests give their own) */
  constructor (ms: number, now: () => number = () => performance.now()) {
    this.#ms = ms
    this.#now = now
  }

  get size (): number { return this.#values.size }

  get (key: string): V | undefined {
    return this.#values.get(key)
  }

  has (key: string): boolean {
    return this.#values.has(key)
  }

  set (key: string, value: V): void {
    const before = this.#values.size
    this.#values.set(key, value)
    // the key was there: its earlier ring entry must not drop it (its expiry is the latest)
    if (this.#values.size === before) this.#again.set(key, (this.#again.get(key) ?? 0) + 1)
    if (this.#count === this.#keys.length) this.#grow()
    const at = (this.#head + this.#count) % this.#keys.length
    this.#keys[at] = key
    this.#until[at] = this.#now() + this.#ms
    this.#count++
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => { this.#drop() }, Math.max(10, Math.min(250, this.#ms / 8)))
      this.#timer.unref?.()
    }
  }

  clear (): void {
    this.#values.clear()
    this.#again.clear()
    this.#keys = new Array<string | undefined>(64)
    this.#until = new Float64Array(64)
    this.#head = 0
    this.#count = 0
    clearInterval(this.#timer)
    this.#timer = undefined
  }

  /** twice the room, the ring unrolled from its head */
  #grow (): void {
    const n = this.#keys.length
    const keys = new Array<string | undefined>(2 * n)
    const until = new Float64Array(2 * n)
    for (let i = 0; i < this.#count; i++) {
      const from = (this.#head + i) % n
      keys[i] = this.#keys[from]
      until[i] = this.#until[from]
    }
    this.#keys = keys
    this.#until = until
    this.#head = 0
  }

  #drop (): void {
    const now = this.#now()
    const n = this.#keys.length
    while (this.#count > 0 && this.#until[this.#head] <= now) {
      const key = this.#keys[this.#head] as string
      this.#keys[this.#head] = undefined
      this.#head = (this.#head + 1) % n
      this.#count--
      const again = this.#again.get(key)
      if (again === undefined) this.#values.delete(key)
      else if (again > 1) this.#again.set(key, again - 1)
      else this.#again.delete(key)
    }
    if (this.#count > 0) return
    clearInterval(this.#timer)
    this.#timer = undefined
    // a burst's room given back once it is all gone
    if (this.#keys.length > 1024) {
      this.#keys = new Array<string | undefined>(64)
      this.#until = new Float64Array(64)
      this.#head = 0
    }
  }
}
