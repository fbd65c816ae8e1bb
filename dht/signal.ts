/**
 * Per-operation abort signals that let go of everything when the operation ends.
 *
 * `AbortSignal.timeout(ms)` keeps its signal (and every 'abort' listener libp2p hangs on it, with
 * the streams those listeners close over) alive until the timer fires; `AbortSignal.any` ties the
 * composite to long-lived parents. With a 10 s query timeout that retained ~90 KB per claim. Here
 * the timer is cleared and the listeners removed as soon as `fn` settles.
 */
import { setMaxListeners } from 'node:events'

export class OperationTimeoutError extends Error {
  constructor (ms: number) {
    super(`operation timed out after ${ms} ms`)
    this.name = 'TimeoutError'
  }
}

export async function withSignal<T> (timeoutMs: number, parents: Array<AbortSignal | undefined>, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController()
  setMaxListeners(Infinity, controller.signal)
  const onAbort = (evt: Event): void => { controller.abort((evt.target as AbortSignal).reason) }
  const live: AbortSignal[] = []
  for (const parent of parents) {
    if (parent == null) continue
    if (parent.aborted) {
      controller.abort(parent.reason)
      break
    }
    parent.addEventListener('abort', onAbort, { once: true })
    live.push(parent)
  }
  const timer = setTimeout(() => { controller.abort(new OperationTimeoutError(timeoutMs)) }, timeoutMs)
  try {
    return await fn(controller.signal)
  } finally {
    clearTimeout(timer)
    for (const parent of live) parent.removeEventListener('abort', onAbort)
  }
}

/**
 * Whether a registry runs, shared by its parts: its shutdown signal while started (aborted and
 * dropped by stop()).
 */
export class RunState {
  private controller?: AbortController

  /** the shutdown signal, undefined when not started */
  get signal (): AbortSignal | undefined {
    return this.controller?.signal
  }

  get running (): boolean {
    return this.controller != null
  }

  /** Start; false when already started. */
  start (): boolean {
    if (this.controller != null) return false
    this.controller = new AbortController()
    return true
  }

  /** Stop (aborts the shutdown signal); false when not started. */
  stop (): boolean {
    if (this.controller == null) return false
    this.controller.abort()
    this.controller = undefined
    return true
  }
}
