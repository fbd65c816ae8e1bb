/**
 * When the next batch of a batching queue leaves (the signing thread's batches, the claim writer's
 * and the durable store's LevelDB batches).
 *
 * Each of those queues sends what gathered while its previous batch was out. A batch has a fixed
 * cost besides its items (a message to the signing thread and one back: ~12 µs of the event loop;
 * a LevelDB batch: ~14 µs of the event loop and as much on the threadpool, against 1.3-1.5 µs of
 * the event loop per write in a batch of 16 or more), and when the batches come back quickly (a
 * signature in 18 µs, a small LevelDB write) they stay small: one or two items per batch at
 * 5,000 new REGISTERs a second, so the fixed cost was paid per claim (issue 9). A pacer lets a
 * batch leave at once when the previous one left at least `spacingMs` ago (a node under little
 * load adds no wait), and otherwise when it has: under load, at most one batch per `spacingMs`
 * per queue (10 claims a batch at 10,000/s for 1 ms), for at most that much more latency.
 */
export class BatchPacer {
  readonly #spacingMs: number
  #last = -Infinity

  /** @param spacingMs the least time between two batches' departures (ms); 0: no pacing */
  constructor (spacingMs: number) {
    if (!(spacingMs >= 0)) throw new RangeError('spacingMs must be at least 0')
    this.#spacingMs = spacingMs
  }

  /** ms until the next batch may leave (0 or less: now) */
  wait (): number {
    return this.#last + this.#spacingMs - performance.now()
  }

  /** Run `send` when the next batch may leave: in the next turn, or once the spacing has passed. */
  schedule (send: () => void): void {
    const wait = this.wait()
    if (wait <= 0) setImmediate(send)
    else setTimeout(send, wait)
  }

  /** A batch leaves now. */
  sent (): void {
    this.#last = performance.now()
  }
}
