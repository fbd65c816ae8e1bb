/**
 * Where a registering node's memory goes (issue 9: ≤ 2 KB of RSS per registration at 100,000):
 * one real `sipmesh start` node alone, `--users` distinct users REGISTERed by SIPp at `--rate`/s,
 * then settled (no server transaction left: timer J), the node told to trim (SIGUSR2, the
 * memory-reducing GC of node/memory-trim.ts), and its memory broken down, before and after:
 *
 * - RSS (VmRSS) and its parts from /proc/<pid>/smaps: the brk heap, anonymous mappings (V8's pages,
 *   glibc's malloc arenas of the other threads, thread stacks), files (code of node and its libraries)
 * - V8: heap used and committed per space, code, external and array buffers, malloced memory
 *   (read in the node by scripts/lib/heap-report-preload.mjs on SIGWINCH)
 * - the rest: RSS less V8's resident heap: malloc (LevelDB, whose own figure is shown, libuv,
 *   OpenSSL, Node's own), stacks, code
 *
 *   node scripts/bench-memory.ts [--users 100000] [--rate 2500] [--snapshot <file>] [--refresh <rate>]
 *        [--malloc-trim] [--max-seconds 400]
 *
 * `--snapshot`: a heap snapshot of the node after the registrations (big: ~100 MB; open it in
 * Chrome's DevTools or summarise it with scripts/heap-snapshot-top.ts). `--refresh`: after the
 * reading, the same users refreshed at that rate, and the node's GC trace (V8's --trace-gc) and
 * event-loop warnings over it: the first refresh burst after a trim (the stall of issue 9).
 * `--malloc-trim`: after the reading, glibc's malloc_trim(0) called in the node through gdb (when
 * installed) and the RSS read again: how much of the rest is free memory malloc kept resident.
 * HEAP_REPORT_TRACE_GC="--trace-gc" sets V8 flags in the node at start (NODE_OPTIONS refuses --trace-gc);
 * BENCH_NODE_OPTIONS (V8 flags), BENCH_NODE_ARGS (sipmesh flags) and BENCH_NODE_OUT (the node's log)
 * work as in the other benchmarks. Bounded by --max-seconds; stops the node it started.
 */
import { mkdtempSync, readFileSync, rmSync, existsSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { spawnSync } from 'node:child_process'
import { sippAvailable } from '../test/interop/sipp.ts'
import { waitFor } from '../test/e2e/fixtures/processes.ts'
import { registerRun, stepLine } from './lib/register-load.ts'
import { nodeMetrics, startSipmesh, type SipmeshProcess } from './lib/sipmesh-process.ts'

const { values } = parseArgs({
  options: {
    users: { type: 'string', default: '100000' },
    rate: { type: 'string', default: '2500' },
    snapshot: { type: 'string' },
    refresh: { type: 'string' },
    'malloc-trim': { type: 'boolean', default: false },
    'max-seconds': { type: 'string', default: '400' }
  }
})
const USERS = Number(values.users)
const RATE = Number(values.rate)
const deadline = performance.now() + Number(values['max-seconds']) * 1000

if (!sippAvailable()) {
  console.error('bench-memory: SIPp is not installed')
  process.exit(1)
}

interface Report {
  memoryUsage: NodeJS.MemoryUsage
  heap: Record<string, number>
  spaces: Array<{ space_name: string, space_size: number, space_used_size: number, space_available_size: number, physical_space_size: number }>
  code: Record<string, number>
}

interface Reading {
  rss: number
  /** LevelDB's memtables and block cache (the node's sipmesh_datastore_memory_bytes) */
  leveldb: number
  smaps: Map<string, number>
  report: Report
}

const MB = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MB`

/** resident kB of each kind of mapping of /proc/<pid>/smaps */
function smapsByKind (pid: number): Map<string, number> {
  const out = new Map<string, number>()
  let kind = ''
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line)
    if (head !== null) {
      const [, perms, path] = head
      const range = line.slice(0, line.indexOf(' ')).split('-').map(h => parseInt(h, 16))
      const size = range[1] - range[0]
      if (path === '[heap]') kind = 'brk heap (main thread malloc)'
      else if (path.startsWith('[stack')) kind = 'main stack'
      else if (path.startsWith('[')) kind = 'other [special]'
      else if (path !== '') kind = perms.includes('x') ? 'file code' : 'file data'
      else if (perms.includes('x')) kind = 'anon executable (V8 code)'
      // glibc's arenas are reserved 64 MiB at a time (HEAP_MAX_SIZE); V8 reserves its own regions
      else if (size === 64 * 2 ** 20 || (size < 64 * 2 ** 20 && size > 8 * 2 ** 20 && size % (2 ** 20) !== 0)) kind = 'anon ~64 MiB (malloc arena?)'
      else kind = 'anon other (V8 pages, thread stacks, big mallocs)'
      continue
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line)
    if (rss !== null) out.set(kind, (out.get(kind) ?? 0) + Number(rss[1]) * 1024)
  }
  return out
}

async function read (node: SipmeshProcess, file: string, snapshot?: string): Promise<Reading> {
  rmSync(file, { force: true })
  if (snapshot !== undefined) writeFileSync(`${file}.snapshot`, snapshot)
  process.kill(node.pid, 'SIGWINCH')
  await waitFor(() => existsSync(file), snapshot === undefined ? 10_000 : 120_000, 'the node to report its heap')
  await new Promise(resolve => setTimeout(resolve, 200))
  const report = JSON.parse(readFileSync(file, 'utf8')) as Report
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${node.pid}/status`, 'utf8'))
  const leveldb = (await nodeMetrics(node)).get('sipmesh_datastore_memory_bytes') ?? 0
  return { rss: Number(m?.[1] ?? 0) * 1024, leveldb, smaps: smapsByKind(node.pid), report }
}

