/**
 * When this node last did work of ours with each mesh peer: a stream of one of our protocols
 * opened either way, or a message on one (node/idle-connections.ts closes connections that had
 * none for a while).
 *
 * Recorded by handing our protocols (the claim registry's, the peer channel's, node info's) a view
 * of libp2p whose `handle` and `dialProtocol` note the peer of every stream and of every message
 * arriving on it. kad-dht and libp2p's own protocols (ping, identify) do not go through it, on
 * purpose: their background traffic is not work. Not libp2p's stream middleware (`libp2p.use`):
 * in libp2p 3.3 its inbound path pushes the handler onto the stored middleware array (a single
 * function breaks every inbound stream, an array grows by one handler per stream).
 */
import type { Libp2p, PeerId, Stream } from '@libp2p/interface'

export class PeerActivity {
  readonly #last = new Map<string, number>()

  touch (peer: PeerId | string): void {
    this.#last.set(typeof peer === 'string' ? peer : peer.toString(), Date.now())
  }

  /** when (ms epoch) work with `peer` was last seen, if ever */
  last (peer: string): number | undefined {
    return this.#last.get(peer)
  }

  #watch (peer: PeerId, stream: Stream): void {
    this.touch(peer)
    const key = peer.toString()
    stream.addEventListener('message', () => { this.#last.set(key, Date.now()) })
  }

  /**
   * `libp2p` as our protocols should see it: the same object, except that the streams its
   * `handle` handlers get and its `dialProtocol` opens are recorded.
   */
  track<T extends Pick<Libp2p, 'handle' | 'dialProtocol'>> (libp2p: T): T {
    const handle: Libp2p['handle'] = async (protocols, handler, options) => {
      await libp2p.handle(protocols, (stream, connection) => {
        this.#watch(connection.remotePeer, stream)
        return handler(stream, connection)
      }, options)
    }
    const dialProtocol = async (peer: Parameters<Libp2p['dialProtocol']>[0], protocols: string | string[], options?: Parameters<Libp2p['dialProtocol']>[2]): Promise<Stream> => {
      const stream = await libp2p.dialProtocol(peer, protocols, options)
      const id = (peer as Partial<PeerId>).toMultihash !== undefined ? peer as PeerId : undefined
      const remote = id ?? connectionPeer(libp2p, stream)
      if (remote !== undefined) this.#watch(remote, stream)
      return stream
    }
    // a method is bound once and the same function handed out each time: the relay reads
    // `getConnections` through this proxy for every message it routes (dht/liveness.ts), and a
    // fresh bound function per read was garbage per message
    const bound = new Map<PropertyKey, { fn: (...args: unknown[]) => unknown, bound: (...args: unknown[]) => unknown }>()
    return new Proxy(libp2p, {
      get (target, prop) {
        if (prop === 'handle') return handle
        if (prop === 'dialProtocol') return dialProtocol
        const value = Reflect.get(target, prop, target) as unknown
        if (typeof value !== 'function') return value
        const known = bound.get(prop)
        if (known !== undefined && known.fn === value) return known.bound
        const fn = value as (...args: unknown[]) => unknown
        const made = { fn, bound: fn.bind(target) }
        bound.set(prop, made)
        return made.bound
      }
    })
  }
}

/** the peer at the other end of a stream dialled by multiaddr (rare: ours dial by peer id) */
function connectionPeer (libp2p: object, stream: Stream): PeerId | undefined {
  const all = (libp2p as Partial<Pick<Libp2p, 'getConnections'>>).getConnections?.() ?? []
  return all.find(c => c.streams.includes(stream))?.remotePeer
}
