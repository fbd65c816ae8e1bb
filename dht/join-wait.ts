/**
 * Joining the DHT: a node that was just started with bootstrap peers or mDNS has an empty routing
 * table for a few hundred ms: a claim put then reaches no replica and nobody else can resolve it.
 * The first claims wait for a peer (until `joinWaitMs` after start); a claim that still went out to
 * nobody is re-put once a peer turns up.
 */
import { errorMessage } from './errors.ts'
import type { ReplicaFinder } from './replication/replicas.ts'
import type { RunState } from './signal.ts'
import type { AbortOptions, Logger } from '@libp2p/interface'

const MAX_INTEREST_WAIT_MS = 3_600_000

export interface JoinWaitComponents {
  replicas: ReplicaFinder
  run: RunState
  log: Logger
  /** re-put every own record (once a peer is known after a put that reached none) */
  republishAll: () => Promise<void>
}

export interface JoinWaitInit {
  /** @default 0 */
  joinWaitMs?: number
}

export class JoinWait {
  private readonly c: JoinWaitComponents
  private readonly joinWait: number
  /** when the first claim may stop waiting for a DHT peer (set at start, cleared once routed) */
  private joinDeadline?: number
  /** own claims put while no DHT peer was known: re-put as soon as one is */
  private unreplicated = false

  constructor (components: JoinWaitComponents, init: JoinWaitInit = {}) {
    this.c = components
    this.joinWait = init.joinWaitMs ?? 0
  }

  start (): void {
    this.joinDeadline = this.joinWait > 0 ? Date.now() + this.joinWait : undefined
  }

  /** whether claims may still have to wait for the node to join */
  get waiting (): boolean {
    return this.joinDeadline != null
  }

  /** Wait (up to `waitMs`, polling) until the routing table holds a DHT peer. */
  async whenRouted (waitMs: number): Promise<boolean> {
    const deadline = Date.now() + waitMs
    while (this.c.replicas.kad() != null && this.c.replicas.routingTableSize === 0) {
      if (!this.c.run.running || Date.now() >= deadline) return false
      await this.pause(50)
    }
    return this.c.run.running
  }

  /** Sleep for `ms`, or less when the registry stops. */
  async pause (ms: number): Promise<void> {
    const signal = this.c.run.signal
    if (signal == null || signal.aborted) return
    await new Promise<void>(resolve => {
      const done = (): void => { clearTimeout(timer); signal.removeEventListener('abort', done); resolve() }
      const timer = setTimeout(done, ms)
      timer.unref?.()
      signal.addEventListener('abort', done, { once: true })
    })
  }

  /** The first claims' wait for a DHT peer (see above). */
  async joined (options?: AbortOptions): Promise<void> {
    if (this.joinDeadline == null) return
    if (this.c.replicas.kad() == null || this.c.replicas.routingTableSize > 0) {
      this.joinDeadline = undefined
      return
    }
    const left = this.joinDeadline - Date.now()
    if (left <= 0) {
      this.joinDeadline = undefined
      return
    }
    const routed = await this.whenRouted(left)
    options?.signal?.throwIfAborted()
    if (routed) this.joinDeadline = undefined
  }

  /** After a put that no peer stored because none was known: re-put own records once one is. */
  replicateLater (): void {
    if (this.unreplicated) return
    this.unreplicated = true
    void this.whenRouted(MAX_INTEREST_WAIT_MS).then(async (routed) => {
      this.unreplicated = false
      if (routed) await this.c.republishAll()
    }).catch((err: unknown) => { this.c.log('re-put after join failed: %s', errorMessage(err)) })
  }
}
