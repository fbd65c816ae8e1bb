/**
 * Back-end subscriptions between peer networks (issue 13 item 4; the peering seed's
 * "authorization migration", 2.3, and its security considerations, 3).
 *
 * Inside one mesh a node with local watchers of a presentity another node owns holds ONE back-end
 * subscription to the owner (backend.ts). Between two sipmesh meshes the same holds: the node of
 * `example.com` that holds the watchers of `bob@example.net` holds ONE back-end subscription per
 * (presentity, event package) to the peer network, over the peer TLS flow (proxy/peering.ts),
 * whatever the number of its watchers. The node of `example.net` that takes it (the border: any
 * node the peer reaches) is its notifier; it holds its own in-mesh back-end subscription to Bob's
 * owner node (or serves Bob itself), and Bob's owner applies Bob's rules per watcher.
 *
 * What crosses between the networks, exactly:
 * - watcher side → presentity side: the SUBSCRIBE with the watchers' identities (AoRs, all of the
 *   watcher network's own domain) in `Sipmesh-Watchers` (batches of up to 200) and those it no
 *   longer serves in `Sipmesh-Watchers-Gone`, the origin node's id in `Sipmesh-Path`, and
 *   `Require: sipmesh-watchers` (RFC 3261 8.2.2.3, 20.32) so that a server that does not know the
 *   extension refuses it (420) instead of taking it for a plain subscription.
 * - presentity side → watcher side: one decision per watcher (`allow`, `polite-block`, `block`) in
 *   `Sipmesh-Authorization`, and in NOTIFYs the presentity's document once (`Sipmesh-View: full`
 *   while at least one watcher is allowed; the neutral document otherwise). The rules themselves
 *   never leave the presentity's mesh: the watcher network learns decisions only, the presentity's
 *   network learns the watchers' identities only. The watcher network hands each watcher what was
 *   decided for it (the document, the neutral document, or the end of its subscription).
 *
 * A peer that answers the first back-end SUBSCRIBE with 420, or accepts it without echoing the
 * option tag (`Require: sipmesh-watchers` on the 2xx: it is not sipmesh, perhaps Kamailio relaying
 * it to a phone), is remembered as plain for `plainMs`, and its watchers get ordinary per-watcher
 * subscriptions (the proxy's path, proxy/core.ts `relayToPeer`).
 *
 * On the presentity side a peer's back-end SUBSCRIBE is admitted only when every watcher identity
 * in it is in the peer's own domain (the domain its certificate names): a peer speaks for its own
 * users only (403 otherwise); a malformed or oversized list is 400. The other internal `Sipmesh-*`
 * headers are removed from everything a peer sends (proxy/core.ts), so a peer can never pass for
 * a node of the mesh (rules and list exchange, stored-message ids, not-owner answers).
 */
import { SipStatusError } from '../errors.ts'
import { parseUri, aorOf } from '../codec/uri.ts'
import { MAX_WATCHERS_PER_REQUEST } from './event.ts'

/** The option tag of back-end subscriptions between networks (RFC 3261 19.2, 20.32). */
export const WATCHERS_OPTION = 'sipmesh-watchers'

/** `Resource.owner` / `Backend.node` of a presentity of a peer network: `peer:<domain>`. */
const PEER_OWNER_PREFIX = 'peer:'

export function peerOwner (domain: string): string { return PEER_OWNER_PREFIX + domain.toLowerCase() }

/** the peer domain a `peer:<domain>` owner names, or undefined for a node of this mesh */
export function peerOfOwner (owner: string | undefined): string | undefined {
  return owner?.startsWith(PEER_OWNER_PREFIX) === true ? owner.slice(PEER_OWNER_PREFIX.length) : undefined
}

/** Longest watcher list header accepted from a peer (a full batch of long AoRs). */
export const MAX_PEER_WATCHERS_HEADER = MAX_WATCHERS_PER_REQUEST * 260
const ENCODED_RE = /^[A-Za-z0-9%\-_.!~*'()]{1,768}$/u

/**
 * A watcher list from a peer network, strictly: every entry an encoded SIP AoR of `domain`.
 * Malformed, oversized or more than a batch: 400; an identity of another domain: 403.
 */
export function parsePeerWatchers (value: string | undefined, domain: string): string[] {
  if (value === undefined) return []
  if (value.length > MAX_PEER_WATCHERS_HEADER) throw new SipStatusError(400, 'Bad Request (watcher list too long)')
  const parts = value.trim().split(/\s+/u).filter(p => p !== '')
  if (parts.length > MAX_WATCHERS_PER_REQUEST) throw new SipStatusError(400, 'Bad Request (too many watchers in one request)')
  const out: string[] = []
  for (const part of parts) {
    if (!ENCODED_RE.test(part)) throw new SipStatusError(400, 'Bad Request (malformed watcher identity)')
    let aor: string
    let host: string
    try {
      const u = parseUri(decodeURIComponent(part))
      if (u.user === undefined || (u.scheme !== 'sip' && u.scheme !== 'sips')) throw new Error('not a user')
      aor = aorOf(u)
      host = u.host.toLowerCase()
    } catch {
      throw new SipStatusError(400, 'Bad Request (malformed watcher identity)')
    }
    if (host !== domain.toLowerCase()) throw new SipStatusError(403, 'Forbidden (a watcher is not of the peer\'s domain)')
    out.push(aor)
  }
  return out
}

/**
 * What this node knows of each peer network: plain (not sipmesh: per-watcher subscriptions) for a
 * while after it refused or ignored the option tag, and then asked again.
 */
export class PeerCapabilities {
  readonly #plainUntil = new Map<string, number>()
  /** peers that answered with the option tag (sipmesh) */
  readonly #sipmesh = new Set<string>()
  readonly #plainMs: number

  /** @param plainMs how long a peer stays known as plain, ms. @default 600000 */
  constructor (plainMs = 600_000) { this.#plainMs = plainMs }

  plain (domain: string): boolean {
    const until = this.#plainUntil.get(domain)
    if (until === undefined) return false
    if (until > Date.now()) return true
    this.#plainUntil.delete(domain)
    return false
  }

  sipmesh (domain: string): boolean { return this.#sipmesh.has(domain) }

  markPlain (domain: string): void {
    this.#plainUntil.set(domain, Date.now() + this.#plainMs)
    this.#sipmesh.delete(domain)
  }

  markSipmesh (domain: string): void {
    this.#plainUntil.delete(domain)
    this.#sipmesh.add(domain)
  }
}
