/**
 * Who this node is on the wire (the proxy core's seam for its other rooms): the SIP host and
 * ports our Vias and Record-Route entries name, the addresses it answers to as itself, and its
 * mesh node id (a Via or URI with `node=` is ours when it names it).
 */
import type { SipUri } from '../codec/uri.ts'
import type { Registry } from '../ports.ts'

export interface NodeAddressInit {
  /** our SIP address as it appears in Via and Record-Route */
  host: string
  port: number
  /** other names the node answers to as itself (its listening addresses) */
  aliases?: Iterable<string>
  /** the port of SIP over WebSocket, for Record-Route entries facing WebSocket user agents */
  wsPort?: number
  /** the ports of SIP over TLS and secure WebSocket, for Via and Record-Route entries on those sides */
  tlsPort?: number
  wssPort?: number
}

export class NodeAddress {
  readonly host: string
  readonly port: number
  readonly #wsPort: number | undefined
  readonly #tlsPort: number | undefined
  readonly #wssPort: number | undefined
  readonly #registry: Pick<Registry, 'nodeId'>
  /** `host:port`, lower-cased, of every address that is us */
  readonly #self: Set<string>

  constructor (registry: Pick<Registry, 'nodeId'>, init: NodeAddressInit) {
    this.#registry = registry
    this.host = init.host
    this.port = init.port
    this.#wsPort = init.wsPort
    this.#tlsPort = init.tlsPort
    this.#wssPort = init.wssPort
    const sentBy = `${init.host.toLowerCase()}:${init.port}`
    this.#self = new Set([sentBy, ...[...init.aliases ?? []].map(a => a.toLowerCase())])
  }

  /** our mesh node id (read from the registry each time, as it names it) */
  get nodeId (): string { return this.#registry.nodeId }

  /** our port for a transport, as Via and Record-Route name it */
  portFor (transport: string): number {
    switch (transport) {
      case 'TLS': return this.#tlsPort ?? this.port
      case 'WS': return this.#wsPort ?? this.port
      case 'WSS': return this.#wssPort ?? this.#wsPort ?? this.port
      default: return this.port
    }
  }

  isOurVia (via: { host: string, port?: number, transport?: string }): boolean {
    return this.#self.has(`${via.host.toLowerCase()}:${via.port ?? (via.transport === 'TLS' ? 5061 : 5060)}`)
  }

  isOurUri (u: SipUri | undefined): boolean {
    if (u === undefined) return false
    if (typeof u.params.node === 'string') return u.params.node === this.#registry.nodeId
    if (u.user !== undefined) return false
    const tls = u.scheme === 'sips' || (typeof u.params.transport === 'string' && u.params.transport.toLowerCase() === 'tls')
    return this.#self.has(`${u.host.toLowerCase()}:${u.port ?? (tls ? 5061 : 5060)}`)
  }
}
