// The parser's allocation-free fast paths (issue 11): the usual method, version, Request-URI
// scheme, status line, Via sent-protocol, Via port, parameter names and header names are read as
// constants or in place. Each must accept and refuse exactly what the general path does: the
// near misses below (case, whitespace, lengths, overflow, hostile names) take the general path or
// fail the same way.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { parseMessage, parseVia, isRequest, isResponse, SipParseError, type SipRequest, type SipResponse } from '../../../sip-gateway/codec/index.ts'

const HEAD = ['Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1', 'From: <sip:a@example.com>;tag=1', 'To: <sip:b@example.com>', 'Call-ID: fp-1']
const request = (start: string, cseq: string, extra: string[] = []): Uint8Array => Buffer.from([start, ...HEAD, `CSeq: ${cseq}`, ...extra, 'Content-Length: 0', '', ''].join('\r\n'))
const response = (status: string, extra: string[] = []): Uint8Array => Buffer.from([status, ...HEAD, 'CSeq: 1 MESSAGE', ...extra, 'Content-Length: 0', '', ''].join('\r\n'))

function req (data: Uint8Array): SipRequest {
  const m = parseMessage(data)
  assert.ok(isRequest(m))
  return m
}
function res (data: Uint8Array): SipResponse {
  const m = parseMessage(data)
  assert.ok(isResponse(m))
  return m
}
function refused (data: Uint8Array, status = 400): SipParseError {
  try { parseMessage(data) } catch (err) {
    assert.ok(err instanceof SipParseError, String(err))
    assert.equal(err.status, status, err.reason)
    return err
  }
  assert.fail('expected a SipParseError')
}

describe('start line fast paths', () => {
  test('known methods, and methods that only begin like one, keep their text', () => {
    for (const m of ['MESSAGE', 'INVITE', 'ACK', 'REGISTER', 'REFER']) assert.equal(req(request(`${m} sip:b@example.com SIP/2.0`, `1 ${m}`)).method, m)
    for (const m of ['MESSAGES', 'INVITEX', 'REFERRAL', 'message', 'ACKS']) assert.equal(req(request(`${m} sip:b@example.com SIP/2.0`, `1 ${m}`)).method, m)
  })

  test('the version: SIP/2.0 at once, other spellings by the general path', () => {
    assert.equal(req(request('MESSAGE sip:b@example.com SIP/2.0', '1 MESSAGE')).version, 'SIP/2.0')
    assert.equal(req(request('MESSAGE sip:b@example.com sip/2.0', '1 MESSAGE')).version, 'SIP/2.0')
    refused(request('MESSAGE sip:b@example.com SIP/2.00', '1 MESSAGE'), 505)
    refused(request('MESSAGE sip:b@example.com SIP/3.0', '1 MESSAGE'), 505)
    refused(request('MESSAGE sip:b@example.com SIP/2.0x', '1 MESSAGE'), 400)
    refused(request('MESSAGE sip:b@example.com XSIP/2.0', '1 MESSAGE'), 400)
  })

  test('the Request-URI scheme: sip: at once; SIP:, sips:, tel: and strangers as before', () => {
    assert.equal(req(request('MESSAGE SIP:b@example.com SIP/2.0', '1 MESSAGE')).uri, 'SIP:b@example.com')
    req(request('MESSAGE sips:b@example.com SIP/2.0', '1 MESSAGE'))
    req(request('MESSAGE tel:+15551234 SIP/2.0', '1 MESSAGE'))
    refused(request('MESSAGE http://example.com SIP/2.0', '1 MESSAGE'), 416)
    refused(request('MESSAGE sip:<b@example.com> SIP/2.0', '1 MESSAGE'), 400)
    refused(request('MESSAGE sip:b@"x" SIP/2.0', '1 MESSAGE'), 400)
    refused(request('MESSAGE :b@example.com SIP/2.0', '1 MESSAGE'), 400)
  })

  test('status lines: the code read digit by digit, the reason OK as a constant', () => {
    assert.deepEqual([res(response('SIP/2.0 200 OK')).status, res(response('SIP/2.0 200 OK')).reason], [200, 'OK'])
    assert.deepEqual([res(response('SIP/2.0 180 Ringing')).status, res(response('SIP/2.0 180 Ringing')).reason], [180, 'Ringing'])
    assert.equal(res(response('SIP/2.0 699 OKAY')).reason, 'OKAY')
    assert.equal(res(response('SIP/2.0 603')).reason, '')
    assert.equal(res(response('SIP/2.0 200 not OK')).reason, 'not OK')
    assert.equal(res(response('sip/2.0 404 Not Found')).status, 404)
    for (const bad of ['SIP/2.0 700 Nope', 'SIP/2.0 099 Low', 'SIP/2.0 2x0 OK', 'SIP/2.0 20 OK', 'SIP/2.0 2000 OK', 'SIP/2.0 200OK', 'SIP/2.0 ', 'SIP/2.0 -00 OK', 'SIP/2.0 1:0 OK']) {
      assert.throws(() => parseMessage(response(bad)), SipParseError, bad)
    }
    assert.throws(() => parseMessage(response('SIP/3.0 200 OK')), (e: SipParseError) => e.status === 505)
  })
})

