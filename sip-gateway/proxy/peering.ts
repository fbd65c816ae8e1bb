/**
 * Peer networks (the peering seed, RFC 5922, RFC 3325): the other SIP domains this mesh exchanges
 * requests with, each reached over mutually authenticated TLS at one of its configured addresses.
 *
 * - Out: a request for a peered domain, from a user of this mesh (From in a served domain), leaves
 *   from whichever node took it, to the peer's first address that answers (failing over in order).
 *   P-Asserted-Identity goes with it only when the peer is one trust domain with us.
 * - In: a TLS connection whose certificate names a peer domain is that peer (transport/tls.ts).
 *   Every request it sends must have its From in that domain (403 otherwise: a peer speaks for its
 *   own users only); what it may reach is decided by the proxy (users of served domains, and the
 *   dialogs we Record-Routed). Its P-Asserted-Identity is kept only from a trusted peer, and only
 *   when it names a user of that peer's domain.
 */
import { parseUri } from '../codec/uri.ts'
import { parseNameAddr } from '../codec/name-addr.ts'
import type { SipRequest } from '../codec/message.ts'
import { SipStatusError } from '../errors.ts'
import type { Logger } from '../ports.ts'
import type { Connector, Flow } from './flow.ts'

export interface PeerNetwork {
  /** the peer's SIP domain, as its certificate names it */
  domain: string
  /** where its nodes take TLS, in order of preference */
  addresses: ReadonlyArray<{ host: string, port: number }>
  /** one trust domain with this mesh (RFC 3325): identity crosses both ways */
  trusted?: boolean
}

/** The domain of a name-addr header's URI (From, P-Asserted-Identity), lower-cased, or undefined. */
export function headerDomain (value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  try {
    return parseUri(parseNameAddr(value).uri).host.toLowerCase()
  } catch {
    return undefined
  }
}

export class PeerNetworks {
  readonly #peers = new Map<string, PeerNetwork>()
  readonly #log: Logger
  /** requests refused because a peer's From was not in its domain */
  refused = 0
  /** dials that failed over to a peer's next address */
  failovers = 0

  constructor (log: Logger, peers: Iterable<PeerNetwork> = []) {
    this.#log = log
    for (const p of peers) this.#peers.set(p.domain.toLowerCase(), p)
  }

  get size (): number { return this.#peers.size }

  has (domain: string): boolean { return this.#peers.has(domain.toLowerCase()) }

  trusted (domain: string | undefined): boolean {
    return domain !== undefined && this.#peers.get(domain)?.trusted === true
  }

  /**
   * A request that came from peer `domain`: its From must be in that domain (403 otherwise), and
   * its P-Asserted-Identity is dropped unless the peer is trusted and asserts one of its own users.
   */
  admit (request: SipRequest, domain: string): void {
    if (headerDomain(request.headers.get('From')) !== domain) {
      this.refused++
      this.#log.info('request from a peer refused: From not in its domain', { peer: domain, method: request.method })
      throw new SipStatusError(403, 'Forbidden (From is not in the peer\'s domain)')
    }
    const pai = request.headers.getAll('P-Asserted-Identity')
    if (pai.length > 0 && !(this.trusted(domain) && pai.every(v => headerDomain(v) === domain))) request.headers.delete('P-Asserted-Identity')
  }

  /** What leaves for peer `domain`: no identity unless it is one trust domain with us. */
  outbound (request: SipRequest, domain: string): void {
    if (!this.trusted(domain)) request.headers.delete('P-Asserted-Identity')
  }

  /**
   * A flow to peer `domain`: over mutually authenticated TLS to its first address that takes the
   * connection and shows a certificate naming the domain; 503 when none does.
   */
  async connect (domain: string, connector: Connector): Promise<Flow> {
    const peer = this.#peers.get(domain.toLowerCase())
    if (peer === undefined) throw new SipStatusError(403, 'Domain Not Served')
    let last: unknown
    for (const [i, a] of peer.addresses.entries()) {
      try {
        return await connector.connect({ transport: 'TLS', host: a.host, port: a.port, domain: peer.domain })
      } catch (err) {
        last = err
        if (i + 1 < peer.addresses.length) this.failovers++
        this.#log.info('peer address unreachable', { peer: peer.domain, address: `${a.host}:${a.port}`, err: String(err) })
      }
    }
    this.#log.warn('peer network unreachable', { peer: peer.domain, err: String(last) })
    throw new SipStatusError(503, 'Peer Network Unreachable')
  }
}

/**
 * The internal headers a peer network may send, and only on a SUBSCRIBE or NOTIFY the presence
 * agent serves itself (its back-end subscriptions between networks, presence/peering.ts).
 */
export const PEER_BACKEND_HEADERS: ReadonlySet<string> = new Set(['sipmesh-watchers', 'sipmesh-watchers-gone', 'sipmesh-path', 'sipmesh-authorization', 'sipmesh-view'])

/**
 * Remove the internal `Sipmesh-*` headers (only nodes of the mesh may send them) from a request;
 * `keep`: those left to the presence agent to check. Returns how many were removed.
 */
export function stripInternalHeaders (request: SipRequest, keep: ReadonlySet<string> = new Set()): number {
  const h = request.headers
  const names = new Set<string>()
  for (let i = 0; i < h.size; i++) {
    const key = h._keyAt(i)
    if (key.startsWith('sipmesh-') && !keep.has(key)) names.add(key)
  }
  for (const n of names) h.delete(n)
  return names.size
}
