/**
 * V8's allocation-site pretenuring, turned off for the node's process (issue 11, the cross-node
 * relay's tail on the node the UAC sends to).
 *
 * V8 counts, per allocation site (an object or array literal in the code), how many of its objects
 * lived through a scavenge; a site whose objects mostly did (85% at one scavenge with enough of
 * them) is "pretenured": from then on its objects are made in the old generation directly, and
 * that decision stays. A relay's per-message objects live a few milliseconds, but not when routing
 * waits (the first messages wait for the DHT, a stall keeps a window in flight): one such moment
 * can pretenure a site of the message path. Its objects are then old the moment they are made and
 * point at the young rest of their message; when the message is done they are dead, but only a
 * full GC finds that: until then every scavenge takes what they point to as alive and copies it
 * (the parsed request, its clone, the branch, the client transaction, the response), and promotes
 * it. Measured on node A at 3,000/s (`bench-relay.ts --only cross --latency-rate 3000`,
 * `--trace-gc-nvp`, `scripts/gc-trace-summary.ts --last 3.5`), alternating with the build before,
 * 21:22-21:27 UTC, load 0.3-4: bytes per message that survived scavenges 3.5-4.5 KB in 7 of 7 runs
 * before, 0.14-0.65 KB in 6 of 6 with this; scavenge p50 7-20 ms before, 2-5 ms with this. Which
 * site V8 pretenured was not seen (`--trace-pretenuring` prints nothing in a release build): the
 * mechanism above is inferred from the flag's effect and from what survived (the whole message
 * graph, while a heap snapshot finds only the dozen messages in flight alive).
 *
 * What it costs: objects that do live long (bindings, records) are copied once more in the young
 * generation before they are promoted.
 */
import { setFlagsFromString } from 'node:v8'

/** the V8 flag; a runtime that does not know it says so on stderr ("unrecognized flag") */
export const NO_PRETENURING_FLAG = '--no-allocation-site-pretenuring'

/**
 * Turn allocation-site pretenuring off for this process, from now on (sites decided before keep
 * their decision: call it before the node carries traffic). Process-wide: every node of a process
 * shares it. False when the runtime refused the flag.
 */
export function stopPretenuring (): boolean {
  try {
    setFlagsFromString(NO_PRETENURING_FLAG)
    return true
  } catch {
    return false
  }
}
