/**
 * The seam where the SIP gateway (sip-gateway/) plugs into the node: `sipmesh start` runs
 * `defaultGateway`. It gets the context the node builds (`GatewayContext` in sipmesh-node.ts:
 * `{ registry, peerChannel, store, logger, config, announceSip }`) and returns
 * `{ start, stop, registrations }`. Leave it undefined to run the mesh and the admin API only.
 *
 * The credentials file (`--credentials`) is read here (only `node/` touches files and the
 * environment; format and rules in credentials.ts): its users are known to the mesh for the
 * offline store (issue 5), whether or not they ever registered, and when any of them has a secret
 * the gateway authenticates user agents by SIP digest (sip-gateway/auth/).
 */
import { sipGateway, type DigestAuthInit } from '../sip-gateway/index.ts'
import type { GatewayFactory } from './sipmesh-node.ts'
import { parseCredentialsFile, readCredentialsFile } from './credentials.ts'
import { readFile } from 'node:fs/promises'
import type { GatewayConfig as GatewayContextConfig } from './config.ts'

export { MAX_CREDENTIALS_BYTES, CredentialsFileError, parseCredentialsFile, readCredentialsFile } from './credentials.ts'

/** Skipped lines of the credentials file logged one by one at most (then a count). */
const MAX_LOGGED_LINES = 20

/**
 * The AoRs of a credentials file that are users of `domains` (with or without a secret), in
 * file order; malformed lines are skipped. See credentials.ts for the format.
 */
export function readCredentialUsers (text: string, domains: readonly string[]): string[] {
  return parseCredentialsFile(text, domains).users
}

export const defaultGateway: GatewayFactory | undefined = async (context) => {
  const { config } = context
  let credentials: string[] = []
  let auth: DigestAuthInit | undefined
  if (config.credentials !== undefined) {
    const file = await readCredentialsFile(config.credentials, config.domains)
    credentials = file.users
    for (const s of file.skipped.slice(0, MAX_LOGGED_LINES)) context.logger.warn('credentials file: line skipped', { file: config.credentials, line: s.line, reason: s.reason })
    for (const w of file.warnings.slice(0, MAX_LOGGED_LINES)) context.logger.warn('credentials file: part of a line ignored', { file: config.credentials, line: w.line, reason: w.reason })
    if (file.skipped.length > MAX_LOGGED_LINES) context.logger.warn('credentials file: more lines skipped', { file: config.credentials, count: file.skipped.length - MAX_LOGGED_LINES })
    if (file.secrets.size > 0) auth = { credentials: file.secrets }
    context.logger.info('credentials file read', { users: credentials.length, withSecrets: file.secrets.size, skipped: file.skipped.length, digestAuthentication: auth !== undefined })
  }
  const offline = {
    known: { credentials },
    store: config.offlineLimits === undefined
      ? undefined
      : { maxMessagesPerUser: config.offlineLimits.maxMessagesPerUser, retentionMs: config.offlineLimits.retentionDays * 24 * 60 * 60 * 1000 }
  }
  const tls = config.tls === undefined ? undefined : await readTlsFiles(config.tls)
  const peers = config.peers?.map(p => ({ domain: p.domain, addresses: p.addresses.map(a => ({ ...a })), trusted: p.trusted }))
  if (peers !== undefined) context.logger.info('peer networks', { peers: peers.map(p => `${p.domain}${p.trusted ? ' (trusted)' : ''}`) })
  const presenceRateLimit = config.limits?.presenceRateLimit
  const lists = config.lists === undefined ? undefined : { maxMembers: config.lists.maxMembers, maxLists: config.lists.maxLists, maxPerWatcher: config.lists.maxSubscriptionsPerUser }
  const presence = {
    ...(presenceRateLimit !== undefined ? { rateLimit: { ...presenceRateLimit } } : {}),
    ...(lists !== undefined ? { lists } : {})
  }
  return sipGateway({ ...context, config: { ...config, offline, auth, tls, peers, presence } })
}

/** Largest PEM file read (a certificate chain or a bundle of authorities). */
const MAX_PEM_BYTES = 1024 * 1024

async function readPem (path: string, what: string): Promise<string> {
  let text: string
  try {
    const buf = await readFile(path)
    if (buf.byteLength > MAX_PEM_BYTES) throw new Error(`larger than ${MAX_PEM_BYTES} bytes`)
    text = buf.toString('utf8')
  } catch (err) {
    throw new Error(`cannot read the ${what} ${path}: ${(err as Error).message}`, { cause: err })
  }
  if (!text.includes('-----BEGIN ')) throw new Error(`the ${what} ${path} is not PEM`)
  return text
}

/** The TLS certificate, key and authorities named by the config, read as PEM text. */
async function readTlsFiles (tls: NonNullable<GatewayContextConfig['tls']>): Promise<{ listen?: { host: string, port: number }, wss?: { host: string, port: number }, cert: string, key: string, ca?: string }> {
  return {
    ...(tls.listen !== undefined ? { listen: { ...tls.listen } } : {}),
    ...(tls.wss !== undefined ? { wss: { ...tls.wss } } : {}),
    cert: await readPem(tls.cert, 'TLS certificate (--tls-cert)'),
    key: await readPem(tls.key, 'TLS key (--tls-key)'),
    ...(tls.ca !== undefined ? { ca: await readPem(tls.ca, 'TLS authorities (--tls-ca)') } : {})
  }
}
