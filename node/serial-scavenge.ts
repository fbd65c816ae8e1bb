/**
 * V8's scavenges (young-generation GCs) on the main thread alone, for the node's process (issue
 * 11, the cross-node relay's tail at half rate).
 *
 * By default V8 runs a scavenge as a parallel job: the main thread stops, posts the copying work
 * to its platform's worker threads and joins them, and the pause ends only when every worker that
 * took a share has finished it. A node relaying a few thousand messages a second scavenges about 4
 * times a second with little to copy (0.1-0.4 MB: the messages in flight), and
 * shares its cores with the other node, SIPp, the other processes of the machine: a worker that
 * took a share is often waiting in the kernel's run queue, and the main thread waits for it.
 * `--trace-gc-nvp` shows the wait as the scavenge's time that none of its main-thread phases
 * account for (`scavenge` less `scavenge.roots`, `.parallel`, `.sweep_array_buffers`, …), with the
 * copying done by `background.scavenge.parallel` meanwhile. Measured on both nodes of
 * `bench-relay.ts --only cross --latency-rate 4000` (`--trace-gc-nvp`, the last 3.5 s of each
 * node, runs alternated with the default, 2026-12-07 22:04-22:38 UTC; the other sessions kept the
 * load average at 1-14, and runs whose SIPp p99 passed 200 ms, where the loop fell behind, left
 * out): that wait per scavenge p50 0.8-1.3 ms, p90 2.4-6.3, max 9-24 by default (4 sets of 2-4
 * runs); p50 0.2-0.3, p90 0.3-0.7, max 0.6-1.4 serial (3 sets of 1-4 runs). Scavenge pauses p50
 * 1.5 -> 0.9 ms at load 1.5-8 and 2.2 -> 2.1 ms at load 7-8 (the copying moves to the main
 * thread), the main thread's GC time 8-12 -> 4-10 ms a second, CPU per message unchanged
 * (157-163 µs both). SIPp's p99 did not tell them apart at that load: each node's main thread
 * waited 130-420 ms a second for a CPU, which dwarfs 4 scavenges of 1-2 ms. Nor in quieter
 * minutes with this build (22:47-22:51 UTC, load 1.4-4.1, 7 runs each, alternated): p99 12, 20,
 * 8, 60, 16, 156, 20 ms with `--parallel-scavenge`, 16, 8, 32, 508, 32, 24, 8 ms serial (≤ 8 ms
 * in 1 and 2 runs of 7); the wait p50/p90/max 0.8/3.3/29 -> 0.3/0.4/3.2 ms, pauses p50 1.6 -> 1.1
 * ms, main-thread GC 11 -> 8 ms a second.
 *
 * What it costs: a scavenge with much to copy takes longer on one thread. With 4.3 MB surviving
 * each scavenge (a synthetic churn, load ~10) pauses p50 9-28 ms parallel against 14-33 ms
 * serial. In the nodes of the quieter runs above the scavenges that copied over 2 MB (start-up and
 * the first second of load) did not get longer: p50 8.1 ms parallel, 7.5 serial (max 126 and 61
 * ms, about 190 of each); a relay keeps 0.1-0.4 MB per scavenge, a burst of new registrations
 * promotes more (not measured with this). `--single-threaded-gc` (no GC worker at all) removed the wait too but moved array-buffer
 * sweeping and marking onto the main thread: pauses p50 1.5-1.9 ms, mark-compacts up to 16 ms;
 * `--v8-pool-size=1` halved the wait (p90 1.3, max 5 ms); larger young generations
 * (`--min/max-semi-space-size` 16, 32, 64) made fewer but longer scavenges (p50 2.2, 2.9, 9.7 ms)
 * and no better p99; `--minor-ms` cost 177 against 163 µs per message.
 *
 * The flag is read at each scavenge, so it can be set once the process runs. What it does not
 * touch: concurrent marking and sweeping of the old generation (background work that does not
 * stop the main thread), and the old generation's parallel phases (with `--no-parallel-marking`,
 * `--no-parallel-compaction` and `--no-parallel-pointer-update` beside it, this Node's V8 aborted
 * in cppgc's marker at the first mark-compact, 3 runs of 3).
 */
import { setFlagsFromString } from 'node:v8'

/** the V8 flag; a runtime that does not know it says so on stderr ("unrecognized flag") */
export const SERIAL_SCAVENGE_FLAG = '--no-parallel-scavenge'

/**
 * V8 flags on the node's command line (`node --parallel-scavenge node/bin/sipmesh.js start`) that
 * already say how to scavenge: the operator's choice stands
 */
const OPERATOR_FLAGS = /^--(no-)?(parallel[-_]scavenge|single[-_]threaded[-_]gc|single[-_]threaded|predictable)(=|$)/

/**
 * Serial scavenges for this process from now on, unless its command line (`execArgv`) or
 * `NODE_OPTIONS` has a flag that decides it (Node 22 refuses these V8 flags in NODE_OPTIONS, so
 * today the command line is the operator's way; the check holds if a later Node takes them).
 * Process-wide: every node of a process shares it. `serial`: set now; `operator`: left as the
 * operator said; `refused`: the runtime did not take the flag.
 */
export function serialScavenge (execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ''): 'serial' | 'operator' | 'refused' {
  if ([...execArgv, ...nodeOptions.split(/\s+/)].some(a => OPERATOR_FLAGS.test(a))) return 'operator'
  try {
    setFlagsFromString(SERIAL_SCAVENGE_FLAG)
    return 'serial'
  } catch {
    return 'refused'
  }
}
