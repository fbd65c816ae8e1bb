/**
 * The credentials file (`--credentials file`): the users of the served domains, known to the mesh
 * (offline IM, issue 5), and the digest secrets that user agents authenticate with (SIP digest,
 * RFC 8760: SHA-256 and MD5; see sip-gateway/auth/).
 *
 * One user per line; blank lines and lines starting with `#` are ignored:
 *
 *     # AoR                 secret (optional)
 *     alice@example.com     correct-horse
 *     sip:bob@example.com   md5:<32 hex> sha-256:<64 hex>
 *     carol@example.com
 *
 * alice has a password, bob precomputed HA1 values, carol is known but has no secret (she cannot
 * authenticate once authentication is on).
 *
 * - The AoR is `user@domain` or `sip:user@domain` (`sips:` is the same AoR); lines of domains the
 *   node does not serve are skipped. The user part may use letters, digits and `-_.!~*'()&=+$,%`.
 * - The secret is either a password or precomputed HA1 values (one per algorithm, either or both):
 *   `md5:<hex>` and `sha-256:<hex>` with HA1 = H(user ":" domain ":" password), the realm being the
 *   AoR's domain and the digest username its user part (`printf '%s' 'alice:example.com:pw' |
 *   sha256sum`). A user is challenged only with the algorithms it has an HA1 for; a password
 *   gives both. A password that itself starts with `md5:`, `sha-256:` or `password:` is written
 *   `password:<it>`. A password cannot contain spaces; there are no comments after the AoR (a
 *   `#` there is part of the secret).
 * - Files of the older format load as before: one AoR a line, and whatever follows a colon right
 *   after the domain (`dave@example.com:x`) is ignored, as it always was: dave is known, without a
 *   secret, and a warning says so (a secret goes after whitespace). That text never turns
 *   authentication on, so an old file cannot lock out every user it does not list.
 * - A malformed line (bad AoR, bad HA1, two passwords, a password and HA1s, control characters,
 *   over 4096 characters, a user listed twice) is skipped and logged by line number, never by
 *   content (it may hold a password). A file over 16 MiB, or not a regular file, is refused.
 *
 * Digest authentication is on when at least one user has a secret; then a served user without
 * one cannot use the node (403). A file of bare AoRs (the older format) only lists known users.
 */
import { open } from 'node:fs/promises'
import { aorOf, parseUri } from '../sip-gateway/codec/uri.ts'
import { DIGEST_ALGORITHMS, DigestAlgorithm, computeHa1 } from '../sip-gateway/auth/digest.ts'
import type { UserSecret } from '../sip-gateway/auth/index.ts'

/** Largest credentials file read, bytes. */
export const MAX_CREDENTIALS_BYTES = 16 * 1024 * 1024
/** Longest line considered, characters. */
const MAX_LINE = 4096

/** A credentials file that cannot be used at all (too large, not a file, unreadable). */
export class CredentialsFileError extends Error {
  static readonly NAME = 'CredentialsFileError'
  override readonly name = CredentialsFileError.NAME
}

export interface CredentialsFile {
  /** every user of a served domain listed (with or without a secret), in file order */
  users: string[]
  /** the users with a secret: normalized AoR → HA1 per algorithm */
  secrets: Map<string, UserSecret>
  /** the lines skipped and why (line numbers from 1); no line content */
  skipped: Array<{ line: number, reason: string }>
  /** lines loaded with something ignored (the older `user@domain:text` form), and what */
  warnings: Array<{ line: number, reason: string }>
}

