// A PUBLISH as a mesh peer sends one of the mesh's own event packages (lists, calls), for tests that
// hand it straight to the receiving side's handle().
import { Buffer } from 'node:buffer'
import { Headers, SipRequest } from '../../../sip-gateway/codec/index.ts'

export function meshPublish (uri: string, event: string, headers: ReadonlyArray<[string, string | undefined]>, body: string | Uint8Array = new Uint8Array(0)): SipRequest {
  const h = new Headers()
  h.append('From', '<sip:example.com>;tag=1')
  h.append('To', `<${uri}>`)
  h.append('Call-ID', 'test@sipmesh')
  h.append('CSeq', '1 PUBLISH')
  h.append('Via', 'SIP/2.0/MESH node-a;branch=z9hG4bK1')
  h.append('Event', event)
  for (const [name, value] of headers) if (value !== undefined) h.append(name, value)
  return new SipRequest('PUBLISH', uri, h, typeof body === 'string' ? Buffer.from(body) : body)
}
