// New REGISTERs at one fixed rate against one `sipmesh start` node alone (issue 9): where a new
// AoR's CPU goes by thread, and how much it allocates, for before/after comparisons of the
// registrar and claim path. The ladder of bench-register.ts moves ±2,000/s with the machine's load;
// these figures move less:
//
//   CPU µs per REGISTER by thread, from /proc (`main`, the signing thread and V8's helpers among
//   the other `node` threads, `libuv` for the LevelDB writes), each round's users new;
//   young-generation GCs (scavenges) per round, from the node's own metrics: with a fixed young
//   generation (`--semi 16` runs the node with --max-semi-space-size=16; Node does not take
//   --min-semi-space-size from NODE_OPTIONS, so the first rounds after start may count fewer),
//   scavenges × the semi-space ≈ the bytes allocated (shown per REGISTER, approximate);
//   the batches: claims per signing batch and per claim batch (LevelDB), writes per durable-store
//   batch, from the node's counters (each batch has a fixed cost besides its items);
//   the REGISTERs answered, retransmissions and the rate achieved (a round with retransmissions
//   counts its retransmitted requests' parsing too: compare clean rounds).
//
// The node's pid is printed first, for `perf record -g -p <pid>` (with BENCH_NODE_OPTIONS=
// --perf-basic-prof for JS frames) or an inspector (BENCH_NODE_OPTIONS=--inspect=127.0.0.1:<port>).
// Bounded: `--rounds` rounds of `--seconds` (at most 10 × 60 s), after a warm-up of 3,000 users at
// 1,000/s; the node and SIPp are stopped at the end, on error too.
//
//   node scripts/bench-register-fixed.ts [--rate 3000] [--seconds 5] [--rounds 3] [--semi 16]
import { mkdtempSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { sippAvailable } from '../test/interop/sipp.ts'
import { threadTicks } from './lib/proc-stats.ts'
import { registerRun } from './lib/register-load.ts'
import { nodeMetrics, startSipmesh } from './lib/sipmesh-process.ts'

const { values } = parseArgs({
  options: {
    rate: { type: 'string', default: '3000' },
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' },
    semi: { type: 'string', default: '16' }
  }
})
const RATE = Math.min(Math.max(Math.round(Number(values.rate)), 10), 50_000)
const SECONDS = Math.min(Math.max(Number(values.seconds), 1), 60)
const ROUNDS = Math.min(Math.max(Math.round(Number(values.rounds)), 1), 10)
const SEMI_MB = Math.min(Math.max(Math.round(Number(values.semi)), 1), 256)
if (!sippAvailable()) {
  console.error('SIPp is not installed')
  process.exit(2)
}
const TICK_US = 10_000 // /proc's clock ticks (USER_HZ 100)
const SCAVENGES = 'nodejs_gc_duration_seconds_count{kind="minor"}'

process.env.BENCH_NODE_OPTIONS = [process.env.BENCH_NODE_OPTIONS ?? '', `--max-semi-space-size=${SEMI_MB}`].join(' ').trim()
const dir = mkdtempSync(join(tmpdir(), 'sipmesh-bench-register-fixed-'))
const node = await startSipmesh({ dataDir: join(dir, 'node') })
console.log(`node pid ${node.pid}; ${RATE}/s new REGISTERs, ${ROUNDS} rounds of ${SECONDS} s, --max-semi-space-size=${SEMI_MB}`)
const group = (thread: string): string => thread.startsWith('libuv') ? 'libuv' : thread
try {
  await registerRun({ entries: [node.sip], prefix: 'warm', rate: 1000, calls: 3000, cseq: 1, pids: [node.pid], dir })
  for (let r = 0; r < ROUNDS; r++) {
    const m0 = await nodeMetrics(node)
    const t0 = threadTicks(node.pid)
    const s = await registerRun({ entries: [node.sip], prefix: `r${r}u`, rate: RATE, calls: Math.round(RATE * SECONDS), cseq: 1, pids: [node.pid], dir })
    const t1 = threadTicks(node.pid)
    const m1 = await nodeMetrics(node)
    const by = new Map<string, number>()
    for (const [thread, ticks] of t1 ?? []) by.set(group(thread), (by.get(group(thread)) ?? 0) + ticks - (t0?.get(thread) ?? 0))
    const per = (ticks: number): string => (ticks * TICK_US / Math.max(s.ok, 1)).toFixed(0)
    const threads = [...by].filter(([, t]) => t > 0).map(([name, t]) => `${name} ${per(t)}`).join(', ')
    const total = [...by.values()].reduce((a, b) => a + b, 0)
    const scavenges = (m1.get(SCAVENGES) ?? 0) - (m0.get(SCAVENGES) ?? 0)
    const delta = (name: string): number => (m1.get(name) ?? 0) - (m0.get(name) ?? 0)
    const perBatch = (items: string, batches: string): string => (delta(items) / Math.max(delta(batches), 1)).toFixed(1)
    console.log(`round ${r}: ok ${s.ok}/${s.sent}, failed ${s.failed}, retransmissions ${s.retrans} (${(100 * s.retrans / s.sent).toFixed(2)}%), achieved ${s.achieved.toFixed(0)}/s; ` +
      `CPU µs per REGISTER ${per(total)} (${threads}); scavenges ${scavenges} (≈ ${(scavenges * SEMI_MB * 1_048_576 / Math.max(s.ok, 1) / 1000).toFixed(1)} KB per REGISTER); ` +
      `claims per signing batch ${perBatch('sipmesh_registry_claims_total', 'sipmesh_registry_signing_batches_total')}, per claim batch ${perBatch('sipmesh_registry_claims_total', 'sipmesh_registry_write_batches_total')}, writes per store batch ${perBatch('sipmesh_store_writes_total', 'sipmesh_store_batches_total')}; load ${loadavg()[0].toFixed(2)}`)
  }
} finally {
  await node.stop()
  rmSync(dir, { recursive: true, force: true })
}
