// The latency breakdown of cross-node MESSAGEs from the traces `BENCH_TRACE=<dir>` makes
// (scripts/lib/relay-trace.ts, one file per node process): per Call-ID, the time between the
// edges of the two nodes, as percentiles, and for the slowest 1% which segment took the time;
// beside it each process's GC pauses and event-loop delay over the same window.
//
//   node scripts/relay-trace-report.ts <dir> [--from-last S]   (only the last S seconds of
//        messages: the measured step after the warm-up; default 10)
//
// Segments (A: the node the UAC sends to, B: the node of the UAS):
//   a-req   A: datagram in → handed to the peer channel (parse, transaction, route)
//   mesh    A's channel send → B's channel deliver (per-turn batch, yamux, Noise, TCP, B's read)
//   b-req   B: delivered → datagram out to the UAS
//   uas     B: MESSAGE out → 200 in (the UAS, the kernel, B's loop reaching the datagram)
//   b-resp  B: 200 in → handed to the peer channel
//   mesh2   B's channel send → A's channel deliver
//   a-resp  A: delivered → 200 out to the UAC
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

const { values, positionals } = parseArgs({ allowPositionals: true, options: { 'from-last': { type: 'string', default: '10' } } })
if (positionals.length !== 1) {
  console.error('usage: node scripts/relay-trace-report.ts <dir> [--from-last S]')
  process.exit(2)
}
type Event = [string, number, string, string, number]
interface Trace { pid: number, events: Event[], gc: Array<[number, number, number]>, loop: Array<[number, number, number, number?]> }
const traces: Trace[] = readdirSync(positionals[0]).filter(f => /^trace-\d+\.json$/.test(f)).map(f => JSON.parse(readFileSync(join(positionals[0], f), 'utf8')) as Trace)

// a pair of processes of one phase: A received MESSAGEs by UDP and sent them to the mesh
const isA = (t: Trace): boolean => t.events.some(e => e[0] === 'udp-in' && e[3] === 'MESSAGE')
const isB = (t: Trace): boolean => t.events.some(e => e[0] === 'mesh-in' && e[3] === 'MESSAGE')
const as = traces.filter(isA).sort((x, y) => (x.events[0]?.[1] ?? 0) - (y.events[0]?.[1] ?? 0))
const bs = traces.filter(isB)
if (as.length === 0 || bs.length === 0) {
  console.error('no pair of A and B traces found')
  process.exit(1)
}
// the last A (the latency phase) and the B that saw its Call-IDs
const a = as[as.length - 1]
const firstCall = a.events.find(e => e[3] === 'MESSAGE')![2]
const b = bs.find(t => t.events.some(e => e[2] === firstCall)) ?? bs[bs.length - 1]

