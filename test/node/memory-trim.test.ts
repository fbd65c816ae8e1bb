// The memory trimmer gives back the pages a burst left in V8's pool (node/memory-trim.ts). Run in
// a child process of its own, so that the RSS figures are this burst's and not the test runner's.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const child = `
import { MemoryTrimmer } from ${JSON.stringify(fileURLToPath(new URL('../../node/memory-trim.ts', import.meta.url)))}
const lines = []
const logger = { info: (msg, f) => lines.push({ msg, ...f }), debug () {}, warn () {}, error () {}, child () { return logger } }
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))
// the event loop's utilisation is counted once the loop runs, not during the module's first run
await sleep(50)
const trimmer = new MemoryTrimmer({ logger }, { slack: 32 * 2 ** 20, quietFor: 200, minGap: 0 })
trimmer.start()
const quiet = trimmer.check()
// a burst: 300,000 objects that live long enough to be promoted, then die
let burst = []
for (let i = 0; i < 300000; i++) burst.push({ text: 'x'.repeat(60) + i, n: i })
for (let i = 0; i < 20; i++) { const young = []; for (let j = 0; j < 20000; j++) young.push({ j }) }
const peak = process.memoryUsage.rss()
burst = undefined
// garbage the heap must collect before the pages are free: one more round of allocation
for (let i = 0; i < 50; i++) { const young = []; for (let j = 0; j < 20000; j++) young.push({ j }) }
const busy = trimmer.check()
await sleep(400)
const trimmed = trimmer.check()
const after = process.memoryUsage.rss()
await sleep(400)
const again = trimmer.check()
trimmer.stop()
console.log(JSON.stringify({ quiet, busy, trimmed, again, peak, after, trims: trimmer.trims, lines }))
`

test('once a burst is over, a quiet node gives the freed pages back, once per busy period', () => {
  const out = spawnSync(process.execPath, ['--input-type=module', '-e', child], { encoding: 'utf8', timeout: 60_000 })
  assert.equal(out.status, 0, out.stderr)
  const r = JSON.parse(out.stdout.trim().split('\n').pop() ?? '{}') as { quiet: boolean, busy: boolean, trimmed: boolean, again: boolean, peak: number, after: number, trims: number, lines: Array<{ msg: string, freedMB: number, gcMs: number }> }
  assert.equal(r.quiet, false, 'nothing grew: no trim')
  assert.equal(r.busy, false, 'no trim while the loop is busy')
  assert.equal(r.trimmed, true, 'quiet after a burst that grew the resident memory past the slack')
  assert.equal(r.again, false, 'once per busy period')
  assert.equal(r.trims, 1)
  assert.ok(r.peak - r.after > 16 * 2 ** 20, `a trim gives back pages: peak ${r.peak} B, after ${r.after} B`)
  assert.equal(r.lines[0].msg, 'memory given back after a burst')
  assert.ok(r.lines[0].freedMB > 16)
})

test('no trim before the loop has been quiet long enough', () => {
  const busy = child.replace('quietFor: 200', 'quietFor: 60_000')
  const out = spawnSync(process.execPath, ['--input-type=module', '-e', busy], { encoding: 'utf8', timeout: 60_000 })
  assert.equal(out.status, 0, out.stderr)
  const r = JSON.parse(out.stdout.trim().split('\n').pop() ?? '{}') as { trimmed: boolean, trims: number }
  assert.equal(r.trimmed, false)
  assert.equal(r.trims, 0)
})

// What a trim leaves at 100,000 registrations (issue 9): a heap whose long-lived objects were
// allocated among a burst's garbage is compacted whole (V8's memory-reducing GC alone left 60-75 MB
// of mostly empty pages resident), and V8's heap limits are sane afterwards: the first busy seconds
// after a trim do not start with a full GC of the whole heap (a refresh burst right after the trim
// met one). Long-lived objects interleaved with garbage, a trim, then a burst that keeps a little.
const fragmented = `
import { MemoryTrimmer } from ${JSON.stringify(fileURLToPath(new URL('../../node/memory-trim.ts', import.meta.url)))}
import v8 from 'node:v8'
import { PerformanceObserver, constants } from 'node:perf_hooks'
const logger = { info () {}, debug () {}, warn () {}, error () {}, child () { return logger } }
const keep = new Map()
let junk = []
for (let i = 0; i < 150000; i++) {
  keep.set('sip:u' + i + '@x', { at: Date.now() + i, list: [i], text: String(i).repeat(3) })
  for (let j = 0; j < 20; j++) junk.push({ j, s: 't' + i + '-' + j, list: new Array(8).fill(i) })
  if (junk.length > 100000) junk = []
}
junk = undefined
const old = () => v8.getHeapSpaceStatistics().find(s => s.space_name === 'old_space')
const trimmer = new MemoryTrimmer({ logger })
trimmer.trim()
const { space_used_size: used, physical_space_size: resident } = old()
const majors = []
const obs = new PerformanceObserver((list) => { for (const e of list.getEntries()) if (e.detail.kind !== constants.NODE_PERFORMANCE_GC_MINOR) majors.push(e.detail.kind) })
obs.observe({ entryTypes: ['gc'] })
let sink = 0
for (let r = 0; r < 20; r++) {
  for (let i = r * 1000; i < r * 1000 + 1000; i++) {
    keep.set('sip:u' + i + '@x', { at: Date.now() + i, list: [i], text: String(i).repeat(3) })
    for (let j = 0; j < 40; j++) sink += { j, s: 't' + i + '-' + j, list: new Array(8).fill(i) }.list.length
  }
  await new Promise(resolve => setTimeout(resolve, 5))
}
await new Promise(resolve => setTimeout(resolve, 50))
obs.disconnect()
console.log(JSON.stringify({ used, resident, majors, size: keep.size, sink }))
`

test('a trim compacts the whole old space and leaves V8 heap limits that a burst right after does not hit', () => {
  const out = spawnSync(process.execPath, ['--input-type=module', '-e', fragmented], { encoding: 'utf8', timeout: 120_000 })
  assert.equal(out.status, 0, out.stderr)
  const r = JSON.parse(out.stdout.trim().split('\n').pop() ?? '{}') as { used: number, resident: number, majors: number[] }
  assert.ok(r.resident - r.used < 8 * 2 ** 20, `old space after the trim: ${(r.used / 2 ** 20).toFixed(1)} MB used, ${(r.resident / 2 ** 20).toFixed(1)} MB resident`)
  assert.deepEqual(r.majors, [], 'no full GC in the burst right after the trim')
})
