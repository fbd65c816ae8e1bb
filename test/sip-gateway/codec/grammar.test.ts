import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import {
  Headers, parseVia, formatVia, parseNameAddr, formatNameAddr, parseUri, formatUri, parseCSeq, aorOf, createResponse,
  reasonPhrase, parseMessage, serializeMessage, SipRequest, SipParseError, isRequest, generateBranch, generateTag
} from '../../../sip-gateway/codec/index.ts'
import { parseNameAddrShared } from '../../../sip-gateway/codec/name-addr.ts'

const isParseError = (err: unknown): boolean => err instanceof SipParseError

describe('Headers', () => {
  test('case-insensitive names, compact forms, ordered entries', () => {
    const h = new Headers([['via', 'a'], ['V', 'b'], ['X-Custom', 'c'], ['i', 'id']])
    assert.equal(h.get('VIA'), 'a')
    assert.deepEqual(h.getAll('Via'), ['a', 'b'])
    assert.equal(h.get('call-id'), 'id')
    assert.deepEqual([...h.entries()], [['Via', 'a'], ['Via', 'b'], ['X-Custom', 'c'], ['Call-ID', 'id']])
    assert.equal(h.has('x-custom'), true)
    assert.equal(h.has('x-other'), false)
    assert.equal(h.get('x-other'), undefined)
    assert.deepEqual(h.getAll('x-other'), [])
  })

  test('set replaces every line in place, append and prepend, delete', () => {
    const h = new Headers({ From: 'f', Route: 'r1', To: 't' })
    h.append('route', 'r2')
    h.set('Route', 'r0')
    assert.deepEqual([...h.entries()], [['From', 'f'], ['Route', 'r0'], ['To', 't']])
    h.prepend('Via', 'v2')
    h.prepend('Via', 'v1')
    h.prepend('Route', 'rx')
    assert.deepEqual([...h].map(([n, v]) => `${n}:${v}`), ['Via:v1', 'Via:v2', 'From:f', 'Route:rx', 'Route:r0', 'To:t'])
    assert.equal(h.delete('route'), true)
    assert.equal(h.delete('route'), false)
    assert.deepEqual([...h].map(([n]) => n), ['Via', 'Via', 'From', 'To'])
  })

  test('list splitting respects quotes, escapes and angle brackets; non-list headers are never split', () => {
    const h = new Headers()
    h.append('Contact', '"a, \\"b, c" <sip:x@y;p=1,2>;q=0.1 , <sip:z@w>,,')
    h.append('Authorization', 'Digest username="bob", realm="r", uri="sip:a,b"')
    h.append('Allow', 'INVITE,ACK ,  BYE')
    h.append('Warning', '399 host "text, with comma", 307 host2 "x"')
    assert.deepEqual(h.getAll('contact'), ['"a, \\"b, c" <sip:x@y;p=1,2>;q=0.1', '<sip:z@w>'])
    assert.equal(h.get('contact'), '"a, \\"b, c" <sip:x@y;p=1,2>;q=0.1')
    assert.deepEqual(h.getAll('authorization'), ['Digest username="bob", realm="r", uri="sip:a,b"'])
    assert.deepEqual(h.getAll('allow'), ['INVITE', 'ACK', 'BYE'])
    assert.deepEqual(h.getAll('warning'), ['399 host "text, with comma"', '307 host2 "x"'])
  })

  test('replaceFirst and shift work on the first element of a list', () => {
    const h = new Headers([['Via', 'v1, v2'], ['Via', 'v3']])
    h.replaceFirst('via', 'v1;received=1.2.3.4')
    assert.deepEqual(h.getAll('via'), ['v1;received=1.2.3.4', 'v2', 'v3'])
    assert.equal(h.shift('via'), 'v1;received=1.2.3.4')
    assert.equal(h.shift('via'), 'v2')
    assert.deepEqual(h.getAll('via'), ['v3'])
    assert.equal(h.shift('via'), 'v3')
    assert.equal(h.shift('via'), undefined)
    assert.equal(h.size, 0)
    assert.equal(h.replaceFirst('via', 'x'), false)
  })

  test('shift skips and removes empty list lines, trims a lone element, gives a non-list value as it is', () => {
    const h = new Headers([['Via', '  '], ['Via', ' v1 '], ['Subject', ' a, b '], ['Via', ',']])
    assert.equal(h.shift('via'), 'v1')
    assert.deepEqual([...h], [['Subject', ' a, b '], ['Via', ',']])
    assert.equal(h.shift('subject'), ' a, b ')
    assert.equal(h.shift('via'), undefined)
    assert.equal(h.size, 0)
  })

  test('clone is independent', () => {
    const a = new Headers({ To: 't' })
    const b = a.clone()
    b.set('To', 'u')
    b.append('X', 'y')
    assert.equal(a.get('to'), 't')
    assert.equal(a.size, 1)
  })
})

