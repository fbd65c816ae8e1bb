/**
 * Loop detection for back-end subscriptions between nodes
 * (draft-ietf-simple-intradomain-federation 7.2.1).
 *
 * In sipmesh a back-end SUBSCRIBE goes from the watcher's node to the node that owns the presentity.
 * While ownership moves, two nodes can briefly each believe the other is the owner, so a back-end
 * subscription could be passed around forever. Two mechanisms stop that:
 *
 * 1. A hop list carried on every back-end SUBSCRIBE (header `Sipmesh-Path`: the node ids the
 *    subscription has passed through, in order). A node refuses one whose list already names it
 *    or is as long as the hop budget, and never forwards to a node already in the list. It is the
 *    Via/Max-Forwards idea, kept end to end, because a back-end subscription is re-originated (a
 *    new dialog) at every hop rather than proxied.
 * 2. The draft's literal rule: a node that already holds a back-end subscription for a
 *    (presentity, watcher) pair receives another one for the same pair with a different dialog:
 *    a loop. `SubscriptionPairs` tracks this; the watcher key is chosen by the caller (the origin
 *    node of the chain plus the watcher AoR, or the origin node alone when back-end subscriptions
 *    are shared per node), so two devices of one user subscribing at the edge are not affected.
 *
 * A refusal is answered 482 (Loop Detected). The node that sent the refused back-end SUBSCRIBE
 * "proceeds without that back-end input" (7.2.1): `backEndOutcomeFor(482)` is `'loop'`, which
 * `frontEndDecision()` in authorization.ts treats as "serve from own data".
 */

export const PATH_HEADER = 'Sipmesh-Path'
export const LOOP_DETECTED = 482

/**
 * Hops a back-end subscription may take (watcher node → … → owner); 1 is the normal case
 * @default 4
 */
export const DEFAULT_MAX_HOPS = 4

/** Longest hop list accepted at all (anything longer is malformed, 400). */
export const MAX_PATH_ENTRIES = 16

const NODE_ID_RE = /^[A-Za-z0-9._-]{1,128}$/u

/** A malformed hop-list header: answer 400. */
export class PathHeaderError extends Error {
  static override name = 'PathHeaderError'
  override name = 'PathHeaderError'
  readonly status = 400
  constructor (message: string) {
    super(message)
  }
}

/** Parse the hop-list header value (absent: an empty list). Throws `PathHeaderError`. */
export function parsePath (value: string | undefined): string[] {
  if (value === undefined) return []
  if (value.length > MAX_PATH_ENTRIES * 130) throw new PathHeaderError(`${PATH_HEADER} too long`)
  const trimmed = value.trim()
  if (trimmed === '') return []
  const path = trimmed.split(',').map(s => s.trim())
  if (path.length > MAX_PATH_ENTRIES) throw new PathHeaderError(`${PATH_HEADER} has more than ${MAX_PATH_ENTRIES} entries`)
  for (const id of path) {
    if (!NODE_ID_RE.test(id)) throw new PathHeaderError(`${PATH_HEADER} entry '${id.slice(0, 40)}' is not a node id`)
  }
  return path
}

export function formatPath (path: readonly string[]): string {
  for (const id of path) {
    if (!NODE_ID_RE.test(id)) throw new PathHeaderError(`'${id.slice(0, 40)}' is not a node id`)
  }
  return path.join(', ')
}

export type LoopReason = 'self-in-path' | 'target-in-path' | 'repeated-in-path' | 'too-many-hops'

export type LoopCheck = { loop: false } | { loop: true, reason: LoopReason }

/** On receipt of a back-end SUBSCRIBE: does its hop list show a loop? */
export function checkIncoming (self: string, path: readonly string[], maxHops = DEFAULT_MAX_HOPS): LoopCheck {
  if (path.includes(self)) return { loop: true, reason: 'self-in-path' }
  if (new Set(path).size !== path.length) return { loop: true, reason: 'repeated-in-path' }
  if (path.length > maxHops) return { loop: true, reason: 'too-many-hops' }
  return { loop: false }
}

export type ForwardCheck = { loop: false, path: string[] } | { loop: true, reason: LoopReason }

/**
 * Before sending a back-end SUBSCRIBE from `self` to `target`, given the hop list of the
 * subscription that triggered it (empty at the watcher's node): the hop list to send, or a loop.
 */
export function forwardPath (self: string, target: string, path: readonly string[], maxHops = DEFAULT_MAX_HOPS): ForwardCheck {
  if (target === self || path.includes(target)) return { loop: true, reason: 'target-in-path' }
  if (path.includes(self)) return { loop: true, reason: 'self-in-path' }
  if (path.length + 1 > maxHops) return { loop: true, reason: 'too-many-hops' }
  return { loop: false, path: [...path, self] }
}

/** How the node that sent a back-end SUBSCRIBE reads the final response. */
export function backEndOutcomeFor (status: number): 'accepted' | 'denied' | 'loop' | 'failed' {
  if (status >= 200 && status < 300) return 'accepted'
  if (status === LOOP_DETECTED) return 'loop'
  if (status === 403 || status === 603) return 'denied'
  return 'failed'
}

/**
 * The draft's pair rule: at most one dialog per (presentity, watcher) among the back-end
 * subscriptions this node holds.
 */
export class SubscriptionPairs {
  private readonly pairs = new Map<string, string>()
  private readonly max: number

  /** @param max most pairs tracked; beyond it `admit` refuses (treat as 503) rather than grow */
  constructor (max = 100_000) {
    this.max = max
  }

  /**
   * 'new': first subscription for the pair (now tracked); 'existing': a refresh of the same dialog;
   * 'loop': another dialog already holds the pair (answer 482); 'full': too many pairs tracked.
   */
  admit (presentity: string, watcher: string, dialogId: string): 'new' | 'existing' | 'loop' | 'full' {
    const key = JSON.stringify([presentity, watcher])
    const held = this.pairs.get(key)
    if (held === dialogId) return 'existing'
    if (held !== undefined) return 'loop'
    if (this.pairs.size >= this.max) return 'full'
    this.pairs.set(key, dialogId)
    return 'new'
  }

  /** Forget a pair when its dialog ends (only if that dialog holds it). */
  release (presentity: string, watcher: string, dialogId: string): void {
    const key = JSON.stringify([presentity, watcher])
    if (this.pairs.get(key) === dialogId) this.pairs.delete(key)
  }

  get size (): number {
    return this.pairs.size
  }
}
