/**
 * Flows to the places a request leaves for (RFC 3261 18.1.1, RFC 3428 section 9): a binding's
 * contact (its REGISTER's connection while open, else its Contact address, parsed once per
 * binding; TCP instead of UDP for a MESSAGE too large for UDP), and the next hop of a Route.
 */
import type { SipRequest } from '../codec/message.ts'
import { parseUri, type SipUri } from '../codec/uri.ts'
import { serializeMessage } from '../codec/serializer.ts'
import { SipStatusError } from '../errors.ts'
import type { Logger } from '../ports.ts'
import type { Binding } from '../registrar/registrar.ts'
import type { Connector, Flow } from './flow.ts'

/** RFC 3428 section 9: pager-mode requests over 1300 bytes need a congestion-controlled path */
export const UDP_MESSAGE_LIMIT = 1300

export class ContactFlows {
  readonly #connector: Connector
  readonly #mesh: (node: string) => Flow
  readonly #log: Logger
  /** each binding's Contact address, parsed (see #contactAddress); gone with the binding */
  readonly #contactAddresses = new WeakMap<Binding<Flow>, ContactAddress>()

  constructor (connector: Connector, mesh: (node: string) => Flow, log: Logger) {
    this.#connector = connector
    this.#mesh = mesh
    this.#log = log
  }

  /**
   * How to reach a contact: over the connection its REGISTER came on while that is open (TCP,
   * WebSocket: the only way to reach a UA behind NAT or on a WebSocket), else at the Contact
   * address. A UDP REGISTER's source is used only when the Contact cannot be reached by address.
   */
  bindingFlow (b: Binding<Flow>): Flow | Promise<Flow> {
    if (b.flow !== undefined && b.flow.open && b.flow.reliable) return b.flow
    const c = this.#contactAddress(b)
    if (b.flow !== undefined && b.flow.open && c.invalidHost) return b.flow
    if (c.transport !== 'UDP' && c.transport !== 'TCP') throw new SipStatusError(480, 'Temporarily Unavailable')
    // a UDP flow comes at once (no promise per relayed message); a connection may take a while
    return this.#connector.connect(c)
  }

  /**
   * Where a binding's Contact points, parsed once per binding (and again if its URI changes), not
   * once per message relayed to it. Throws SipParseError on a malformed Contact, every time.
   */
  #contactAddress (b: Binding<Flow>): ContactAddress {
    const known = this.#contactAddresses.get(b)
    if (known !== undefined && known.uri === b.uri) return known
    const u = parseUri(b.uri)
    const c: ContactAddress = {
      uri: b.uri,
      transport: typeof u.params.transport === 'string' ? u.params.transport.toUpperCase() : 'UDP',
      host: u.host,
      port: u.port ?? 5060,
      invalidHost: u.host.toLowerCase().endsWith('.invalid')
    }
    this.#contactAddresses.set(b, c)
    return c
  }

  /**
   * The flow to a binding's contact for `request` (bindingFlow, then #sizedFlow): a value when
   * both are at hand, as they are on the common path (UDP, or an open connection), else a promise.
   * Throws or rejects when the contact cannot be reached.
   */
  contactFlow (request: SipRequest, b: Binding<Flow>): Flow | Promise<Flow> {
    const flow = this.bindingFlow(b)
    if (isThenable(flow)) return flow.then(async f => await this.#sizedFlow(request, b.uri, f))
    return this.#sizedFlow(request, b.uri, flow)
  }

  async routeFlow (u: SipUri): Promise<Flow> {
    if (typeof u.params.node === 'string') return this.#mesh(u.params.node)
    const t = typeof u.params.transport === 'string' ? u.params.transport.toUpperCase() : 'UDP'
    if (t !== 'UDP' && t !== 'TCP' && t !== 'TLS') throw new SipStatusError(480, 'Temporarily Unavailable')
    return await this.#connector.connect({ transport: t, host: u.host, port: u.port ?? (t === 'TLS' ? 5061 : 5060) })
  }

  /**
   * RFC 3261 18.1.1: a request too large for UDP goes over a congestion-controlled transport.
   * For a MESSAGE over 1300 bytes (RFC 3428 section 9) to a UDP contact, TCP to the same address
   * is tried (every RFC 3261 element implements TCP; Kamailio's `udp_mtu_try_proto` does the
   * same); when that connection cannot be made the UDP flow is kept and the size rule answers
   * 513. `uri` is the contact the copy will carry as its Request-URI.
   */
  #sizedFlow (request: SipRequest, uri: string, flow: Flow): Flow | Promise<Flow> {
    if (request.method !== 'MESSAGE' || flow.transport !== 'UDP') return flow
    // measured as it will leave (Request-URI set to the contact); swapped back synchronously
    const received = request.uri
    request.uri = uri
    let tooLarge: boolean
    try { tooLarge = tooLargeForUdp(request, flow) } finally { request.uri = received }
    if (!tooLarge) return flow
    return this.#tcpInstead(uri, flow)
  }

  async #tcpInstead (uri: string, flow: Flow): Promise<Flow> {
    try {
      return await this.#connector.connect({ transport: 'TCP', host: flow.remote.host, port: flow.remote.port })
    } catch (err) {
      this.#log.debug('no TCP path for a MESSAGE too large for UDP', { contact: uri, err: String(err) })
      return flow
    }
  }
}

/**
 * RFC 3428 section 9 / RFC 3261 18.1.1: a MESSAGE that would exceed 1300 bytes must not go to
 * a UDP next hop (no congestion control): 513. TCP, WebSocket and the mesh are congestion-controlled.
 */
export function tooLargeForUdp (request: SipRequest, flow: Flow): boolean {
  if (request.method !== 'MESSAGE' || flow.transport !== 'UDP') return false
  // a cheap estimate first (characters, not bytes): only a request near the limit is serialized
  const h = request.headers
  let estimate = request.uri.length + 32 + request.body.byteLength
  for (let i = 0, n = h.size; i < n; i++) estimate += h._nameAt(i).length + h._valueAt(i).length + 4
  if (estimate < UDP_MESSAGE_LIMIT - 400) return false
  // the request as it will leave: our Via (~80 bytes) on top of what it carries now
  return serializeMessage(request).byteLength + 80 > UDP_MESSAGE_LIMIT
}

/** a binding's Contact as a place to send to (ContactFlows.#contactAddress) */
interface ContactAddress {
  readonly uri: string
  /** upper-cased, UDP when the URI names none */
  readonly transport: string
  readonly host: string
  readonly port: number
  /** RFC 7118 / RFC 5626 made-up hosts: only the REGISTER's own flow reaches them */
  readonly invalidHost: boolean
}

export function isThenable<T> (x: T | Promise<T>): x is Promise<T> {
  return typeof (x as { then?: unknown }).then === 'function'
}
