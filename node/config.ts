/**
 * One configuration for a sipmesh node, merged from three layers, later ones winning:
 *
 *   1. a JSON config file (`--config file.json`, or `SIPMESH_CONFIG`)
 *   2. the environment (`SIPMESH_<FLAG>`: `SIPMESH_SIP`, `SIPMESH_DATA_DIR`, ...)
 *   3. command-line flags (`--sip 127.0.0.1:5060`, ...)
 *
 * The config file uses the flag names as keys (`{ "domain": ["example.com"], "data-dir": "./d",
 * "mdns": true }`). Repeatable settings (`domain`, `p2p`, `bootstrap`, `allow-peer`, `peer`, `peer-trust`) take a list
 * in the file, comma-separated values in the environment, and repeated and/or comma-separated
 * flags on the command line; a later layer replaces the list of an earlier one, it does not add to
 * it. Every layer is checked on its own (so an error names the flag, variable or file key that
 * caused it), unknown keys are an error in every layer, and the result is deep-frozen.
 *
 * This is the only place (with the CLI) that reads `process.env`.
 */
import { readFile } from 'node:fs/promises'
import { resolve as resolvePath } from 'node:path'
import { parseArgs } from 'node:util'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { z } from 'zod'
import { ConflictPolicy } from '../sip-gateway/registrar/registrar.ts'
import { tokenProblem } from './admin/auth.ts'
import { helpColumns } from './help.ts'

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const
export type LogLevel = typeof LOG_LEVELS[number]
export const LOG_FORMATS = ['json', 'pretty'] as const
export type LogFormat = typeof LOG_FORMATS[number]

export interface HostPort {
  host: string
  port: number
}

/** What the SIP gateway gets. */
export interface GatewayConfig {
  /** the SIP domains this mesh serves, lower-cased */
  domains: readonly string[]
  /** SIP over UDP and TCP */
  sip: HostPort
  /** SIP over WebSocket (RFC 7118); absent when off */
  ws?: HostPort
  /**
   * absolute path of the credentials file (format in credentials.ts): its users are known to the
   * mesh (offline IM); when any has a secret (password or HA1), user agents must authenticate by
   * SIP digest (SHA-256, MD5). Absent: no authentication
   */
  credentials?: string
  /** offline messages (issue 5): most kept per user, and for how many days */
  offlineLimits: { maxMessagesPerUser: number, retentionDays: number }
  /**
   * registrar (RFC 3261 10.3): expiry bounds in seconds (423 below the minimum), conflict policy,
   * and overload (RFC 3261 21.5.4): REGISTERs in progress (`maxPending`) and event-loop lag in ms
   * (`maxLagMs`) beyond which a REGISTER is answered 503 with Retry-After
   */
  registrar: { minExpires: number, maxExpires: number, refreshWriteSlack: number, conflictPolicy: ConflictPolicy, overload: { maxPending: number, maxLagMs: number } }
  /**
   * per source address: most inbound TCP + WebSocket connections, and (absent: off) a limit of SIP
   * messages on every transport and one of SUBSCRIBE and PUBLISH requests
   */
  limits?: { maxConnectionsPerHost?: number, rateLimit?: { perSecond: number, burst: number }, presenceRateLimit?: { perSecond: number, burst: number } }
  /**
   * resource lists (RFC 4662): most members of one list and lists held by this node (more: 413),
   * most list subscriptions of one subscriber at this node (more: 403)
   */
  lists?: { maxMembers: number, maxLists: number, maxSubscriptionsPerUser: number }
  /** SIP over UDP with its socket on a thread of its own (sip-gateway/transport/udp-thread.ts) */
  udpThread?: boolean
  /**
   * SIP over TLS (RFC 3261 26.2) and secure WebSocket: listen addresses (each optional) and the
   * absolute paths of this node's PEM certificate and key and of the authorities trusted for
   * peers' certificates. Present whenever TLS is used (listening or peering)
   */
  tls?: { listen?: HostPort, wss?: HostPort, cert: string, key: string, ca?: string }
  /**
   * peer networks (`--peer domain=host:port[,host:port]`): requests for their domain go to one of
   * their addresses over mutually authenticated TLS, in order; `trusted`: one trust domain with
   * this mesh (RFC 3325, `--peer-trust`), so P-Asserted-Identity crosses
   */
  peers?: ReadonlyArray<{ domain: string, addresses: readonly HostPort[], trusted: boolean }>
}

