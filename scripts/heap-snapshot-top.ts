/**
 * Summarise a V8 heap snapshot (.heapsnapshot, e.g. from scripts/bench-memory.ts --snapshot):
 * self size and count by kind of object (constructor name for objects, V8's type otherwise:
 * strings, arrays, hidden arrays of Maps and Sets, code), biggest first; with `--per N`, bytes and
 * objects per N (per registration). With `--edges <name>`: what points at objects of that
 * constructor (by holder constructor and edge name), to tell who keeps them. With `--shapes`: plain
 * objects by their property names, strings by their text (digits as #).
 *
 *   node --max-old-space-size=4096 scripts/heap-snapshot-top.ts <file> [--top 40] [--per 100000] [--edges <name>]
 */
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '40' }, per: { type: 'string' }, edges: { type: 'string' }, shapes: { type: 'boolean', default: false } } })
if (positionals.length !== 1) { console.error('usage: heap-snapshot-top.ts <file> [--top N] [--per N] [--edges name]'); process.exit(2) }
interface Snapshot {
  snapshot: { meta: { node_fields: string[], node_types: [string[], ...unknown[]], edge_fields: string[], edge_types: [string[], ...unknown[]] } }
  nodes: number[]
  edges: number[]
  strings: string[]
}
const snap = JSON.parse(readFileSync(positionals[0], 'utf8')) as Snapshot
const meta = snap.snapshot.meta
const NF = meta.node_fields.length
const EF = meta.edge_fields.length
const fType = meta.node_fields.indexOf('type')
const fName = meta.node_fields.indexOf('name')
const fSize = meta.node_fields.indexOf('self_size')
const fEdges = meta.node_fields.indexOf('edge_count')
const eType = meta.edge_fields.indexOf('type')
const eName = meta.edge_fields.indexOf('name_or_index')
const eTo = meta.edge_fields.indexOf('to_node')
const types = meta.node_types[0]
const edgeTypes = meta.edge_types[0]
const { nodes, edges, strings } = snap

const kindOf = (i: number): string => {
  const t = types[nodes[i + fType]]
  const name = strings[nodes[i + fName]]
  if (t === 'object' || t === 'closure') return t === 'closure' ? `closure ${name}` : name
  if (t === 'hidden' || t === 'array' || t === 'native' || t === 'code') return `(${t}) ${name.slice(0, 60)}`
  return `(${t})`
}

const byKind = new Map<string, { size: number, count: number }>()
let total = 0
for (let i = 0; i < nodes.length; i += NF) {
  const k = kindOf(i)
  const e = byKind.get(k) ?? { size: 0, count: 0 }
  e.size += nodes[i + fSize]
  e.count++
  total += nodes[i + fSize]
  byKind.set(k, e)
}
const per = values.per === undefined ? undefined : Number(values.per)
console.log(`total self size ${(total / 2 ** 20).toFixed(1)} MB in ${nodes.length / NF} objects${per === undefined ? '' : `: ${Math.round(total / per)} B per ${per === 1 ? 'one' : 'unit'} (÷ ${per})`}`)
for (const [k, e] of [...byKind].sort((a, b) => b[1].size - a[1].size).slice(0, Number(values.top))) {
  console.log(`${(e.size / 2 ** 20).toFixed(2).padStart(9)} MB ${String(e.count).padStart(9)} ${per === undefined ? '' : `${(e.size / per).toFixed(1).padStart(8)} B/u ${(e.count / per).toFixed(2).padStart(6)} obj/u `} ${k}`)
}

if (values.shapes === true) {
  // plain objects by their property names, strings by their text with digits as #
  const first = new Int32Array(nodes.length / NF)
  let e = 0
  for (let n = 0; n < nodes.length / NF; n++) { first[n] = e; e += nodes[n * NF + fEdges] * EF }
  const shapes = new Map<string, { size: number, count: number }>()
  const add = (k: string, size: number): void => { const x = shapes.get(k) ?? { size: 0, count: 0 }; x.size += size; x.count++; shapes.set(k, x) }
  for (let n = 0; n < nodes.length / NF; n++) {
    const i = n * NF
    const t = types[nodes[i + fType]]
    if (t === 'string' || t === 'concatenated string' || t === 'sliced string') { add(`${t} "${strings[nodes[i + fName]].slice(0, 40).replace(/[0-9]+/g, '#')}"`, nodes[i + fSize]); continue }
    if (t === 'array' && strings[nodes[i + fName]] === '(object elements)') {
      const end = first[n] + nodes[i + fEdges] * EF
      add(`(object elements) of ${(end - first[n]) / EF} edges, ${nodes[i + fSize]} B`, nodes[i + fSize])
      continue
    }
    if (t !== 'object' || strings[nodes[i + fName]] !== 'Object') continue
    const names: string[] = []
    const end = first[n] + nodes[i + fEdges] * EF
    for (let j = first[n]; j < end; j += EF) if (edgeTypes[edges[j + eType]] === 'property') names.push(String(strings[edges[j + eName]]))
    add(`Object {${names.join(',')}}`, nodes[i + fSize])
  }
  console.log('\nplain objects by shape, strings by text, element arrays by size:')
  for (const [k, x] of [...shapes].sort((a, b) => b[1].size - a[1].size).slice(0, Number(values.top))) console.log(`${(x.size / 2 ** 20).toFixed(2).padStart(9)} MB ${String(x.count).padStart(9)}  ${k.slice(0, 160)}`)
}

if (values.edges !== undefined) {
  // holders of objects of kind `--edges`: (holder kind, edge name) → count
  const first = new Int32Array(nodes.length / NF)
  let e = 0
  for (let n = 0; n < nodes.length / NF; n++) { first[n] = e; e += nodes[n * NF + fEdges] * EF }
  const holders = new Map<string, number>()
  for (let n = 0; n < nodes.length / NF; n++) {
    const from = kindOf(n * NF)
    const end = first[n] + nodes[n * NF + fEdges] * EF
    for (let j = first[n]; j < end; j += EF) {
      const to = edges[j + eTo]
      if (kindOf(to) !== values.edges) continue
      const et = edgeTypes[edges[j + eType]]
      const name = et === 'element' || et === 'hidden' ? `[${et}]` : String(strings[edges[j + eName]])
      const key = `${from} .${name}`
      holders.set(key, (holders.get(key) ?? 0) + 1)
    }
  }
  console.log(`\nholders of ${values.edges}:`)
  for (const [k, c] of [...holders].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top))) console.log(`${String(c).padStart(9)}  ${k}`)
}
