// What the young generation copied and promoted, per node process: a summary of V8's
// `--trace-gc-nvp` lines (one line per GC, `name=value` pairs), as the benchmarks' node processes
// write them with `BENCH_NODE_FLAGS=--trace-gc-nvp BENCH_NODE_OUT=<path>` (one file per node,
// `<path>.<index>`), or any process run with the flag.
//
// Per file, the main isolate only (the one with the most GCs; worker threads have their own):
// scavenges, their pauses (sum, p50, max), the bytes that survived them (copied within the young
// generation or promoted to the old one: V8's `new_space_survived` and `promoted`), and the mark-compacts with their pauses. Survived bytes
// are the scavenger's work, what makes a pause long, and (unlike the pause) a machine's load does
// not move them; `--per N` divides them by N (the messages the process relayed).
//
//   node scripts/gc-trace-summary.ts <file>... [--per N] [--last S]   (only the GCs of the last S
//        seconds of each file: the measured step of a fixed-rate run)
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'

const { values, positionals } = parseArgs({ allowPositionals: true, options: { per: { type: 'string' }, last: { type: 'string' } } })
if (positionals.length === 0) {
  console.error('usage: node scripts/gc-trace-summary.ts <file>... [--per N] [--last S]')
  process.exit(2)
}
const PER = values.per === undefined ? undefined : Math.max(1, Number(values.per))
const LAST_MS = values.last === undefined ? undefined : Math.max(0, Number(values.last)) * 1000

/** `[pid:isolate]   12345 ms: pause=1.2 … gc=s …` → isolate, time and the name=value pairs */
const LINE = /^\[\d+:(0x[0-9a-f]+)\]\s+(\d+) ms: (.*)$/
const pct = (xs: number[], p: number): number => xs.length === 0 ? 0 : [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]
const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`

for (const file of positionals) {
  const byIsolate = new Map<string, Array<{ at: number, f: Map<string, string> }>>()
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = LINE.exec(line)
    if (m === null || !m[3].includes('pause=')) continue
    const f = new Map<string, string>()
    for (const kv of m[3].split(/\s+/)) {
      const eq = kv.indexOf('=')
      if (eq > 0) f.set(kv.slice(0, eq), kv.slice(eq + 1))
    }
    let list = byIsolate.get(m[1])
    if (list === undefined) byIsolate.set(m[1], list = [])
    list.push({ at: Number(m[2]), f })
  }
  const main = [...byIsolate.values()].sort((a, b) => b.length - a.length)[0]
  if (main === undefined) { console.log(`${file}: no --trace-gc-nvp lines`); continue }
  const end = main[main.length - 1].at
  const gcs = LAST_MS === undefined ? main : main.filter(g => g.at >= end - LAST_MS)
  const num = (g: { f: Map<string, string> }, k: string): number => Number(g.f.get(k) ?? 0)
  const scavenges = gcs.filter(g => g.f.get('gc') === 's')
  const majors = gcs.filter(g => g.f.get('gc') === 'mc' || g.f.get('gc') === 'ms')
  const pauses = scavenges.map(g => num(g, 'pause'))
  const survived = scavenges.reduce((s, g) => s + num(g, 'new_space_survived'), 0)
  const promoted = scavenges.reduce((s, g) => s + num(g, 'promoted'), 0)
  const per = PER === undefined ? '' : ` (${(survived / PER).toFixed(0)} B survived, ${(promoted / PER).toFixed(0)} B promoted per message)`
  console.log(`${file}: ${scavenges.length} scavenges, pauses ${pauses.reduce((s, p) => s + p, 0).toFixed(0)} ms (p50 ${pct(pauses, 0.5).toFixed(1)}, max ${pct(pauses, 1).toFixed(1)} ms); ` +
    `survived ${mb(survived)} (V8's new_space_survived), promoted ${mb(promoted)}${per}; ${majors.length} mark-compacts, pauses ${majors.reduce((s, g) => s + num(g, 'pause'), 0).toFixed(0)} ms`)
}