/** What libp2p and the DHT get. */
export interface MeshConfig {
  /** libp2p listen multiaddrs */
  listen: readonly string[]
  /** bootstrap multiaddrs, each ending in /p2p/<peer id> */
  bootstrap: readonly string[]
  /** discover peers on the LAN with mDNS */
  mdns: boolean
  /** absolute path of a pre-shared key file (libp2p private network); absent: open mesh */
  psk?: string
  /** when not empty, only these peer ids may connect */
  allowPeers: readonly string[]
  /** a mesh connection this node dialled closes after this long without work, ms; 0: never (node/idle-connections.ts) */
  idleConnectionMs: number
}

export interface AdminConfig extends HostPort {
  /** the bearer token of mutating requests; absent: `<data-dir>/admin.token` (node/admin/auth.ts) */
  token?: string
}

export interface LogConfig {
  level: LogLevel
  /** `json`: one JSON object a line; `pretty`: pino-pretty's coloured lines for a terminal */
  format: LogFormat
}

export interface Config {
  /** absolute path of the data directory (identity key, LevelDB) */
  dataDir: string
  gateway: GatewayConfig
  mesh: MeshConfig
  admin: AdminConfig
  log: LogConfig
}

/** Where a bad setting came from, for error messages. */
export type ConfigSource = 'file' | 'env' | 'flags'

export class ConfigError extends Error {
  static readonly NAME = 'ConfigError'
  override readonly name = ConfigError.NAME
}

/**
 * Every setting, by flag name. kind `list`: repeatable flag and/or comma-separated values, a
 * comma-separated env value, a JSON array in the file; `boolean`: a switch (`--mdns`,
 * `--no-mdns`, SIPMESH_MDNS=true|false|1|0, `"mdns": true`); `string`: one value.
 */
