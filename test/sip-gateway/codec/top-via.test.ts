import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { parseMessage, parseVia, SipParseError, type SipMessage } from '../../../sip-gateway/codec/index.ts'
import { prependVia, setTopVia, topVia } from '../../../sip-gateway/codec/via.ts'

const parse = (...lines: string[]): SipMessage => parseMessage(Buffer.from(lines.join('\r\n'), 'utf8'))
const request = (...vias: string[]): SipMessage => parse('MESSAGE sip:bob@example.com SIP/2.0', ...vias.map(v => `Via: ${v}`),
  'From: <sip:alice@example.com>;tag=a', 'To: <sip:bob@example.com>', 'Call-ID: c1', 'CSeq: 1 MESSAGE', 'Content-Length: 0', '', '')

describe('topVia: the parsed top Via kept on the headers', () => {
  test('the parser fills it in: the same object each time, equal to a fresh parse', () => {
    const m = request('SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa;rport', 'SIP/2.0/TCP 10.0.0.2;branch=z9hG4bKb')
    const v = topVia(m.headers)
    assert.equal(topVia(m.headers), v)
    assert.deepEqual(v, parseVia('SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa;rport'))
  })

  test('follows every change of the top Via text (shift, replaceFirst, set, delete, prepend)', () => {
    const m = request('SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.3;branch=z9hG4bKc', 'SIP/2.0/TCP 10.0.0.2;branch=z9hG4bKb')
    assert.equal(topVia(m.headers)?.branch, 'z9hG4bKa')
    m.headers.shift('Via')
    assert.equal(topVia(m.headers)?.branch, 'z9hG4bKc')
    m.headers.shift('Via')
    assert.equal(topVia(m.headers)?.branch, 'z9hG4bKb')
    m.headers.replaceFirst('Via', 'SIP/2.0/UDP h;branch=z9hG4bKd')
    assert.equal(topVia(m.headers)?.branch, 'z9hG4bKd')
    m.headers.prepend('Via', 'SIP/2.0/UDP h;branch=z9hG4bKe')
    assert.equal(topVia(m.headers)?.branch, 'z9hG4bKe')
    m.headers.delete('Via')
    assert.equal(topVia(m.headers), undefined)
    m.headers.set('Via', 'SIP/2.0/UDP h;branch=z9hG4bKf')
    assert.equal(topVia(m.headers)?.branch, 'z9hG4bKf')
  })

  test('a malformed top Via written after a good one throws, never answers with the stale parse', () => {
    const m = request('SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa')
    assert.equal(topVia(m.headers)?.branch, 'z9hG4bKa')
    for (const bad of ['SIP/2.0/UDP', 'garbage', 'SIP/2.0/UDP [::1;branch=x', 'SIP/2.0/UDP h:99999', 'SIP/2.0/UDP h;branch=', 'x'.repeat(10_000)]) {
      m.headers.set('Via', bad)
      assert.throws(() => topVia(m.headers), SipParseError, bad.slice(0, 40))
    }
  })

  test('setTopVia and prependVia keep the parsed value and the text in step', () => {
    const m = request('SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa;rport')
    const v = topVia(m.headers)!
    setTopVia(m.headers, { ...v, rport: 40000, received: '192.0.2.1' })
    assert.equal(m.headers.get('Via'), 'SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa;rport=40000;received=192.0.2.1')
    assert.deepEqual(topVia(m.headers), parseVia(m.headers.get('Via')!))
    assert.equal(v.rport, null, 'the shared value is not changed')
    prependVia(m.headers, { protocol: 'SIP/2.0', transport: 'UDP', host: 'proxy', port: 5060, params: { rport: null }, branch: 'z9hG4bKp' })
    assert.equal(m.headers.get('Via'), 'SIP/2.0/UDP proxy:5060;rport;branch=z9hG4bKp')
    assert.deepEqual(topVia(m.headers), parseVia(m.headers.get('Via')!))
  })

  test('a clone carries it, and changes to the clone leave the original alone', () => {
    const m = request('SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa')
    const c = m.headers.clone()
    assert.equal(topVia(c), topVia(m.headers))
    c.shift('Via')
    c.prepend('Via', 'SIP/2.0/UDP other;branch=z9hG4bKo')
    assert.equal(topVia(c)?.branch, 'z9hG4bKo')
    assert.equal(topVia(m.headers)?.branch, 'z9hG4bKa')
  })
})
