/**
 * What the SIP gateway needs from the mesh, and nothing more. `node/` plugs the DHT registry
 * (`dht/`) and the libp2p peer channel in; tests plug the in-memory registry
 * (`dht/memory-registry.ts`) and an in-memory channel. The gateway never imports libp2p.
 */

export interface AbortOptions {
  signal?: AbortSignal
}

/** A normalized address-of-record: `sip:user@domain`, scheme and domain lower-cased, no params. */
export type Aor = string

/** Where an AoR is served, as the claim registry resolves it. */
export interface Route {
  aor: Aor
  /** libp2p peer id (base58 string) of the owner node */
  node: string
  /** the owner node's SIP address, `host:port` (UDP and TCP) */
  sip: string
  /** claim version: higher wins */
  version: bigint
  /** ms since the epoch after which the claim is void */
  expiresAt: number
}

/** What the registrar asks the registry to claim for a local registration. */
export interface LocalBinding {
  /** ms since the epoch: the latest expiry among this node's bindings for the AoR */
  expiresAt: number
}

export interface ClaimResult {
  /**
   * true when this node owns the AoR once the DHT has settled (with `ClaimOptions.firstReplica`:
   * on the answers so far; a later answer that overturns it displaces the AoR, `onDisplaced`)
   */
  won: boolean
  /** the route every node resolves now: ours when won, the winner's otherwise */
  route: Route
  /** the claim this one superseded, when there was one (another node's or our own older one) */
  previous?: Route
  /** how many DHT peers stored the claim (by the time it was answered: see `ClaimOptions`) */
  replicas: number
}

export interface ClaimOptions extends AbortOptions {
  /**
   * Resolve once the claim is stored here and on the first replica that accepts it (at once where
   * no peers exist), not when every replica has answered: one replica that is frozen but not yet
   * known dead would hold the REGISTER for the put timeout. `won` is then the verdict of the
   * answers so far (any answer naming a newer claim makes the claim wait for all of them, as
   * without this option); the other replicas' answers are still acted on when they come: a newer
   * claim of another node that won the race displaces this one (`onDisplaced`, P3), and a record
   * that stood before the claim (another node's clock ahead of ours) is claimed above, as it would
   * have been before the answer. `replicas` counts the replicas that had stored it by then.
   *
   * @default false
   */
  firstReplica?: boolean
}

export type Unwatch = () => void

/**
 * The name of the error a Registry throws (or rejects with) for an AoR it cannot hold: not of the
 * form `sip:user@domain`, characters it refuses, or longer than it allows (the DHT registry: 256
 * characters). Hostile or odd input from a user agent, never a fault of the node: the gateway
 * answers it 400 (`proxy/error-response.ts`), whichever request carried the AoR.
 */
export const INVALID_AOR_ERROR = 'InvalidAorError'

/**
 * Every method that takes an AoR throws or rejects with an error named `INVALID_AOR_ERROR` for
 * one it cannot hold.
 */
export interface Registry {
  /** this node's id as it appears in `Route.node` */
  readonly nodeId: string

  /**
   * Claim (or renew) an AoR for this node. Resolves once the claim is stored in the DHT and read
   * back; `won: false` means a concurrent newer claim of another node won the race. With
   * `firstReplica` it may resolve as soon as this node and one replica store it (see
   * `ClaimOptions`).
   */
  claim (aor: Aor, binding: LocalBinding, options?: ClaimOptions): Promise<ClaimResult>

  /**
   * What `claim` would resolve with, at once, when it needs nothing to wait for: the refresh of a
   * live claim this node holds, whose lease needs no renewal yet (the lease taken on to the
   * binding's expiry as `claim` does). Undefined when `claim` must be called (a new claim, a lease
   * to renew, an AoR held by another node). It is how the registrar answers a refresh in the turn
   * it arrived, without a promise (issue 9). Optional: without it, the registrar calls `claim`.
   */
  claimNow? (aor: Aor, binding: LocalBinding): ClaimResult | undefined

  /** Give up an AoR this node owns (the last binding ended); afterwards it resolves to nothing. */
  release (aor: Aor, options?: AbortOptions): Promise<void>

  /**
   * The current owner of an AoR, or undefined when nobody holds a live claim or its owner node is
   * down (P5: routing to a dead node stops within a bound, see the registry). Served from a cache
   * when possible (never older than a claim this node has seen); `fresh: true` forces a DHT lookup.
   * A claim of this node is "renewed" by `claim` without a new version while it holds the AoR.
   */
  resolve (aor: Aor, options?: AbortOptions & { fresh?: boolean }): Promise<Route | undefined>

  /**
   * The route `resolve(aor)` would answer at once, from what this node holds now, with no lookup
   * or probe to wait for; undefined when there is none at hand (then `resolve` decides, route or
   * not). It is how a relayed message reaches a known owner in the turn it arrived, without a
   * promise (issue 11). Optional: without it, the gateway asks `resolve` every time.
   */
  routeNow? (aor: Aor): Route | undefined

  /**
   * Whether the mesh knows this user: a node registered the AoR within the known-user retention
   * (30 days by default), whether or not it is registered now. No extra record per user: the
   * AoR's claim (or the release of it) is kept that long.
   */
  known (aor: Aor, options?: AbortOptions): Promise<boolean>

  /**
   * Be told whenever the route of an AoR changes (claimed, moved, released, expired), including
   * when it is unclaimed now: the registry registers interest in the mesh so that the node that
   * claims it later tells us directly.
   */
  watch (aor: Aor, onChange: (route: Route | undefined) => void): Unwatch

  /**
   * Be told when another node's valid newer claim displaced this node as owner of an AoR
   * (a move notice, verified against the signed claim before it is reported).
   */
  onDisplaced (handler: (aor: Aor, by: Route) => void): Unwatch
}

/**
 * SIP between nodes: a reliable, ordered, message-framed channel to a peer node, addressed by
 * node id. Messages that arrive through it come from an authenticated mesh peer, so
 * P-Asserted-Identity on them is trusted.
 */
export interface PeerChannel {
  send (node: string, data: Uint8Array, options?: AbortOptions): Promise<void>
  /**
   * Optional: hand `data` over at once when the channel can take it without waiting (a stream to
   * `node` open, with room, nothing queued before it), with no promise made: true. False: nothing
   * was done, use `send`. Never throws.
   */
  sendNow? (node: string, data: Uint8Array): boolean
  onMessage (handler: (node: string, data: Uint8Array) => void): Unwatch
}

/**
 * Durable key-value storage in the node's data directory (LevelDB in `node/`, a Map in tests):
 * registrations that must survive a restart, stored offline messages, authorization rules.
 */
export interface DurableStore {
  get (key: string): Promise<Uint8Array | undefined>
  put (key: string, value: Uint8Array): Promise<void>
  delete (key: string): Promise<void>
  /** every entry whose key starts with `prefix`, in key order */
  list (prefix: string): AsyncIterable<[key: string, value: Uint8Array]>
}

/** Structured logging: one JSON object per line in `node/`; `child` adds fields to every line. */
export interface Logger {
  debug (msg: string, fields?: Record<string, unknown>): void
  info (msg: string, fields?: Record<string, unknown>): void
  warn (msg: string, fields?: Record<string, unknown>): void
  error (msg: string, fields?: Record<string, unknown>): void
  child (fields: Record<string, unknown>): Logger
}
