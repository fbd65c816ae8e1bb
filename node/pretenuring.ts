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
 * it. Measured on node A at 3,000/s (`bench-relay.ts --only cross`, `--trace-gc-nvp`): 3.5-4.0 KB
 * per message survived scavenges in 5 of 5 runs, 0.14-0.16 KB with this (3 of 3 runs but one at
 * 1.1 KB on both nodes), p50 scavenge 6-10 ms against 2-3 ms; `--trace-pretenuring` prints
 * nothing in a release build, hence no direct view of the site.
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
