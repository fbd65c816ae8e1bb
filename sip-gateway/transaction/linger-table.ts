/**
 * What is left of completed transactions while they linger: RFC 3261 17.2.2 (timer J: a
 * non-INVITE server transaction over UDP answers retransmitted requests with its final response)
 * and 17.1.2.2 (timer K: a non-INVITE client transaction over UDP absorbs retransmitted final
 * responses). That is all a completed transaction does then, so only its key and what it needs to
 * do it (the response bytes and flow, or nothing) are kept, not the transaction with its timers,
 * closures, request and user; a relayed message then keeps nothing alive for seconds and nothing
 * is promoted to the old generation for it.
 *
 * Every entry of one table lingers equally long, so insertion order is expiry order: one interval
 * drops entries from the front, and runs only while the table holds any.
 */
export class LingerTable<V> {
  readonly #entries = new Map<string, { value: V, until: number }>()
  readonly #ms: number
  #timer: ReturnType<typeof setInterval> | undefined

  /** `ms`: how long each entry lingers */
  constructor (ms: number) {
    this.#ms = ms
  }

  get size (): number { return this.#entries.size }

  get (key: string): V | undefined {
    return this.#entries.get(key)?.value
  }

  has (key: string): boolean {
    return this.#entries.has(key)
  }

  set (key: string, value: V): void {
    // a key seen again moves to the back (its expiry is the latest)
    this.#entries.delete(key)
    this.#entries.set(key, { value, until: performance.now() + this.#ms })
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => { this.#drop() }, Math.max(10, Math.min(250, this.#ms / 8)))
      this.#timer.unref?.()
    }
  }

  clear (): void {
    this.#entries.clear()
    clearInterval(this.#timer)
    this.#timer = undefined
  }

  #drop (): void {
    const now = performance.now()
    for (const [key, e] of this.#entries) {
      if (e.until > now) return
      this.#entries.delete(key)
    }
    clearInterval(this.#timer)
    this.#timer = undefined
  }
}