describe('Via fast paths', () => {
  test('the usual sent-protocols as constants; case, spacing and strangers by the general path', () => {
    for (const t of ['UDP', 'TCP', 'TLS', 'WS', 'WSS', 'MESH']) {
      const v = parseVia(`SIP/2.0/${t} host.example.com:5070;branch=z9hG4bKx`)
      assert.deepEqual([v.protocol, v.transport, v.host, v.port, v.branch], ['SIP/2.0', t, 'host.example.com', 5070, 'z9hG4bKx'])
    }
    assert.equal(parseVia('sip/2.0/udp h').transport, 'UDP')
    assert.equal(parseVia('SIP / 2.0 / UDP h').transport, 'UDP')
    assert.equal(parseVia('SIP/2.0/UDP    h').host, 'h', 'more white space after the transport')
    assert.equal(parseVia('SIP/2.0/UDP\th').host, 'h')
    assert.equal(parseVia('SIP/2.0/UDPX h').transport, 'UDPX')
    assert.equal(parseVia('SIP/2.0/SCTP h').transport, 'SCTP')
    assert.throws(() => parseVia('SIP/2.0/UDP'), SipParseError)
    assert.throws(() => parseVia('SIP/2.0/UDP '), SipParseError)
    assert.throws(() => parseVia('SIP/2.0/UDP ;branch=z9hG4bK1'), SipParseError)
  })

  test('ports read in place: 0 to 65535, at most 5 digits', () => {
    assert.equal(parseVia('SIP/2.0/UDP h:0').port, 0)
    assert.equal(parseVia('SIP/2.0/UDP h:65535').port, 65535)
    assert.equal(parseVia('SIP/2.0/UDP h : 5060').port, 5060)
    assert.equal(parseVia('SIP/2.0/UDP h:00080').port, 80)
    for (const bad of ['h:65536', 'h:99999', 'h:123456', 'h:', 'h:;branch=z9hG4bK1', 'h:-1', 'h:5060x', 'h:1e3', `h:${'9'.repeat(400)}`]) {
      assert.throws(() => parseVia(`SIP/2.0/UDP ${bad}`), SipParseError, bad)
    }
  })

  test('parameter names: known ones as constants, other spellings lower-cased as before', () => {
    const v = parseVia('SIP/2.0/UDP h;BRANCH=z9hG4bKa;Rport;received=192.0.2.9;branches=2;rport2;lr')
    assert.equal(v.branch, 'z9hG4bKa')
    assert.equal(v.rport, null)
    assert.equal(v.received, '192.0.2.9')
    assert.deepEqual(Object.keys(v.params), ['branch', 'rport', 'received', 'branches', 'rport2', 'lr'])
    assert.throws(() => parseVia('SIP/2.0/UDP h;branch'), SipParseError)
    assert.throws(() => parseVia('SIP/2.0/UDP h;rport=70000'), SipParseError)
  })
})

describe('header names found without a string per line', () => {
  test('spellings and compact forms of one name each map to its key; near names do not', () => {
    const m = req(request('MESSAGE sip:b@example.com SIP/2.0', '1 MESSAGE', ['SUBJECT: one', 's: two', 'Subjects: three', 'subjec: four', 'X-Subject: five']))
    assert.deepEqual(m.headers.getAll('Subject'), ['one', 'two'])
    assert.deepEqual(m.headers.getAll('Subjects'), ['three'])
    assert.deepEqual(m.headers.getAll('subjec'), ['four'])
    assert.deepEqual(m.headers.getAll('x-subject'), ['five'])
  })

  test('thousands of distinct and hostile names: each still read right once the table is full; bad names 400', () => {
    for (let round = 0; round < 3; round++) {
      const extra = Array.from({ length: 400 }, (_, i) => `X-Name-${round}-${i}: v${i}`)
      const m = req(request('MESSAGE sip:b@example.com SIP/2.0', '1 MESSAGE', extra))
      for (const i of [0, 199, 399]) assert.equal(m.headers.get(`x-name-${round}-${i}`), `v${i}`)
      assert.equal(m.headers.get('Call-ID'), 'fp-1')
    }
    refused(request('MESSAGE sip:b@example.com SIP/2.0', '1 MESSAGE', ['X Bad: 1']))
    refused(request('MESSAGE sip:b@example.com SIP/2.0', '1 MESSAGE', ['Caf\u00e9: 1']))
    refused(request('MESSAGE sip:b@example.com SIP/2.0', '1 MESSAGE', ['<Via>: 1']))
  })
})

