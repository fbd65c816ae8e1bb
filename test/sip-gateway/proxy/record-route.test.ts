// The Record-Route room (proxy/record-route.ts): the entries this node inserts per pair of sides
// (RFC 5658), the top Routes of ours it consumes, and what Routes a user agent may make it follow;
// hostile Route values are refused, never followed.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { parseMessage, type SipRequest } from '../../../sip-gateway/codec/index.ts'
import { recordRoute, recordRouteEntry, consumeOurRoute, mayFollowRoute } from '../../../sip-gateway/proxy/record-route.ts'
import { NodeAddress } from '../../../sip-gateway/proxy/address.ts'
import { SipStatusError } from '../../../sip-gateway/errors.ts'

const us = new NodeAddress({ nodeId: 'nodeA' }, { host: 'proxy.example.com', port: 5060, wsPort: 8080, tlsPort: 5061, wssPort: 8443 })
const side = (transport: string, peerDomain?: string): { transport: string, peerDomain?: string } => ({ transport, peerDomain })

const request = (routes: string[], toTag = true): SipRequest => parseMessage(Buffer.from(['BYE sip:bob@10.0.0.9:5070 SIP/2.0',
  'Via: SIP/2.0/UDP ua.example.com;branch=z9hG4bKua', 'From: <sip:a@example.com>;tag=f1', `To: <sip:bob@example.com>${toTag ? ';tag=t1' : ''}`,
  'Call-ID: c@h', 'CSeq: 2 BYE', 'Max-Forwards: 70', ...routes, 'Content-Length: 0', '', ''].join('\r\n'))) as SipRequest

test('entries per transport, with the node id unless facing a peer network', () => {
  assert.equal(recordRouteEntry(us, 'UDP', false), '<sip:proxy.example.com:5060;lr;node=nodeA>')
  assert.equal(recordRouteEntry(us, 'TCP', false), '<sip:proxy.example.com:5060;transport=tcp;lr;node=nodeA>')
  assert.equal(recordRouteEntry(us, 'TLS', true), '<sip:proxy.example.com:5061;transport=tls;lr>')
  assert.equal(recordRouteEntry(us, 'WS', false), '<sip:proxy.example.com:8080;transport=ws;lr;node=nodeA>')
  assert.equal(recordRouteEntry(us, 'WSS', false), '<sip:proxy.example.com:8443;transport=wss;lr;node=nodeA>')
})

test('sides: one entry for alike sides, two (outgoing on top) for different ones, a UDP one for mesh to mesh', () => {
  assert.deepEqual(recordRoute(us, side('UDP'), side('UDP')), ['<sip:proxy.example.com:5060;lr;node=nodeA>'])
  assert.deepEqual(recordRoute(us, side('UDP'), side('WS')), ['<sip:proxy.example.com:8080;transport=ws;lr;node=nodeA>', '<sip:proxy.example.com:5060;lr;node=nodeA>'])
  assert.deepEqual(recordRoute(us, side('MESH'), side('TCP')), ['<sip:proxy.example.com:5060;transport=tcp;lr;node=nodeA>'])
  assert.deepEqual(recordRoute(us, side('MESH'), side('MESH')), ['<sip:proxy.example.com:5060;lr;node=nodeA>'])
  assert.deepEqual(recordRoute(us, side('TLS', 'peer.example.net'), side('TLS')), ['<sip:proxy.example.com:5061;transport=tls;lr;node=nodeA>', '<sip:proxy.example.com:5061;transport=tls;lr>'])
})

test('our top Routes are consumed (two for both sides), others are left', () => {
  const r = request(['Route: <sip:proxy.example.com:8080;transport=ws;lr;node=nodeA>', 'Route: <sip:proxy.example.com;lr>', 'Route: <sip:other.example.com;lr;node=nodeB>'])
  assert.equal(consumeOurRoute(r, us), true)
  assert.deepEqual(r.headers.getAll('Route'), ['<sip:other.example.com;lr;node=nodeB>'])
  assert.equal(consumeOurRoute(r, us), false)
  const foreign = request(['Route: <sip:proxy.example.com:5070;lr>'])
  assert.equal(consumeOurRoute(foreign, us), false)
  assert.equal(foreign.headers.getAll('Route').length, 1)
})

test('hostile Routes: a malformed URI of the top Route is 400; a user part is not us', () => {
  for (const route of ['Route: <sip:>', 'Route: <:::>', `Route: <sip:${'a'.repeat(10_000)}@>`]) {
    assert.throws(() => consumeOurRoute(request([route]), us), (err: unknown) => err instanceof SipStatusError && err.status === 400, route)
  }
  assert.equal(consumeOurRoute(request(['Route: <sip:nodeA@proxy.example.com;lr>']), us), false)
})

test('a user agent may follow only mesh entries, in a dialog, after ours; the mesh always', () => {
  const mesh = ['Route: <sip:b.example.com;lr;node=nodeB>, <sip:c.example.com;lr;node=nodeC>']
  assert.equal(mayFollowRoute(request(mesh), false, true), true)
  assert.equal(mayFollowRoute(request(mesh), false, false), false, 'ours was not consumed')
  assert.equal(mayFollowRoute(request(mesh, false), false, true), false, 'out of dialog')
  assert.equal(mayFollowRoute(request([...mesh, 'Route: <sip:evil.example.com:6666;lr>']), false, true), false, 'a foreign entry')
  assert.equal(mayFollowRoute(request(['Route: <sip:b.example.com;lr;node=>']), false, true), false, 'an empty node')
  assert.equal(mayFollowRoute(request(['Route: <<<garbage']), false, true), false, 'malformed')
  assert.equal(mayFollowRoute(request(['Route: <sip:evil.example.com:6666;lr>']), true, false), true, 'from the mesh')
})
