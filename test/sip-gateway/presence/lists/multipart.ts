// A reader for the multipart/related list NOTIFY bodies (RFC 2046 5.1, RFC 4662 5), for tests:
// an independent split on the boundary the Content-Type names, so the builder is checked by
// something that did not write it.
export interface Part { headers: Map<string, string>, body: Buffer }

export function boundaryOf (contentType: string): string {
  const m = /;\s*boundary="?([^";]+)"?/iu.exec(contentType)
  if (m === null) throw new Error(`no boundary in ${contentType}`)
  return m[1]
}

export function parseMultipart (contentType: string, body: Uint8Array): Part[] {
  const b = boundaryOf(contentType)
  const text = Buffer.from(body).toString('latin1')
  const segments = text.split(`--${b}`)
  if (!segments[segments.length - 1].startsWith('--')) throw new Error('no closing boundary')
  const parts: Part[] = []
  for (const seg of segments.slice(1, -1)) {
    const s = seg.replace(/^\r\n/u, '').replace(/\r\n$/u, '')
    const end = s.indexOf('\r\n\r\n')
    if (end < 0) throw new Error('part without header end')
    const headers = new Map<string, string>()
    for (const line of s.slice(0, end).split('\r\n')) {
      const c = line.indexOf(':')
      headers.set(line.slice(0, c).trim().toLowerCase(), line.slice(c + 1).trim())
    }
    parts.push({ headers, body: Buffer.from(s.slice(end + 4), 'latin1') })
  }
  return parts
}
