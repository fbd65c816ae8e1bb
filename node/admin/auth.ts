/**
 * Who may use the admin API: the one check every request passes before routing (issue 14).
 *
 * - **Host** (DNS rebinding defence): a web page on an attacker's domain can make a browser send
 *   requests to 127.0.0.1 by pointing its own name at it; such a request carries the attacker's
 *   name in `Host`. Only the admin address itself, `localhost`, `127.0.0.1` and `[::1]`, each with
 *   the admin port, are accepted (plus the addresses of this machine's interfaces when the API
 *   listens on a wildcard address); anything else, or no `Host`, is `421 Misdirected Request`
 *   (RFC 9110 15.5.20) with the code `bad_host`.
 * - **Bearer token** (RFC 6750 2.1): `PUT`, `DELETE` and every other method that is not a read
 *   need `Authorization: Bearer <token>`; reads (`GET`, `HEAD`) need it only from a client that is
 *   not on loopback. Otherwise `401` with `WWW-Authenticate: Bearer` (RFC 6750 3, with
 *   `error="invalid_token"` when a wrong token was sent) and the code `unauthorized`. Tokens are
 *   compared in constant time (over their SHA-256 digests, so the length does not leak either).
 *
 * The token lives in `<data-dir>/admin.token` (mode 0600), generated on first start and reused,
 * unless the operator sets one (`--admin-token`).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { chmod, readFile, stat, writeFile } from 'node:fs/promises'
import { networkInterfaces } from 'node:os'
import { join } from 'node:path'
import type { IncomingMessage } from 'node:http'

export const ADMIN_TOKEN_FILE = 'admin.token'

/** RFC 6750 2.1 b64token (token68), and a length that makes guessing hopeless */
const TOKEN_RE = /^[A-Za-z0-9\-._~+/]+=*$/
export const MIN_TOKEN_LENGTH = 16
export const MAX_TOKEN_LENGTH = 512

export class AdminTokenError extends Error {
  static readonly NAME = 'AdminTokenError'
  override readonly name = AdminTokenError.NAME
}

/** Why a token is not acceptable, or undefined when it is. */
export function tokenProblem (token: string): string | undefined {
  if (token.length < MIN_TOKEN_LENGTH) return `a token needs at least ${MIN_TOKEN_LENGTH} characters`
  if (token.length > MAX_TOKEN_LENGTH) return `a token has at most ${MAX_TOKEN_LENGTH} characters`
  if (!TOKEN_RE.test(token)) return 'a token may hold letters, digits and - . _ ~ + / (then = padding) only'
  return undefined
}

/**
 * A new random token: 32 bytes in hex (64 characters): nothing to escape in a shell or a header,
 * one word to double-click, and never starting with '-' (which a command line would take for a flag).
 */
export function generateAdminToken (): string {
  return randomBytes(32).toString('hex')
}

/**
 * The token of `<dataDir>/admin.token`, created (mode 0600) when absent. A file readable by others
 * is made 0600 (`tightened`). The data dir must exist.
 */
export async function loadOrCreateAdminToken (dataDir: string): Promise<{ token: string, path: string, created: boolean, tightened: boolean }> {
  const path = join(dataDir, ADMIN_TOKEN_FILE)
  for (let attempt = 0; attempt < 2; attempt++) {
    let text: string | undefined
    try {
      text = await readFile(path, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new AdminTokenError(`cannot read the admin token file ${path}: ${(err as Error).message}`)
    }
    if (text !== undefined) {
      const token = text.trim()
      const problem = tokenProblem(token)
      if (problem !== undefined) throw new AdminTokenError(`the admin token file ${path} is not usable (${problem}); delete it to have a new one generated`)
      let tightened = false
      if (((await stat(path)).mode & 0o077) !== 0) {
        await chmod(path, 0o600)
        tightened = true
      }
      return { token, path, created: false, tightened }
    }
    const token = generateAdminToken()
    try {
      // 'wx': two processes starting on one data dir (a cluster and its node) agree on one token
      await writeFile(path, token + '\n', { mode: 0o600, flag: 'wx' })
      return { token, path, created: true, tightened: false }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new AdminTokenError(`cannot write the admin token file ${path}: ${(err as Error).message}`)
    }
  }
  throw new AdminTokenError(`cannot create the admin token file ${path}`)
}

export interface Refusal {
  status: number
  code: string
  message: string
  headers?: Record<string, string>
}

export interface AdminGuardInit {
  /** the token mutating requests need; absent: they are all refused */
  token?: string
  /** the host the API listens on (as configured) */
  host: string
}

const READ_METHODS = new Set(['GET', 'HEAD'])
const WILDCARD = new Set(['0.0.0.0', '::', '[::]'])

function digest (text: string): Buffer {
  return createHash('sha256').update(text).digest()
}

function bracket (host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host
}

export function isLoopbackRemote (address: string | undefined): boolean {
  if (address === undefined) return false
  return address === '::1' || /^(::ffff:)?127\.\d+\.\d+\.\d+$/.test(address)
}

/** The check before routing (see the header); one per admin server. */
export class AdminGuard {
  private readonly tokenDigest?: Buffer
  private readonly host: string
  private allowed = new Set<string>()

  constructor (init: AdminGuardInit) {
    this.tokenDigest = init.token === undefined ? undefined : digest(init.token)
    this.host = init.host.toLowerCase()
  }

  /** Set the port once bound: the `Host` values accepted from then on. */
  listening (port: number): void {
    const names = new Set([bracket(this.host), 'localhost', '127.0.0.1', '[::1]'])
    if (WILDCARD.has(this.host)) {
      for (const list of Object.values(networkInterfaces())) {
        for (const a of list ?? []) names.add(bracket(a.address.toLowerCase()))
      }
    }
    this.allowed = new Set([...names].map(n => `${n}:${port}`))
    // RFC 9110 7.2: the port may be left out when it is the scheme's default
    if (port === 80) for (const n of names) this.allowed.add(n)
  }

  /** undefined when the request may go on, else how to refuse it */
  check (req: IncomingMessage): Refusal | undefined {
    const host = req.headers.host?.toLowerCase()
    if (host === undefined || !this.allowed.has(host)) {
      return {
        status: 421,
        code: 'bad_host',
        message: host === undefined
          ? 'a Host header naming the admin address is required'
          : `Host "${host.slice(0, 100)}" is not this admin API's address; use ${[...this.allowed].slice(0, 2).join(' or ')}`
      }
    }
    const read = READ_METHODS.has(req.method ?? '')
    if (read && isLoopbackRemote(req.socket.remoteAddress)) return undefined
    const auth = req.headers.authorization
    const m = auth === undefined ? null : /^Bearer +(\S{1,1024}) *$/i.exec(auth)
    const why = read ? 'reads from outside loopback need' : `${String(req.method).slice(0, 20)} needs`
    if (m === null) {
      return {
        status: 401,
        code: 'unauthorized',
        message: `${why} Authorization: Bearer <token> (the token is in <data-dir>/admin.token, or set with --admin-token)`,
        headers: { 'www-authenticate': 'Bearer realm="sipmesh-admin"' }
      }
    }
    if (this.tokenDigest === undefined || !timingSafeEqual(digest(m[1]), this.tokenDigest)) {
      return {
        status: 401,
        code: 'unauthorized',
        message: 'the bearer token is not this node\'s admin token',
        headers: { 'www-authenticate': 'Bearer realm="sipmesh-admin", error="invalid_token"' }
      }
    }
    return undefined
  }
}