function print (before: Reading, after: Reading, n: number): void {
  const row = (what: string, a: number, b: number): void => {
    console.log(`  ${what.padEnd(52)} ${MB(a).padStart(10)} → ${MB(b).padStart(10)}  ${String(Math.round((b - a) / n)).padStart(6)} B/reg`)
  }
  row('RSS', before.rss, after.rss)
  const kinds = new Set([...before.smaps.keys(), ...after.smaps.keys()])
  for (const k of [...kinds].sort()) row(`  smaps: ${k}`, before.smaps.get(k) ?? 0, after.smaps.get(k) ?? 0)
  const h0 = before.report.heap
  const h1 = after.report.heap
  row('V8 heap used', h0.used_heap_size, h1.used_heap_size)
  row('V8 heap committed (total_heap_size)', h0.total_heap_size, h1.total_heap_size)
  row('V8 heap resident (total_physical_size)', h0.total_physical_size, h1.total_physical_size)
  row('V8 malloced memory', h0.malloced_memory, h1.malloced_memory)
  row('V8 external memory', h0.external_memory ?? before.report.memoryUsage.external, h1.external_memory ?? after.report.memoryUsage.external)
  row('Node arrayBuffers', before.report.memoryUsage.arrayBuffers, after.report.memoryUsage.arrayBuffers)
  for (const s1 of after.report.spaces) {
    const s0 = before.report.spaces.find(s => s.space_name === s1.space_name)
    row(`  ${s1.space_name} used`, s0?.space_used_size ?? 0, s1.space_used_size)
    row(`  ${s1.space_name} resident`, s0?.physical_space_size ?? 0, s1.physical_space_size)
  }
  row('rest: RSS - V8 heap resident', before.rss - h0.total_physical_size, after.rss - h1.total_physical_size)
  row('  of which LevelDB (approximate-memory-usage)', before.leveldb, after.leveldb)
  console.log(`  heap limit ${MB(h1.heap_size_limit)}, V8 code+metadata ${MB(after.report.code.code_and_metadata_size)}`)
}

const work = mkdtempSync(join(tmpdir(), 'bench-memory-'))
const file = join(work, 'heap-report.json')
process.env.HEAP_REPORT_FILE = file
const preload = fileURLToPath(new URL('./lib/heap-report-preload.mjs', import.meta.url))
process.env.BENCH_NODE_OPTIONS = `--import ${preload} ${process.env.BENCH_NODE_OPTIONS ?? ''}`.trim()
let node: SipmeshProcess | undefined
const stopAll = async (): Promise<void> => { await node?.stop(); node = undefined }
process.once('SIGINT', () => { void stopAll().finally(() => { rmSync(work, { recursive: true, force: true }); process.exit(130) }) })

