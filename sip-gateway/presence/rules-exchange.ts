/**
 * Authorization rules between nodes: a presentity's rules are one versioned document
 * (authorization.ts: hybrid logical clock, last writer wins) that follows the presentity across
 * the mesh, as a `PUBLISH` to its AoR with `Event: sipmesh-rules` (`RULES_EVENT`), accepted only
 * from mesh peers (a user agent sending one gets 403, whatever AoR it names):
 * - with a body (`application/vnd.sipmesh.rules+json`, the document with its `version`, at most
 *   `MAX_RULES_BODY` bytes): a push. Validated with the admin API's parser (malformed, oversized or
 *   unversioned: 400, nothing stored); newer than ours: stored, persisted and applied to live
 *   subscriptions (200); the one we hold: 200; older: 412 with our version in
 *   `Sipmesh-Rules-Version`, nothing changed.
 * - without a body: a fetch. `Sipmesh-Rules-Version` says what the asker holds; the 200 carries our
 *   document when it is newer, no body otherwise.
 * Who sends what: an admin PUT is stored where it was made and pushed to the current owner (agent
 * `setRules`); the old owner, told of a move, pushes its document to the new owner (`handOver`);
 * the new owner, when a REGISTER's claim took the AoR from another node, fetches from it (`fetch`)
 * and holds decisions for that presentity until that answer comes or `decisionWaitMs` passes
 * (`ready`, `gated`), so a watcher blocked at the old owner is not let through in between.
 */
import { Buffer } from 'node:buffer'
import type { SipRequest, SipResponse } from '../codec/message.ts'
import { createResponse } from '../codec/response.ts'
import { parseUri, aorOf } from '../codec/uri.ts'
import { SipStatusError } from '../errors.ts'
import type { Aor, Logger } from '../ports.ts'
import type { ServerTransaction } from '../transaction/layer.ts'
import { parseDocument, serializeRules, type PresenceAuthorization, type RulesDocument } from './authorization.ts'
import { mediaType } from './package.ts'
import type { AgentRequests } from './requests.ts'

/** the event package of rules documents between nodes (mesh only, see the header) */
export const RULES_EVENT = 'sipmesh-rules'
export const RULES_CONTENT_TYPE = 'application/vnd.sipmesh.rules+json'
export const RULES_VERSION_HEADER = 'Sipmesh-Rules-Version'
/** largest rules document sent or accepted over the mesh, bytes (a SIP message is at most 64 KiB) */
export const MAX_RULES_BODY = 48 * 1024

const NO_BODY = new Uint8Array(0)

export interface RulesExchangeComponents {
  authorization: PresenceAuthorization
  requests: AgentRequests
  logger: Logger
  domains: ReadonlySet<string>
  running: () => boolean
  respond: (tx: ServerTransaction, response: SipResponse) => void
  /** a newer document was stored: apply it to live subscriptions */
  applied: (aor: Aor) => void
  /** a gate opened: watchers held at what they saw get the state the rules give them now */
  released: (aor: Aor) => void
}

export class RulesExchange {
  readonly #authorization: PresenceAuthorization
  readonly #requests: AgentRequests
  readonly #log: Logger
  readonly #domains: ReadonlySet<string>
  readonly #running: () => boolean
  readonly #respond: (tx: ServerTransaction, response: SipResponse) => void
  readonly #applied: (aor: Aor) => void
  readonly #released: (aor: Aor) => void
  readonly #decisionWait: number
  readonly #retryMs: number
  /** presentities whose rules are being fetched from their previous owner: decisions wait for it */
  readonly #gate = new Map<Aor, Promise<void>>()

  constructor (components: RulesExchangeComponents, init: { decisionWaitMs: number, retryMs: number }) {
    this.#authorization = components.authorization
    this.#requests = components.requests
    this.#log = components.logger
    this.#domains = components.domains
    this.#running = components.running
    this.#respond = components.respond
    this.#applied = components.applied
    this.#released = components.released
    this.#decisionWait = init.decisionWaitMs
    this.#retryMs = init.retryMs
  }

  gated (aor: Aor): boolean { return this.#gate.has(aor) }

  /** wait (bounded) until the rules of a presentity just taken over from another node are here */
  async ready (aor: Aor): Promise<void> {
    await this.#gate.get(aor)
  }

  /** send our document of a presentity to a node (a push); resolves with its final response */
  async push (node: string, aor: Aor, doc: RulesDocument): Promise<SipResponse> {
    const body = Buffer.from(serializeRules(doc.rules, doc.version))
    return await this.#request(node, aor, body, [['Content-Type', RULES_CONTENT_TYPE]])
  }

  async #request (node: string, aor: Aor, body: Uint8Array, extra: Array<[string, string]>): Promise<SipResponse> {
    return await this.#requests.publishTo(node, aor, RULES_EVENT, extra, body)
  }

