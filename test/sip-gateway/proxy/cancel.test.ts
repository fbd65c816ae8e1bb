// The CANCEL of a branch (proxy/cancel.ts, RFC 3261 9.1): what it keeps of the request it
// cancels, what it drops, and what a malformed request does to it.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { parseMessage, type SipRequest } from '../../../sip-gateway/codec/index.ts'
import { cancelFor } from '../../../sip-gateway/proxy/cancel.ts'

const invite = (extra: string[], cseq = 'CSeq: 7 INVITE'): SipRequest => parseMessage(Buffer.from(['INVITE sip:bob@127.0.0.1:5070;ob SIP/2.0',
  'Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKours.abc;rport', 'Via: SIP/2.0/UDP ua.example.com;branch=z9hG4bKua',
  'Route: <sip:b.example.com;lr;node=nodeB>', 'Max-Forwards: 69', 'From: <sip:a@example.com>;tag=f1', 'To: <sip:bob@example.com>',
  'Call-ID: c@h', cseq, 'Contact: <sip:a@10.0.0.1>', 'Record-Route: <sip:proxy.example.com;lr>', 'Content-Type: application/sdp',
  ...extra, 'Content-Length: 4', '', 'v=0\n'].join('\r\n'))) as SipRequest

test('same Request-URI, top Via only, Route, Max-Forwards, From, To, Call-ID; CSeq number with CANCEL; no body', () => {
  const c = cancelFor(invite(['X-Custom: 1', 'Proxy-Require: foo']))
  assert.equal(c.method, 'CANCEL')
  assert.equal(c.uri, 'sip:bob@127.0.0.1:5070;ob')
  assert.deepEqual(c.headers.getAll('Via'), ['SIP/2.0/UDP proxy.example.com;branch=z9hG4bKours.abc;rport'])
  assert.equal(c.headers.get('Route'), '<sip:b.example.com;lr;node=nodeB>')
  assert.equal(c.headers.get('Max-Forwards'), '69')
  assert.equal(c.headers.get('From'), '<sip:a@example.com>;tag=f1')
  assert.equal(c.headers.get('To'), '<sip:bob@example.com>')
  assert.equal(c.headers.get('Call-ID'), 'c@h')
  assert.equal(c.headers.get('CSeq'), '7 CANCEL')
  assert.equal(c.headers.get('Content-Length'), '0')
  for (const gone of ['Contact', 'Record-Route', 'Content-Type', 'X-Custom', 'Proxy-Require']) assert.equal(c.headers.get(gone), undefined, gone)
  assert.equal(c.body.byteLength, 0)
})

test('a missing CSeq gets number 1; a malformed one throws (the caller does not send)', () => {
  const r = invite([])
  r.headers.delete('CSeq')
  assert.equal(cancelFor(r).headers.get('CSeq'), '1 CANCEL')
  const bad = invite([])
  bad.headers.set('CSeq', 'x'.repeat(5000))
  assert.throws(() => cancelFor(bad))
})
