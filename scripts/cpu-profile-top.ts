// Where a V8 CPU profile (`node --cpu-prof`, BENCH_CPU_PROF=<dir> of the benchmarks) spends its
// time: the functions with the most self time, and self time grouped by where the code lives
// (a package under node_modules, a folder of ours, Node's internals, GC, idle).
//
//   node scripts/cpu-profile-top.ts <file.cpuprofile> [--top 25] [--json]
//        [--from S] [--to S]   only the samples between S seconds after the profile started and S'
//        (e.g. the saturated step of a ladder); shares are of all sampled time and of the busy
//        (non-idle) time
//        [--inclusive]   also the functions with the most total time (self time plus callees':
//        a sample counts once for each function on its stack), e.g. how much a libp2p call costs
//        with everything it calls
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'

interface CallFrame { functionName: string, url: string, lineNumber: number, columnNumber: number }
interface ProfileNode { id: number, callFrame: CallFrame, hitCount?: number, children?: number[] }
interface Profile { nodes: ProfileNode[], startTime: number, endTime: number, samples?: number[], timeDeltas?: number[] }

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' }, json: { type: 'boolean', default: false }, from: { type: 'string', default: '0' }, to: { type: 'string', default: 'Infinity' }, inclusive: { type: 'boolean', default: false } } })
if (positionals.length !== 1) {
  console.error('usage: node scripts/cpu-profile-top.ts <file.cpuprofile> [--top 25] [--json]')
  process.exit(2)
}
const profile = JSON.parse(readFileSync(positionals[0], 'utf8')) as Profile

/** microseconds of self time per profile node: each sample's time delta goes to the node it hit */
const selfUs = new Map<number, number>()
const samples = profile.samples ?? []
const deltas = profile.timeDeltas ?? []
const fromUs = Number(values.from) * 1e6
const toUs = Number(values.to) * 1e6
let at = 0
for (let i = 0; i < samples.length; i++) {
  // timeDeltas[i] is the time before sample i; the time of sample i is the next delta
  at += deltas[i] ?? 0
  if (at < fromUs || at > toUs) continue
  const us = deltas[i + 1] ?? 0
  selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + Math.max(0, us))
}
const total = [...selfUs.values()].reduce((a, b) => a + b, 0)
const idleIds = new Set(profile.nodes.filter(n => n.callFrame.functionName === '(idle)').map(n => n.id))
const busy = total - [...idleIds].reduce((sum, id) => sum + (selfUs.get(id) ?? 0), 0)

/** where a script lives: a package, a folder of ours, Node's internals, or V8's own (GC, idle) */
function place (cf: CallFrame): string {
  const url = cf.url
  if (url === '') return cf.functionName.startsWith('(') ? cf.functionName : '(native)'
  if (url.startsWith('node:')) return 'node: internals'
  const nm = url.lastIndexOf('/node_modules/')
  if (nm >= 0) {
    const rest = url.slice(nm + 14).split('/')
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]
  }
  const ours = /\/(sip-gateway|dht|node|scripts|test)\/([^/]+)/.exec(url)
  return ours === null ? url : `${ours[1]}/${ours[2].endsWith('.ts') ? ours[2] : ours[2] + '/'}`
}

/** a function's name and where it is defined */
function keyOf (cf: CallFrame): string {
  const file = cf.url === '' ? '' : ` ${cf.url.replace(/^file:\/\/.*?\/(node_modules|sip-gateway|dht|node|scripts)\//, '$1/')}:${cf.lineNumber + 1}`
  return `${cf.functionName === '' ? '(anonymous)' : cf.functionName}${file}`
}

const byFunction = new Map<string, { us: number, place: string }>()
const byPlace = new Map<string, number>()
for (const node of profile.nodes) {
  const us = selfUs.get(node.id) ?? 0
  if (us === 0) continue
  const cf = node.callFrame
  const key = keyOf(cf)
  const p = place(cf)
  const f = byFunction.get(key) ?? { us: 0, place: p }
  f.us += us
  byFunction.set(key, f)
  byPlace.set(p, (byPlace.get(p) ?? 0) + us)
}

/** total time per function: each node's self time added to every distinct function on its stack */
const inclusive = new Map<string, number>()
if (values.inclusive) {
  const parent = new Map<number, number>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const byId = new Map(profile.nodes.map(n => [n.id, n]))
  for (const [id, us] of selfUs) {
    if (idleIds.has(id)) continue
    const seen = new Set<string>()
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const k = keyOf(byId.get(at)!.callFrame)
      if (seen.has(k)) continue
      seen.add(k)
      inclusive.set(k, (inclusive.get(k) ?? 0) + us)
    }
  }
}

const top = Math.max(1, Number(values.top))
const pct = (us: number): string => `${(100 * us / Math.max(total, 1)).toFixed(1)}%`.padStart(6) + `${(100 * us / Math.max(busy, 1)).toFixed(1)}%`.padStart(7)
const functions = [...byFunction].sort((a, b) => b[1].us - a[1].us).slice(0, top)
const places = [...byPlace].sort((a, b) => b[1] - a[1]).slice(0, top)
if (values.json) {
  console.log(JSON.stringify({ totalMs: Math.round(total / 1000), busyMs: Math.round(busy / 1000), functions: functions.map(([k, v]) => ({ function: k, selfMs: Math.round(v.us / 1000), share: Number((v.us / total).toFixed(4)), busyShare: Number((v.us / busy).toFixed(4)) })), places: places.map(([k, v]) => ({ place: k, selfMs: Math.round(v / 1000), share: Number((v / total).toFixed(4)), busyShare: Number((v / busy).toFixed(4)) })) }))
} else {
  console.log(`${positionals[0]}: ${(total / 1e6).toFixed(1)} s sampled${fromUs > 0 || Number.isFinite(toUs) ? ` (from ${values.from} s to ${values.to} s)` : ''}, ${(busy / 1e6).toFixed(1)} s busy (not idle)`)
  console.log(`\ntop ${top} functions by self time (share of all sampled time, of busy time):`)
  for (const [k, v] of functions) console.log(`  ${k === '(idle)' ? pct(v.us).slice(0, 6) + ' '.repeat(7) : pct(v.us)} ${(v.us / 1000).toFixed(0).padStart(7)} ms  ${k}`)
  if (values.inclusive) {
    console.log(`\ntop ${top} functions by total time (self and callees; share of all sampled time, of busy time):`)
    for (const [k, us] of [...inclusive].filter(([k]) => !k.startsWith('(root)')).sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${pct(us)} ${(us / 1000).toFixed(0).padStart(7)} ms  ${k}`)
  }
  console.log('\nself time by place:')
  for (const [k, v] of places) console.log(`  ${k === '(idle)' ? pct(v).slice(0, 6) + ' '.repeat(7) : pct(v)} ${(v / 1000).toFixed(0).padStart(7)} ms  ${k}`)
}
