import { GCProfiler, getHeapStatistics } from 'node:v8'

/**
 * Bytes allocated on the V8 heap while `run` runs: what each GC found used less what the one
 * before left, plus the growth since the last GC (exact, unlike a sampling profile); `gcs`: how
 * many GCs ran meanwhile.
 */
export async function allocated<T> (run: () => Promise<T>): Promise<{ bytes: number, result: T, gcs: number }> {
  const profiler = new GCProfiler()
  const used0 = getHeapStatistics().used_heap_size
  profiler.start()
  const result = await run()
  const used1 = getHeapStatistics().used_heap_size
  const { statistics } = profiler.stop()
  let bytes = 0
  let after = used0
  for (const gc of statistics) {
    bytes += gc.beforeGC.heapStatistics.usedHeapSize - after
    after = gc.afterGC.heapStatistics.usedHeapSize
  }
  return { bytes: bytes + used1 - after, result, gcs: statistics.length }
}