const AOR_RE = /^(?:sips?:)?([A-Za-z0-9\-_.!~*'()&=+$,%]+)@([A-Za-z0-9.-]+)(?::(.*))?$/i
const HOST_RE = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i
const HA1_PREFIX: Record<string, DigestAlgorithm> = { 'md5:': DigestAlgorithm.MD5, 'sha-256:': DigestAlgorithm.SHA256 }
const HEX_LENGTH: Record<DigestAlgorithm, number> = { MD5: 32, 'SHA-256': 64 }
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f]/

class LineError extends Error {}

/** Parse the text of a credentials file for a node serving `domains`. Never throws. */
export function parseCredentialsFile (text: string, domains: readonly string[]): CredentialsFile {
  const served = new Set(domains.map(d => d.toLowerCase()))
  const users: string[] = []
  const seen = new Set<string>()
  const secrets = new Map<string, UserSecret>()
  const skipped: Array<{ line: number, reason: string }> = []
  const warnings: Array<{ line: number, reason: string }> = []
  const lines = text.split('\n')
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n].replace(/\r$/, '').trim()
    if (line === '' || line.startsWith('#')) continue
    try {
      if (line.length > MAX_LINE) throw new LineError(`longer than ${MAX_LINE} characters`)
      if (CONTROL.test(line)) throw new LineError('control character')
      const [first, ...rest] = line.split(/[ \t]+/)
      const m = AOR_RE.exec(first)
      if (m === null) throw new LineError('not user@domain')
      const domain = m[2].toLowerCase()
      if (!HOST_RE.test(domain)) throw new LineError('not user@domain')
      if (!served.has(domain)) continue
      let aor: string
      try { aor = aorOf(parseUri(`sip:${m[1]}@${domain}`)) } catch { throw new LineError('not user@domain') }
      if (seen.has(aor)) throw new LineError('user listed twice (the first line counts)')
      if (m[3] !== undefined) warnings.push({ line: n + 1, reason: 'text after "user@domain:" ignored (older format); a secret goes after whitespace' })
      const secret = secretOf(rest.filter(f => f !== ''), aor.slice(4, aor.lastIndexOf('@')), domain)
      seen.add(aor)
      users.push(aor)
      if (secret !== undefined) secrets.set(aor, secret)
    } catch (err) {
      if (!(err instanceof LineError)) throw err
      skipped.push({ line: n + 1, reason: err.message })
    }
  }
  return { users, secrets, skipped, warnings }
}

/** the HA1 values of a line's secret fields (undefined: no secret) */
function secretOf (fields: string[], user: string, realm: string): UserSecret | undefined {
  if (fields.length === 0) return undefined
  let password: string | undefined
  const ha1: Partial<Record<DigestAlgorithm, string>> = {}
  for (const f of fields) {
    const lower = f.toLowerCase()
    const prefix = Object.keys(HA1_PREFIX).find(p => lower.startsWith(p))
    if (prefix !== undefined) {
      const algorithm = HA1_PREFIX[prefix]
      const hex = lower.slice(prefix.length)
      if (!new RegExp(`^[0-9a-f]{${HEX_LENGTH[algorithm]}}$`).test(hex)) throw new LineError(`${prefix} needs ${HEX_LENGTH[algorithm]} hex digits`)
      if (ha1[algorithm] !== undefined) throw new LineError(`two ${prefix} values`)
      ha1[algorithm] = hex
      continue
    }
    const p = f.startsWith('password:') ? f.slice('password:'.length) : f
    if (p === '') throw new LineError('empty password')
    if (password !== undefined) throw new LineError('two passwords (a password cannot contain spaces)')
    password = p
  }
  if (password !== undefined) {
    if (Object.keys(ha1).length > 0) throw new LineError('either a password or HA1 values, not both')
    for (const a of DIGEST_ALGORITHMS) ha1[a] = computeHa1(a, user, realm, password)
  }
  return Object.freeze(ha1)
}

/**
 * Read and parse a credentials file. Throws CredentialsFileError when it cannot be used (missing,
 * not a regular file, over MAX_CREDENTIALS_BYTES); malformed lines are only skipped.
 */
export async function readCredentialsFile (path: string, domains: readonly string[]): Promise<CredentialsFile> {
  let text: string
  try {
    const file = await open(path, 'r')
    try {
      const st = await file.stat()
      if (!st.isFile()) throw new CredentialsFileError(`credentials file ${path} is not a regular file`)
      if (st.size > MAX_CREDENTIALS_BYTES) throw new CredentialsFileError(`credentials file ${path} is over ${MAX_CREDENTIALS_BYTES} bytes`)
      // read at most one byte more than allowed: the file may grow between stat and read
      const buf = Buffer.alloc(Math.min(st.size, MAX_CREDENTIALS_BYTES) + 1)
      let length = 0
      while (length < buf.length) {
        const { bytesRead } = await file.read(buf, length, buf.length - length, length)
        if (bytesRead === 0) break
        length += bytesRead
      }
      if (length > st.size) throw new CredentialsFileError(`credentials file ${path} changed while it was read`)
      text = buf.subarray(0, length).toString('utf8')
    } finally {
      await file.close()
    }
  } catch (err) {
    if (err instanceof CredentialsFileError) throw err
    throw new CredentialsFileError(`cannot read credentials file ${path}: ${(err as Error).message}`, { cause: err })
  }
  return parseCredentialsFile(text, domains)
}
