// Where a process allocates: the functions with the most bytes allocated in a V8 sampling heap
// profile (`.heapprofile`, from scripts/lib/relay-trace.ts with RELAY_TRACE_ALLOC=1, which keeps
// the samples of collected objects too, or from `node --heap-prof`), and the bytes grouped by
// where the code lives.
//
//   node scripts/heap-profile-top.ts <file.heapprofile> [--top 30] [--per N]   (--per: also the
//        bytes per N, for example the messages relayed while sampling)
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'

interface CallFrame { functionName: string, url: string, lineNumber: number }
interface HeapNode { callFrame: CallFrame, selfSize: number, children: HeapNode[] }

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '30' }, per: { type: 'string' } } })
if (positionals.length !== 1) {
  console.error('usage: node scripts/heap-profile-top.ts <file.heapprofile> [--top 30] [--per N]')
  process.exit(2)
}
const profile = JSON.parse(readFileSync(positionals[0], 'utf8')) as { head: HeapNode }
const byFunction = new Map<string, number>()
const byPlace = new Map<string, number>()
let total = 0

function place (url: string): string {
  if (url === '') return '(native)'
  if (url.startsWith('node:')) return 'node: internals'
  const nm = url.lastIndexOf('node_modules/')
  if (nm >= 0) {
    const rest = url.slice(nm + 13).split('/')
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]
  }
  const m = /\/(sip-gateway|node|dht|scripts)\/(?:([^/]+)\/)?/.exec(url)
  if (m === null) return url
  return m[2] === undefined || m[2].endsWith('.ts') ? `${m[1]}/${m[2] ?? ''}` : `${m[1]}/${m[2]}/`
}

// an explicit stack: profiles of deep call trees overflow recursion
const stack: HeapNode[] = [profile.head]
while (stack.length > 0) {
  const n = stack.pop()!
  if (n.selfSize > 0) {
    const url = n.callFrame.url.replace(/^file:\/\/.*?\/(node_modules|sip-gateway|node|dht|scripts)\//, '$1/')
    const key = `${n.callFrame.functionName === '' ? '(anonymous)' : n.callFrame.functionName} ${url}:${n.callFrame.lineNumber + 1}`
    byFunction.set(key, (byFunction.get(key) ?? 0) + n.selfSize)
    const p = place(n.callFrame.url)
    byPlace.set(p, (byPlace.get(p) ?? 0) + n.selfSize)
    total += n.selfSize
  }
  for (const c of n.children) stack.push(c)
}
const per = values.per === undefined ? undefined : Number(values.per)
const show = (bytes: number): string => `${(bytes / 1e6).toFixed(1).padStart(8)} MB ${(100 * bytes / total).toFixed(1).padStart(5)}%${per === undefined ? '' : ` ${(bytes / per).toFixed(0).padStart(7)} B/each`}`
console.log(`${positionals[0]}: ${(total / 1e6).toFixed(1)} MB sampled${per === undefined ? '' : `, ${(total / per).toFixed(0)} B per each of ${per}`}\n`)
for (const [k, v] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top))) console.log(`${show(v)}  ${k}`)
console.log('\nby place:')
for (const [k, v] of [...byPlace].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`${show(v)}  ${k}`)
