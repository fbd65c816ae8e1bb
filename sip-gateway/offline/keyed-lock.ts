/**
 * A FIFO lock per key: `run(key, fn)` starts `fn` once every earlier `run` for the same key has
 * settled. Calls for different keys run concurrently. The map holds only keys with work queued.
 */
export class KeyedLock {
  readonly #tails = new Map<string, Promise<void>>()

  run<T> (key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve()
    const result = prev.then(fn)
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
