/**
 * @packageDocumentation
 *
 * SIP digest authentication of user agents (RFC 3261 22.4, RFC 7616, RFC 8760: SHA-256 and MD5)
 * against the users of a credentials file, for a node that serves the users' domains. The node
 * is at once registrar (REGISTER: `401` + `WWW-Authenticate`, RFC 3261 22.2) and proxy (every
 * other request: `407` + `Proxy-Authenticate`, RFC 3261 22.3). Mesh peers are never challenged:
 * a peer is authenticated by Noise and its P-Asserted-Identity is trusted (RFC 3325).
 *
 * Which requests from user agents must authenticate ({@link UserAgentAuthenticator.authenticate}):
 *
 * | request | identity checked | unauthenticated |
 * |---|---|---|
 * | REGISTER | the To AoR (digest username = its user part, realm = its domain) | 401 |
 * | out-of-dialog requests (MESSAGE, SUBSCRIBE, PUBLISH, INVITE, OPTIONS to a user, REFER...) whose From is of a served domain | the From AoR | 407 |
 * | the same, From of another domain | none: passed, nothing asserted | - |
 * | ACK, CANCEL, in-dialog requests (To tag; not PUBLISH), OPTIONS and the like to the node itself | none: passed | - |
 *
 * A served user with no secret in the credentials file gets 403; so do valid credentials of one
 * user used for another user's AoR. Malformed credentials get 400. Once authenticated, the node
 * asserts the identity (P-Asserted-Identity) on what it forwards and removes the
 * Proxy-Authorization it consumed (RFC 3261 22.3).
 *
 * Challenges carry one header per algorithm the user has a secret for, SHA-256 first (RFC 8760
 * 2.4: the client picks the first it supports), always `qop="auth"`. Nonces are stateless (an
 * HMAC of their issue time, `nonce.ts`) and expire (`stale=true` when the rest was right); every
 * nonce-count is accepted once (bounded memory). Everything uses node:crypto (md5, sha256, HMAC,
 * timingSafeEqual): no library is needed.
 */
import type { Aor } from '../ports.ts'
import type { DigestAlgorithm } from './digest.ts'

export { UserAgentAuthenticator, type AuthVerdict, type AuthStats } from './authenticator.ts'
export { DigestAlgorithm, DIGEST_ALGORITHMS, computeHa1, computeResponse, digestAlgorithmOf } from './digest.ts'
export { parseCredentials, formatChallenge, MAX_CREDENTIALS_LENGTH, type DigestCredentials } from './header.ts'
export { NonceFactory, NonceCounts } from './nonce.ts'
export { MalformedCredentialsError } from './errors.ts'

/**
 * The secrets of one user: HA1 = H(username ":" realm ":" password) per algorithm, lower-case
 * hex, where username is the AoR's user part and realm its domain. A user with no HA1 for an
 * algorithm is not challenged with it.
 */
export type UserSecret = Readonly<Partial<Record<DigestAlgorithm, string>>>

export interface DigestAuthInit {
  /** the users who can authenticate: normalized AoR (`sip:user@domain`, domain lower-case) → secrets */
  credentials: ReadonlyMap<Aor, UserSecret>
  /** how long a nonce is good for, ms. @default 300000 */
  nonceLifetimeMs?: number
  /** nonces whose nonce-counts are tracked at most (replay protection). @default 100000 */
  maxNonces?: number
  /** an opaque value sent in every challenge, which credentials must echo. @default none sent */
  opaque?: string
  /** the nonces' HMAC key. @default 32 random bytes per run */
  nonceKey?: Uint8Array
  /** the clock, ms (tests). @default Date.now */
  now?: () => number
}