const SETTINGS = {
  domain: { kind: 'list', value: 'domain', help: 'SIP domain served by the mesh (repeatable or comma-separated)' },
  sip: { kind: 'string', value: 'host:port', help: 'SIP over UDP and TCP' },
  ws: { kind: 'string', value: 'host:port', help: 'SIP over WebSocket (off when absent)' },
  p2p: { kind: 'list', value: 'multiaddr', help: 'libp2p listen address (repeatable)' },
  bootstrap: { kind: 'list', value: 'multiaddr', help: 'a node to join through, ending in /p2p/<peer id> (repeatable)' },
  mdns: { kind: 'boolean', help: 'discover peers on the LAN with mDNS' },
  'data-dir': { kind: 'string', value: 'dir', help: 'data directory (identity key, admin token, LevelDB)' },
  psk: { kind: 'string', value: 'file', help: 'pre-shared key file (sipmesh psk makes one): only nodes with the same key can connect' },
  admin: { kind: 'string', value: 'host:port', help: 'admin HTTP API' },
  'admin-token': { kind: 'string', value: 'token', help: 'bearer token for the admin API\'s PUT/DELETE (default: generated into <data-dir>/admin.token)' },
  'log-level': { kind: 'string', value: 'level', help: `log level: ${LOG_LEVELS.join(', ')}` },
  'log-format': { kind: 'string', value: 'format', help: `log format: json (one object a line) or pretty (for a terminal)` },
  'allow-peer': { kind: 'list', value: 'peer-id', help: 'peer id allowed to connect (repeatable); default: any' },
  'mesh-idle': { kind: 'string', value: 'seconds', help: 'close a mesh connection this node dialled once it carried no work this long (0: keep every connection)' },
  credentials: { kind: 'string', value: 'file', help: 'users file, one "user@domain [password | md5:<HA1> sha-256:<HA1>]" a line: users known to the mesh; with secrets, SIP digest authentication of user agents (401/407)' },
  'offline-max-per-user': { kind: 'string', value: 'n', help: 'most offline messages kept for one user (more: 480 Mailbox Full)' },
  'offline-retention-days': { kind: 'string', value: 'days', help: 'days an offline message is kept for a user who does not come back' },
  'min-expires': { kind: 'string', value: 'seconds', help: 'shortest registration accepted (shorter: 423 Interval Too Brief)' },
  'max-expires': { kind: 'string', value: 'seconds', help: 'longest registration granted (longer requests are shortened)' },
  'refresh-write-slack': { kind: 'string', value: 'seconds', help: 'how much later than granted a registration may expire after a crash; refreshes within it are not written to disk (0: every refresh is)' },
  'conflict-policy': { kind: 'string', value: 'policy', help: `a user registered on two nodes at once: ${Object.values(ConflictPolicy).join(' or ')}` },
  'rate-limit': { kind: 'string', value: 'n', help: 'SIP messages per second accepted from one source address, bursts of twice that (default: off)' },
  'presence-rate-limit': { kind: 'string', value: 'n', help: 'SUBSCRIBE and PUBLISH requests per second accepted from one source address, bursts of twice that; more: 503 (default: off)' },
  'max-pending-registers': { kind: 'string', value: 'n', help: 'REGISTERs in progress (waiting for their claim) beyond which a new one is answered 503 with Retry-After' },
  'overload-lag-ms': { kind: 'string', value: 'ms', help: 'event-loop lag beyond which a REGISTER is answered 503 with Retry-After' },
  'udp-thread': { kind: 'boolean', help: 'SIP over UDP with its socket on a thread of its own: the system calls of its datagrams use a second core' },
  'max-connections-per-host': { kind: 'string', value: 'n', help: 'open SIP TCP + WebSocket connections accepted from one source address (more are refused)' },
  'max-list-members': { kind: 'string', value: 'n', help: 'most members of one resource list (more: 413; a list is also at most 48 KiB as JSON)' },
  'max-lists': { kind: 'string', value: 'n', help: 'most resource lists this node holds (more: 413)' },
  'max-list-subscriptions': { kind: 'string', value: 'n', help: 'most list subscriptions of one subscriber at this node (more: 403)' },
  tls: { kind: 'string', value: 'host:port', help: 'SIP over TLS (off when absent; needs --tls-cert and --tls-key)' },
  wss: { kind: 'string', value: 'host:port', help: 'SIP over secure WebSocket, with the TLS certificate (off when absent)' },
  'tls-cert': { kind: 'string', value: 'file', help: 'PEM certificate (chain) of this node, naming its domain (sipmesh cert makes one)' },
  'tls-key': { kind: 'string', value: 'file', help: 'PEM private key of --tls-cert' },
  'tls-ca': { kind: 'string', value: 'file', help: 'PEM authorities trusted for peer networks\' certificates (needed with --peer)' },
  peer: { kind: 'list', value: 'domain=host:port', help: 'peer network: domain=host:port[,host:port...] (repeatable), reached over mutually authenticated TLS' },
  'peer-trust': { kind: 'list', value: 'domain', help: 'peer domain forming one trust domain with this mesh: P-Asserted-Identity crosses to and from it (RFC 3325)' }
} as const

/**
 * `SIPMESH_*` variables that are not settings: the test suite's own switches, which a developer
 * may have exported in the shell that then runs `sipmesh start`.
 */
export const NON_SETTING_VARIABLES: readonly string[] = ['SIPMESH_REQUIRE_SIPP', 'SIPMESH_REQUIRE_KAMAILIO', 'SIPMESH_REQUIRE_BROWSER', 'SIPMESH_TEST_LOG']

type SettingName = keyof typeof SETTINGS

