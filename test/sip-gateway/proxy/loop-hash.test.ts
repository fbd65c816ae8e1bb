// RFC 3261 16.6 item 8: the loop hash every node of a mesh computes alike. Hashed field by field
// since issue 11; the figures are those of the joined string the earlier code hashed, so nodes of
// both builds still recognize each other's branches.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { parseMessage, type SipRequest } from '../../../sip-gateway/codec/index.ts'
import { loopHashOf } from '../../../sip-gateway/proxy/core.ts'

const invite = (extra: string[], cseq = 'CSeq:  42 \t INVITE'): SipRequest => parseMessage(Buffer.from(['INVITE sip:bob@example.com SIP/2.0',
  'Via: SIP/2.0/UDP h;branch=z9hG4bKx', 'From: "A" <sip:a@example.com>;tag=f1', 'To: <sip:bob@example.com>;tag=t9', 'Call-ID: c@h', cseq,
  ...extra, 'Content-Length: 0', '', ''].join('\r\n'))) as SipRequest

test('the same hash as the fields joined by LF (Route and Proxy-Require elements by commas)', () => {
  assert.equal(loopHashOf(invite([])), '1aeyqay')
  assert.equal(loopHashOf(invite(['Route: <sip:r1;lr>, <sip:r2;lr>', 'Route: <sip:r3>', 'Proxy-Require: foo, bar', 'Proxy-Authorization: Digest x=1, y=2'])), '12w0h3r')
  assert.equal(loopHashOf(invite(['Proxy-Require: é'])), '18bkt6v')
})

test('every field counts; a malformed From tag or CSeq is hashed without failing', () => {
  const base = loopHashOf(invite([]))
  assert.notEqual(loopHashOf(invite(['Route: <sip:r1;lr>'])), base)
  assert.notEqual(loopHashOf(invite(['Proxy-Require: x'])), base)
  assert.notEqual(loopHashOf(invite([], 'CSeq: 43 INVITE')), base)
  assert.equal(loopHashOf(invite([], 'CSeq: 42 INVITE')), base, 'white space around the number does not count')
  const odd = invite([])
  odd.headers.set('From', '<<<"')
  odd.headers.set('CSeq', '\u00a0'.repeat(10_000))
  assert.match(loopHashOf(odd), /^[0-9a-z]+$/)
})