  /** the old owner after a move: push the document to the new owner (a few tries while it is unreachable) */
  handOver (aor: Aor, node: string, attempt = 0): void {
    const doc = this.#authorization.document(aor)
    if (doc === undefined || !this.#running()) return
    this.push(node, aor, doc).then((r) => {
      if ((r.status === 408 || r.status === 503) && attempt < 2 && this.#running()) {
        setTimeout(() => { this.handOver(aor, node, attempt + 1) }, this.#retryMs).unref?.()
        return
      }
      this.#log.debug('rules handed over to the new owner', { aor, node, status: r.status })
    }, (err: unknown) => { this.#log.debug('rules not handed over', { aor, node, err: String(err) }) })
  }

  /** the new owner after a move: ask the previous owner for a newer document; decisions wait meanwhile */
  fetch (aor: Aor, node: string): void {
    if (this.#gate.has(aor) || !this.#requests.attached) return
    const have = this.#authorization.document(aor)?.version ?? 0n
    const fetched = this.#request(node, aor, NO_BODY, [[RULES_VERSION_HEADER, have.toString()]]).then(async (r) => {
      if (r.status !== 200 || r.body.length === 0) return
      const outcome = await this.#take(aor, r.headers.get('Content-Type'), r.body)
      this.#log.debug('rules fetched from the previous owner', { aor, node, outcome })
    }).catch((err: unknown) => { this.#log.debug('rules not fetched from the previous owner', { aor, node, err: String(err) }) })
    let timer: ReturnType<typeof setTimeout> | undefined
    const gate = Promise.race([fetched, new Promise<void>(resolve => { timer = setTimeout(resolve, this.#decisionWait) })]).then(() => {
      clearTimeout(timer)
      if (this.#gate.get(aor) !== gate) return
      this.#gate.delete(aor)
      if (this.#running()) this.#released(aor)
    })
    this.#gate.set(aor, gate)
  }

  /** validate a received document (the admin API's parser) and store it when newer; throws 400/415 */
  async #take (aor: Aor, contentType: string | undefined, body: Uint8Array): Promise<'applied' | 'same' | 'stale'> {
    if (mediaType(contentType) !== RULES_CONTENT_TYPE) throw new SipStatusError(415, 'Unsupported Media Type')
    if (body.length > MAX_RULES_BODY) throw new SipStatusError(400, 'Bad Request (rules too large)')
    let json: unknown
    try {
      json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body))
    } catch {
      throw new SipStatusError(400, 'Bad Request (rules are not JSON)')
    }
    const doc = parseDocument(json)
    if (doc.version === 0n) throw new SipStatusError(400, 'Bad Request (rules without a version)')
    const outcome = await this.#authorization.accept(aor, doc)
    if (outcome === 'applied') this.#applied(aor)
    return outcome
  }

  /** a PUBLISH of the rules event: mesh peers only (a push with a body, a fetch without) */
  async handle (request: SipRequest, tx: ServerTransaction, fromMesh: boolean): Promise<void> {
    if (!fromMesh) { this.#respond(tx, createResponse(request, 403, 'Forbidden (rules are exchanged between mesh nodes only)')); return }
    let aor: Aor
    try {
      const u = parseUri(request.uri)
      if (u.user === undefined || !this.#domains.has(u.host.toLowerCase())) throw new Error('not ours')
      aor = aorOf(u)
    } catch {
      this.#respond(tx, createResponse(request, 404, 'Not Found (no presentity of our domains)'))
      return
    }
    if (request.body.length === 0) {
      let have = 0n
      try { have = BigInt(request.headers.get(RULES_VERSION_HEADER) ?? '0') } catch { /* treat as none */ }
      const doc = this.#authorization.document(aor)
      if (doc === undefined || doc.version <= have) { this.#respond(tx, createResponse(request, 200)); return }
      const r = createResponse(request, 200, undefined, [['Content-Type', RULES_CONTENT_TYPE]])
      r.body = Buffer.from(serializeRules(doc.rules, doc.version))
      this.#respond(tx, r)
      return
    }
    const outcome = await this.#take(aor, request.headers.get('Content-Type'), request.body)
    if (outcome === 'stale') {
      this.#respond(tx, createResponse(request, 412, 'Conditional Request Failed (older rules)', [[RULES_VERSION_HEADER, String(this.#authorization.document(aor)?.version ?? 0n)]]))
      return
    }
    this.#respond(tx, createResponse(request, 200))
  }
}
