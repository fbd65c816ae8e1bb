// Loaded into a benchmark's node with NODE_OPTIONS="--import <this file>" (scripts/bench-memory.ts):
// on SIGWINCH the main thread writes what V8 and Node know of its memory to
// $HEAP_REPORT_FILE (JSON: process.memoryUsage, v8.getHeapStatistics, v8.getHeapSpaceStatistics),
// and when the file $HEAP_REPORT_FILE.snapshot exists, a heap snapshot to the path it holds
// first. A benchmark's tool, not the node's.
import { isMainThread } from 'node:worker_threads'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import v8 from 'node:v8'

// HEAP_REPORT_TRACE_GC=<flags>: V8 flags set at start (e.g. `--trace-gc`, which NODE_OPTIONS refuses)
if (isMainThread && (process.env.HEAP_REPORT_TRACE_GC ?? '') !== '') v8.setFlagsFromString(process.env.HEAP_REPORT_TRACE_GC)

const file = process.env.HEAP_REPORT_FILE
if (isMainThread && file !== undefined && file !== '') {
  process.on('SIGWINCH', () => {
    let snapshot
    try { snapshot = readFileSync(`${file}.snapshot`, 'utf8').trim(); rmSync(`${file}.snapshot`) } catch { /* no snapshot asked */ }
    const report = {
      memoryUsage: process.memoryUsage(),
      heap: v8.getHeapStatistics(),
      spaces: v8.getHeapSpaceStatistics(),
      code: v8.getHeapCodeStatistics()
    }
    if (snapshot !== undefined && snapshot !== '') v8.writeHeapSnapshot(snapshot)
    writeFileSync(file, JSON.stringify(report))
  })
}
