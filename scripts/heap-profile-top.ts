// Where a process allocates: the functions with the most bytes allocated in a V8 sampling heap
// profile (`.heapprofile`, from scripts/lib/relay-trace.ts with RELAY_TRACE_ALLOC=1, which keeps
// the samples of collected objects too, or from `node --heap-prof`), and the bytes grouped by
// where the code lives.
//
//   node scripts/heap-profile-top.ts <file.heapprofile> [--top 30] [--per N] [--owner] [--stacks RE]
//     --per N:     also the bytes per N, for example the messages relayed while sampling
//     --owner:     also the bytes charged to the nearest caller of our own code (sip-gateway/,
//                  node/, dht/, scripts/): what native and node: internals allocate on whose behalf
//     --stacks RE: the heaviest call stacks (up to 8 frames of our own code, innermost first) of
//                  the functions whose "name file:line" matches the regular expression RE
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'

interface CallFrame { functionName: string, url: string, lineNumber: number }
interface HeapNode { callFrame: CallFrame, selfSize: number, children: HeapNode[] }

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '30' }, per: { type: 'string' }, owner: { type: 'boolean', default: false }, stacks: { type: 'string' } } })
if (positionals.length !== 1) {
  console.error('usage: node scripts/heap-profile-top.ts <file.heapprofile> [--top 30] [--per N] [--owner] [--stacks RE]')
  process.exit(2)
}
const profile = JSON.parse(readFileSync(positionals[0], 'utf8')) as { head: HeapNode }
const byFunction = new Map<string, number>()
const byPlace = new Map<string, number>()
const byOwner = new Map<string, number>()
const byStack = new Map<string, number>()
const stacksRe = values.stacks === undefined ? undefined : new RegExp(values.stacks)
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

function label (f: CallFrame): string {
  const url = f.url.replace(/^file:\/\/.*?\/(node_modules|sip-gateway|node|dht|scripts)\//, '$1/')
  return `${f.functionName === '' ? '(anonymous)' : f.functionName} ${url}:${f.lineNumber + 1}`
}

/** code of this project (not native, not node: internals, not a dependency) */
function ours (f: CallFrame): boolean {
  return f.url !== '' && !f.url.startsWith('node:') && !f.url.includes('node_modules/')
}

// an explicit stack of (node, its ancestors): profiles of deep call trees overflow recursion
const stack: Array<[HeapNode, HeapNode[]]> = [[profile.head, []]]
while (stack.length > 0) {
  const [n, up] = stack.pop()!
  if (n.selfSize > 0) {
    const key = label(n.callFrame)
    byFunction.set(key, (byFunction.get(key) ?? 0) + n.selfSize)
    const p = place(n.callFrame.url)
    byPlace.set(p, (byPlace.get(p) ?? 0) + n.selfSize)
    total += n.selfSize
    if (values.owner) {
      let owner = ours(n.callFrame) ? n : undefined
      for (let i = up.length - 1; owner === undefined && i >= 0; i--) if (ours(up[i].callFrame)) owner = up[i]
      const k = owner === undefined ? '(no caller of ours)' : label(owner.callFrame)
      byOwner.set(k, (byOwner.get(k) ?? 0) + n.selfSize)
    }
    if (stacksRe?.test(key) === true) {
      const frames = [key]
      for (let i = up.length - 1; i >= 0 && frames.length < 8; i--) if (ours(up[i].callFrame)) frames.push(label(up[i].callFrame))
      const s = frames.join('\n      ← ')
      byStack.set(s, (byStack.get(s) ?? 0) + n.selfSize)
    }
  }
  const path = [...up, n]
  for (const c of n.children) stack.push([c, path])
}
const per = values.per === undefined ? undefined : Number(values.per)
const top = Number(values.top)
const show = (bytes: number): string => `${(bytes / 1e6).toFixed(1).padStart(8)} MB ${(100 * bytes / total).toFixed(1).padStart(5)}%${per === undefined ? '' : ` ${(bytes / per).toFixed(0).padStart(7)} B/each`}`
console.log(`${positionals[0]}: ${(total / 1e6).toFixed(1)} MB sampled${per === undefined ? '' : `, ${(total / per).toFixed(0)} B per each of ${per}`}\n`)
for (const [k, v] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${show(v)}  ${k}`)
console.log('\nby place:')
for (const [k, v] of [...byPlace].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`${show(v)}  ${k}`)
if (values.owner) {
  console.log('\nby the nearest caller of our own code:')
  for (const [k, v] of [...byOwner].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${show(v)}  ${k}`)
}
if (stacksRe !== undefined) {
  console.log(`\nheaviest stacks of ${String(stacksRe)}:`)
  for (const [k, v] of [...byStack].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${show(v)}  ${k}`)
}
