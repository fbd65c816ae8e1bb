import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import {
  parseMessage, serializeMessage, isRequest, SipRequest, SipResponse, SipParseError, parseVia, parseNameAddr, parseUri,
  type SipMessage
} from '../../../sip-gateway/codec/index.ts'

const enc = (s: string): Uint8Array => Buffer.from(s, 'utf8')
const msg = (...lines: string[]): Uint8Array => enc(lines.join('\r\n'))
const dec = (b: Uint8Array): string => Buffer.from(b).toString('utf8')

function req (m: SipMessage): SipRequest {
  assert.ok(isRequest(m), 'expected a request')
  return m
}

function parseError (data: Uint8Array, options?: { maxSize?: number }): SipParseError {
  try {
    parseMessage(data, options)
  } catch (err) {
    assert.ok(err instanceof SipParseError, `expected SipParseError, got ${String(err)}`)
    assert.equal(err.name, 'SipParseError')
    return err
  }
  assert.fail('expected a SipParseError')
}

const BASE = [
  'Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK74bf9',
  'Max-Forwards: 70',
  'From: Alice <sip:alice@example.com>;tag=9fxced76sl',
  'To: Bob <sip:bob@example.com>',
  'Call-ID: 3848276298220188511@atlanta.example.com'
]

describe('parseMessage: valid messages', () => {
  test('a REGISTER with every header kept raw and in order', () => {
    const m = req(parseMessage(msg(
      'REGISTER sip:example.com SIP/2.0', ...BASE, 'CSeq: 1 REGISTER',
      'Contact: <sip:alice@192.0.2.1>;expires=3600', 'Content-Length: 0', '', '')))
    assert.equal(m.method, 'REGISTER')
    assert.equal(m.uri, 'sip:example.com')
    assert.equal(m.version, 'SIP/2.0')
    assert.equal(m.headers.size, 8)
    assert.deepEqual([...m.headers.entries()][2], ['From', 'Alice <sip:alice@example.com>;tag=9fxced76sl'])
    assert.equal(m.headers.get('contact'), '<sip:alice@192.0.2.1>;expires=3600')
    assert.equal(m.body.length, 0)
  })

  test('a response with a body, Content-Length honoured', () => {
    const m = parseMessage(msg('SIP/2.0 200 OK', ...BASE, 'CSeq: 2 MESSAGE', 'Content-Type: text/plain', 'Content-Length: 5', '', 'hello'))
    assert.ok(m instanceof SipResponse)
    assert.equal(m.status, 200)
    assert.equal(m.reason, 'OK')
    assert.equal(dec(m.body), 'hello')
  })

  test('compact forms map to full names', () => {
    const m = req(parseMessage(msg(
      'MESSAGE sip:bob@example.com SIP/2.0',
      'v: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKa', 'f: <sip:alice@example.com>;tag=1', 't: <sip:bob@example.com>',
      'i: abc@host', 'CSeq: 7 MESSAGE', 'c: text/plain', 'm: <sip:alice@192.0.2.1>', 'k: path', 'o: presence',
      'u: presence', 's: hi there', 'e: gzip', 'l: 2', '', 'hi')))
    assert.equal(m.headers.get('Via'), 'SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKa')
    assert.equal(m.headers.get('Call-ID'), 'abc@host')
    assert.equal(m.headers.get('content-type'), 'text/plain')
    assert.equal(m.headers.get('Contact'), '<sip:alice@192.0.2.1>')
    assert.equal(m.headers.get('Supported'), 'path')
    assert.equal(m.headers.get('Event'), 'presence')
    assert.equal(m.headers.get('Allow-Events'), 'presence')
    assert.equal(m.headers.get('Subject'), 'hi there')
    assert.equal(m.headers.get('Content-Encoding'), 'gzip')
    assert.equal(m.headers.get('l'), '2')
    assert.equal(dec(m.body), 'hi')
    const names = [...m.headers.entries()].map(([n]) => n)
    assert.deepEqual(names, ['Via', 'From', 'To', 'Call-ID', 'CSeq', 'Content-Type', 'Contact', 'Supported', 'Event',
      'Allow-Events', 'Subject', 'Content-Encoding', 'Content-Length'])
  })

  test('folded lines are unfolded with one space (tortuous whitespace, RFC 4475 3.1.1.1 style)', () => {
    const m = req(parseMessage(msg(
      'INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0',
      'TO :',
      ' sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n',
      'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>',
      '  ;',
      '  tag = 98asjd8',
      'MaX-fOrWaRdS: 0068',
      'Call-ID: wsinv.ndaksdj@192.0.2.1',
      'Content-Length   : 4',
      'cseq: 0009',
      '  INVITE',
      'Via  : SIP  /   2.0',
      ' /UDP',
      '    192.0.2.2;rport;branch=390skdjuw',
      's :',
      'NewFangledHeader:   newfangled value',
      ' continued newfangled value',
      'UnknownHeaderWithUnusualValue: ;;,,;;,;',
      '', 'v=0\r')))
    assert.equal(m.headers.get('to'), 'sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n')
    assert.equal(m.headers.get('cseq'), '0009 INVITE')
    assert.equal(m.headers.get('NewFangledHeader'), 'newfangled value continued newfangled value')
    assert.equal(m.headers.get('subject'), '')
    assert.equal(m.headers.get('UnknownHeaderWithUnusualValue'), ';;,,;;,;')
    assert.equal(m.headers.get('max-forwards'), '0068')
    const via = parseVia(m.headers.get('via') as string)
    assert.equal(via.protocol, 'SIP/2.0')
    assert.equal(via.transport, 'UDP')
    assert.equal(via.host, '192.0.2.2')
    assert.equal(via.rport, null)
    assert.equal(via.branch, '390skdjuw')
    const to = parseNameAddr(m.headers.get('to') as string)
    assert.equal(to.uri, 'sip:vivekg@chair-dnrc.example.com')
    assert.equal(to.params.tag, '1918181833n')
    const from = parseNameAddr(m.headers.get('from') as string)
    assert.equal(from.display, 'J Rosenberg \\"')
    assert.equal(from.params.tag, '98asjd8')
    assert.equal(dec(m.body), 'v=0\r')
  })

  test('an unusual method made of every token character (RFC 4475 3.1.1.3 style)', () => {
    const method = '!interesting-Method0123456789_*+`.%indeed\'~'
    const m = req(parseMessage(msg(`${method} sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0`,
      ...BASE, `CSeq: 139122385 ${method}`, '', '')))
    assert.equal(m.method, method)
  })

  test('escaped characters and a NUL escape in the URI user stay as written (RFC 4475 3.1.1.4/3.1.1.5)', () => {
    const m = req(parseMessage(msg('INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0',
      ...BASE, 'CSeq: 1 INVITE', 'Contact: <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>', '', '')))
    assert.equal(parseUri(m.uri).user, 'sips%3Auser%40example.com')
    const nul = req(parseMessage(msg('REGISTER sip:example.com SIP/2.0', ...BASE.slice(0, 3),
      'To: sip:null-%00-null@example.com', 'Call-ID: x@y', 'CSeq: 1 REGISTER', '', '')))
    assert.equal(parseUri(nul.headers.get('to') as string).user, 'null-%00-null')
  })

  test('a semicolon in the URI user part (RFC 4475 3.1.1.10 style)', () => {
    const m = req(parseMessage(msg('OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0', ...BASE, 'CSeq: 1 OPTIONS', '', '')))
    const uri = parseUri(m.uri)
    assert.equal(uri.user, 'user;par=u%40example.net')
    assert.equal(uri.host, 'example.com')
  })

  test('unknown Via transport and unusual reason phrases are accepted', () => {
    const m = parseMessage(msg('SIP/2.0 200 = 2**3 * 5**2 но сто девяносто девять - простое',
      'Via: SIP/2.0/UNKNOWN 192.0.2.1;branch=z9hG4bKx', ...BASE.slice(1), 'CSeq: 1 OPTIONS', '', ''))
    assert.ok(m instanceof SipResponse)
    assert.equal(m.reason, '= 2**3 * 5**2 но сто девяносто девять - простое')
    assert.equal(parseVia(m.headers.get('via') as string).transport, 'UNKNOWN')
    const noReason = parseMessage(msg('SIP/2.0 100', ...BASE, 'CSeq: 1 INVITE', '', ''))
    assert.ok(noReason instanceof SipResponse)
    assert.equal(noReason.reason, '')
  })

  test('leading CRLFs are ignored and a bare-LF message is tolerated', () => {
    const m = req(parseMessage(enc(['\r\n\r\nOPTIONS sip:example.com SIP/2.0', ...BASE, 'CSeq: 1 OPTIONS', '', ''].join('\n'))))
    assert.equal(m.method, 'OPTIONS')
    assert.equal(m.headers.get('call-id'), '3848276298220188511@atlanta.example.com')
  })

  test('a message without the empty line is taken as all header', () => {
    const m = req(parseMessage(msg('OPTIONS sip:example.com SIP/2.0', ...BASE, 'CSeq: 1 OPTIONS')))
    assert.equal(m.headers.get('cseq'), '1 OPTIONS')
  })

  test('repeated and comma-separated headers are the same list', () => {
    const m = req(parseMessage(msg('INVITE sip:bob@example.com SIP/2.0',
      'Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/UDP b.example.com;branch=z9hG4bK2',
      'Via: SIP/2.0/UDP c.example.com;branch=z9hG4bK3', ...BASE.slice(1), 'CSeq: 1 INVITE',
      'Route: <sip:p1.example.com;lr>,<sip:p2.example.com;lr>', 'Route: <sip:p3.example.com;lr>',
      'Contact: "Bob, the builder" <sip:bob@h1>;q=0.5, <sip:bob@h2;a=b,c>',
      'WWW-Authenticate: Digest realm="example.com", nonce="abc,def", algorithm=MD5',
      'Date: Sat, 13 Nov 2010 23:29:00 GMT', '', '')))
    assert.deepEqual(m.headers.getAll('via').map(v => parseVia(v).host), ['a.example.com', 'b.example.com', 'c.example.com'])
    assert.equal(m.headers.get('via'), 'SIP/2.0/UDP a.example.com;branch=z9hG4bK1')
    assert.deepEqual(m.headers.getAll('route'), ['<sip:p1.example.com;lr>', '<sip:p2.example.com;lr>', '<sip:p3.example.com;lr>'])
    assert.deepEqual(m.headers.getAll('contact'), ['"Bob, the builder" <sip:bob@h1>;q=0.5', '<sip:bob@h2;a=b,c>'])
    assert.deepEqual(m.headers.getAll('www-authenticate'), ['Digest realm="example.com", nonce="abc,def", algorithm=MD5'])
    assert.deepEqual(m.headers.getAll('date'), ['Sat, 13 Nov 2010 23:29:00 GMT'])
  })

  test('a long message: many Via lines and a long header value (RFC 4475 3.1.1.11 style)', () => {
    const vias = Array.from({ length: 50 }, (_, i) => `Via: SIP/2.0/TCP host${i}.example.com;branch=z9hG4bK${i}`)
    const long = 'x'.repeat(20_000)
    const m = req(parseMessage(msg('INVITE sip:bob@example.com SIP/2.0', ...vias, ...BASE.slice(1), 'CSeq: 1 INVITE',
      `X-Long: ${long}`, '', '')))
    assert.equal(m.headers.getAll('via').length, 50)
    assert.equal(m.headers.get('x-long'), long)
  })

  test('a binary multipart body is kept byte for byte', () => {
    const bodyBytes = new Uint8Array(256).map((_, i) => i)
    const head = enc(['MESSAGE sip:bob@example.com SIP/2.0', ...BASE, 'CSeq: 1 MESSAGE',
      'Content-Type: multipart/mixed;boundary=7a9cbec02ceef655', `Content-Length: ${bodyBytes.length}`, '', ''].join('\r\n'))
    const m = req(parseMessage(Buffer.concat([head, bodyBytes])))
    assert.deepEqual(Buffer.from(m.body), Buffer.from(bodyBytes))
    const again = req(parseMessage(serializeMessage(m)))
    assert.deepEqual(Buffer.from(again.body), Buffer.from(bodyBytes))
  })

  test('Content-Length shorter than the datagram truncates the body (RFC 3261 18.3)', () => {
    const m = req(parseMessage(msg('MESSAGE sip:bob@example.com SIP/2.0', ...BASE, 'CSeq: 1 MESSAGE', 'Content-Length: 3', '', 'abcdef')))
    assert.equal(dec(m.body), 'abc')
  })

  test('without Content-Length the body runs to the end of the datagram', () => {
    const m = req(parseMessage(msg('MESSAGE sip:bob@example.com SIP/2.0', ...BASE, 'CSeq: 1 MESSAGE', '', 'abcdef')))
    assert.equal(dec(m.body), 'abcdef')
  })

  test('non-Uint8Array-Buffer input: a plain Uint8Array view at an offset', () => {
    const full = msg('xxxxOPTIONS sip:example.com SIP/2.0', ...BASE, 'CSeq: 1 OPTIONS', 'Content-Length: 2', '', 'ok')
    const view = new Uint8Array(full.buffer, full.byteOffset + 4, full.byteLength - 4)
    const m = req(parseMessage(view))
    assert.equal(m.method, 'OPTIONS')
    assert.equal(dec(m.body), 'ok')
    assert.equal(Object.getPrototypeOf(m.body), Uint8Array.prototype)
  })
})

