/**
 * Identity (RFC 3325): P-Asserted-Identity on what this node forwards for its user agents: the
 * identity digest authentication established for the request when it is on (`remember`), else
 * the From AoR when it is of a served domain. The core removes the header from what user agents
 * send and leaves a mesh peer's alone; this room only sets it.
 */
import type { SipRequest } from '../codec/message.ts'
import { parseUri, aorOf } from '../codec/uri.ts'
import { parseNameAddrShared } from '../codec/name-addr.ts'
import { ownString } from '../registrar/bindings.ts'

export class IdentityAsserter {
  /** the served domains, lower-cased (the core's own set) */
  readonly #domains: ReadonlySet<string>
  /** digest authentication is on: only an authenticated identity is asserted */
  readonly #authenticating: boolean
  /** the identity `authenticate` established for a request */
  readonly #identities = new WeakMap<SipRequest, string>()
  /**
   * assert's answers by From URI: the identity a sender's requests get (or NOBODY_ASSERTED),
   * without a URI parse and a new string per request from a user seen lately; at most
   * ASSERTED_CACHE_SIZE URIs, forgotten all at once when full
   */
  readonly #assertedByUri = new Map<string, string>()

  constructor (domains: ReadonlySet<string>, authenticating: boolean) {
    this.#domains = domains
    this.#authenticating = authenticating
  }

  /** the identity digest authentication established for `request` */
  remember (request: SipRequest, identity: string): void {
    this.#identities.set(request, identity)
  }

  /**
   * RFC 3325: assert the sender on what we forward: the authenticated identity when digest
   * authentication is on, else the From AoR when it is one of ours
   */
  assert (request: SipRequest): void {
    if (this.#authenticating) {
      const identity = this.#identities.get(request)
      if (identity !== undefined) request.headers.set('P-Asserted-Identity', `<${identity}>`)
      return
    }
    const from = request.headers.get('From')
    if (from === undefined) return
    let uri
    try { uri = parseNameAddrShared(from).uri } catch { return /* not ours to assert */ }
    let asserted = this.#assertedByUri.get(uri)
    if (asserted === undefined) {
      // the URI copied off the message first (the key, and what the identity is made of): a slice
      // of the message's text, or a string made of slices of it, would keep the message alive
      const own = ownString(uri)
      asserted = NOBODY_ASSERTED
      try {
        const u = parseUri(own)
        if (this.#domains.has(u.host.toLowerCase()) && u.user !== undefined) asserted = ownString(`<${aorOf(u)}>`)
      } catch { /* not ours to assert */ }
      if (this.#assertedByUri.size >= ASSERTED_CACHE_SIZE) this.#assertedByUri.clear()
      this.#assertedByUri.set(own, asserted)
    }
    if (asserted !== NOBODY_ASSERTED) request.headers.set('P-Asserted-Identity', asserted)
  }
}

/** IdentityAsserter.#assertedByUri: a From URI that asserts no identity (not of a served domain, or malformed) */
const NOBODY_ASSERTED = ''
const ASSERTED_CACHE_SIZE = 4096
