/**
 * How the agent sends its own requests (NOTIFY as notifier, SUBSCRIBE and PUBLISH to other nodes):
 * a client transaction per request, our Via on top; the Contact it puts in dialogs; the flow a
 * subscription's NOTIFY takes (the mesh for back-end ones, the route set or the watcher's
 * connection for user agents, RFC 3261 12.2.1.1); and whether a Request-URI names this node.
 */
import { SipRequest, type SipResponse } from '../codec/message.ts'
import { Headers } from '../codec/headers.ts'
import type { ServerTransaction } from '../transaction/layer.ts'
import { createResponse, generateTag, randomToken } from '../codec/response.ts'
import { formatVia } from '../codec/via.ts'
import { parseUri } from '../codec/uri.ts'
import { parseNameAddr } from '../codec/name-addr.ts'
import { SipStatusError } from '../errors.ts'
import type { Logger, Registry } from '../ports.ts'
import type { TransactionLayer } from '../transaction/layer.ts'
import { MESH_TRANSPORT, type Connector, type Flow } from '../proxy/flow.ts'
import { newBranch, type Sub } from './resource.ts'

/** What the agent needs once the gateway runs: how to send requests and reach peers. */
export interface PresenceAgentTransport {
  layer: TransactionLayer<Flow>
  mesh: (node: string) => Flow
  connector: Connector
  /**
   * peer networks (proxy/peering.ts), when any: `connect` opens (or reuses) a TLS flow to one of
   * the peer's addresses (failing over), `relay` hands a watcher's SUBSCRIBE back to the proxy,
   * which sends it to the peer as it is (a plain peer: per-watcher subscriptions)
   */
  peers?: {
    has: (domain: string) => boolean
    connect: (domain: string) => Promise<Flow>
    relay: (request: SipRequest, tx: ServerTransaction, flow: Flow) => void
  }
  /** our advertised host and the ports user agents reach us on */
  host: string
  ports: { udp: number, tcp: number, ws?: number, tls?: number }
}

export class AgentRequests {
  readonly #registry: Pick<Registry, 'nodeId'>
  readonly #log: Logger
  #t: PresenceAgentTransport | undefined

  constructor (components: { registry: Pick<Registry, 'nodeId'>, logger: Logger }) {
    this.#registry = components.registry
    this.#log = components.logger
  }

  get #nodeId (): string { return this.#registry.nodeId }