describe('parseMessage: malformed messages (RFC 4475 3.1.2 style)', () => {
  const answerable = (err: SipParseError, status: number, reason?: RegExp): void => {
    assert.equal(err.status, status, err.message)
    if (reason !== undefined) assert.match(err.reason, reason)
    assert.equal(err.answerable, true)
    assert.ok(err.request instanceof SipRequest)
  }

  test('Content-Length larger than the body: 400, answerable', () => {
    const err = parseError(msg('MESSAGE sip:bob@example.com SIP/2.0', ...BASE, 'CSeq: 1 MESSAGE', 'Content-Length: 9999', '', 'short'))
    answerable(err, 400, /Content-Length/)
    assert.equal(err.request?.headers.get('call-id'), '3848276298220188511@atlanta.example.com')
  })

  test('negative, non-numeric and duplicate Content-Length: 400', () => {
    for (const cl of [['Content-Length: -999'], ['Content-Length: 1x'], ['Content-Length: 0', 'l: 5']]) {
      answerable(parseError(msg('OPTIONS sip:example.com SIP/2.0', ...BASE, 'CSeq: 1 OPTIONS', ...cl, '', '')), 400, /Content-Length/)
    }
  })

  test('scalar fields overflow: CSeq above 2^32, huge Max-Forwards', () => {
    const e1 = parseError(msg('REGISTER sip:example.com SIP/2.0', ...BASE, 'CSeq: 36893488147419103232 REGISTER', '', ''))
    assert.equal(e1.status, 400)
    assert.equal(e1.answerable, false, 'an unreadable CSeq cannot be echoed')
    answerable(parseError(msg('REGISTER sip:example.com SIP/2.0', BASE[0], 'Max-Forwards: 300', ...BASE.slice(2), 'CSeq: 1 REGISTER', '', '')), 400, /Max-Forwards/)
  })

  test('a SIP version we do not speak: 505, answerable', () => {
    answerable(parseError(msg('INVITE sip:t.watson@example.org SIP/7.0', ...BASE, 'CSeq: 1 INVITE', '', '')), 505)
  })

  test('an unknown Request-URI scheme: 416, answerable', () => {
    answerable(parseError(msg('OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0', ...BASE, 'CSeq: 1 OPTIONS', '', '')), 416)
  })

  test('CSeq method differing from the request method: 400', () => {
    answerable(parseError(msg('INVITE sip:bob@example.com SIP/2.0', ...BASE, 'CSeq: 1 ACK', '', '')), 400, /CSeq/)
    answerable(parseError(msg('NEWMETHOD sip:bob@example.com SIP/2.0', ...BASE, 'CSeq: 1 INVITE', '', '')), 400, /CSeq/)
  })

  test('multiple values in single-value headers: 400', () => {
    for (const extra of ['To: <sip:carol@example.com>', 'From: <sip:x@example.com>;tag=2', 'Call-ID: other@host', 'CSeq: 2 OPTIONS']) {
      const err = parseError(msg('OPTIONS sip:example.com SIP/2.0', ...BASE, 'CSeq: 1 OPTIONS', extra, '', ''))
      assert.equal(err.status, 400)
      assert.match(err.reason, /Duplicate/)
    }
  })

  test('missing mandatory headers: 400, not answerable without Call-ID, CSeq or Via', () => {
    for (const drop of ['Via', 'From', 'To', 'Call-ID']) {
      const lines = BASE.filter(l => !l.startsWith(drop + ':'))
      const err = parseError(msg('OPTIONS sip:example.com SIP/2.0', ...lines, 'CSeq: 1 OPTIONS', '', ''))
      assert.equal(err.status, 400)
      assert.match(err.reason, new RegExp(`Missing ${drop}`))
      assert.equal(err.answerable, false)
      assert.equal(err.request, undefined)
    }
    assert.equal(parseError(msg('OPTIONS sip:example.com SIP/2.0', ...BASE, '', '')).answerable, false)
  })

  test('a malformed Via cannot be answered', () => {
    const err = parseError(msg('OPTIONS sip:example.com SIP/2.0', 'Via: SIP/2.0/UDP', ...BASE.slice(1), 'CSeq: 1 OPTIONS', '', ''))
    assert.equal(err.status, 400)
    assert.equal(err.answerable, false)
  })

  test('Request-URI in angle brackets, LWS in the Request-URI, leading and trailing whitespace: 400', () => {
    for (const start of ['INVITE <sip:user@example.com> SIP/2.0', 'INVITE sip:user@example.com; lr SIP/2.0',
      ' INVITE sip:user@example.com SIP/2.0', 'INVITE sip:user@example.com SIP/2.0 ', 'INVITE  sip:user@example.com SIP/2.0',
      'INVITE sip:user@example.com', 'INVITE']) {
      const err = parseError(msg(start, ...BASE, 'CSeq: 1 INVITE', '', ''))
      assert.equal(err.status, 400, start)
    }
  })

  test('a header line without colon or with a bad name: 400 but still answerable', () => {
    answerable(parseError(msg('OPTIONS sip:example.com SIP/2.0', ...BASE, 'CSeq: 1 OPTIONS', 'this line has no colon', '', '')), 400, /header/)
    answerable(parseError(msg('OPTIONS sip:example.com SIP/2.0', ...BASE, 'CSeq: 1 OPTIONS', 'Bad Name: x', '', '')), 400, /header/)
    answerable(parseError(msg('OPTIONS sip:example.com SIP/2.0', ...BASE, 'CSeq: 1 OPTIONS', ': x', '', '')), 400, /header/)
  })

  test('an ACK is never answerable', () => {
    const err = parseError(msg('ACK sip:bob@example.com SIP/2.0', ...BASE, 'CSeq: 1 ACK', 'Content-Length: 50', '', ''))
    assert.equal(err.status, 400)
    assert.equal(err.answerable, false)
  })

  test('malformed responses are never answerable', () => {
    for (const start of ['SIP/2.0 4294967301 better not break the receiver', 'SIP/2.0 99 Low', 'SIP/2.0 2000 OK', 'SIP/2.0', 'SIP/3.0 200 OK']) {
      const err = parseError(msg(start, ...BASE, 'CSeq: 1 OPTIONS', '', ''))
      assert.equal(err.answerable, false, start)
    }
    assert.equal(parseError(msg('SIP/2.0 200 OK', ...BASE, '', '')).answerable, false)
  })

  test('too large: 513, answerable', () => {
    const err = parseError(msg('MESSAGE sip:bob@example.com SIP/2.0', ...BASE, 'CSeq: 1 MESSAGE', 'Content-Length: 2000', '', 'x'.repeat(2000)), { maxSize: 1000 })
    answerable(err, 513)
  })

  test('empty, CRLF-only and garbage input: 400, not answerable', () => {
    for (const data of ['', '\r\n\r\n', '\0\0\0', 'garbage', 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', '\xff\xfe\r\n\r\n']) {
      const err = parseError(enc(data))
      assert.equal(err.status, 400)
      assert.equal(err.answerable, false)
    }
  })
})

describe('serializeMessage', () => {
  test('writes start line, headers in order and Content-Length from the body', () => {
    const m = new SipRequest('MESSAGE', 'sip:bob@example.com')
    m.headers.append('Via', 'SIP/2.0/UDP h;branch=z9hG4bK1').append('content-length', '999').append('X-A', 'b')
    m.body = enc('héllo')
    assert.equal(dec(serializeMessage(m)),
      'MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 6\r\nX-A: b\r\n\r\nhéllo')
    const r = new SipResponse(180, 'Ringing')
    assert.equal(dec(serializeMessage(r)), 'SIP/2.0 180 Ringing\r\nContent-Length: 0\r\n\r\n')
  })

  test('header values cannot inject lines', () => {
    const r = new SipResponse(200, 'OK')
    r.headers.set('Subject', 'a\r\nVia: evil\r\n\r\nbody')
    const text = dec(serializeMessage(r))
    assert.equal(text.split('\r\n').filter(l => l.startsWith('Via')).length, 0)
    assert.throws(() => r.headers.set('Bad\r\nName', 'x'), TypeError)
  })
})

describe('hostile input stays linear', () => {
  test('pathological 64 KiB messages parse or fail quickly', () => {
    const N = 65_000
    const head = ['OPTIONS sip:a@b SIP/2.0', ...BASE, 'CSeq: 1 OPTIONS', ''].join('\r\n')
    const cases = {
      manyHeaders: head + 'a:b\r\n'.repeat(N / 5) + '\r\n',
      folding: head + 'X: a\r\n' + ' b\r\n'.repeat(N / 4) + '\r\n',
      manyViaParams: 'OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h' + ';p'.repeat(N / 2) + '\r\n\r\n',
      manyVias: head + 'Via: ' + 'SIP/2.0/UDP h,'.repeat(N / 14) + '\r\n\r\n',
      quotes: head + 'Contact: ' + '"\\'.repeat(N / 2) + '\r\n\r\n',
      spaces: head + 'Content-Length:' + ' '.repeat(N) + 'x\r\n\r\n',
      noColon: head + 'abc\r\n'.repeat(N / 5) + '\r\n',
      lineEnds: head + '\n\r'.repeat(N / 2)
    }
    for (const [name, text] of Object.entries(cases)) {
      const started = performance.now()
      try {
        const m = parseMessage(enc(text), { maxSize: 1 << 20 })
        for (const h of ['via', 'contact', 'x']) m.headers.getAll(h)
      } catch (err) {
        assert.ok(err instanceof SipParseError, name)
      }
      const elapsed = performance.now() - started
      // measured ~1-10 ms; a quadratic path would take seconds
      assert.ok(elapsed < 500, `${name} took ${elapsed.toFixed(0)} ms`)
    }
  })
})

describe('serializeMessage writes what the string form would', () => {
  // the head as one string, as the serializer wrote it before it wrote into a scratch buffer
  function asString (m: SipMessage): string {
    let s = m instanceof SipRequest ? `${m.method} ${m.uri} ${m.version}\r\n` : `${m.version} ${m.status} ${m.reason}\r\n`
    let cl = false
    for (const [name, value] of m.headers) {
      if (name.toLowerCase() === 'content-length') { if (!cl) s += `${name}: ${m.body.length}\r\n`; cl = true; continue }
      s += `${name}: ${value}\r\n`
    }
    if (!cl) s += `Content-Length: ${m.body.length}\r\n`
    return s + '\r\n' + Buffer.from(m.body).toString('utf8')
  }

  test('multi-byte and lone-surrogate values, heads far larger than the scratch, a rewritten Content-Length', () => {
    const cases: SipMessage[] = []
    const a = new SipRequest('MESSAGE', 'sip:bob@example.com', undefined, Buffer.from('héllo ✓'))
    a.headers.append('Via', 'SIP/2.0/UDP h;branch=z9hG4bKx')
    a.headers.append('Subject', '日本語 ✓ \ud800 😀'.repeat(2000)) // ~3 bytes per unit, 24,000 units
    a.headers.append('Content-Length', '0')
    a.headers.append('Content-Length', '99')
    cases.push(a)
    const b = new SipResponse(200, 'Ök'.repeat(10_000))
    b.headers.append('X-Big', 'x'.repeat(200_000))
    cases.push(b)
    const c = new SipRequest('OPTIONS', 'sip:a@b')
    cases.push(c)
    for (let i = 0; i < 3; i++) {
      for (const m of cases) assert.ok(Buffer.from(serializeMessage(m)).equals(Buffer.from(asString(m), 'utf8')))
    }
    // a small message after a large one: exactly its own bytes
    assert.equal(dec(serializeMessage(c)), 'OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n')
  })
})

describe('header lines read in place', () => {
  const base = ['MESSAGE sip:bob@example.com SIP/2.0', 'Via: SIP/2.0/UDP h;branch=z9hG4bKx', 'From: <sip:a@example.com>;tag=1',
    'To: <sip:bob@example.com>', 'Call-ID: c', 'CSeq: 1 MESSAGE']

  test('values trimmed as String.prototype.trim does: ASCII and other white space, tabs, a bare LF', () => {
    const m = req(parseMessage(Buffer.from([...base, 'Subject: \t\u00a0 hé\u3000 \u00a0', 'X-A:\tv\t', 'X-B:', 'X-C :  spaced out  ', 'X-D: \ufeffz\u2028', 'Content-Length: 0', '', ''].join('\r\n').replace('\r\nX-A', '\nX-A'), 'utf8')))
    assert.equal(m.headers.get('Subject'), 'hé')
    assert.equal(m.headers.get('X-A'), 'v')
    assert.equal(m.headers.get('X-B'), '')
    assert.equal(m.headers.get('X-C'), 'spaced out')
    assert.equal(m.headers.get('X-D'), 'z')
  })

  test('a line without a colon is malformed even when the next line has one; a name of spaces is not a name', () => {
    for (const bad of ['X-NoColon', 'X-NoColon\r\nY: 1', ' : v']) {
      const lines = bad === ' : v' ? [...base, 'Content-Length: 0', bad] : [...base, bad, 'Content-Length: 0']
      const err = parseError(msg(...lines, '', ''))
      assert.equal(err.status, 400, bad)
    }
    assert.equal(parseError(msg(...base.slice(0, 1), ': v', ...base.slice(1), '', '')).reason, 'Malformed header line')
    assert.equal(parseError(msg(...base.slice(0, 1), 'Bad Name: v', ...base.slice(1), '', '')).reason, 'Malformed header name')
  })
})
