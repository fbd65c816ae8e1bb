// The loop-detection room (proxy/loop.ts): findLoop on its own, with a NodeAddress, over parsed
// requests: our Via with the hash again is a loop, a spiral is not, other nodes' Vias are not
// parsed unless they hold the hash, and malformed Vias it must read are 400.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { parseMessage, type SipRequest } from '../../../sip-gateway/codec/index.ts'
import { findLoop, loopHashOf } from '../../../sip-gateway/proxy/loop.ts'
import { NodeAddress } from '../../../sip-gateway/proxy/address.ts'
import { SipStatusError } from '../../../sip-gateway/errors.ts'

const us = new NodeAddress({ nodeId: 'nodeA' }, { host: 'proxy.example.com', port: 5060, aliases: ['127.0.0.1:5060'] })

const request = (vias: string[], uri = 'sip:bob@example.com'): SipRequest => parseMessage(Buffer.from([`MESSAGE ${uri} SIP/2.0`,
  ...vias, 'From: <sip:a@example.com>;tag=f1', 'To: <sip:bob@example.com>', 'Call-ID: c@h', 'CSeq: 1 MESSAGE', 'Max-Forwards: 70',
  'Content-Length: 0', '', ''].join('\r\n'))) as SipRequest

/** the hash a request to `uri` gets, as our branch would carry it */
const hashFor = (uri = 'sip:bob@example.com'): string => loopHashOf(request(['Via: SIP/2.0/UDP ua.example.com;branch=z9hG4bKua'], uri))

test('no Via of ours: no loop', () => {
  assert.equal(findLoop(request(['Via: SIP/2.0/UDP ua.example.com;branch=z9hG4bKua']), us), false)
})

test('our Via (by address, by alias, by node id) with the same hash below the top: a loop', () => {
  const h = hashFor()
  for (const ours of [`Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKx.${h}`, `Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx.${h}`,
    `Via: SIP/2.0/MESH other.host:7000;branch=z9hG4bKx.${h};node=nodeA`]) {
    const r = request(['Via: SIP/2.0/UDP ua.example.com;branch=z9hG4bKua', ours])
    assert.equal(findLoop(r, us), true, ours)
  }
})

test('our Via on top with the hash, and in a comma-separated line: a loop', () => {
  const h = hashFor()
  assert.equal(findLoop(request([`Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKx.${h}`]), us), true)
  assert.equal(findLoop(request([`Via: SIP/2.0/UDP ua.example.com;branch=z9hG4bKua, SIP/2.0/UDP proxy.example.com;branch=z9hG4bKx.${h}`]), us), true)
})

test('a spiral (Request-URI changed) and another node\'s Via with our hash are not loops', () => {
  const h = hashFor('sip:bob@example.com')
  assert.equal(findLoop(request(['Via: SIP/2.0/UDP ua.example.com;branch=z9hG4bKua', `Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKx.${h}`], 'sip:bob@elsewhere.example.com'), us), false)
  assert.equal(findLoop(request(['Via: SIP/2.0/UDP ua.example.com;branch=z9hG4bKua', `Via: SIP/2.0/MESH proxy.example.com;branch=z9hG4bKx.${h};node=nodeB`]), us), false)
  assert.equal(findLoop(request(['Via: SIP/2.0/UDP ua.example.com;branch=z9hG4bKua', `Via: SIP/2.0/UDP proxy.example.com:5070;branch=z9hG4bKx.${h}`]), us), false)
})

test('hostile Vias below the top: ignored unless they hold the hash, then 400 when malformed', () => {
  const h = hashFor()
  // junk that never mentions the hash is not parsed (16.3 item 1)
  assert.equal(findLoop(request(['Via: SIP/2.0/UDP ua.example.com;branch=z9hG4bKua', 'Via: \u0000<<<;;;', `Via: ${'x'.repeat(20_000)}`]), us), false)
  // junk that holds the hash is parsed, and refused
  assert.throws(() => findLoop(request(['Via: SIP/2.0/UDP ua.example.com;branch=z9hG4bKua', `Via: garbage ${h}`]), us),
    (err: unknown) => err instanceof SipStatusError && err.status === 400)
  // an element of a list with the hash but no branch parameter: not a loop
  assert.equal(findLoop(request([`Via: SIP/2.0/UDP ua.example.com;branch=z9hG4bKua, SIP/2.0/UDP proxy.example.com;received=${h}`]), us), false)
})

test('the hash is kept on the request for forwarding (not for a REGISTER)', () => {
  const r = request(['Via: SIP/2.0/UDP ua.example.com;branch=z9hG4bKua', 'Via: SIP/2.0/UDP b.example.com;branch=z9hG4bKb'])
  assert.equal(r.loopHash, undefined)
  findLoop(r, us)
  assert.equal(r.loopHash, loopHashOf(r))
})
