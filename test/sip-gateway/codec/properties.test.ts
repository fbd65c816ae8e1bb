// Property-based tests of the codec: generated messages round-trip, and no input (random bytes,
// mutated valid messages, random header values) makes anything but SipParseError escape.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import fc from 'fast-check'
import {
  parseMessage, serializeMessage, SipRequest, SipResponse, Headers, SipParseError, parseVia, parseNameAddr, parseUri,
  parseCSeq, splitList, aorOf, formatVia, formatUri, type SipMessage
} from '../../../sip-gateway/codec/index.ts'

const RUNS = 300

const tokenChar = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`\'~'.split(''))
const token = fc.string({ unit: tokenChar, minLength: 1, maxLength: 12 })
const alnum = fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789'.split('')), minLength: 1, maxLength: 10 })
const hostname = fc.array(alnum, { minLength: 1, maxLength: 3 }).map(parts => parts.join('.'))
const port = fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined })
const sipUri = fc.record({ user: alnum, host: hostname, port }).map(u => `sip:${u.user}@${u.host}${u.port === undefined ? '' : ':' + u.port}`)
// a header value: printable text (unicode included) without CR/LF, no surrounding whitespace
const valueChar = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...'abcXYZ019 <>;:=,"@./-_\t'.split('')) },
  { weight: 1, arbitrary: fc.constantFrom('é', 'ß', '你', '😀', 'Я') }
)
const headerValue = fc.string({ unit: valueChar, maxLength: 40 }).map(s => s.trim())
const extraName = fc.oneof(
  fc.constantFrom('Subject', 'User-Agent', 'Contact', 'Route', 'Record-Route', 'Allow', 'Supported', 'Expires', 'Event', 'Date', 'Warning'),
  token.map(t => 'X-' + t)
)
const body = fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ maxLength: 300 }))

const common = fc.record({
  viaHost: hostname,
  viaPort: port,
  transport: fc.constantFrom('UDP', 'TCP', 'WS', 'TLS'),
  branch: token,
  fromUri: sipUri,
  fromTag: token,
  toUri: sipUri,
  callId: fc.tuple(token, hostname).map(([a, b]) => `${a}@${b}`),
  seq: fc.integer({ min: 0, max: 0xffffffff }),
  extra: fc.array(fc.tuple(extraName, headerValue), { maxLength: 8 }),
  body
})

type Common = typeof common extends fc.Arbitrary<infer T> ? T : never

function headersOf (c: Common, method: string): Headers {
  const h = new Headers()
  h.append('Via', `SIP/2.0/${c.transport} ${c.viaHost}${c.viaPort === undefined ? '' : ':' + c.viaPort};branch=z9hG4bK${c.branch}`)
  h.append('From', `<${c.fromUri}>;tag=${c.fromTag}`)
  h.append('To', `<${c.toUri}>`)
  h.append('Call-ID', c.callId)
  h.append('CSeq', `${c.seq} ${method}`)
  for (const [name, value] of c.extra) h.append(name, value)
  return h
}

const requestArb = fc.tuple(fc.oneof(fc.constantFrom('REGISTER', 'MESSAGE', 'NOTIFY', 'SUBSCRIBE', 'INVITE', 'OPTIONS'), token), sipUri, common)
  .map(([method, uri, c]) => new SipRequest(method, uri, headersOf(c, method), c.body))
const responseArb = fc.tuple(fc.integer({ min: 100, max: 699 }), headerValue, fc.constantFrom('INVITE', 'MESSAGE'), common)
  .map(([status, reason, method, c]) => new SipResponse(status, reason, headersOf(c, method), c.body))
const messageArb: fc.Arbitrary<SipMessage> = fc.oneof(requestArb, responseArb)

function view (m: SipMessage): unknown {
  const start = m instanceof SipRequest ? [m.method, m.uri, m.version] : [m.status, m.reason, m.version]
  return {
    start,
    headers: [...m.headers.entries()].filter(([n]) => n !== 'Content-Length'),
    body: Buffer.from(m.body).toString('hex')
  }
}

function onlyParseErrors (fn: () => unknown): void {
  try {
    fn()
  } catch (err) {
    if (!(err instanceof SipParseError)) throw err
    assert.ok(err.status >= 400 && err.status < 600)
    assert.equal(typeof err.reason, 'string')
    assert.equal(err.answerable, err.request !== undefined)
  }
}

describe('codec properties', () => {
  test('round trip: parse(serialize(m)) equals m for generated requests and responses', () => {
    fc.assert(fc.property(messageArb, m => {
      const parsed = parseMessage(serializeMessage(m))
      assert.deepEqual(view(parsed), view(m))
      // and once more: serialize(parse(x)) parses back equal
      assert.deepEqual(view(parseMessage(serializeMessage(parsed))), view(parsed))
    }), { numRuns: RUNS })
  })

  test('arbitrary bytes never throw anything but SipParseError', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), bytes => {
      onlyParseErrors(() => parseMessage(bytes))
    }), { numRuns: RUNS * 3 })
  })

  test('arbitrary SIP-looking text never throws anything but SipParseError', () => {
    const piece = fc.constantFrom('INVITE ', 'SIP/2.0', ' ', '\r\n', '\n', ':', ';', ',', 'Via', 'v', 'CSeq', 'Content-Length', 'l',
      '0', '1', '99999999999', 'sip:', '@', '<', '>', '"', '\\', '\t', 'branch=', 'z9hG4bK', '\r\n\r\n', '[', ']', 'é', '\0')
    fc.assert(fc.property(fc.array(piece, { maxLength: 80 }), pieces => {
      onlyParseErrors(() => parseMessage(Buffer.from(pieces.join(''))))
    }), { numRuns: RUNS * 3 })
  })

  test('mutated valid messages never throw anything but SipParseError', () => {
    const mutation = fc.tuple(fc.nat(), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 255 }), fc.nat({ max: 20 }))
    fc.assert(fc.property(messageArb, fc.array(mutation, { minLength: 1, maxLength: 6 }), (m, mutations) => {
      let bytes = Buffer.from(serializeMessage(m))
      for (const [at, kind, byte, count] of mutations) {
        const i = bytes.length === 0 ? 0 : at % bytes.length
        if (kind === 0) bytes[i] = byte // replace
        else if (kind === 1) bytes = Buffer.concat([bytes.subarray(0, i), bytes.subarray(i + count)]) // delete
        else if (kind === 2) bytes = Buffer.concat([bytes.subarray(0, i), Buffer.alloc(count, byte), bytes.subarray(i)]) // insert
        else bytes = bytes.subarray(0, i) // truncate
      }
      onlyParseErrors(() => {
        const parsed = parseMessage(bytes)
        // whatever parses also serializes and parses again
        parseMessage(serializeMessage(parsed))
      })
    }), { numRuns: RUNS * 2 })
  })

  test('the maxSize limit: 513 above it, never below', () => {
    fc.assert(fc.property(requestArb, fc.integer({ min: 1, max: 2000 }), (m, maxSize) => {
      const bytes = serializeMessage(m)
      try {
        parseMessage(bytes, { maxSize })
        assert.ok(bytes.length <= maxSize)
      } catch (err) {
        assert.ok(err instanceof SipParseError)
        assert.equal(err.status, 513)
        assert.ok(bytes.length > maxSize)
        assert.equal(err.answerable, m.method !== 'ACK')
      }
    }), { numRuns: RUNS })
  })

  test('the helpers throw only SipParseError on any string', () => {
    const text = fc.string({ unit: fc.oneof(valueChar, fc.constantFrom('[', ']', '?', '&', '%', '\\', '\r', '\n', '/')), maxLength: 60 })
    fc.assert(fc.property(text, s => {
      onlyParseErrors(() => parseVia(s))
      onlyParseErrors(() => parseNameAddr(s))
      onlyParseErrors(() => parseUri(s))
      onlyParseErrors(() => parseCSeq(s))
      onlyParseErrors(() => aorOf(s))
      onlyParseErrors(() => parseVia('SIP/2.0/UDP ' + s))
      onlyParseErrors(() => parseUri('sip:' + s))
    }), { numRuns: RUNS * 3 })
  })

  test('list values split back into their elements', () => {
    const element = fc.oneof(
      token,
      fc.tuple(token, sipUri).map(([d, u]) => `"${d}, x" <${u};a=b,c>;q=1`),
      sipUri.map(u => `<${u}>`)
    )
    fc.assert(fc.property(fc.array(element, { minLength: 1, maxLength: 6 }), elements => {
      assert.deepEqual(splitList(elements.join(' , ')), elements)
      const h = new Headers([['Route', elements.join(',')]])
      assert.deepEqual(h.getAll('route'), elements)
      assert.equal(h.get('route'), elements[0])
    }), { numRuns: RUNS })
  })

  test('Via and URI format/parse round trip', () => {
    fc.assert(fc.property(hostname, port, token, fc.option(fc.integer({ min: 1, max: 65535 }), { nil: null }), (host, p, branch, rport) => {
      const via = { protocol: 'SIP/2.0', transport: 'TCP', host, port: p, params: {}, branch: 'z9hG4bK' + branch, rport }
      const parsed = parseVia(formatVia(via))
      assert.equal(parsed.host, host)
      assert.equal(parsed.port, p)
      assert.equal(parsed.branch, via.branch)
      assert.equal(parsed.rport, rport)
    }), { numRuns: RUNS })
    fc.assert(fc.property(sipUri, s => {
      assert.equal(formatUri(parseUri(s)), s)
    }), { numRuns: RUNS })
  })
})
