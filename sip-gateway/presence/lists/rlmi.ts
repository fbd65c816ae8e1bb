/**
 * The body of a list subscription's NOTIFY (RFC 4662 5): `multipart/related` (RFC 2387) whose root
 * part is the RLMI document (`application/rlmi+xml`, RFC 4662 5.2-5.4: the list URI, `version`,
 * `fullState`, one `<resource>` per member with an `<instance>` carrying its subscription state
 * and the Content-ID of the part holding its state), followed by one part per member that has a
 * state to show. Built by hand: the MIME libraries on npm build e-mail (headers, encodings,
 * line-length rules) rather than the raw binary parts SIP carries (RFC 4662 5.1 allows binary).
 */
import { randomBytes } from 'node:crypto'
import { escapeAttr } from '../pidf.ts'

export const RLMI_NS = 'urn:ietf:params:xml:ns:rlmi'
export const RLMI_CONTENT_TYPE = 'application/rlmi+xml'
export const MULTIPART_RELATED = 'multipart/related'

export type InstanceState = 'active' | 'pending' | 'terminated'

export interface RlmiInstance {
  /** unique within the resource (RFC 4662 5.2) */
  id: string
  state: InstanceState
  /** on `terminated` (RFC 4662 5.2: e.g. `rejected`, `noresource`) */
  reason?: string
  /** the Content-ID (without angle brackets) of the part carrying the state */
  cid?: string
}

export interface RlmiResource {
  uri: string
  instances: RlmiInstance[]
}

export interface RlmiDocument {
  uri: string
  version: number
  fullState: boolean
  resources: RlmiResource[]
}

export function buildRlmi (doc: RlmiDocument): string {
  const out = [`<?xml version="1.0" encoding="UTF-8"?>\n<list xmlns="${RLMI_NS}" uri="${escapeAttr(doc.uri)}" version="${doc.version}" fullState="${String(doc.fullState)}">`]
  for (const r of doc.resources) {
    out.push(`<resource uri="${escapeAttr(r.uri)}">`)
    for (const i of r.instances) {
      out.push(`<instance id="${escapeAttr(i.id)}" state="${i.state}"${i.reason !== undefined ? ` reason="${escapeAttr(i.reason)}"` : ''}${i.cid !== undefined ? ` cid="${escapeAttr(i.cid)}"` : ''}/>`)
    }
    out.push('</resource>')
  }
  out.push('</list>')
  return out.join('\n')
}

export interface BodyPart {
  contentType: string
  /** without angle brackets */
  contentId: string
  body: Uint8Array
}

function contains (hay: Uint8Array, needle: string): boolean {
  return Buffer.from(hay.buffer, hay.byteOffset, hay.byteLength).includes(needle)
}

/**
 * `parts` as one multipart body (RFC 2046 5.1, CRLF line ends); the boundary is random and checked
 * against every part (a part cannot end the body early).
 */
export function buildMultipart (parts: readonly BodyPart[], boundary?: string): { boundary: string, body: Uint8Array } {
  let b = boundary ?? `sipmesh-${randomBytes(12).toString('hex')}`
  while (parts.some(p => contains(p.body, `--${b}`))) b = `sipmesh-${randomBytes(12).toString('hex')}`
  const chunks: Buffer[] = []
  for (const p of parts) {
    chunks.push(Buffer.from(`--${b}\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <${p.contentId}>\r\nContent-Type: ${p.contentType}\r\n\r\n`))
    chunks.push(Buffer.from(p.body.buffer, p.body.byteOffset, p.body.byteLength))
    chunks.push(Buffer.from('\r\n'))
  }
  chunks.push(Buffer.from(`--${b}--\r\n`))
  return { boundary: b, body: Buffer.concat(chunks) }
}

export interface MemberState {
  uri: string
  state: InstanceState
  reason?: string
  /** the member's state document (absent: no part, e.g. pending) */
  body?: Uint8Array
  contentType?: string
}

/** a stable, URI-safe token for a member (instance ids and Content-IDs) */
export function memberToken (uri: string): string {
  return Buffer.from(uri).toString('base64url').slice(0, 60) + '-' + (hash32(uri) >>> 0).toString(36)
}

function hash32 (s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193) }
  return h
}

/**
 * One list NOTIFY (RFC 4662 5): the Content-Type header value and the body. `host` makes the
 * Content-IDs globally unique (RFC 2392); `version` and `fullState` go into the RLMI document.
 */
export function buildListNotify (list: string, version: number, fullState: boolean, members: readonly MemberState[], host: string): { contentType: string, body: Uint8Array } {
  const rootCid = `rlmi-${version}-${randomBytes(6).toString('hex')}@${host}`
  const parts: BodyPart[] = []
  const resources: RlmiResource[] = []
  for (const m of members) {
    const token = memberToken(m.uri)
    const cid = m.body !== undefined ? `${token}-${version}@${host}` : undefined
    resources.push({ uri: m.uri, instances: [{ id: token, state: m.state, ...(m.reason !== undefined ? { reason: m.reason } : {}), ...(cid !== undefined ? { cid } : {}) }] })
    if (cid !== undefined && m.body !== undefined) parts.push({ contentType: m.contentType ?? 'application/octet-stream', contentId: cid, body: m.body })
  }
  const rlmi = Buffer.from(buildRlmi({ uri: list, version, fullState, resources }))
  const { boundary, body } = buildMultipart([{ contentType: `${RLMI_CONTENT_TYPE};charset="UTF-8"`, contentId: rootCid, body: rlmi }, ...parts])
  return { contentType: `${MULTIPART_RELATED};type="${RLMI_CONTENT_TYPE}";start="<${rootCid}>";boundary="${boundary}"`, body }
}
