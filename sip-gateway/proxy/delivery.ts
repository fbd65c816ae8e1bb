/**
 * Requests this node originates (a stored MESSAGE, issue 5): to the contacts of an AoR
 * registered here, or to another node over the mesh, which relays them to the AoR's contacts
 * there. ProxyCore's `deliver` and `deliverToNode`.
 */
import type { SipRequest, SipResponse } from '../codec/message.ts'
import { createResponse } from '../codec/response.ts'
import { formatVia } from '../codec/via.ts'
import type { Logger } from '../ports.ts'
import type { Registrar } from '../registrar/registrar.ts'
import type { TransactionLayer } from '../transaction/layer.ts'
import { responseForError } from './error-response.ts'
import { bestResponse } from './response-context.ts'
import { MESH_TRANSPORT, type Flow } from './flow.ts'
import type { NodeAddress } from './address.ts'
import { tooLargeForUdp, type ContactFlows } from './contact-flows.ts'
import { cloneMessage, generateBranch } from './outgoing.ts'

export interface DeliveryParts {
  registrar: Registrar<Flow>
  flows: ContactFlows
  us: NodeAddress
  mesh: (node: string) => Flow
  log: Logger
  /** the transaction layer, once the core is attached to one (throws before) */
  layer: () => TransactionLayer<Flow>
}

export class Delivery {
  readonly #registrar: Registrar<Flow>
  readonly #flows: ContactFlows
  readonly #us: NodeAddress
  readonly #mesh: (node: string) => Flow
  readonly #log: Logger
  readonly #layer: () => TransactionLayer<Flow>

  constructor (parts: DeliveryParts) {
    this.#registrar = parts.registrar
    this.#flows = parts.flows
    this.#us = parts.us
    this.#mesh = parts.mesh
    this.#log = parts.log
    this.#layer = parts.layer
  }

  /**
   * Send a request this node originates (for example a stored MESSAGE, issue 5) to every live
   * contact of an AoR registered here, as a stateful UAC/proxy hybrid: our Via on top, the
   * Request-URI set to each contact. Resolves with the first 2xx, or the final response `pick`
   * chooses when none succeeds (the best one of 16.7 by default), or undefined when the AoR has
   * no reachable contact here.
   */
  async toContacts (aor: string, request: SipRequest, pick: (finals: SipResponse[]) => SipResponse | undefined = bestResponse): Promise<SipResponse | undefined> {
    const bindings = this.#registrar.lookup(aor)
    const targets: Array<{ uri: string, flow: Flow }> = []
    for (const b of bindings) {
      try { targets.push({ uri: b.uri, flow: await this.#flows.contactFlow(request, b) }) } catch { /* unreachable contact */ }
    }
    if (targets.length === 0) return undefined
    return await new Promise<SipResponse>(resolve => {
      const finals: SipResponse[] = []
      let settled = false
      const done = (r: SipResponse): void => {
        if (settled) return
        if (r.status >= 200 && r.status < 300) { settled = true; resolve(r); return }
        finals.push(r)
        if (finals.length === targets.length) { settled = true; resolve(pick(finals) ?? r) }
      }
      for (const target of targets) {
        const copy = cloneMessage(request) as SipRequest
        copy.uri = target.uri
        if (!copy.headers.has('Max-Forwards')) copy.headers.set('Max-Forwards', '70')
        if (tooLargeForUdp(copy, target.flow)) { done(createResponse(copy, 513, 'Message Too Large')); continue }
        const params: Record<string, string | null> = target.flow.transport === 'UDP' ? { rport: null } : {}
        copy.headers.prepend('Via', formatVia({ protocol: 'SIP/2.0', transport: target.flow.transport, host: this.#us.host, port: this.#us.port, params, branch: generateBranch() }))
        try {
          this.#layer().sendRequest(copy, target.flow, {
            receiveResponse: (r) => { if (r.status >= 200) done(r) },
            onRequestTimeout: () => { done(createResponse(copy, 408)) },
            onTransportError: () => { done(createResponse(copy, 503)) }
          })
        } catch (err) {
          done(responseForError(copy, err, this.#log))
        }
      }
    })
  }

  /**
   * Send a request this node originates (a stored MESSAGE, issue 5) to another node over the
   * mesh, which relays it to the AoR's contacts there. Resolves with the final response (408 on
   * timeout, 503 when the node cannot be reached).
   */
  async toNode (node: string, request: SipRequest): Promise<SipResponse> {
    const copy = cloneMessage(request) as SipRequest
    if (!copy.headers.has('Max-Forwards')) copy.headers.set('Max-Forwards', '70')
    copy.headers.prepend('Via', formatVia({ protocol: 'SIP/2.0', transport: MESH_TRANSPORT, host: this.#us.host, port: this.#us.port, params: { node: this.#us.nodeId }, branch: generateBranch() }))
    return await new Promise<SipResponse>(resolve => {
      try {
        this.#layer().sendRequest(copy, this.#mesh(node), {
          receiveResponse: (r) => { if (r.status >= 200) resolve(r) },
          onRequestTimeout: () => { resolve(createResponse(copy, 408)) },
          onTransportError: () => { resolve(createResponse(copy, 503)) }
        })
      } catch (err) {
        resolve(responseForError(copy, err, this.#log))
      }
    })
  }
}
