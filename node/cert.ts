/**
 * `sipmesh cert`: a private certificate authority and certificates for local domains, so that a
 * developer can run two peered meshes on one machine (README, "Peering").
 *
 * The work is done by the `openssl` command (installed wherever TLS is), through execFile with
 * fixed arguments: Node's crypto can make keys but not X.509 certificates, and the one npm package
 * that would (@peculiar/x509) brings a WebCrypto shim and an ASN.1 stack for what three openssl
 * invocations do. Keys are P-256 EC. A domain's certificate names the domain both as dNSName and
 * as a `sip:` URI (RFC 5922 7.1), plus `localhost` and 127.0.0.1, and is good for both TLS server
 * and client authentication (the two sides of a peering connection use the same one).
 */
import { execFile } from 'node:child_process'
import { access, mkdir, writeFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { parseArgs } from 'node:util'

const run = promisify(execFile)

export class CertError extends Error {
  static readonly NAME = 'CertError'
  override readonly name = CertError.NAME
}

const DOMAIN_RE = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/

async function openssl (args: string[]): Promise<void> {
  try {
    await run('openssl', args, { timeout: 30_000 })
  } catch (err) {
    const e = err as Error & { stderr?: string, code?: string }
    if (e.code === 'ENOENT') throw new CertError('the openssl command is needed (apt-get install openssl)')
    throw new CertError(`openssl ${args[0]} failed: ${(e.stderr ?? e.message).trim().split('\n').slice(-2).join(' ')}`)
  }
}

async function exists (path: string): Promise<boolean> {
  try { await access(path); return true } catch { return false }
}

export interface Authority {
  cert: string
  key: string
}

/** The authority in `dir` (`ca.pem`, `ca.key`), made when absent. */
export async function ensureAuthority (dir: string, name = 'sipmesh local CA', days = 3650): Promise<Authority> {
  await mkdir(dir, { recursive: true })
  const ca = { cert: join(dir, 'ca.pem'), key: join(dir, 'ca.key') }
  if (await exists(ca.cert) && await exists(ca.key)) return ca
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', ca.key, '-out', ca.cert,
    '-days', String(days), '-subj', `/CN=${name.replace(/[/=\\]/g, ' ')}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'])
  return ca
}

export interface CertificateOptions {
  /** the SIP domains the certificate names (dNSName and sip: URI each) */
  domains: string[]
  /** extra dNSName entries. @default ['localhost'] */
  hosts?: string[]
  /** IP address entries. @default ['127.0.0.1'] */
  ips?: string[]
  /** validity in days; a negative number makes a certificate that has already expired (tests) */
  days?: number
  /** file name without extension. @default the first domain */
  name?: string
  /** name no `sip:` URI, only dNSName (RFC 5922 then reads the dNSName entries) */
  dnsOnly?: boolean
}

/** A key and a certificate signed by `ca`, written as `<name>.key` and `<name>.pem` in `dir`. */
export async function issueCertificate (dir: string, ca: Authority, options: CertificateOptions): Promise<{ cert: string, key: string }> {
  const domains = options.domains.map(d => d.toLowerCase())
  for (const d of [...domains, ...options.hosts ?? []]) if (!DOMAIN_RE.test(d)) throw new CertError(`"${d}" is not a domain name`)
  for (const ip of options.ips ?? []) if (!/^[\d.]+$|^[0-9a-f:]+$/i.test(ip)) throw new CertError(`"${ip}" is not an IP address`)
  if (domains.length === 0) throw new CertError('a certificate names at least one domain')
  const name = options.name ?? domains[0]
  if (!/^[\w.-]{1,100}$/.test(name)) throw new CertError(`"${name}" is not a usable file name`)
  const out = { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) }
  const csr = join(dir, `${name}.csr`)
  const ext = join(dir, `${name}.ext`)
  const san = [
    ...domains.map(d => `DNS:${d}`),
    ...options.dnsOnly === true ? [] : domains.map(d => `URI:sip:${d}`),
    ...(options.hosts ?? ['localhost']).map(h => `DNS:${h}`),
    ...(options.ips ?? ['127.0.0.1']).map(ip => `IP:${ip}`)
  ]
  await writeFile(ext, [
    `subjectAltName=${san.join(',')}`,
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=serverAuth,clientAuth'
  ].join('\n') + '\n')
  try {
    await openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', out.key, '-out', csr, '-subj', `/CN=${domains[0]}`])
    await openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', String(options.days ?? 825),
      '-extfile', ext, '-out', out.cert])
  } finally {
    await rm(csr, { force: true })
    await rm(ext, { force: true })
  }
  return out
}

export function certUsage (): string {
  return [
    'Usage: sipmesh cert --domain <domain> [--domain <domain>...] [--dir ./certs] [--days 825]',
    '',
    'Makes a private certificate authority in <dir> (ca.pem, ca.key; kept when present) and, for',
    'each domain, <domain>.pem and <domain>.key naming the domain (dNSName and sip: URI), localhost',
    'and 127.0.0.1: for --tls-cert, --tls-key and, with ca.pem, --tls-ca. For local development only.'
  ].join('\n')
}

/** `sipmesh cert`: returns the exit code (0, or 2 for bad usage; openssl failures throw CertError). */
export async function runCert (args: string[], out: (line: string) => void = (l) => { process.stdout.write(l + '\n') },
  err: (text: string) => void = (t) => { process.stderr.write(t) }): Promise<number> {
  let values
  try {
    values = parseArgs({
      args,
      options: { domain: { type: 'string', multiple: true }, dir: { type: 'string' }, days: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: false
    }).values
  } catch (e) {
    err(`sipmesh cert: ${(e as Error).message.split('\n')[0]}\n\n${certUsage()}\n`)
    return 2
  }
  if (values.help === true) { out(certUsage()); return 0 }
  const domains = (values.domain ?? []).flatMap(d => d.split(',')).map(d => d.trim().toLowerCase()).filter(d => d !== '')
  const days = values.days === undefined ? 825 : Number(values.days)
  const bad = domains.find(d => !DOMAIN_RE.test(d))
  if (domains.length === 0 || bad !== undefined || !Number.isInteger(days) || days < 1 || days > 3650) {
    err(`sipmesh cert: ${bad !== undefined ? `"${bad.slice(0, 80)}" is not a domain name` : domains.length === 0 ? 'at least one --domain is needed' : '--days must be 1 to 3650'}\n\n${certUsage()}\n`)
    return 2
  }
  const dir = values.dir ?? './certs'
  const ca = await ensureAuthority(dir)
  out(`authority: ${ca.cert}`)
  for (const domain of domains) {
    const c = await issueCertificate(dir, ca, { domains: [domain], days })
    out(`${domain}: --tls-cert ${c.cert} --tls-key ${c.key} --tls-ca ${ca.cert}`)
  }
  return 0
}