  attach (t: PresenceAgentTransport | undefined): void { this.#t = t }

  get attached (): boolean { return this.#t !== undefined }

  mesh (node: string): Flow {
    const t = this.#t
    if (t === undefined) throw new Error('presence agent not started')
    return t.mesh(node)
  }

  /** the peer network an AoR belongs to, when its domain is a peered one */
  peerOf (aor: string): string | undefined {
    const peers = this.#t?.peers
    if (peers === undefined) return undefined
    const at = aor.lastIndexOf('@')
    const domain = at < 0 ? '' : aor.slice(at + 1).toLowerCase()
    return domain !== '' && peers.has(domain) ? domain : undefined
  }

  /** a TLS flow to peer network `domain`: `current` while open, else a new one (503 when none) */
  async peerFlow (domain: string, current?: Flow): Promise<Flow> {
    if (current?.open === true) return current
    const peers = this.#t?.peers
    if (peers === undefined) throw new SipStatusError(503, 'No Peer Networks')
    return await peers.connect(domain)
  }

  /** hand a watcher's SUBSCRIBE to a plain peer back to the proxy (per-watcher subscription) */
  relayToPeer (request: SipRequest, tx: ServerTransaction, flow: Flow): void {
    const peers = this.#t?.peers
    if (peers === undefined) throw new SipStatusError(503, 'No Peer Networks')
    peers.relay(request, tx, flow)
  }

  async flowFor (s: Pick<Sub, 'flow' | 'watcher' | 'routeSet' | 'remoteTarget'>): Promise<Flow> {
    const t = this.#t
    if (t === undefined) throw new Error('presence agent not started')
    if (s.flow.transport === MESH_TRANSPORT) return t.mesh(s.flow.node ?? s.watcher)
    // a peer network's node (a back-end subscription it holds here): over its TLS connection
    // while open, else a new one to the node its Contact names whose certificate names the peer
    if (s.flow.peerDomain !== undefined && s.routeSet.length === 0) {
      if (s.flow.open) return s.flow
      const u = parseUri(s.remoteTarget)
      return await t.connector.connect({ transport: 'TLS', host: u.host, port: u.port ?? 5061, domain: s.flow.peerDomain })
    }
    const targetUri = s.routeSet.length > 0 ? parseNameAddr(s.routeSet[0]).uri : s.remoteTarget
    const u = parseUri(targetUri)
    if (typeof u.params.node === 'string') return t.mesh(u.params.node)
    if (s.flow.open && s.flow.reliable) return s.flow
    const transport = typeof u.params.transport === 'string' ? u.params.transport.toUpperCase() : 'UDP'
    if (u.host.toLowerCase().endsWith('.invalid') || (transport !== 'UDP' && transport !== 'TCP' && transport !== 'TLS')) {
      if (s.flow.open) return s.flow
      throw new SipStatusError(480, 'Watcher Unreachable')
    }
    return await t.connector.connect({ transport, host: u.host, port: u.port ?? (transport === 'TLS' ? 5061 : 5060) })
  }

  /** send a request in a client transaction; resolves with its final response (408/503 on failure) */
  async send (request: SipRequest, flow: Flow): Promise<SipResponse> {
    const t = this.#t
    if (t === undefined) throw new Error('presence agent not started')
    const params: Record<string, string | null> = flow.transport === MESH_TRANSPORT ? { node: this.#nodeId } : flow.transport === 'UDP' ? { rport: null } : {}
    const port = flow.transport === 'TLS' ? t.ports.tls ?? t.ports.udp : t.ports.udp
    request.headers.prepend('Via', formatVia({ protocol: 'SIP/2.0', transport: flow.transport, host: t.host, port, params, branch: newBranch() }))
    return await new Promise<SipResponse>((resolve) => {
      try {
        t.layer.sendRequest(request, flow, {
          receiveResponse: (r) => { if (r.status >= 200) resolve(r) },
          onRequestTimeout: () => { resolve(createResponse(request, 408)) },
          onTransportError: () => { resolve(createResponse(request, 503)) }
        })
      } catch (err) {
        this.#log.debug('request not sent', { method: request.method, err: String(err) })
        resolve(createResponse(request, 503))
      }
    })
  }

  /**
   * A PUBLISH of one of the mesh's own event packages (lists, calls) to `uri` at mesh node `node`,
   * outside any dialog; resolves with its final response
   */
  async publishTo (node: string, uri: string, event: string, extra: ReadonlyArray<[string, string]> = [], body: Uint8Array = new Uint8Array(0)): Promise<SipResponse> {
    const domain = uri.slice(uri.lastIndexOf('@') + 1)
    const h = new Headers()
    h.append('Max-Forwards', '70')
    h.append('From', `<sip:${domain}>;tag=${generateTag()}`)
    h.append('To', `<${uri}>`)
    h.append('Call-ID', randomToken(12) + '@sipmesh')
    h.append('CSeq', '1 PUBLISH')
    h.append('Event', event)
    for (const [k, v] of extra) h.append(k, v)
    return await this.send(new SipRequest('PUBLISH', uri, h, body), this.mesh(node))
  }

  contactFor (flow: Flow): string {
    const t = this.#t
    const host = t?.host ?? '127.0.0.1'
    if (flow.transport === MESH_TRANSPORT) return `<sip:${host}:${t?.ports.udp ?? 5060};node=${this.#nodeId}>`
    if (flow.transport === 'TCP') return `<sip:${host}:${t?.ports.tcp ?? 5060};transport=tcp>`
    if (flow.transport === 'TLS' && t?.ports.tls !== undefined) return `<sip:${host}:${t.ports.tls};transport=tls>`
    if ((flow.transport === 'WS' || flow.transport === 'WSS') && t?.ports.ws !== undefined) return `<sip:${host}:${t.ports.ws};transport=ws>`
    return `<sip:${host}:${t?.ports.udp ?? 5060}>`
  }

  isOurTarget (uri: string): boolean {
    try {
      const u = parseUri(uri)
      if (typeof u.params.node === 'string') return u.params.node === this.#nodeId
      const t = this.#t
      if (u.user !== undefined || t === undefined) return false
      return u.host === t.host && [t.ports.udp, t.ports.tcp, t.ports.ws, t.ports.tls].includes(u.port ?? 5060)
    } catch { return false }
  }
}
