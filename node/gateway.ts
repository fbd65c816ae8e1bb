/**
 * The seam where the SIP gateway (sip-gateway/) plugs into the node: `sipmesh start` runs
 * `defaultGateway`. It gets the context the node builds (`GatewayContext` in sipmesh-node.ts:
 * `{ registry, peerChannel, store, logger, config, announceSip }`) and returns
 * `{ start, stop, registrations }`. Leave it undefined to run the mesh and the admin API only.
 *
 * The credentials file (`--credentials`) is read here (only `node/` touches files and the
 * environment): its users are known to the mesh for the offline store (issue 5), whether or not
 * they ever registered. See `readCredentialUsers` for the format.
 */
import { readFile } from 'node:fs/promises'
import { sipGateway } from '../sip-gateway/index.ts'
import type { GatewayFactory } from './sipmesh-node.ts'

/** Largest credentials file read, bytes. */
const MAX_CREDENTIALS_BYTES = 16 * 1024 * 1024

/**
 * The AoRs of a credentials file: one user per line, the first whitespace- or colon-free field
 * being `sip:user@domain` or `user@domain` (what follows on the line, such as a digest secret, is
 * left to authentication). Blank lines and lines starting with `#` are skipped; so are lines whose
 * first field is not a user of one of `domains`.
 */
export function readCredentialUsers (text: string, domains: readonly string[]): string[] {
  const served = new Set(domains.map(d => d.toLowerCase()))
  const out = new Set<string>()
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const first = /^(?:sips?:)?([^@\s:;]+)@([A-Za-z0-9.-]+)/.exec(line)
    if (first === null) continue
    const domain = first[2].toLowerCase()
    if (!served.has(domain)) continue
    out.add(`sip:${first[1]}@${domain}`)
  }
  return [...out]
}

export const defaultGateway: GatewayFactory | undefined = async (context) => {
  const { config } = context
  let credentials: string[] = []
  if (config.credentials !== undefined) {
    const data = await readFile(config.credentials)
    if (data.byteLength > MAX_CREDENTIALS_BYTES) throw new RangeError(`credentials file over ${MAX_CREDENTIALS_BYTES} bytes`)
    credentials = readCredentialUsers(data.toString('utf8'), config.domains)
    context.logger.info('credentials file read', { users: credentials.length })
  }
  const offline = {
    known: { credentials },
    store: config.offlineLimits === undefined
      ? undefined
      : { maxMessagesPerUser: config.offlineLimits.maxMessagesPerUser, retentionMs: config.offlineLimits.retentionDays * 24 * 60 * 60 * 1000 }
  }
  return sipGateway({ ...context, config: { ...config, offline } })
}
