// Presence helpers over the gateway tests' raw UA: SUBSCRIBE, PUBLISH, and waiting for NOTIFYs.
import { randomBytes } from 'node:crypto'
import { SipResponse, type SipRequest } from '../../../sip-gateway/codec/index.ts'
import { parseNameAddr } from '../../../sip-gateway/codec/index.ts'
import { before, after } from 'node:test'
import { TestUa, type RequestOptions } from '../gateway/fixtures/ua.ts'
import { TestMesh } from '../gateway/fixtures/mesh.ts'

export interface SubscribeOptions {
  to: string
  expires?: number
  event?: string
  callId?: string
  fromTag?: string
  /** set for an in-dialog refresh */
  toTag?: string
  uri?: string
  cseq?: number
  accept?: string
  /** more headers (e.g. Supported: eventlist) */
  headers?: Array<[string, string]>
}

export interface Dialog {
  callId: string
  fromTag: string
  toTag: string
  to: string
  target: string
  cseq: number
}

export async function subscribe (ua: TestUa, o: SubscribeOptions, timeoutMs = 3000): Promise<{ response?: SipResponse, dialog?: Dialog }> {
  const callId = o.callId ?? randomBytes(8).toString('hex')
  const fromTag = o.fromTag ?? randomBytes(4).toString('hex')
  const cseq = o.cseq ?? 1
  const headers: Array<[string, string]> = [['Contact', ua.contact], ['Accept', o.accept ?? 'application/pidf+xml']]
  if (o.event !== '') headers.push(['Event', o.event ?? 'presence'])
  if (o.expires !== undefined) headers.push(['Expires', String(o.expires)])
  if (o.headers !== undefined) headers.push(...o.headers)
  const req: RequestOptions = {
    method: 'SUBSCRIBE',
    uri: o.uri ?? o.to,
    to: o.toTag === undefined ? `<${o.to}>` : `<${o.to}>;tag=${o.toTag}`,
    callId,
    fromTag,
    cseq,
    headers
  }
  const response = await ua.request(req, timeoutMs)
  if (response === undefined || response.status >= 300) return { response }
  const toTag = String(parseNameAddr(response.headers.get('To') ?? '').params.tag ?? '')
  const contact = response.headers.get('Contact')
  const target = contact === undefined ? o.to : parseNameAddr(contact).uri
  return { response, dialog: { callId, fromTag, toTag, to: o.to, target, cseq } }
}

export async function refresh (ua: TestUa, d: Dialog, expires: number): Promise<SipResponse | undefined> {
  d.cseq++
  return (await subscribe(ua, { to: d.to, uri: d.target, callId: d.callId, fromTag: d.fromTag, toTag: d.toTag, cseq: d.cseq, expires })).response
}

export async function publish (ua: TestUa, o: { body?: string, etag?: string, expires?: number, event?: string, contentType?: string, from?: string }, timeoutMs = 3000): Promise<SipResponse | undefined> {
  const headers: Array<[string, string]> = [['Event', o.event ?? 'presence']]
  if (o.etag !== undefined) headers.push(['SIP-If-Match', o.etag])
  if (o.expires !== undefined) headers.push(['Expires', String(o.expires)])
  const { text, branch } = ua.build({ method: 'PUBLISH', uri: ua.aor, to: `<${ua.aor}>`, from: o.from, headers })
  let out = text
  if (o.body !== undefined) {
    const len = Buffer.byteLength(o.body)
    out = text.replace('Content-Length: 0\r\n\r\n', `Content-Type: ${o.contentType ?? 'application/pidf+xml'}\r\nContent-Length: ${len}\r\n\r\n${o.body}`)
  }
  ua.sendRaw(out)
  return await ua.waitFinal(branch, timeoutMs)
}

export function pidf (aor: string, basic: 'open' | 'closed', note?: string, tuple = 't1'): string {
  const entity = aor.replace(/^sip:/, 'pres:')
  return `<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="${entity}"><tuple id="${tuple}"><status><basic>${basic}</basic></status></tuple>${note === undefined ? '' : `<note>${note}</note>`}</presence>`
}

export function notifies (ua: TestUa, callId: string): SipRequest[] {
  return ua.received.filter(r => r.method === 'NOTIFY' && r.headers.get('Call-ID') === callId)
}

export function bodyOf (r: SipRequest): string {
  return Buffer.from(r.body).toString('utf8')
}

/** wait for a NOTIFY of the dialog (after the first `after` of them) whose body or state matches */
export async function waitNotify (ua: TestUa, callId: string, match: (r: SipRequest) => boolean, timeoutMs = 3000, after = 0): Promise<SipRequest | undefined> {
  return await ua.waitFor(() => notifies(ua, callId).slice(after).find(match), timeoutMs)
}

export const isOpen = (r: SipRequest): boolean => bodyOf(r).includes('<basic>open</basic>')
export const isClosed = (r: SipRequest): boolean => bodyOf(r).includes('<basic>closed</basic>')
export const stateOf = (r: SipRequest): string => r.headers.get('Subscription-State') ?? ''

/** The final response to `branch` among the messages a raw mesh peer received, polled for `timeoutMs`. */
export async function finalFor (got: ReadonlyArray<SipResponse | SipRequest>, branch: string, timeoutMs = 2000): Promise<SipResponse | undefined> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const r = got.find((m): m is SipResponse => m instanceof SipResponse && m.status >= 200 && (m.headers.get('Via') ?? '').includes(branch))
    if (r !== undefined) return r
    await new Promise(resolve => setTimeout(resolve, 10))
  }
  return undefined
}

/**
 * An in-process mesh of `n` gateways for one describe block (spawned before, stopped after) and a
 * helper opening raw user agents on its nodes (closed after).
 */
export function meshFixture (n: number, config: Parameters<typeof TestMesh.spawn>[1]): { mesh: () => TestMesh, ua: (user: string, node: number) => Promise<TestUa> } {
  let mesh: TestMesh | undefined
  const uas: TestUa[] = []
  before(async () => { mesh = await TestMesh.spawn(n, config) })
  after(async () => {
    for (const u of uas) await u.close()
    await mesh?.stop()
  })
  const get = (): TestMesh => { if (mesh === undefined) throw new Error('mesh not spawned'); return mesh }
  return {
    mesh: get,
    ua: async (user, node) => {
      const u = await TestUa.open(user, get().nodes[node].sip)
      uas.push(u)
      return u
    }
  }
}
