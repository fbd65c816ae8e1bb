/**
 * V8's scavenges (young-generation GCs) on the main thread alone, for the node's process (issue
 * 11, the cross-node relay's tail at half rate).
 *
 * By default V8 runs a scavenge as a parallel job: the main thread stops, posts the copying work
 * to its platform's worker threads and joins them, and the pause ends only when every worker that
 * took a share has finished it. A node relaying a few thousand messages a second scavenges about 4
 * times a second with little to copy (0.1-0.3 MB, a few hundred KB of messages in flight), and
 * shares its cores with the other node, SIPp, the other processes of the machine: a worker that
 * took a share is often waiting in the kernel's run queue, and the main thread waits for it.
 * `--trace-gc-nvp` shows the wait as the scavenge's time that none of its main-thread phases
 * account for (`scavenge` less `scavenge.roots`, `.parallel`, `.sweep_array_buffers`, …), with the
 * copying done by `background.scavenge.parallel` meanwhile. Measured on both nodes of
 * `bench-relay.ts --only cross --latency-rate 4000` (3.5 s of GC per node and run, runs alternated
 * with the default, 2026-12-07 22:05-22:35 UTC, load average 1-9 from the other sessions): that
 * wait per scavenge p50 0.8-1.8 ms, p90 2.4-6.3 ms, max 11-24 ms by default; p50 0.2, p90 0.3,
 * max 0.9 ms with the scavenge serial; scavenge pauses p50 1.5-2.1 -> 0.9-1.0 ms, the main
 * thread's GC time 8-14 -> 4-5 ms a second. The copying itself is a few hundred µs: one core does
 * it as fast as two that must first be scheduled.
 *
 * The flag is read at each scavenge, so it can be set once the process runs. What it does not
 * touch: concurrent marking and sweeping of the old generation (background work that does not
 * stop the main thread), and the old generation's parallel phases (`--no-parallel-marking` made
 * this Node's V8 abort in cppgc's marker at the first mark-compact).
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
