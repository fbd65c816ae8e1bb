// The callers' Contacts the proxy keeps for requests coming back inside a dialog: matching as the
// registrar matches contacts, bounded in number and in time, malformed URIs ignored.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { parseMessage, type SipMessage, type SipRequest, type SipResponse } from '../../../sip-gateway/codec/index.ts'
import { DialogContacts } from '../../../sip-gateway/proxy/dialog-contacts.ts'
import type { Flow } from '../../../sip-gateway/proxy/flow.ts'

const flow = (port: number): Flow => ({ transport: 'UDP', reliable: false, remote: { host: '127.0.0.1', port }, open: true, send: async () => {} })

test('found by the same contact (host case, parameters other than transport ignored), refreshed on use, gone after the TTL', () => {
  let now = 0
  const d = new DialogContacts({ ttlMs: 1_000, now: () => now })
  d.remember('sip:carl@127.0.0.1:5999;ob', flow(5999))
  assert.equal(d.find('sip:carl@127.0.0.1:5999')?.flow.remote.port, 5999)
  assert.equal(d.find('sip:carl@127.0.0.1:5999;transport=tcp'), undefined, 'another transport is another contact')
  assert.equal(d.find('sip:carl@127.0.0.1:6000'), undefined)
  now = 900
  assert.ok(d.find('sip:carl@127.0.0.1:5999') !== undefined, 'in use: kept')
  now = 1_800
  assert.ok(d.find('sip:carl@127.0.0.1:5999') !== undefined, 'the last use refreshed it')
  now = 2_900
  assert.equal(d.find('sip:carl@127.0.0.1:5999'), undefined, 'idle past the TTL: forgotten')
  assert.equal(d.size, 0)
})

test('bounded: the oldest contact goes first; malformed URIs are neither kept nor found', () => {
  const d = new DialogContacts({ max: 3 })
  for (let i = 0; i < 5; i++) d.remember(`sip:u${i}@127.0.0.1:${6000 + i}`, flow(6000 + i))
  assert.equal(d.size, 3)
  assert.equal(d.find('sip:u0@127.0.0.1:6000'), undefined)
  assert.ok(d.find('sip:u4@127.0.0.1:6004') !== undefined)
  for (const bad of ['', 'not a uri', 'sip:', '<sip:x@y>', 'sip:a@b:99999999', '\u0000']) {
    d.remember(bad, flow(1))
    assert.equal(d.find(bad), undefined, JSON.stringify(bad))
  }
  assert.equal(d.size, 3)
})

test('takeOver: false keeps a live contact of another flow (a callee cannot claim its caller\'s Contact); the same flow refreshes it', () => {
  let now = 0
  const d = new DialogContacts({ ttlMs: 1_000, now: () => now })
  const caller = flow(5999)
  const callee = flow(7000)
  d.remember('sip:carl@127.0.0.1:5999', caller)
  d.remember('sip:carl@127.0.0.1:5999', callee, { takeOver: false })
  assert.equal(d.find('sip:carl@127.0.0.1:5999')?.flow, caller)
  d.remember('sip:bob@127.0.0.1:7000', callee, { takeOver: false })
  d.remember('sip:bob@127.0.0.1:7000', callee, { takeOver: false })
  assert.equal(d.find('sip:bob@127.0.0.1:7000')?.flow, callee)
  // the same user agent on another flow object to the same address, or after its connection closed
  const again = flow(7000)
  d.remember('sip:bob@127.0.0.1:7000', again, { takeOver: false })
  assert.equal(d.find('sip:bob@127.0.0.1:7000')?.flow, again)
  const closed = { ...flow(7100), open: false }
  d.remember('sip:dan@127.0.0.1:7100', closed)
  d.remember('sip:dan@127.0.0.1:7100', callee, { takeOver: false })
  assert.equal(d.find('sip:dan@127.0.0.1:7100')?.flow, callee, 'a closed flow is no one\'s')
  now = 5_000
  d.remember('sip:carl@127.0.0.1:5999', callee, { takeOver: false })
  assert.equal(d.find('sip:carl@127.0.0.1:5999')?.flow, callee, 'an expired entry is no one\'s')
})

const message = (startLine: string, extra: string[]): SipMessage => parseMessage(Buffer.from([startLine,
  'Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx', 'From: <sip:carl@example.com>;tag=f', 'To: <sip:dana@example.com>' + (startLine.startsWith('SIP/2.0 180') ? '' : ';tag=t'),
  'Call-ID: c@h', 'CSeq: 1 INVITE', ...extra, 'Content-Length: 0', '', ''].join('\r\n')))

test('a caller\'s and a callee\'s Contacts are remembered from their messages; hostile or missing Contacts are not', () => {
  const d = new DialogContacts()
  d.rememberCaller(message('INVITE sip:dana@example.com SIP/2.0', ['Contact: "Carl" <sip:carl@127.0.0.1:5999;ob>']) as SipRequest, flow(5999))
  assert.equal(d.find('sip:carl@127.0.0.1:5999')?.flow.remote.port, 5999)
  d.rememberCallee(message('SIP/2.0 200 OK', ['Contact: <sip:dana@127.0.0.1:6001>']) as SipResponse, flow(6001))
  assert.equal(d.find('sip:dana@127.0.0.1:6001')?.flow.remote.port, 6001)
  // a 180 without a To tag makes no early dialog; a 100 and a failure make none either
  d.rememberCallee(message('SIP/2.0 180 Ringing', ['Contact: <sip:erin@127.0.0.1:6002>']) as SipResponse, flow(6002))
  d.rememberCallee(message('SIP/2.0 486 Busy Here', ['Contact: <sip:fred@127.0.0.1:6003>']) as SipResponse, flow(6003))
  assert.equal(d.find('sip:erin@127.0.0.1:6002'), undefined)
  assert.equal(d.find('sip:fred@127.0.0.1:6003'), undefined)
  // a callee's Contact that a live caller's dialog already uses stays the caller's
  d.rememberCallee(message('SIP/2.0 200 OK', ['Contact: <sip:carl@127.0.0.1:5999>']) as SipResponse, flow(7000))
  assert.equal(d.find('sip:carl@127.0.0.1:5999')?.flow.remote.port, 5999)
  const size = d.size
  for (const contact of ['Contact: <<<', 'Contact: <sip:>', 'Contact: ' + '<'.repeat(5000), 'Contact: *']) {
    d.rememberCaller(message('INVITE sip:dana@example.com SIP/2.0', [contact]) as SipRequest, flow(8000))
  }
  d.rememberCaller(message('INVITE sip:dana@example.com SIP/2.0', []) as SipRequest, flow(8000))
  assert.equal(d.size, size)
})
