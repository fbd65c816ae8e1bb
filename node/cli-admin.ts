/**
 * CLI subcommands that ask a running node through its admin API (issue 14), in the manner of
 * Kamailio's `kamcmd`:
 *
 *   sipmesh status [--admin host:port] [--json]          the node, its addresses and its peers
 *   sipmesh aor <aor> [--admin host:port] [--json]       who owns an AoR, and its bindings there
 *   sipmesh registrations [--prefix p] [--limit n] [--after cursor] [--admin host:port] [--json]
 *                                                        the AoRs registered at the node
 *
 * `--admin` defaults to 127.0.0.1:8080 (the node's default). Readable tables by default; `--json`
 * prints what the API answered. Exit codes: 0 ok, 1 the node answered an error or cannot be
 * reached, 2 bad usage.
 */
import { parseArgs } from 'node:util'
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from './signals.ts'

export const DEFAULT_ADMIN = '127.0.0.1:8080'
const TIMEOUT_MS = 15_000

export function adminUsage (): string {
  return [
    'Usage: sipmesh status [options]',
    '       sipmesh aor <aor> [options]',
    '       sipmesh registrations [--prefix <p>] [--limit <n>] [--after <aor>] [options]',
    '',
    'Ask a running node through its admin API.',
    '',
    `  --admin <host:port>  the node's admin API (default ${DEFAULT_ADMIN})`,
    '  --json               print the API\'s JSON instead of tables',
    '  --prefix <p>         registrations: AoRs starting with p (sip:al or al)',
    '  --limit <n>          registrations: at most n AoRs (1-1000, default 100)',
    '  --after <aor>        registrations: the page after this AoR (printed as "next")',
    '  -h, --help           this help'
  ].join('\n')
}

class UsageError extends Error {}

/** An answer of the admin API that is not 2xx, or no answer. */
export class AdminRequestError extends Error {
  static readonly NAME = 'AdminRequestError'
  override readonly name = AdminRequestError.NAME
}

/** Rows as columns padded to the widest cell, two spaces apart. */
export function formatTable (rows: string[][]): string {
  const widths: number[] = []
  for (const r of rows) r.forEach((cell, c) => { widths[c] = Math.max(widths[c] ?? 0, cell.length) })
  return rows.map(r => r.map((cell, c) => cell.padEnd(widths[c])).join('  ').trimEnd()).join('\n')
}

async function getJson (admin: string, path: string): Promise<unknown> {
  let res: Response
  try {
    res = await fetch(`http://${admin}${path}`, { signal: AbortSignal.timeout(TIMEOUT_MS), headers: { accept: 'application/json' } })
  } catch (err) {
    const c = (err as { cause?: { code?: string, message?: string, errors?: Array<{ code?: string }> } }).cause
    const cause = c?.code ?? c?.errors?.[0]?.code ?? c?.message ?? (err as Error).message
    throw new AdminRequestError(`cannot reach the admin API at ${admin} (${cause}); is the node running? (--admin host:port)`)
  }
  const text = await res.text()
  let body: unknown
  try { body = JSON.parse(text) } catch { throw new AdminRequestError(`${admin}${path} answered ${res.status} with something that is not JSON; is this a sipmesh admin API?`) }
  if (!res.ok) {
    const e = (body as { error?: { code?: string, message?: string } }).error
    throw new AdminRequestError(`${e?.message ?? `HTTP ${res.status}`}${e?.code !== undefined ? ` (${e.code})` : ''}`)
  }
  return body
}

const untilText = (iso: string): string => {
  const s = Math.round((Date.parse(iso) - Date.now()) / 1000)
  return Number.isFinite(s) ? `${s} s` : iso
}

interface Status { peerId: string, multiaddrs: string[], sip: string, domains: string[], peers: string[], registrations: number }
interface Peer { peerId: string, addresses: string[], latencyMs?: number, sipStream: { open: boolean, queued: number } }
interface Binding { contact: string, expires: string, params: Record<string, string | null> }
interface Page { items: Array<{ aor: string, bindings: Binding[] }>, total: number, next?: string }

