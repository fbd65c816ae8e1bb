/**
 * The authentication step of the proxy core for requests from user agents: which requests must
 * authenticate and as whom (the table in index.ts), and the RFC 3261 22.4 / RFC 7616 3.4 checks of
 * the credentials they carry.
 */
import type { SipRequest, SipResponse } from '../codec/message.ts'
import { createResponse } from '../codec/response.ts'
import { parseNameAddr } from '../codec/name-addr.ts'
import { parseUri, aorOf } from '../codec/uri.ts'
import type { Aor, Logger } from '../ports.ts'
import { DIGEST_ALGORITHMS, computeResponse, digestAlgorithmOf, digestEquals, hexLength, type DigestAlgorithm } from './digest.ts'
import { formatChallenge, parseCredentials, type DigestCredentials } from './header.ts'
import { NonceCounts, NonceFactory } from './nonce.ts'
import { MalformedCredentialsError } from './errors.ts'
import type { DigestAuthInit, UserSecret } from './index.ts'

/**
 * What the proxy core does with a request: answer it with `response` (a challenge, 403, 400), or
 * go on; `identity` is then the authenticated AoR (undefined: the request was not subject to
 * authentication, and nothing may be asserted for it).
 */
export type AuthVerdict = { response: SipResponse } | { identity: Aor | undefined }

export interface AuthStats {
  challenged: number
  authenticated: number
  /** wrong password, wrong realm, replayed or stale nonce-count: answered with a new challenge */
  failed: number
  /** no secret for the user, or one user's credentials for another's AoR */
  forbidden: number
  malformed: number
}

/** The two roles of RFC 3261 22: registrar (401, 22.2) and proxy (407, 22.3). */
const REGISTRAR = { status: 401, challenge: 'WWW-Authenticate', credentials: 'Authorization' } as const
const PROXY = { status: 407, challenge: 'Proxy-Authenticate', credentials: 'Proxy-Authorization' } as const
type Role = typeof REGISTRAR | typeof PROXY

/** Credentials headers looked at per request at most (one per realm is the norm). */
const MAX_CREDENTIAL_HEADERS = 8

const PASS: AuthVerdict = Object.freeze({ identity: undefined })

export interface UserAgentAuthenticatorComponents {
  logger: Logger
}

export interface UserAgentAuthenticatorInit extends DigestAuthInit {
  /** the domains this node serves (lower-case): the realms it authenticates */
  domains: Iterable<string>
  /**
   * the `host:port` addresses of this node (lower-case), read when a digest-uri is checked: a
   * client that authenticates to its outbound proxy puts the proxy's address in `uri` rather
   * than the Request-URI (SIPp does). @default none (the Request-URI only)
   */
  nodeAddresses?: () => Iterable<string>
}

export class UserAgentAuthenticator {
  readonly #log: Logger
  readonly #domains: Set<string>
  readonly #credentials: ReadonlyMap<Aor, UserSecret>
  readonly #nonces: NonceFactory
  readonly #counts: NonceCounts
  readonly #opaque: string | undefined
  readonly #nodeAddresses: () => Iterable<string>
  readonly stats: AuthStats = { challenged: 0, authenticated: 0, failed: 0, forbidden: 0, malformed: 0 }

  constructor (components: UserAgentAuthenticatorComponents, init: UserAgentAuthenticatorInit) {
    this.#log = components.logger
    this.#domains = new Set([...init.domains].map(d => d.toLowerCase()))
    this.#credentials = init.credentials
    this.#nonces = new NonceFactory({ key: init.nonceKey, lifetimeMs: init.nonceLifetimeMs, now: init.now })
    this.#counts = new NonceCounts({ maxNonces: init.maxNonces })
    this.#opaque = init.opaque
    this.#nodeAddresses = init.nodeAddresses ?? (() => [])
  }