export const DEFAULTS = {
  domain: ['example.com', 'localhost'],
  sip: '127.0.0.1:5060',
  p2p: ['/ip4/127.0.0.1/tcp/4001'],
  bootstrap: [],
  mdns: false,
  'data-dir': './.sipmesh',
  admin: '127.0.0.1:8080',
  'log-level': 'info',
  'log-format': 'json',
  'allow-peer': [],
  'mesh-idle': '300',
  'offline-max-per-user': '1000',
  'offline-retention-days': '7',
  'min-expires': '60',
  'max-expires': '3600',
  'refresh-write-slack': '300',
  'conflict-policy': ConflictPolicy.LatestTakesOver,
  'max-pending-registers': '2000',
  'overload-lag-ms': '500',
  'udp-thread': false,
  'max-connections-per-host': '256',
  'max-list-members': '1000',
  'max-lists': '10000',
  'max-list-subscriptions': '20'
} as const

// ---- validation of single values ---------------------------------------------------------------

const hostnameRe = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i
const ipv4Re = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/

/** `host:port` with an IPv4 address, a hostname or a bracketed IPv6 address. */
export function parseHostPort (value: string): HostPort {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+):(\d{1,5})$/.exec(value)
  if (m == null) throw new Error('expected host:port, for example 127.0.0.1:5060')
  const port = Number(m[2])
  if (port > 65535) throw new Error(`port ${port} is out of range (0-65535)`)
  let host = m[1]
  if (host.startsWith('[')) {
    host = host.slice(1, -1)
    if (!host.includes(':')) throw new Error(`"${host}" is not an IPv6 address`)
  } else if (/^[\d.]+$/.test(host) ? !ipv4Re.test(host) : !hostnameRe.test(host)) {
    throw new Error(`"${host}" is not an IPv4 address or hostname`)
  }
  return { host, port }
}

function refineWith (check: (v: string) => unknown) {
  return (v: string, ctx: z.RefinementCtx): void => {
    try {
      check(v)
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message })
    }
  }
}

function wholeNumber (max: number) {
  return (v: string): void => {
    if (!/^\d{1,9}$/.test(v) || Number(v) > max) throw new Error(`expected a whole number from 0 to ${max}`)
  }
}

function positiveInteger (max: number) {
  return (v: string): void => {
    if (!/^\d{1,9}$/.test(v) || Number(v) < 1 || Number(v) > max) throw new Error(`expected a whole number from 1 to ${max}`)
  }
}

function checkMultiaddr (v: string): void {
  const ma = multiaddr(v)
  if (ma.toString() === '/') throw new Error('empty multiaddr')
}

function checkBootstrap (v: string): void {
  let ma
  try {
    ma = multiaddr(v)
  } catch (err) {
    throw new Error(`"${v.slice(0, 120)}" is not a multiaddr (${(err as Error).message}); expected e.g. /ip4/10.0.0.5/tcp/4001/p2p/12D3KooW...`, { cause: err })
  }
  const peer = ma.getComponents().findLast(c => c.name === 'p2p')?.value
  if (peer == null) throw new Error('a bootstrap address must end in /p2p/<peer id>')
  try {
    peerIdFromString(peer)
  } catch {
    throw new Error(`"${peer.slice(0, 80)}" after /p2p/ is not a peer id (the 12D3KooW... id that the node logs at start and shows in /status)`)
  }
}

function checkPeerId (v: string): void {
  try {
    peerIdFromString(v)
  } catch {
    throw new Error(`"${v}" is not a peer id`)
  }
}

const MAX_STRING = 4096
const MAX_LIST = 256
const str = z.string().min(1, 'must not be empty').max(MAX_STRING)
const domainStr = str.refine(v => hostnameRe.test(v), { message: 'not a domain name' })

/** One item of `--peer`: `domain=host:port`, or `host:port` (another address of the peer before it). */
function checkPeerItem (item: string): void {
  for (const v of item.split(',').map(x => x.trim())) checkPeerAddress(v)
}

function checkPeerAddress (v: string): void {
  const eq = v.indexOf('=')
  if (eq >= 0) {
    const domain = v.slice(0, eq)
    if (!hostnameRe.test(domain)) throw new Error(`"${domain.slice(0, 80)}" is not a domain name (expected domain=host:port)`)
    parseHostPort(v.slice(eq + 1))
  } else {
    parseHostPort(v)
  }
}

