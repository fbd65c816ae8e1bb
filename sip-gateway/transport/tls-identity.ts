/**
 * The SIP domains a certificate vouches for (RFC 5922 section 7.1): the `sip:` URIs of its
 * subjectAltName when it has any (only those then), else its dNSName entries, and the subject's
 * Common Name only when the certificate has no subjectAltName at all. Node gives the extension
 * as one string (`DNS:a.example, URI:sip:a.example, IP Address:127.0.0.1`), with values that
 * contain a comma or a quote JSON-quoted; that string comes from a peer, so it is parsed
 * defensively: bounded, and anything malformed is skipped rather than trusted.
 */

/** Longest subjectAltName string examined; a certificate's is far shorter. */
export const MAX_SAN_LENGTH = 16 * 1024
/** Most domains read from one certificate. */
export const MAX_CERT_DOMAINS = 64

const DOMAIN_RE = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/

/** One entry per subjectAltName item: its kind (`DNS`, `URI`, `IP Address`...) and its value. */
export function parseSubjectAltName (san: string): Array<{ kind: string, value: string }> {
  if (san.length > MAX_SAN_LENGTH) return []
  const out: Array<{ kind: string, value: string }> = []
  let i = 0
  while (i < san.length && out.length < MAX_CERT_DOMAINS * 4) {
    while (san[i] === ' ' || san[i] === ',') i++
    const colon = san.indexOf(':', i)
    if (colon < 0) break
    const kind = san.slice(i, colon)
    i = colon + 1
    let value: string
    if (san[i] === '"') {
      // a JSON-quoted value (it held a comma or a quote)
      let j = i + 1
      while (j < san.length && san[j] !== '"') j += san[j] === '\\' ? 2 : 1
      try {
        value = JSON.parse(san.slice(i, j + 1)) as string
      } catch {
        value = ''
      }
      i = j + 1
    } else {
      const end = san.indexOf(', ', i)
      value = san.slice(i, end < 0 ? san.length : end)
      i = end < 0 ? san.length : end
    }
    out.push({ kind, value })
  }
  return out
}

function domainOf (value: string): string | undefined {
  const d = value.toLowerCase()
  return DOMAIN_RE.test(d) ? d : undefined
}

/** The domain of a `sip:` URI naming a domain (no user part, no port, no parameters), else undefined. */
function sipUriDomain (value: string): string | undefined {
  const m = /^sip:([^@;?:]+)$/i.exec(value)
  return m === null ? undefined : domainOf(m[1])
}

export interface CertificateNames {
  subjectaltname?: string
  subject?: { CN?: string | string[] }
}

/** RFC 5922 7.1: the SIP domains a certificate names, lower-cased, without duplicates. */
export function certificateDomains (cert: CertificateNames | undefined): string[] {
  if (cert === undefined || cert === null) return []
  const san = typeof cert.subjectaltname === 'string' ? cert.subjectaltname : ''
  const found = new Set<string>()
  if (san !== '') {
    const items = parseSubjectAltName(san)
    const uris = items.filter(e => e.kind === 'URI').map(e => sipUriDomain(e.value))
    const pick = uris.some(d => d !== undefined)
      ? uris
      : items.filter(e => e.kind === 'DNS').map(e => e.value.startsWith('*.') ? undefined : domainOf(e.value))
    for (const d of pick) if (d !== undefined && found.size < MAX_CERT_DOMAINS) found.add(d)
    return [...found]
  }
  const cn = cert.subject?.CN
  for (const v of Array.isArray(cn) ? cn : cn === undefined ? [] : [cn]) {
    const d = typeof v === 'string' ? domainOf(v) : undefined
    if (d !== undefined) found.add(d)
  }
  return [...found]
}