describe('Headers as one array with room at the front and back', () => {
  test('prepend, append, set, delete, shift, replaceFirst and clone agree with a plain list model (10,000 random steps)', async () => {
    const { Headers } = await import('../../../sip-gateway/codec/headers.ts')
    const names = ['Via', 'Route', 'Record-Route', 'X-A', 'Max-Forwards']
    let seed = 11
    const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n }
    let h = new Headers()
    let model: Array<[string, string]> = []
    for (let step = 0; step < 10_000; step++) {
      const name = names[rnd(names.length)]
      const key = name.toLowerCase()
      const value = `v${step}`
      switch (rnd(7)) {
        case 0: {
          h.prepend(name, value)
          const i = model.findIndex(([n]) => n.toLowerCase() === key)
          model.splice(i === -1 ? 0 : i, 0, [name, value])
          break
        }
        case 1: h.append(name, value); model.push([name, value]); break
        case 2: {
          h.set(name, value)
          const i = model.findIndex(([n]) => n.toLowerCase() === key)
          if (i === -1) model.push([name, value])
          else model = model.filter(([n], j) => j <= i || n.toLowerCase() !== key).map((e, j) => j === i ? [e[0], value] : e)
          break
        }
        case 3: h.delete(name); model = model.filter(([n]) => n.toLowerCase() !== key); break
        case 4: {
          const got = h.shift(name)
          const i = model.findIndex(([n]) => n.toLowerCase() === key)
          assert.equal(got, i === -1 ? undefined : model[i][1])
          if (i !== -1) model.splice(i, 1)
          break
        }
        case 5: {
          const ok = h.replaceFirst(name, value)
          const i = model.findIndex(([n]) => n.toLowerCase() === key)
          assert.equal(ok, i !== -1)
          if (i !== -1) model[i] = [model[i][0], value]
          break
        }
        default: h = h.clone()
      }
      if (model.length > 40) { for (const n of names) h.delete(n); model = [] }
      assert.deepEqual([...h.entries()], model, `step ${step}`)
      assert.equal(h.size, model.length)
    }
  })
})

describe('parseUri by indices', () => {
  test('the usual URIs and their near misses parse as the general parser did (expected values recorded from it)', async () => {
    const { parseUri } = await import('../../../sip-gateway/codec/uri.ts')
    const cases: Array<[string, string | Record<string, unknown>]> = [
      ["sip:", "400 Malformed URI host"],
      ["sip:@host", "400 Malformed URI user"],
      ["sip:user@", "400 Malformed URI host"],
      ["sip:[::1", "400 Malformed URI host"],
      ["sip:[::1]x", "400 Malformed URI host"],
      ["sip:[::1]:5060", {"scheme": "sip", "host": "[::1]", "params": {}, "headers": {}, "port": 5060}],
      ["sip:h:", "400 Malformed port in URI"],
      ["sip:h:70000", "400 Malformed port in URI"],
      ["sip:h:65535", {"scheme": "sip", "host": "h", "params": {}, "headers": {}, "port": 65535}],
      ["sip:h:123456", "400 Malformed port in URI"],
      ["sip:h:00080", {"scheme": "sip", "host": "h", "params": {}, "headers": {}, "port": 80}],
      ["sip:h:8a", "400 Malformed port in URI"],
      ["sip:h;", "400 Empty URI parameter"],
      ["sip:h;=x", "400 Empty URI parameter name"],
      ["sip:h;a=1;;b", "400 Empty URI parameter"],
      ["sip:h?x=1;lr", {"scheme": "sip", "host": "h", "params": {}, "headers": {"x": "1;lr"}}],
      ["sip:u@h;maddr=x?subject=y&", {"scheme": "sip", "host": "h", "params": {"maddr": "x"}, "headers": {"subject": "y"}, "user": "u"}],
      ["tel:", "400 Malformed tel URI"],
      ["tel:+1;phone-context=x", {"scheme": "tel", "host": "", "params": {"phone-context": "x"}, "headers": {}, "user": "+1"}],
      ["SIP:U@H", {"scheme": "sip", "host": "H", "params": {}, "headers": {}, "user": "U"}],
      ["sips:a@b:5061;transport=TLS", {"scheme": "sips", "host": "b", "params": {"transport": "TLS"}, "headers": {}, "user": "a", "port": 5061}],
      ["sip:a@b;LR;Transport=udp", {"scheme": "sip", "host": "b", "params": {"lr": null, "transport": "udp"}, "headers": {}, "user": "a"}],
      ["sip:a:pw@b", {"scheme": "sip", "host": "b", "params": {}, "headers": {}, "user": "a", "password": "pw"}],
      ["sip::pw@b", "400 Malformed URI user"],
      ["sip:a@b@c", "400 Malformed URI host"],
      ["sip:a@b;x=@y", {"scheme": "sip", "host": "b", "params": {"x": "@y"}, "headers": {}, "user": "a"}],
      ["sip:h:5060:5060", "400 Malformed port in URI"],
      ["sipx:h", "416 Unsupported URI Scheme"]
    ]
    for (const [input, expected] of cases) {
      if (typeof expected === 'string') {
        assert.throws(() => parseUri(input), (e: SipParseError) => e instanceof SipParseError && e.message === expected, input)
      } else {
        assert.deepEqual({ ...parseUri(input) }, expected, input)
      }
    }
  })
})