export interface PeerSetting { domain: string, addresses: HostPort[] }

/**
 * The peer networks of a `--peer` list: `["example.net=a:5061", "b:5061", "example.org=c:5061"]`
 * (comma-separated values split into items) gives example.net at a and b, example.org at c.
 */
export function parsePeers (items: readonly string[]): PeerSetting[] {
  const peers: PeerSetting[] = []
  for (const item of items.flatMap(i => i.split(',')).map(i => i.trim()).filter(i => i !== '')) {
    const eq = item.indexOf('=')
    if (eq >= 0) {
      const domain = item.slice(0, eq).toLowerCase()
      if (peers.some(p => p.domain === domain)) throw new Error(`peer ${domain} is given twice`)
      peers.push({ domain, addresses: [parseHostPort(item.slice(eq + 1))] })
    } else {
      const last = peers[peers.length - 1]
      if (last === undefined) throw new Error(`"${item.slice(0, 80)}" has no peer domain before it (expected domain=host:port)`)
      if (last.addresses.length >= 16) throw new Error(`peer ${last.domain} has more than 16 addresses`)
      last.addresses.push(parseHostPort(item))
    }
  }
  return peers
}

/** One layer of input: every key optional, no unknown keys. */
const layerSchema = z.strictObject({
  domain: z.array(domainStr).min(1, 'needs at least one domain').max(MAX_LIST),
  sip: str.superRefine(refineWith(parseHostPort)),
  ws: str.superRefine(refineWith(parseHostPort)),
  p2p: z.array(str.superRefine(refineWith(checkMultiaddr))).max(MAX_LIST),
  bootstrap: z.array(str.superRefine(refineWith(checkBootstrap))).max(MAX_LIST),
  mdns: z.boolean(),
  'data-dir': str,
  psk: str,
  admin: str.superRefine(refineWith(parseHostPort)),
  'admin-token': str.superRefine(refineWith((v) => { const p = tokenProblem(v); if (p !== undefined) throw new Error(p) })),
  'log-level': z.enum(LOG_LEVELS),
  'log-format': z.enum(LOG_FORMATS),
  'allow-peer': z.array(str.superRefine(refineWith(checkPeerId))).max(MAX_LIST),
  'mesh-idle': str.superRefine(refineWith(wholeNumber(86_400))),
  credentials: str,
  'offline-max-per-user': str.superRefine(refineWith(positiveInteger(1_000_000))),
  'offline-retention-days': str.superRefine(refineWith(positiveInteger(3650))),
  'min-expires': str.superRefine(refineWith(positiveInteger(86_400))),
  'max-expires': str.superRefine(refineWith(positiveInteger(7 * 86_400))),
  'refresh-write-slack': str.superRefine(refineWith(wholeNumber(86_400))),
  'conflict-policy': z.enum(Object.values(ConflictPolicy) as [ConflictPolicy, ...ConflictPolicy[]]),
  'rate-limit': str.superRefine(refineWith(positiveInteger(1_000_000))),
  'presence-rate-limit': str.superRefine(refineWith(positiveInteger(1_000_000))),
  'max-pending-registers': str.superRefine(refineWith(positiveInteger(1_000_000))),
  'overload-lag-ms': str.superRefine(refineWith(positiveInteger(60_000))),
  'udp-thread': z.boolean(),
  'max-connections-per-host': str.superRefine(refineWith(positiveInteger(1_000_000))),
  // a list travels over the mesh as one SIP message (48 KiB of JSON): more members could not fit
  'max-list-members': str.superRefine(refineWith(positiveInteger(10_000))),
  'max-lists': str.superRefine(refineWith(positiveInteger(1_000_000))),
  'max-list-subscriptions': str.superRefine(refineWith(positiveInteger(10_000))),
  tls: str.superRefine(refineWith(parseHostPort)),
  wss: str.superRefine(refineWith(parseHostPort)),
  'tls-cert': str,
  'tls-key': str,
  'tls-ca': str,
  peer: z.array(str.superRefine(refineWith(checkPeerItem))).max(MAX_LIST).superRefine((items, ctx) => {
    try { parsePeers(items) } catch (err) { ctx.addIssue({ code: 'custom', message: (err as Error).message }) }
  }),
  'peer-trust': z.array(domainStr).max(MAX_LIST)
}).partial()