describe('Via', () => {
  test('parses protocol, transport, host, port, params, branch, received, rport', () => {
    const v = parseVia('SIP/2.0/udp 192.0.2.1:5070;branch=z9hG4bK1;received=10.0.0.1;rport=5999;maddr=1.2.3.4;ttl=16')
    assert.equal(v.protocol, 'SIP/2.0')
    assert.equal(v.transport, 'UDP')
    assert.equal(v.host, '192.0.2.1')
    assert.equal(v.port, 5070)
    assert.equal(v.branch, 'z9hG4bK1')
    assert.equal(v.received, '10.0.0.1')
    assert.equal(v.rport, 5999)
    assert.deepEqual(v.params, { branch: 'z9hG4bK1', received: '10.0.0.1', rport: '5999', maddr: '1.2.3.4', ttl: '16' })
  })

  test('IPv6 sent-by, whitespace around separators, round trip through formatVia', () => {
    const v = parseVia('SIP / 2.0 / TCP [2001:db8::9:1] : 5061 ; branch = z9hG4bKa ; rport')
    assert.equal(v.host, '[2001:db8::9:1]')
    assert.equal(v.port, 5061)
    assert.equal(v.rport, null)
    const text = formatVia({ ...v, received: '2001:db8::9:1', rport: 40000 })
    assert.equal(text, 'SIP/2.0/TCP [2001:db8::9:1]:5061;branch=z9hG4bKa;rport=40000;received=2001:db8::9:1')
    assert.deepEqual(parseVia(text).rport, 40000)
  })

  test('formatVia: a Via of many parameters, then short ones, each written whole (its pieces array grows and shrinks back)', () => {
    const many = 'SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKm;' + Array.from({ length: 12 }, (_, i) => `p${i}=v${i}`).join(';') + ';lr'
    assert.equal(formatVia(parseVia(many)), many)
    assert.equal(formatVia({ protocol: 'SIP/2.0', transport: 'UDP', host: 'h', params: {} }), 'SIP/2.0/UDP h')
    assert.equal(formatVia(parseVia('SIP/2.0/TCP a.example:5070;branch=z9hG4bKx')), 'SIP/2.0/TCP a.example:5070;branch=z9hG4bKx')
    assert.equal(formatVia(parseVia(many)), many)
    assert.equal(formatVia({ protocol: 'SIP/2.0', transport: 'UDP', host: 'h', params: {} }), 'SIP/2.0/UDP h')
  })

  test('rejects malformed values with SipParseError', () => {
    for (const bad of ['', 'SIP/2.0/UDP', 'SIP/2.0 host', 'SIP/2.0/UDP host:99999', 'SIP/2.0/UDP host:abc', 'SIP/2.0/UDP host;rport=x',
      'SIP/2.0/UDP ho st', 'SIP/2.0/UDP host;branch', 'SIP/2.0/UDP host;;', 'SIP/2.0/UDP [::1', 'SIP/2.0/UDP a,b', 'SIP/2.0/UDP host;x="unterminated']) {
      assert.throws(() => parseVia(bad), isParseError, bad)
    }
  })
})

describe('name-addr', () => {
  test('quoted and unquoted display names, addr-spec with header params', () => {
    assert.deepEqual(parseNameAddr('"Alice \\"A\\"" <sip:alice@example.com;transport=tcp>;tag=88;expires=60'),
      { display: 'Alice "A"', uri: 'sip:alice@example.com;transport=tcp', params: { tag: '88', expires: '60' } })
    assert.deepEqual(parseNameAddr('Bob Smith<sip:bob@example.com>'), { display: 'Bob Smith', uri: 'sip:bob@example.com', params: {} })
    assert.deepEqual(parseNameAddr('sip:carol@example.com;tag=5'), { uri: 'sip:carol@example.com', params: { tag: '5' } })
    assert.deepEqual(parseNameAddr('<sip:d@e>;+sip.instance="<urn:uuid:1>";reg-id=1').params, { '+sip.instance': '"<urn:uuid:1>"', 'reg-id': '1' })
  })

  test('formatNameAddr round trip', () => {
    const a = { display: 'A "quoted" name', uri: 'sip:a@b', params: { tag: 'x', lr: null } }
    assert.equal(formatNameAddr(a), '"A \\"quoted\\" name" <sip:a@b>;tag=x;lr')
    assert.deepEqual(parseNameAddr(formatNameAddr(a)), a)
  })

  test('rejects malformed values (unbalanced quotes, missing >, no URI, hostile names)', () => {
    for (const bad of ['', '*', '"Unbalanced <sip:a@b>', '<sip:a@b', 'Name <>', 'no-scheme', '<sip:a@b> garbage', 'A"b <sip:a@b>']) {
      assert.throws(() => parseNameAddr(bad), isParseError, bad)
    }
    const p = parseNameAddr('<sip:a@b>;__proto__;constructor=1').params
    assert.equal(Object.getPrototypeOf(p), Object.prototype)
    assert.equal(Object.hasOwn(p, '__proto__'), true)
  })
})

