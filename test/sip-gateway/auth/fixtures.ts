// A digest client for tests: answers a WWW-Authenticate / Proxy-Authenticate challenge the way
// RFC 7616 3.4 says a client does (the computation itself is checked against the RFC examples).
import { randomBytes } from 'node:crypto'
import { parseCredentials } from '../../../sip-gateway/auth/header.ts'
import { computeHa1, computeResponse, digestAlgorithmOf } from '../../../sip-gateway/auth/digest.ts'

export interface AnswerOptions {
  username: string
  password: string
  method: string
  uri: string
  /** @default 1 */
  nc?: number
  /** @default the challenge's realm */
  realm?: string
  cnonce?: string
  /** replace or drop (undefined) directives of the answer */
  override?: Record<string, string | undefined>
}

/** the Authorization / Proxy-Authorization value answering `challenge` */
export function answer (challenge: string, o: AnswerOptions): string {
  const c = parseCredentials(challenge)
  if (c?.nonce === undefined || c.realm === undefined) throw new Error(`not a challenge: ${challenge}`)
  const algorithm = digestAlgorithmOf(c.algorithm)
  if (algorithm === undefined) throw new Error(`algorithm ${c.algorithm}`)
  const realm = o.realm ?? c.realm
  const nc = (o.nc ?? 1).toString(16).padStart(8, '0')
  const cnonce = o.cnonce ?? randomBytes(8).toString('hex')
  const ha1 = computeHa1(algorithm, o.username, realm, o.password)
  const response = computeResponse({ algorithm, ha1, method: o.method, uri: o.uri, nonce: c.nonce, nc, cnonce, qop: 'auth' })
  const d: Record<string, string | undefined> = {
    username: `"${o.username}"`, realm: `"${realm}"`, nonce: `"${c.nonce}"`, uri: `"${o.uri}"`,
    response: `"${response}"`, algorithm, qop: 'auth', nc, cnonce: `"${cnonce}"`,
    ...(c.opaque !== undefined ? { opaque: `"${c.opaque}"` } : {})
  }
  for (const [k, v] of Object.entries(o.override ?? {})) d[k] = v
  return 'Digest ' + Object.entries(d).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`).join(', ')
}