async function status (admin: string, json: boolean): Promise<string> {
  const [s, peers] = await Promise.all([getJson(admin, '/status') as Promise<Status>, getJson(admin, '/peers') as Promise<Peer[]>])
  if (json) return JSON.stringify({ status: s, peers }, null, 2)
  const lines = [
    formatTable([
      ['node', s.peerId],
      ['SIP', s.sip],
      ['domains', s.domains.join(', ')],
      ['registrations', String(s.registrations)],
      ['libp2p', s.multiaddrs.join(' ')],
      ['admin', `http://${admin}/ (dashboard)`]
    ]),
    '',
    `peers: ${peers.length}`
  ]
  if (peers.length > 0) {
    lines.push(formatTable([['peer id', 'address', 'RTT', 'SIP stream'],
      ...peers.map(p => [p.peerId, p.addresses[0] ?? '', p.latencyMs !== undefined ? `${p.latencyMs} ms` : '-', p.sipStream.open ? `open${p.sipStream.queued > 0 ? `, ${p.sipStream.queued} queued` : ''}` : 'none'])]))
  }
  return lines.join('\n')
}

async function aor (admin: string, target: string, json: boolean): Promise<string> {
  const v = await getJson(admin, `/bindings/${encodeURIComponent(target)}`) as { aor: string, owner: string, sip: string, self: boolean, bindings: Binding[] }
  if (json) return JSON.stringify(v, null, 2)
  const lines = [formatTable([['AoR', v.aor], ['owner', `${v.owner}${v.self ? ' (this node)' : ''}`], ['owner SIP', v.sip]]), '']
  if (v.bindings.length === 0) lines.push('no live bindings')
  else lines.push(formatTable([['contact', 'expires in', 'params'], ...v.bindings.map(b => [b.contact, untilText(b.expires), Object.entries(b.params).map(([k, x]) => x === null ? k : `${k}=${x}`).join(';')])]))
  return lines.join('\n')
}

async function registrations (admin: string, query: URLSearchParams, json: boolean): Promise<string> {
  const page = await getJson(admin, `/registrations?${query.toString()}`) as Page
  if (json) return JSON.stringify(page, null, 2)
  const rows = [['AoR', 'contact', 'expires in']]
  for (const r of page.items) r.bindings.forEach((b, i) => rows.push([i === 0 ? r.aor : '', b.contact, untilText(b.expires)]))
  const lines = page.items.length > 0 ? [formatTable(rows), ''] : []
  lines.push(`${page.items.length} of ${page.total} AoRs${page.next !== undefined ? `; next page: --after ${page.next}` : ''}`)
  return lines.join('\n')
}

/** `sipmesh status|aor|registrations ...`: prints the answer, returns the exit code. */
export async function runAdminCommand (command: 'status' | 'aor' | 'registrations', args: string[]): Promise<number> {
  let values
  let positionals
  try {
    ({ values, positionals } = parseArgs({
      args,
      strict: true,
      allowPositionals: command === 'aor',
      options: {
        admin: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        ...(command === 'registrations' ? { prefix: { type: 'string' }, limit: { type: 'string' }, after: { type: 'string' } } : {})
      }
    }))
    if (values.help === true) {
      process.stdout.write(adminUsage() + '\n')
      return EXIT_OK
    }
    if (command === 'aor' && positionals.length !== 1) throw new UsageError('expected one AoR, e.g. sipmesh aor sip:alice@example.com')
    if (values.admin !== undefined && !/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(values.admin)) throw new UsageError(`--admin: expected host:port, got "${values.admin.slice(0, 80)}"`)
    if (typeof values.limit === 'string' && (!/^\d{1,4}$/.test(values.limit) || Number(values.limit) < 1 || Number(values.limit) > 1000)) throw new UsageError('--limit: expected a whole number from 1 to 1000')
  } catch (err) {
    const message = err instanceof UsageError ? err.message : (err as Error).message.split('\n')[0]
    process.stderr.write(`sipmesh ${command}: ${message}\nRun 'sipmesh ${command} --help' for the options.\n`)
    return EXIT_USAGE
  }
  const admin = values.admin ?? DEFAULT_ADMIN
  const json = values.json === true
  try {
    let out: string
    if (command === 'status') {
      out = await status(admin, json)
    } else if (command === 'aor') {
      out = await aor(admin, positionals[0], json)
    } else {
      const q = new URLSearchParams()
      for (const k of ['prefix', 'limit', 'after'] as const) {
        const v = (values as Record<string, unknown>)[k]
        if (typeof v === 'string') q.set(k, v)
      }
      out = await registrations(admin, q, json)
    }
    process.stdout.write(out + '\n')
    return EXIT_OK
  } catch (err) {
    if ((err as Error).name !== AdminRequestError.NAME) throw err
    process.stderr.write(`sipmesh ${command}: ${(err as Error).message}\n`)
    return EXIT_FAILURE
  }
}