describe('name-addr, shared parse (the last two kept)', () => {
  test('gives what parseNameAddr gives, for values met again, alternating and new; malformed ones throw every time', () => {
    const values = ['"Alice" <sip:alice@example.com>;tag=1', 'sip:bob@example.com;tag=2', '<sip:carol@example.com>', '"Alice" <sip:alice@example.com>;tag=1']
    for (let round = 0; round < 3; round++) {
      for (const v of values) assert.deepEqual(parseNameAddrShared(v), parseNameAddr(v), v)
      // From and To of one request, read in turn: each answered from what was kept
      assert.equal(parseNameAddrShared(values[0]), parseNameAddrShared(values[0]))
      assert.equal(parseNameAddrShared(values[1]).params.tag, '2')
      assert.equal(parseNameAddrShared(values[0]).params.tag, '1')
    }
    for (const bad of ['', '*', '"Unbalanced <sip:a@b>', '<sip:a@b', 'Name <>', 'no-scheme', '<sip:a@b> garbage', 'A"b <sip:a@b>']) {
      assert.throws(() => parseNameAddrShared(bad), isParseError, bad)
      assert.throws(() => parseNameAddrShared(bad), isParseError, `${bad} (again)`)
    }
    // a hostile parameter name does not reach the prototype of the shared result either
    const p = parseNameAddrShared('<sip:a@b>;__proto__;constructor=1').params
    assert.equal(Object.getPrototypeOf(p), Object.prototype)
    assert.equal(Object.hasOwn(p, '__proto__'), true)
  })
})

describe('URI', () => {
  test('parses sip, sips and tel URIs', () => {
    assert.deepEqual(parseUri('sip:alice:secret@Example.COM:5070;transport=TCP;lr?subject=hi&priority=urgent'), {
      scheme: 'sip', user: 'alice', password: 'secret', host: 'Example.COM', port: 5070,
      params: { transport: 'TCP', lr: null }, headers: { subject: 'hi', priority: 'urgent' }
    })
    assert.deepEqual(parseUri('SIPS:[2001:db8::1]:5061'), { scheme: 'sips', host: '[2001:db8::1]', port: 5061, params: {}, headers: {} })
    assert.deepEqual(parseUri('tel:+1-201-555-0123;phone-context=example.com'), {
      scheme: 'tel', user: '+1-201-555-0123', host: '', params: { 'phone-context': 'example.com' }, headers: {}
    })
  })

  test('formatUri round trip', () => {
    for (const s of ['sip:alice@example.com', 'sips:bob:pw@[::1]:5061;transport=tls;lr', 'sip:example.com?a=b&c=d', 'tel:+123;ext=4']) {
      assert.equal(formatUri(parseUri(s)), s)
    }
  })

  test('unsupported schemes are 416, malformed URIs 400', () => {
    assert.throws(() => parseUri('http://example.com/'), (err: unknown) => isParseError(err) && (err as SipParseError).status === 416)
    for (const bad of ['', 'sip:', 'sip:@host', 'sip:a@', 'sip:a@host:70000', 'sip:a@ho st', 'sip:a@host;', 'sip:a@[::1', '1sip:a@b', 'sip:a@host?__proto__=1']) {
      assert.throws(() => parseUri(bad), (err: unknown) => isParseError(err) && (err as SipParseError).status === 400, bad)
    }
  })

  test('aorOf normalizes', () => {
    assert.equal(aorOf('SIP:Alice@Example.COM:5060;transport=tcp?x=y'), 'sip:Alice@example.com')
    assert.equal(aorOf('sips:bob@example.com'), 'sip:bob@example.com')
    assert.equal(aorOf('sip:%61lice@example.com'), 'sip:alice@example.com')
    assert.equal(aorOf('sip:a%40b@example.com'), 'sip:a%40b@example.com')
    assert.equal(aorOf('sip:example.com'), 'sip:example.com')
    assert.equal(aorOf(parseUri('tel:+123;x=1')), 'tel:+123')
  })
})

