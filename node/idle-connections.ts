/**
 * Idle mesh connections are closed, so that what a node spends with nothing to do grows with the
 * few peers it works with, not with the size of the mesh (issue 9: idle traffic like log N).
 *
 * Why: libp2p keeps every connection it ever made, and its connection monitor pings each one every
 * 10 s. Kademlia walks reach every node of a small mesh, so before this every node stayed
 * connected to every other and an idle node sent about 1.4 packets/s per peer. A connection is
 * only worth its pings while it carries work; the DHT and the peer channel dial again on demand
 * (a message to a peer with no stream waits for the dial, it does not fail: peer-channel.ts).
 *
 * What counts as work: a stream of any of our protocols opened either way (seen by libp2p stream
 * middleware on every protocol this node serves except ping, identify and kad-dht, whose own
 * walks must not keep a connection open), and traffic on the peer channel's long-lived SIP stream
 * (`activity` sources). kad-dht is left out on purpose: its periodic walks touch every node of a
 * small mesh and would keep the whole mesh connected.
 *
 * kad-dht tags the 20 peers closest to this node `keep-alive`, and libp2p's reconnect queue dials
 * a peer with that tag again as soon as it disconnects (and at every start): in a mesh of up to 21
 * nodes, every peer, so a connection closed by one side was opened again by the other at once.
 * Each pass therefore drops the `keep-alive` tags of every peer that is not kept (kad-dht tags a
 * peer again only when it re-enters its closest set; the next pass drops that too).
 *
 * Which connections close: only those this node dialled (the dialler decides, so two nodes never
 * fight over one connection), open longer than `idleMs` with no work for `idleMs`, and not to a
 * kept peer: the owner of a route this node watches (liveness of its AoRs, dht/liveness.ts, needs
 * the connection) or one of the `keep` peers closest to this node in the routing table (so a node
 * always has neighbours, stays visible in `/peers` and on the dashboard, and is missed at once
 * when it dies).
 */
import { KEEP_ALIVE } from '@libp2p/interface'
import type { Connection, Libp2p, PeerId, Startable, Stream, StreamMiddleware } from '@libp2p/interface'
import type { Logger } from '../sip-gateway/ports.ts'

/** protocols whose streams are not work: libp2p's own keep-alive and discovery, and kad-dht walks */
const NOT_WORK = [/^\/ipfs\/ping\//, /^\/ipfs\/id\//, /\/kad\//]

export interface IdleConnectionsComponents {
  libp2p: Pick<Libp2p, 'getConnections' | 'getProtocols' | 'use' | 'unuse' | 'peerStore'>
  logger: Logger
  /** peers whose connections stay open whatever their traffic (watched route owners, neighbours) */
  kept: () => Iterable<PeerId>
  /** when this node last exchanged something with a peer outside new streams (ms epoch), if known */
  activity?: Array<(peer: string) => number | undefined>
}

export interface IdleConnectionsInit {
  /** a connection with no work for this long is closed; 0 keeps every connection. @default 60_000 */
  idleMs?: number
  /** how often connections are looked at, ms. @default idleMs / 4 */
  intervalMs?: number
}

export class IdleConnections implements Startable {
  readonly #libp2p: IdleConnectionsComponents['libp2p']
  readonly #log: Logger
  readonly #kept: () => Iterable<PeerId>
  readonly #activity: Array<(peer: string) => number | undefined>
  readonly #idleMs: number
  readonly #intervalMs: number
  /** peer id → when a stream of ours last opened on a connection with it (ms epoch) */
  readonly #lastStream = new Map<string, number>()
  readonly #tracked: string[] = []
  #timer?: ReturnType<typeof setInterval>
  /** connections closed for idleness */
  closed = 0

  readonly #middleware: StreamMiddleware = (stream: Stream, connection: Connection, next) => {
    this.#lastStream.set(connection.remotePeer.toString(), Date.now())
    next(stream, connection)
  }

  constructor (components: IdleConnectionsComponents, init: IdleConnectionsInit = {}) {
    this.#libp2p = components.libp2p
    this.#log = components.logger
    this.#kept = components.kept
    this.#activity = components.activity ?? []
    this.#idleMs = Math.max(0, init.idleMs ?? 60_000)
    this.#intervalMs = Math.max(100, init.intervalMs ?? Math.round(this.#idleMs / 4))
  }

  get idleMs (): number { return this.#idleMs }

  /** Start after every protocol of the node is registered: only those seen here count as work. */
  start (): void {
    if (this.#idleMs === 0 || this.#timer !== undefined) return
    for (const protocol of this.#libp2p.getProtocols()) {
      if (NOT_WORK.some(re => re.test(protocol))) continue
      this.#libp2p.use(protocol, this.#middleware)
      this.#tracked.push(protocol)
    }
    this.#timer = setInterval(() => { this.sweep() }, this.#intervalMs)
    this.#timer.unref()
  }

  stop (): void {
    clearInterval(this.#timer)
    this.#timer = undefined
    for (const protocol of this.#tracked.splice(0)) this.#libp2p.unuse(protocol)
    this.#lastStream.clear()
  }

  /** Close the connections that idled past `idleMs`; returns how many. */
  sweep (now = Date.now()): number {
    if (this.#idleMs === 0) return 0
    const kept = new Set<string>()
    for (const p of this.#kept()) kept.add(p.toString())
    const cutoff = now - this.#idleMs
    let closed = 0
    const seen = new Set<string>()
    for (const conn of this.#libp2p.getConnections()) {
      const peer = conn.remotePeer.toString()
      seen.add(peer)
      if (conn.direction !== 'outbound' || conn.status !== 'open' || kept.has(peer)) continue
      if (conn.timeline.open > cutoff || this.#lastWork(peer) > cutoff) continue
      closed++
      this.closed++
      this.#log.debug('closing idle mesh connection', { peer, idleMs: this.#idleMs })
      void this.#close(conn)
    }
    void this.#untag(kept)
    // forget peers no longer connected (their next connection starts a new record)
    for (const peer of this.#lastStream.keys()) if (!seen.has(peer)) this.#lastStream.delete(peer)
    return closed
  }

  async #close (conn: Connection): Promise<void> {
    await this.#untag(new Set(), conn.remotePeer)
    await conn.close().catch((err: Error) => { conn.abort(err) })
  }

  /** Drop the `keep-alive` tags of the peers not kept (of one peer when `only` is given). */
  async #untag (kept: ReadonlySet<string>, only?: PeerId): Promise<void> {
    try {
      const peers = only !== undefined
        ? [await this.#libp2p.peerStore.get(only)]
        : await this.#libp2p.peerStore.all({ filters: [(p) => [...p.tags.keys()].some(t => t.startsWith(KEEP_ALIVE))] })
      for (const peer of peers) {
        if (kept.has(peer.id.toString())) continue
        const untag = Object.fromEntries([...peer.tags.keys()].filter(t => t.startsWith(KEEP_ALIVE)).map(t => [t, undefined]))
        if (Object.keys(untag).length > 0) await this.#libp2p.peerStore.merge(peer.id, { tags: untag })
      }
    } catch (err) {
      this.#log.debug('could not drop keep-alive tags', { error: (err as Error).message })
    }
  }

  #lastWork (peer: string): number {
    let last = this.#lastStream.get(peer) ?? 0
    for (const source of this.#activity) last = Math.max(last, source(peer) ?? 0)
    return last
  }
}
