/**
 * Peer liveness (P5): whether the node that holds a claim is up, so that routing to the AoRs of a
 * node that died stops long before their leases end.
 *
 * A peer is up while this node has a connection to it. When the last connection closes, a peer
 * that holds a watched route is probed (a dial) after `probeDelayMs`; a failed probe marks it
 * down and the watchers are told. A peer this node has no
 * connection to is probed when a route to it is resolved; while a probe fails it stays down, and
 * it is probed again at most every `recheckMs`. A new connection marks it up at once.
 *
 * Bound (documented in the README): a node killed on a reachable host closes its TCP connections
 * (the kernel answers for it), so it is down everywhere within `probeDelayMs` plus one refused
 * dial, about a second. A host that vanishes without a word is found by libp2p's connection monitor
 * (a ping every 10 s; a failed ping closes the connection), then the probe's dial times out
 * (`probeTimeoutMs`): under 30 s. Either way well within the SPEC's 2 minutes.
 */
import { errorMessage } from './errors.ts'
import type { Libp2p, Logger, PeerId } from '@libp2p/interface'

export interface PeerLivenessInit {
  /** @default 250 */
  probeDelayMs?: number
  /** @default 5_000 */
  probeTimeoutMs?: number
  /** @default 15_000 */
  recheckMs?: number
}

interface State {
  down: boolean
  /** when it was last probed (ms) */
  probedAt: number
  probe?: Promise<boolean>
}

const MAX_TRACKED = 10_000

export class PeerLiveness {
  readonly #libp2p: Pick<Libp2p, 'addEventListener' | 'removeEventListener' | 'getConnections' | 'dial' | 'peerId'>
  readonly #log: Logger
  readonly #probeDelay: number
  readonly #probeTimeout: number
  readonly #recheck: number
  readonly #states = new Map<string, State>()
  readonly #listeners = new Set<(peer: string, up: boolean) => void>()
  readonly #watched: (peer: PeerId) => boolean
  #shutdown?: AbortController
  readonly stats = { probes: 0, down: 0 }

  readonly #onConnect = (evt: CustomEvent<PeerId>): void => { this.#mark(evt.detail.toString(), false) }
  readonly #onDisconnect = (evt: CustomEvent<PeerId>): void => {
    const peer = evt.detail
    // a peer nobody routes to is left alone (a probe is a dial: no dialling every peer that leaves);
    // the next route to it probes it then
    if (!this.#watched(peer)) {
      const s = this.#states.get(peer.toString())
      if (s != null && s.probe == null) s.probedAt = 0
      return
    }
    const t = setTimeout(() => {
      if (this.#shutdown == null || this.#libp2p.getConnections(peer).length > 0) return
      void this.#probe(peer)
    }, this.#probeDelay)
    t.unref?.()
  }

  /** `watched`: whether routes to this peer matter now (it is probed at once when it leaves) */
  constructor (libp2p: Pick<Libp2p, 'addEventListener' | 'removeEventListener' | 'getConnections' | 'dial' | 'peerId'>, log: Logger, init: PeerLivenessInit = {}, watched: (peer: PeerId) => boolean = () => true) {
    this.#libp2p = libp2p
    this.#watched = watched
    this.#log = log
    this.#probeDelay = init.probeDelayMs ?? 250
    this.#probeTimeout = init.probeTimeoutMs ?? 5_000
    this.#recheck = init.recheckMs ?? 15_000
  }

  start (): void {
    if (this.#shutdown != null) return
    this.#shutdown = new AbortController()
    this.#libp2p.addEventListener('peer:connect', this.#onConnect)
    this.#libp2p.addEventListener('peer:disconnect', this.#onDisconnect)
  }

  stop (): void {
    this.#shutdown?.abort()
    this.#shutdown = undefined
    this.#libp2p.removeEventListener('peer:connect', this.#onConnect)
    this.#libp2p.removeEventListener('peer:disconnect', this.#onDisconnect)
    this.#states.clear()
  }

  /** Be told when a peer goes down or comes back. */
  onChange (fn: (peer: string, up: boolean) => void): () => void {
    this.#listeners.add(fn)
    return () => { this.#listeners.delete(fn) }
  }

  /** Whether the peer is known to be down now (no waiting; a stale verdict starts a new probe). */
  isDown (peer: PeerId): boolean {
    const s = this.#states.get(peer.toString())
    if (s == null || !s.down) return false
    if (this.#libp2p.getConnections(peer).length > 0) {
      this.#mark(peer.toString(), false)
      return false
    }
    if (Date.now() - s.probedAt > this.#recheck) void this.#probe(peer)
    return true
  }

  /**
   * Whether the peer is up: at once when connected or known down; otherwise after a probe (a dial,
   * bounded by `probeTimeoutMs`), whose verdict is kept for `recheckMs`.
   */
  async check (peer: PeerId): Promise<boolean> {
    return this.checkNow(peer) ?? await this.#probe(peer)
  }

  /** `check`'s answer when it needs no probe (connected, or a verdict younger than `recheckMs`); else undefined */
  checkNow (peer: PeerId): boolean | undefined {
    if (peer.equals(this.#libp2p.peerId)) return true
    if (this.#libp2p.getConnections(peer).length > 0) return !this.isDown(peer)
    const s = this.#states.get(peer.toString())
    if (s != null && Date.now() - s.probedAt <= this.#recheck && s.probe == null) return !s.down
    return undefined
  }

  async #probe (peer: PeerId): Promise<boolean> {
    const id = peer.toString()
    let s = this.#states.get(id)
    if (s?.probe != null) return await s.probe
    if (s == null) {
      if (this.#states.size >= MAX_TRACKED) this.#states.delete(this.#states.keys().next().value!)
      s = { down: false, probedAt: 0 }
      this.#states.set(id, s)
    }
    const state = s
    const shutdown = this.#shutdown
    if (shutdown == null) return true
    this.stats.probes++
    state.probe = (async () => {
      let up: boolean
      try {
        await this.#libp2p.dial(peer, { signal: AbortSignal.any([shutdown.signal, AbortSignal.timeout(this.#probeTimeout)]) })
        up = true
      } catch (err) {
        up = false
        if (this.#shutdown != null) this.#log('peer %p did not answer a liveness probe: %s', peer, errorMessage(err))
      }
      state.probedAt = Date.now()
      state.probe = undefined
      if (this.#shutdown != null) this.#mark(id, !up)
      return up
    })()
    return await state.probe
  }

  #mark (id: string, down: boolean): void {
    const s = this.#states.get(id)
    if (s == null) {
      if (!down) return
      this.#states.set(id, { down, probedAt: Date.now() })
    } else {
      if (s.down === down) return
      s.down = down
      if (!down) s.probedAt = Date.now()
    }
    if (down) this.stats.down++
    this.#log('peer %s is %s', id, down ? 'down' : 'up')
    for (const fn of [...this.#listeners]) {
      try { fn(id, !down) } catch (err) { this.#log.error('liveness listener threw: %s', errorMessage(err)) }
    }
  }
}