const trims = async (n: SipmeshProcess): Promise<number> => (await nodeMetrics(n)).get('sipmesh_memory_trims_total') ?? 0
/** no server transaction left, then a trim (SIGUSR2) */
async function settle (n: SipmeshProcess): Promise<void> {
  const ms = Math.max(1000, Math.min(90_000, deadline - performance.now() - 20_000))
  await waitFor(async () => (await nodeMetrics(n)).get('sipmesh_sip_server_transactions') === 0, ms, 'server transactions to finish')
  const t0 = await trims(n)
  process.kill(n.pid, 'SIGUSR2')
  await waitFor(async () => (await trims(n)) > t0, 30_000, 'the node to trim')
}

try {
  console.log(`bench-memory: ${USERS} users at ${RATE}/s; load average ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
  node = await startSipmesh({ dataDir: join(work, 'node') })
  // a few registrations first (JIT, caches, the LevelDB's first files), then the baseline
  await registerRun({ entries: [node.sip], prefix: 'w-', rate: 100, calls: 200, cseq: 1, pids: [node.pid], dir: work })
  await settle(node)
  const before = await read(node, file)
  const bulk = await registerRun({ entries: [node.sip], prefix: 'p-', rate: RATE, calls: USERS, cseq: 1, pids: [node.pid], dir: work })
  console.log(stepLine('bulk', bulk))
  await settle(node)
  const after = await read(node, file, values.snapshot)
  console.log(`\nsettled and trimmed, ${bulk.ok} registrations; load average ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
  for (const line of node.proc.lines) if (line.includes('memory given back')) console.log(`  node: ${line.slice(0, 300)}`)
  print(before, after, Math.max(1, bulk.ok))
  if (values.snapshot !== undefined) console.log(`  heap snapshot: ${values.snapshot}`)
  if (values['malloc-trim']) {
    // malloc_info first (its XML goes to the node's stdout: free and total per arena), then the trim
    const from = node.proc.lines.length
    const gdb = spawnSync('gdb', ['-p', String(node.pid), '-batch', '-ex', 'call (int) malloc_info(0, (void *) stdout)', '-ex', 'call (int) fflush((void *) 0)',
      '-ex', 'call (int) malloc_trim(0)'], { encoding: 'utf8', timeout: 60_000 })
    await new Promise(resolve => setTimeout(resolve, 500))
    for (const line of node.proc.lines.slice(from)) if (/<heap nr|<total type="(fast|rest)"|<system type="current"|<aspace type="total"|<total type="mmap"|<\/heap>/.test(line)) console.log(`  malloc_info: ${line.trim()}`)
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${node.pid}/status`, 'utf8'))
    const rss = Number(m?.[1] ?? 0) * 1024
    if (gdb.status !== 0) console.log(`  malloc_trim through gdb failed: ${(gdb.stderr ?? '').slice(0, 200)}`)
    else console.log(`  after malloc_trim(0) (gdb): RSS ${MB(rss)}, ${Math.round((rss - before.rss) / Math.max(1, bulk.ok))} B/reg (${MB(after.rss - rss)} of free memory glibc kept resident)`)
  }
  if (values.refresh !== undefined) {
    const from = node.proc.lines.length
    const refresh = await registerRun({ entries: [node.sip], prefix: 'p-', rate: Number(values.refresh), calls: Math.min(bulk.ok, Number(values.refresh) * 3), cseq: 2, pids: [node.pid], dir: work })
    console.log(`\n${stepLine('refresh', refresh)}`)
    for (const line of node.proc.lines.slice(from)) if (/"level":"(warn|error)"|Mark-Compact|Scavenge|memory given back/.test(line)) console.log(`  node: ${line.slice(0, 300)}`)
  }
} finally {
  await stopAll()
  rmSync(work, { recursive: true, force: true })
}
