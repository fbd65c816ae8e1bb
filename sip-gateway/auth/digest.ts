/**
 * The digest computations of RFC 7616 section 3.4.1 (HTTP digest, which SIP uses through RFC
 * 3261 section 22.4 and RFC 8760), for the two algorithms a sipmesh node offers: SHA-256 (RFC
 * 8760 section 2.2: SIP user agents SHOULD prefer it) and MD5 (RFC 3261's only algorithm, which
 * most deployed user agents, SIP.js 0.21 and SIPp 3.6 among them, still speak).
 *
 * No library: node:crypto has both hashes, HMAC and a constant-time comparison, which is all
 * digest authentication needs.
 *
 *     HA1      = H(username ":" realm ":" password)          (A1, RFC 7616 3.4.2; no -sess)
 *     HA2      = H(method ":" digest-uri)                     (A2 for qop=auth, RFC 7616 3.4.3)
 *     response = H(HA1 ":" nonce ":" nc ":" cnonce ":" qop ":" HA2)      (qop=auth, 3.4.1)
 */
import { createHash, timingSafeEqual } from 'node:crypto'

/** The algorithms offered, in the order of preference of RFC 8760 section 2.4 (SHA-256 first). */
export const DigestAlgorithm = {
  SHA256: 'SHA-256',
  MD5: 'MD5'
} as const
export type DigestAlgorithm = typeof DigestAlgorithm[keyof typeof DigestAlgorithm]

/** Every algorithm we verify, most preferred first. */
export const DIGEST_ALGORITHMS: readonly DigestAlgorithm[] = [DigestAlgorithm.SHA256, DigestAlgorithm.MD5]

/** node:crypto's name of each algorithm, and the length of its hex digest. */
const HASHES: Record<DigestAlgorithm, { name: string, hexLength: number }> = {
  'SHA-256': { name: 'sha256', hexLength: 64 },
  MD5: { name: 'md5', hexLength: 32 }
}

/**
 * The algorithm named by an `algorithm` directive (case-insensitive, RFC 7616 3.3); absent means
 * MD5 (RFC 7616 3.4: "If this is not present, it is assumed to be MD5"). Undefined when it is one
 * we do not verify (the `-sess` variants, SHA-512-256, anything else).
 */
export function digestAlgorithmOf (name: string | undefined): DigestAlgorithm | undefined {
  if (name === undefined) return DigestAlgorithm.MD5
  const n = name.toUpperCase()
  if (n === 'MD5') return DigestAlgorithm.MD5
  if (n === 'SHA-256') return DigestAlgorithm.SHA256
  return undefined
}

/** Length of the hex digest (HA1, response) of `algorithm`. */
export function hexLength (algorithm: DigestAlgorithm): number {
  return HASHES[algorithm].hexLength
}

/** H(data), lower-case hex, of UTF-8 text (RFC 7616 3.4: strings are hashed as UTF-8 octets). */
export function digestHash (algorithm: DigestAlgorithm, data: string): string {
  return createHash(HASHES[algorithm].name).update(data, 'utf8').digest('hex')
}

/** HA1 = H(username:realm:password) (RFC 7616 3.4.2), what a credentials file may store instead of the password. */
export function computeHa1 (algorithm: DigestAlgorithm, username: string, realm: string, password: string): string {
  return digestHash(algorithm, `${username}:${realm}:${password}`)
}

export interface DigestResponseInput {
  algorithm: DigestAlgorithm
  /** H(A1), hex */
  ha1: string
  /** the request method (RFC 3261 22.4: the SIP method, not the CSeq's, though they agree) */
  method: string
  /** the `uri` directive as the client sent it */
  uri: string
  nonce: string
  /** nonce-count, 8 hex digits as sent */
  nc: string
  cnonce: string
  /** only `auth` is offered (auth-int would hash the body: never challenged with it) */
  qop: 'auth'
}

/** The expected `response` directive (RFC 7616 3.4.1, qop=auth), lower-case hex. */
export function computeResponse (input: DigestResponseInput): string {
  const { algorithm } = input
  const ha2 = digestHash(algorithm, `${input.method}:${input.uri}`)
  return digestHash(algorithm, `${input.ha1.toLowerCase()}:${input.nonce}:${input.nc}:${input.cnonce}:${input.qop}:${ha2}`)
}

/**
 * Whether two hex digests are equal, in time that does not depend on where they differ (the
 * lengths are public: they follow from the algorithm). Case-insensitive.
 */
export function digestEquals (expected: string, given: string): boolean {
  if (expected.length !== given.length) return false
  return timingSafeEqual(Buffer.from(expected.toLowerCase(), 'latin1'), Buffer.from(given.toLowerCase(), 'latin1'))
}