/** Call-ID → edge key → first time */
function index (t: Trace): Map<string, Map<string, number>> {
  const m = new Map<string, Map<string, number>>()
  for (const [edge, time, callId, first, status] of t.events) {
    if (first !== 'MESSAGE' && status !== 200) continue
    const key = `${edge}:${first === 'MESSAGE' ? 'req' : 'resp'}`
    let e = m.get(callId)
    if (e === undefined) { e = new Map(); m.set(callId, e) }
    if (!e.has(key)) e.set(key, time)
  }
  return m
}
const ia = index(a)
const ib = index(b)
const SEGMENTS: Array<[string, (x: Map<string, number>, y: Map<string, number>) => number | undefined]> = [
  ['a-req', (x) => d(x.get('udp-in:req'), x.get('mesh-out:req'))],
  ['mesh', (x, y) => d(x.get('mesh-out:req'), y.get('mesh-in:req'))],
  ['b-req', (_x, y) => d(y.get('mesh-in:req'), y.get('udp-out:req'))],
  ['uas', (_x, y) => d(y.get('udp-out:req'), y.get('udp-in:resp'))],
  ['b-resp', (_x, y) => d(y.get('udp-in:resp'), y.get('mesh-out:resp'))],
  ['mesh2', (x, y) => d(y.get('mesh-out:resp'), x.get('mesh-in:resp'))],
  ['a-resp', (x) => d(x.get('mesh-in:resp'), x.get('udp-out:resp'))],
  ['total', (x) => d(x.get('udp-in:req'), x.get('udp-out:resp'))]
]
function d (from: number | undefined, to: number | undefined): number | undefined {
  return from === undefined || to === undefined ? undefined : to - from
}
const rows: Array<{ start: number, seg: number[] }> = []
for (const [callId, x] of ia) {
  const y = ib.get(callId)
  const start = x.get('udp-in:req')
  if (y === undefined || start === undefined) continue
  const seg = SEGMENTS.map(([, f]) => f(x, y))
  if (seg.some(v => v === undefined)) continue
  rows.push({ start, seg: seg as number[] })
}
rows.sort((p, q) => p.start - q.start)
const end = rows.at(-1)?.start ?? 0
const from = end - Number(values['from-last']) * 1000
const window = rows.filter(r => r.start >= from)
const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((u, v) => u - v)
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]
}
const f2 = (x: number): string => x.toFixed(2).padStart(8)
console.log(`${window.length} MESSAGEs (of ${rows.length} matched) in the last ${values['from-last']} s; A pid ${a.pid}, B pid ${b.pid}`)
console.log(`segment      p50      p90      p99     p99.9     max   (ms)`)
SEGMENTS.forEach(([name], i) => {
  const xs = window.map(r => r.seg[i])
  console.log(`${name.padEnd(8)} ${f2(pct(xs, 0.5))} ${f2(pct(xs, 0.9))} ${f2(pct(xs, 0.99))} ${f2(pct(xs, 0.999))} ${f2(Math.max(...xs))}`)
})
// the slowest 1% by total: the mean of each segment over them
const total = SEGMENTS.length - 1
const slow = [...window].sort((p, q) => q.seg[total] - p.seg[total]).slice(0, Math.max(1, Math.round(window.length / 100)))
console.log(`\nthe slowest 1% (${slow.length}), mean per segment (ms): ` + SEGMENTS.map(([name], i) => `${name} ${(slow.reduce((s, r) => s + r.seg[i], 0) / slow.length).toFixed(1)}`).join(', '))
// when they happened: clusters of slow messages, by 100 ms bucket
const buckets = new Map<number, number>()
for (const r of slow) { const k = Math.floor((r.start - from) / 100); buckets.set(k, (buckets.get(k) ?? 0) + 1) }
console.log('slow messages per 100 ms window (s from window start: count): ' + [...buckets].sort((p, q) => p[0] - q[0]).map(([k, c]) => `${(k / 10).toFixed(1)}: ${c}`).join(', '))
for (const [name, t] of [['A', a], ['B', b]] as const) {
  const gcs = t.gc.filter(g => g[0] >= from - 1000 && g[0] <= end + 5000)
  const byKind = new Map<number, number[]>()
  for (const g of gcs) byKind.set(g[2], [...(byKind.get(g[2]) ?? []), g[1]])
  const kinds: Record<number, string> = { 1: 'minor', 4: 'major', 8: 'incremental', 16: 'weakcb' }
  console.log(`\n${name}: GC in the window: ` + [...byKind].map(([k, ds]) => `${kinds[k] ?? k} ×${ds.length} (sum ${ds.reduce((s, x) => s + x, 0).toFixed(0)} ms, max ${Math.max(...ds).toFixed(1)} ms)`).join(', '))
  const loops = t.loop.filter(l => l[0] >= from && l[0] <= end + 1000)
  console.log(`${name}: event-loop delay per second, max/p99 ms: ` + loops.map(l => `${l[1].toFixed(0)}/${l[2].toFixed(0)}`).join(' '))
  if (loops.some(l => (l[3] ?? -1) >= 0)) console.log(`${name}: main thread waiting for a CPU, ms per second: ` + loops.map(l => (l[3] ?? -1).toFixed(0)).join(' '))
  // the GC pauses that overlap the slowest messages
  const hit = gcs.filter(g => g[1] > 5)
  if (hit.length > 0) console.log(`${name}: GC pauses over 5 ms at (s from window start): ` + hit.map(g => `${((g[0] - from) / 1000).toFixed(2)} (${g[1].toFixed(0)} ms)`).join(', '))
}