export type ConfigLayer = z.infer<typeof layerSchema>

function describeKey (source: ConfigSource, key: string, origin?: string): string {
  switch (source) {
    case 'flags': return `--${key}`
    case 'env': return envName(key)
    case 'file': return `"${key}" in ${origin ?? 'the config file'}`
  }
}

function formatIssues (error: z.ZodError, source: ConfigSource, origin?: string): string {
  const lines: string[] = []
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        lines.push(source === 'file'
          ? `unknown key "${key}" in ${origin ?? 'the config file'} (known keys: ${Object.keys(SETTINGS).join(', ')})`
          : `unknown setting ${describeKey(source, key, origin)}`)
      }
      continue
    }
    const key = String(issue.path[0] ?? '')
    const where = key === '' ? (origin ?? source) : describeKey(source, key, origin)
    const index = issue.path.length > 1 ? ` (item ${Number(issue.path[1]) + 1})` : ''
    let message = issue.message
    if (issue.code === 'invalid_type') message = `expected ${issue.expected}`
    lines.push(`${where}${index}: ${message}`)
  }
  return lines.join('; ')
}

/** Check one layer; throws a ConfigError naming the flag, variable or file key at fault. */
export function validateLayer (input: unknown, source: ConfigSource, origin?: string): ConfigLayer {
  const result = layerSchema.safeParse(input)
  if (!result.success) {
    throw new ConfigError(`invalid configuration: ${formatIssues(result.error, source, origin)}`)
  }
  return result.data
}

// ---- the three layers --------------------------------------------------------------------------

export function envName (setting: string): string {
  return `SIPMESH_${setting.toUpperCase().replace(/-/g, '_')}`
}

function splitList (value: string): string[] {
  return value.split(',').map(s => s.trim()).filter(s => s !== '')
}

function parseBool (value: string, name: string): boolean {
  const v = value.trim().toLowerCase()
  if (['1', 'true', 'yes', 'on'].includes(v)) return true
  if (['0', 'false', 'no', 'off', ''].includes(v)) return false
  throw new ConfigError(`invalid configuration: ${name}: expected true or false, got "${value}"`)
}

/** The environment layer: `SIPMESH_*` variables. An unknown `SIPMESH_*` variable is an error. */
export function layerFromEnv (env: Record<string, string | undefined>): { layer: ConfigLayer, configFile?: string } {
  const raw: Record<string, unknown> = {}
  let configFile: string | undefined
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith('SIPMESH_') || value == null) continue
    if (name === 'SIPMESH_CONFIG') {
      if (value !== '') configFile = value
      continue
    }
    if (NON_SETTING_VARIABLES.includes(name)) continue
    const setting = (Object.keys(SETTINGS) as SettingName[]).find(s => envName(s) === name)
    if (setting == null) {
      throw new ConfigError(`invalid configuration: unknown environment variable ${name} (known: ${[...Object.keys(SETTINGS).map(envName), 'SIPMESH_CONFIG'].join(', ')})`)
    }
    const kind = SETTINGS[setting].kind
    raw[setting] = kind === 'list' ? splitList(value) : kind === 'boolean' ? parseBool(value, name) : value
  }
  return { layer: validateLayer(raw, 'env'), configFile }
}

