/**
 * A FIFO lock per key: `run(key, fn)` starts `fn` once every earlier `run` for the same key has
 * settled. Calls for different keys run concurrently. The map holds only keys with work queued.
 * With nothing queued for its key `fn` starts at once, within `run`: it must not call `run` for
 * the same key before its first await (none of the callers does).
 */
export class KeyedLock {
  readonly #tails = new Map<string, Promise<void>>()

  run<T> (key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key)
    // nothing queued for the key (the common case): `fn` starts now, without a turn of waiting on
    // a resolved promise; a throw becomes a rejection as it would from `then`
    let result: Promise<T>
    if (prev === undefined) {
      try { result = fn() } catch (err) { result = Promise.reject(err) }
    } else {
      result = prev.then(fn)
    }
    const tail = result.then(() => {}, () => {})
    this.#tails.set(key, tail)
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key)
    })
    return result
  }

  /** true while work for `key` is queued or running */
  busy (key: string): boolean {
    return this.#tails.has(key)
  }

  /** settles once all work queued so far (on every key) has settled */
  async idle (): Promise<void> {
    while (this.#tails.size > 0) await Promise.all([...this.#tails.values()])
  }
}