  /**
   * The verdict on a new request from a user agent (never from a mesh peer). `toNode`: the
   * Request-URI names this node itself (or a served domain without a user); `routed`: its top
   * Route named this node (a dialog this node Record-Routed).
   */
  authenticate (request: SipRequest, toNode: boolean, routed = false): AuthVerdict {
    const method = request.method
    // RFC 3261 22.1: ACK and CANCEL cannot be challenged (they cannot be resubmitted)
    if (method === 'ACK' || method === 'CANCEL') return PASS
    const h = request.headers
    if (method === 'REGISTER') {
      // 22.2 / 10.3 step 3: the registrar authenticates the binding's AoR, the To
      const to = this.#servedAor(h.get('To'))
      if (to === 'malformed') return this.#answer(request, 400, 'Malformed To')
      if (to === undefined) return this.#answer(request, 403, 'Domain Not Served')
      return this.#verify(request, to, REGISTRAR)
    }
    // requests for the node itself (OPTIONS keep-alives) are answered without identity
    if (toNode && !h.has('Route')) return PASS
    // mid-dialog requests pass (the dialog was authenticated when it was set up): a To tag and
    // our Route on top, since this node Record-Routes every dialog it is in. A To tag alone would
    // let any request skip the challenge. A PUBLISH never belongs to a dialog (RFC 3903 4).
    if (method !== 'PUBLISH' && routed && hasTag(h.get('To'))) return PASS
    const from = this.#servedAor(h.get('From'))
    if (from === 'malformed') return this.#answer(request, 400, 'Malformed From')
    // a user of another domain: not ours to authenticate, and nothing is asserted for it
    if (from === undefined) return PASS
    return this.#verify(request, from, PROXY)
  }

  /** the AoR of a From/To value when it is a user of a served domain */
  #servedAor (value: string | undefined): Aor | undefined | 'malformed' {
    if (value === undefined) return 'malformed'
    try {
      const u = parseUri(parseNameAddr(value).uri)
      if (u.scheme === 'tel' || u.user === undefined || !this.#domains.has(u.host.toLowerCase())) return undefined
      return aorOf(u)
    } catch {
      return 'malformed'
    }
  }

  /** RFC 3261 22.4 / RFC 7616 3.4: the request's credentials for `aor`, or the answer */
  #verify (request: SipRequest, aor: Aor, role: Role): AuthVerdict {
    const at = aor.lastIndexOf('@')
    const user = aor.slice(4, at)
    const realm = aor.slice(at + 1)
    const secret = this.#credentials.get(aor)
    if (secret === undefined || algorithmsOf(secret).length === 0) {
      this.stats.forbidden++
      this.#log.info('request from a user without credentials refused', { method: request.method, aor })
      return this.#answer(request, 403, 'Forbidden (No Credentials)')
    }
    let creds: DigestCredentials | undefined
    try {
      creds = this.#find(request, role, realm)
      if (creds === undefined) return this.#challenge(request, role, realm, secret, false)
      checkComplete(creds)
    } catch (err) {
      if (!(err instanceof MalformedCredentialsError)) throw err
      this.stats.malformed++
      this.#log.info('malformed credentials', { method: request.method, aor, err: err.message })
      return this.#answer(request, 400, err.reason)
    }
    const algorithm = digestAlgorithmOf(creds.algorithm)
    const fail = (why: string, stale = false): AuthVerdict => {
      this.stats.failed++
      this.#log.info('digest authentication failed', { method: request.method, aor, username: creds.username, why })
      return this.#challenge(request, role, realm, secret, stale)
    }
    // not an answer to a challenge of ours: challenge again
    if (algorithm === undefined) return fail('algorithm not offered')
    if (creds.qop !== 'auth') return fail('qop not offered')
    if (this.#opaque !== undefined && creds.opaque !== this.#opaque) return fail('opaque not echoed')
    if (creds.response.length !== hexLength(algorithm)) {
      this.stats.malformed++
      return this.#answer(request, 400, 'Malformed Credentials')
    }
    // RFC 7616 3.4.6 / RFC 2617 3.2.2.5: the digest-uri must name the Request-URI (no reuse for
    // another target); the address of this node itself is accepted too (see nodeAddresses)
    if (!sameUri(creds.uri, request.uri) && !this.#namesNode(creds.uri)) {
      this.stats.malformed++
      this.#log.info('credentials for another Request-URI', { method: request.method, aor, uri: creds.uri })
      return this.#answer(request, 400, 'Credentials Do Not Match Request-URI')
    }
    const right = (s: UserSecret | undefined): boolean => {
      const ha1 = s?.[algorithm]
      if (ha1 === undefined) return false
      const expected = computeResponse({ algorithm, ha1, method: request.method, uri: creds.uri, nonce: creds.nonce, nc: creds.nc, cnonce: creds.cnonce, qop: 'auth' })
      return digestEquals(expected, creds.response)
    }
    if (creds.username !== user) {
      // someone else's valid credentials for this AoR: refused outright (no retry can help)
      if (right(this.#credentials.get(`sip:${creds.username}@${realm}`))) {
        this.stats.forbidden++
        this.#log.warn('credentials of one user used for another AoR', { method: request.method, aor, username: creds.username })
        return this.#answer(request, 403, 'Forbidden (Identity Mismatch)')
      }
      return fail('username does not match the AoR')
    }
    if (!right(secret)) return fail('wrong response')
    // the digest is right: now the nonce must be ours, current (else stale: retry silently), unused
    const nonce = this.#nonces.check(creds.nonce, realm)
    if (!nonce.valid) return fail('stale or foreign nonce', true)
    if (!this.#counts.use(creds.nonce, nonce.issuedAt, parseInt(creds.nc, 16), this.#nonces.now(), this.#nonces.lifetimeMs)) {
      return fail('nonce-count replayed', true)
    }
    this.stats.authenticated++
    // RFC 3261 22.3: the credentials for our realm are consumed here, not forwarded
    if (role === PROXY) stripCredentials(request, realm)
    return { identity: aor }
  }

  /** a SIP URI without user part whose host:port is one of this node's addresses */
  #namesNode (uri: string): boolean {
    let u
    try { u = parseUri(uri) } catch { return false }
    if (u.scheme === 'tel' || u.user !== undefined) return false
    const hostPort = `${u.host.toLowerCase()}:${u.port ?? (u.scheme === 'sips' ? 5061 : 5060)}`
    for (const a of this.#nodeAddresses()) if (a === hostPort) return true
    return false
  }

  /** the first Digest credentials of the role's header for `realm` (22.3: others are for someone else) */
  #find (request: SipRequest, role: Role, realm: string): DigestCredentials | undefined {
    const values = request.headers.getLines(role.credentials)
    if (values.length > MAX_CREDENTIAL_HEADERS) throw new MalformedCredentialsError(`more than ${MAX_CREDENTIAL_HEADERS} ${role.credentials} headers`)
    for (const v of values) {
      const c = parseCredentials(v)
      if (c !== undefined && c.realm === realm) return c
    }
    return undefined
  }