/** The command-line layer, plus `--config` and `--help`. */
export function layerFromArgs (args: string[]): { layer: ConfigLayer, configFile?: string, help: boolean } {
  const options: Record<string, { type: 'string' | 'boolean', multiple?: boolean, short?: string }> = {
    config: { type: 'string' },
    help: { type: 'boolean', short: 'h' }
  }
  for (const [name, s] of Object.entries(SETTINGS)) {
    options[name] = s.kind === 'boolean' ? { type: 'boolean' } : { type: 'string', multiple: s.kind === 'list' }
  }
  let values: Record<string, unknown>
  try {
    values = parseArgs({ args, options, strict: true, allowPositionals: false, allowNegative: true }).values
  } catch (err) {
    throw new ConfigError(`invalid command line: ${(err as Error).message.split('\n')[0]}`)
  }
  const raw: Record<string, unknown> = {}
  for (const [name, value] of Object.entries(values)) {
    if (name === 'config' || name === 'help') continue
    raw[name] = Array.isArray(value) ? value.flatMap(v => splitList(String(v))) : value
  }
  return {
    layer: validateLayer(raw, 'flags'),
    configFile: values.config as string | undefined,
    help: values.help === true
  }
}

const MAX_CONFIG_FILE = 1024 * 1024

/** The config-file layer. */
export async function layerFromFile (path: string): Promise<ConfigLayer> {
  let text: string
  try {
    const buf = await readFile(path)
    if (buf.byteLength > MAX_CONFIG_FILE) throw new Error(`larger than ${MAX_CONFIG_FILE} bytes`)
    text = buf.toString('utf8')
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`)
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new ConfigError(`config file ${path} is not valid JSON: ${(err as Error).message}`)
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new ConfigError(`config file ${path} must hold a JSON object`)
  }
  return validateLayer(json, 'file', path)
}

// ---- merge, normalize, freeze ------------------------------------------------------------------

export function deepFreeze<T> (value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const v of Object.values(value)) deepFreeze(v)
  }
  return value
}

/** Merge layers (later wins) over the defaults and build the frozen config. */
export function buildConfig (layers: ConfigLayer[], cwd = process.cwd()): Readonly<Config> {
  const merged: ConfigLayer = Object.assign({}, DEFAULTS, ...layers)
  const get = <K extends SettingName>(k: K): NonNullable<ConfigLayer[K]> => merged[k] as NonNullable<ConfigLayer[K]>
  const domains = [...new Set(get('domain').map(d => d.toLowerCase()))]
  if (Number(get('min-expires')) > Number(get('max-expires'))) {
    throw new ConfigError(`invalid configuration: min-expires (${get('min-expires')}) is above max-expires (${get('max-expires')})`)
  }
  const peers = parsePeers(merged.peer ?? [])
  for (const p of peers) {
    if (domains.includes(p.domain)) throw new ConfigError(`invalid configuration: peer ${p.domain} is a domain this mesh serves`)
  }
  const trust = new Set((merged['peer-trust'] ?? []).map(d => d.toLowerCase()))
  for (const d of trust) {
    if (!peers.some(p => p.domain === d)) throw new ConfigError(`invalid configuration: peer-trust ${d} is not a configured peer (--peer ${d}=host:port)`)
  }
  const usesTls = merged.tls != null || merged.wss != null || peers.length > 0
  if (usesTls && (merged['tls-cert'] == null || merged['tls-key'] == null)) {
    throw new ConfigError('invalid configuration: --tls, --wss and --peer need --tls-cert and --tls-key (sipmesh cert makes them for local use)')
  }
  if (peers.length > 0 && merged['tls-ca'] == null) {
    throw new ConfigError('invalid configuration: --peer needs --tls-ca, the authorities trusted for peers\' certificates')
  }
  const tls = !usesTls
    ? undefined
    : {
        ...(merged.tls != null ? { listen: parseHostPort(merged.tls) } : {}),
        ...(merged.wss != null ? { wss: parseHostPort(merged.wss) } : {}),
        cert: resolvePath(cwd, merged['tls-cert'] as string),
        key: resolvePath(cwd, merged['tls-key'] as string),
        ...(merged['tls-ca'] != null ? { ca: resolvePath(cwd, merged['tls-ca']) } : {})
      }
  const config: Config = {
    dataDir: resolvePath(cwd, get('data-dir')),
    gateway: {
      domains,
      sip: parseHostPort(get('sip')),
      ...(merged.ws != null ? { ws: parseHostPort(merged.ws) } : {}),
      ...(merged.credentials != null ? { credentials: resolvePath(cwd, merged.credentials) } : {}),
      offlineLimits: { maxMessagesPerUser: Number(get('offline-max-per-user')), retentionDays: Number(get('offline-retention-days')) },
      registrar: {
        minExpires: Number(get('min-expires')),
        maxExpires: Number(get('max-expires')),
        refreshWriteSlack: Number(get('refresh-write-slack')),
        conflictPolicy: get('conflict-policy'),
        overload: { maxPending: Number(get('max-pending-registers')), maxLagMs: Number(get('overload-lag-ms')) }
      },
      limits: {
        maxConnectionsPerHost: Number(get('max-connections-per-host')),
        ...(merged['rate-limit'] != null ? { rateLimit: { perSecond: Number(merged['rate-limit']), burst: 2 * Number(merged['rate-limit']) } } : {}),
        ...(merged['presence-rate-limit'] != null ? { presenceRateLimit: { perSecond: Number(merged['presence-rate-limit']), burst: 2 * Number(merged['presence-rate-limit']) } } : {})
      },
      ...(get('udp-thread') ? { udpThread: true } : {}),
      lists: { maxMembers: Number(get('max-list-members')), maxLists: Number(get('max-lists')), maxSubscriptionsPerUser: Number(get('max-list-subscriptions')) },
      ...(tls !== undefined ? { tls } : {}),
      ...(peers.length > 0 ? { peers: peers.map(p => ({ ...p, trusted: trust.has(p.domain) })) } : {})
    },
    mesh: {
      listen: [...new Set(get('p2p'))],
      bootstrap: [...new Set(get('bootstrap'))],
      mdns: get('mdns'),
      ...(merged.psk != null ? { psk: resolvePath(cwd, merged.psk) } : {}),
      allowPeers: [...new Set(get('allow-peer'))],
      idleConnectionMs: Number(get('mesh-idle')) * 1000
    },
    admin: { ...parseHostPort(get('admin')), ...(merged['admin-token'] != null ? { token: merged['admin-token'] } : {}) },
    log: { level: get('log-level'), format: get('log-format') }
  }
  return deepFreeze(config)
}

export interface LoadedConfig {
  config: Readonly<Config>
  help: boolean
}

/** file → environment → flags, validated and frozen. Throws ConfigError with a clear message. */
export async function loadConfig (args: string[], env: Record<string, string | undefined> = process.env, cwd = process.cwd()): Promise<LoadedConfig> {
  const fromArgs = layerFromArgs(args)
  const fromEnv = layerFromEnv(env)
  const configFile = fromArgs.configFile ?? fromEnv.configFile
  const layers: ConfigLayer[] = []
  if (configFile != null) layers.push(await layerFromFile(resolvePath(cwd, configFile)))
  layers.push(fromEnv.layer, fromArgs.layer)
  return { config: buildConfig(layers, cwd), help: fromArgs.help }
}

/** `sipmesh start --help` */
export function startUsage (width?: number): string {
  const rows: Array<[string, string]> = []
  for (const [name, s] of Object.entries(SETTINGS)) {
    const flag = s.kind === 'boolean' ? `--${name}` : `--${name} <${s.value}>`
    const def = (DEFAULTS as Record<string, unknown>)[name]
    const defText = def == null || (Array.isArray(def) && def.length === 0) ? '' : ` (default: ${Array.isArray(def) ? def.join(',') : String(def)})`
    rows.push([flag, `${s.help}${defText}`])
  }
  rows.push(['--config <file.json>', 'JSON config file whose keys are the option names'])
  rows.push(['-h, --help', 'this help'])
  return [
    'Usage: sipmesh start [options]',
    '',
    'Options (each also SIPMESH_<OPTION> in the environment, e.g. SIPMESH_DATA_DIR, and a key of',
    'the --config file):',
    ...helpColumns(rows, width)
  ].join('\n')
}