describe('CSeq', () => {
  test('parses and rejects', () => {
    assert.deepEqual(parseCSeq(' 4711   INVITE '), { seq: 4711, method: 'INVITE' })
    assert.deepEqual(parseCSeq('4294967295 NOTIFY'), { seq: 4294967295, method: 'NOTIFY' })
    for (const bad of ['', 'INVITE', '1', '1INVITE', '-1 INVITE', '4294967296 INVITE', '1 IN VITE', '1 IN<VITE']) {
      assert.throws(() => parseCSeq(bad), isParseError, bad)
    }
  })

  test('known and other methods, leading zeros, tabs, the limits of the number; hostile values refused', () => {
    assert.deepEqual(parseCSeq('0000000012 MESSAGE'), { seq: 12, method: 'MESSAGE' })
    assert.deepEqual(parseCSeq('0\tREGISTER'), { seq: 0, method: 'REGISTER' })
    assert.deepEqual(parseCSeq('7 \t SUBSCRIBE\t'), { seq: 7, method: 'SUBSCRIBE' })
    assert.deepEqual(parseCSeq('7 message'), { seq: 7, method: 'message' }, 'methods are case-sensitive: kept as written')
    assert.deepEqual(parseCSeq('7 MESSAGEX'), { seq: 7, method: 'MESSAGEX' })
    assert.deepEqual(parseCSeq('7 X-CUSTOM.1'), { seq: 7, method: 'X-CUSTOM.1' })
    assert.deepEqual(parseCSeq('9999999999 ACK'.replace('9999999999', '4294967295')), { seq: 4294967295, method: 'ACK' })
    for (const bad of ['9999999999 ACK', '12345678901 ACK', '00000000001 ACK', '1 MESSAGE MESSAGE', '1 ', '1\t', '١ INVITE', '1\u00a0INVITE', '1 INVITE\u0000', ' \t ']) {
      assert.throws(() => parseCSeq(bad), isParseError, JSON.stringify(bad))
    }
  })
})

describe('createResponse', () => {
  const request = (): SipRequest => {
    const m = parseMessage(Buffer.from([
      'INVITE sip:bob@example.com SIP/2.0',
      'Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bK1, SIP/2.0/UDP ua.example.com;branch=z9hG4bK0;received=1.2.3.4',
      'Max-Forwards: 69', 'From: <sip:alice@example.com>;tag=a1', 'To: <sip:bob@example.com>', 'Call-ID: c@d',
      'CSeq: 9 INVITE', 'Timestamp: 54', 'Contact: <sip:alice@ua.example.com>', 'Content-Length: 0', '', ''
    ].join('\r\n')))
    assert.ok(isRequest(m))
    return m
  }

  test('copies Via, From, To, Call-ID, CSeq; adds a To tag when asked; extra headers last', () => {
    const r = createResponse(request(), 486, undefined, [['Retry-After', '30']], { toTag: 'b2' })
    assert.equal(r.status, 486)
    assert.equal(r.reason, 'Busy Here')
    assert.deepEqual([...r.headers], [
      ['Via', 'SIP/2.0/UDP p1.example.com;branch=z9hG4bK1, SIP/2.0/UDP ua.example.com;branch=z9hG4bK0;received=1.2.3.4'],
      ['From', '<sip:alice@example.com>;tag=a1'], ['To', '<sip:bob@example.com>;tag=b2'], ['Call-ID', 'c@d'],
      ['CSeq', '9 INVITE'], ['Retry-After', '30']
    ])
    const text = Buffer.from(serializeMessage(r)).toString()
    assert.match(text, /^SIP\/2\.0 486 Busy Here\r\n/)
    assert.match(text, /Content-Length: 0\r\n\r\n$/)
  })

  test('100 Trying copies Timestamp and never gets a To tag; an existing tag is kept', () => {
    const trying = createResponse(request(), 100, undefined, undefined, { toTag: true })
    assert.equal(trying.headers.get('timestamp'), '54')
    assert.equal(trying.headers.get('to'), '<sip:bob@example.com>')
    const req = request()
    req.headers.set('To', '<sip:bob@example.com>;tag=old')
    assert.equal(createResponse(req, 200, 'OK', { Contact: '<sip:b@c>' }, { toTag: true }).headers.get('to'), '<sip:bob@example.com>;tag=old')
    const random = createResponse(request(), 200, undefined, undefined, { toTag: true }).headers.get('to') as string
    assert.match(random, /;tag=[0-9a-f]{12}$/)
  })

  test('reason phrases, tags and branches', () => {
    assert.equal(reasonPhrase(513), 'Message Too Large')
    assert.equal(reasonPhrase(416), 'Unsupported URI Scheme')
    assert.equal(reasonPhrase(499), 'Client Error')
    assert.match(generateBranch(), /^z9hG4bK[A-Za-z0-9_-]{12}$/)
    assert.notEqual(generateTag(), generateTag())
    // drawn from a pool of random bytes refilled every 4 KiB: none handed out twice across refills
    const tags = Array.from({ length: 5000 }, () => generateTag())
    assert.ok(tags.every(t => /^[0-9a-f]{12}$/.test(t)))
    assert.equal(new Set(tags).size, tags.length)
    const branches = Array.from({ length: 5000 }, () => generateBranch())
    assert.equal(new Set(branches).size, branches.length)
  })
})