  #challenge (request: SipRequest, role: Role, realm: string, secret: UserSecret, stale: boolean): AuthVerdict {
    this.stats.challenged++
    const headers: Array<[string, string]> = []
    for (const algorithm of algorithmsOf(secret)) {
      // a nonce per algorithm: each header is a challenge of its own (RFC 8760 2.4)
      headers.push([role.challenge, formatChallenge({ realm, nonce: this.#nonces.issue(realm), algorithm, stale, opaque: this.#opaque })])
    }
    return { response: createResponse(request, role.status, undefined, headers, { toTag: true }) }
  }

  #answer (request: SipRequest, status: number, reason: string): AuthVerdict {
    return { response: createResponse(request, status, reason, undefined, { toTag: true }) }
  }
}

type CompleteCredentials = DigestCredentials & { username: string, realm: string, nonce: string, uri: string, response: string, qop: string, nc: string, cnonce: string }

/** RFC 7616 3.4: what a response to a qop="auth" challenge must carry */
function checkComplete (c: DigestCredentials): asserts c is CompleteCredentials {
  for (const name of ['username', 'realm', 'nonce', 'uri', 'response', 'qop', 'nc', 'cnonce'] as const) {
    if (c[name] === undefined || c[name] === '') throw new MalformedCredentialsError(`no ${name}`)
  }
  if (c.params.has('username*') || c.params.get('userhash') === 'true') throw new MalformedCredentialsError('userhash and username* are not supported')
  if (!/^[0-9a-fA-F]{8}$/.test(c.nc as string)) throw new MalformedCredentialsError('nc is not 8 hex digits')
  if (!/^[0-9a-fA-F]+$/.test(c.response as string)) throw new MalformedCredentialsError('response is not hex')
}

function algorithmsOf (secret: UserSecret): DigestAlgorithm[] {
  return DIGEST_ALGORITHMS.filter(a => typeof secret[a] === 'string')
}

function hasTag (value: string | undefined): boolean {
  if (value === undefined) return false
  try {
    return parseNameAddr(value).params.tag != null
  } catch {
    return false
  }
}

/** the digest-uri names the Request-URI: equal, or the same scheme, user, host and port */
function sameUri (digestUri: string, requestUri: string): boolean {
  if (digestUri === requestUri) return true
  try {
    const a = parseUri(digestUri)
    const b = parseUri(requestUri)
    return a.scheme === b.scheme && a.user === b.user && a.host.toLowerCase() === b.host.toLowerCase() && a.port === b.port
  } catch {
    return false
  }
}

/** remove the Proxy-Authorization lines for `realm`, keep those for other proxies (22.3) */
function stripCredentials (request: SipRequest, realm: string): void {
  const h = request.headers
  const keep = h.getLines('Proxy-Authorization').filter(v => {
    try { return parseCredentials(v)?.realm !== realm } catch { return true }
  })
  h.delete('Proxy-Authorization')
  for (const v of keep) h.append('Proxy-Authorization', v)
}
