/**
 * Gives memory back to the system once a burst is over.
 *
 * After a burst (100,000 REGISTERs at 10,000/s: 200,000 transactions lingering 32 s for timer J),
 * V8's major GC frees the pages the burst used, but keeps them in its page pool for reuse, still
 * resident. It empties the pool only in a memory-reducing GC, which it starts by itself only
 * when the embedder reports idleness or memory pressure; Node does neither. Measured here: 100,000
 * registrations settled at 80 MB of heap kept 290 MB of V8 pages resident, and a node that had
 * a burst once kept its peak RSS for good.
 *
 * So the node trims after a busy period: once the event loop has been quiet (less than a quarter
 * busy) for `quietFor` (40 s: longer than timer J, so that what the burst left lingering is dead
 * too) and the resident memory grew by at least `slack` since the last trim (or start), it runs
 * one memory-reducing GC: the `gc` function V8 exposes, with `flavor: 'last-resort'` (the only
 * flavour that reduces the footprint). Node has no API for this; the `--expose-gc` flag set at run
 * time and `gc` read from a fresh context is the known way in. A trim costs a full GC or two
 * (100-600 ms at 100,000 registrations), hence only when quiet, at most once a minute and once
 * per busy period. What a trim leaves (live data, and memory that glibc's malloc keeps around live
 * chunks, which is not V8's to give back) is the next baseline.
 *
 * Two more things a trim does, both measured at 100,000 registrations (issue 9):
 * - it compacts every fragmented page (`--compact-on-every-full-gc`, set for the trim only): V8's
 *   memory-reducing GC moves at most ~12 MB of live objects and leaves the rest of the pages where
 *   they are, so the old space kept 60-75 MB of pages mostly empty (the burst's transactions died
 *   among the registrations that stay): ~650 B of RSS per registration;
 * - it ends with one regular full GC. After a memory-reducing GC, V8 sets the old generation's
 *   limit barely above the live heap and the young generation at its smallest, so the first busy
 *   seconds after a trim (a refresh burst) met a full GC of the whole heap at once; a regular GC
 *   sets the limits by the usual heuristics again.
 */
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { performance, type EventLoopUtilization } from 'node:perf_hooks'
import type { Logger } from '../sip-gateway/ports.ts'

type GcFunction = (options: { type: 'major', execution: 'sync', flavor?: 'regular' | 'last-resort' }) => void

export interface MemoryTrimmerInit {
  /** how often memory is looked at, ms @default 5000 */
  interval?: number
  /** the event loop's utilisation over the last interval below which a trim may run @default 0.25 */
  quietUtilization?: number
  /** growth of the resident memory since start or the last trim that makes a trim worthwhile, bytes @default 32 MiB */
  slack?: number
  /** how long the loop must have been quiet after a busy period, ms @default 40_000 */
  quietFor?: number
  /** least time between two trims, ms @default 60_000 */
  minGap?: number
}

export interface MemoryTrimmerComponents {
  logger: Logger
  /** called after each trim with what it freed, for metrics */
  onTrim?: (trim: { freedBytes: number, ms: number }) => void
}

let exposedGc: GcFunction | undefined

function gcFunction (): GcFunction | undefined {
  if (exposedGc !== undefined) return exposedGc
  const global = (globalThis as { gc?: GcFunction }).gc
  if (typeof global === 'function') { exposedGc = global; return exposedGc }
  try {
    setFlagsFromString('--expose-gc')
    const fn = runInNewContext('gc') as unknown
    if (typeof fn === 'function') exposedGc = fn as GcFunction
  } catch {
    // a runtime that refuses the flag: no trims
  }
  return exposedGc
}

/** set one V8 flag now; false when the runtime refuses it */
function setFlag (flag: string): boolean {
  try {
    setFlagsFromString(flag)
    return true
  } catch {
    return false
  }
}

export class MemoryTrimmer {
  readonly #log: Logger
  readonly #onTrim: MemoryTrimmerComponents['onTrim']
  readonly #interval: number
  readonly #quiet: number
  readonly #slack: number
  readonly #minGap: number
  readonly #quietFor: number
  #lastBusy = -Infinity
  #timer: ReturnType<typeof setInterval> | undefined
  #baseline = 0
  #lastTrim = -Infinity
  #elu: EventLoopUtilization | undefined
  /** trims run, for tests and metrics */
  trims = 0

  constructor (components: MemoryTrimmerComponents, init: MemoryTrimmerInit = {}) {
    this.#log = components.logger
    this.#onTrim = components.onTrim
    this.#interval = init.interval ?? 5000
    this.#quiet = init.quietUtilization ?? 0.25
    this.#slack = init.slack ?? 32 * 2 ** 20
    this.#minGap = init.minGap ?? 60_000
    this.#quietFor = init.quietFor ?? 40_000
  }

  start (): void {
    if (this.#timer !== undefined) return
    this.#baseline = process.memoryUsage.rss()
    this.#elu = performance.eventLoopUtilization()
    this.#timer = setInterval(() => { this.check() }, this.#interval)
    this.#timer.unref()
  }

  stop (): void {
    clearInterval(this.#timer)
    this.#timer = undefined
  }

  /** One look: trims when a busy period is over and the resident memory grew past the slack. */
  check (now = performance.now()): boolean {
    const elu = performance.eventLoopUtilization(this.#elu)
    this.#elu = performance.eventLoopUtilization()
    if (elu.utilization >= this.#quiet) { this.#lastBusy = now; return false }
    if (this.#lastBusy <= this.#lastTrim || now - this.#lastBusy < this.#quietFor || now - this.#lastTrim < this.#minGap) return false
    if (process.memoryUsage.rss() - this.#baseline < this.#slack) return false
    return this.trim(now)
  }

  /** Runs one memory-reducing GC now. */
  trim (now = performance.now()): boolean {
    const gc = gcFunction()
    if (gc === undefined) return false
    const before = process.memoryUsage.rss()
    const started = performance.now()
    const compactAll = setFlag('--compact-on-every-full-gc')
    try {
      gc({ type: 'major', execution: 'sync', flavor: 'last-resort' })
    } finally {
      if (compactAll) setFlag('--no-compact-on-every-full-gc')
    }
    const reduceMs = performance.now() - started
    // heap limits by the usual heuristics again (see above)
    gc({ type: 'major', execution: 'sync' })
    const ms = performance.now() - started
    const after = process.memoryUsage.rss()
    const freedBytes = before - after
    this.#lastTrim = now
    this.#baseline = after
    this.trims++
    this.#log.info('memory given back after a burst', { freedMB: Math.round(freedBytes / 2 ** 20), rssMB: Math.round(after / 2 ** 20), gcMs: Math.round(ms), reduceMs: Math.round(reduceMs) })
    this.#onTrim?.({ freedBytes, ms })
    return true
  }
}
