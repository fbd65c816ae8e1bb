import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import fc from 'fast-check'
import { StreamFramer, type FrameEvent } from '../../../sip-gateway/transport/stream-framer.ts'

const message = (n: number, body = ''): string => [
  `MESSAGE sip:bob@example.com SIP/2.0`, `Via: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK${n}`, 'From: <sip:a@example.com>;tag=1',
  'To: <sip:bob@example.com>', `Call-ID: ${n}@x`, `CSeq: ${n} MESSAGE`, `Content-Length: ${Buffer.byteLength(body)}`, '', body
].join('\r\n')

const texts = (events: FrameEvent[]): string[] =>
  events.map(e => e.kind === 'message' ? Buffer.from(e.data).toString() : e.kind === 'ping' ? 'PING' : `ERROR ${e.status} ${e.reason}`)

describe('StreamFramer', () => {
  test('several messages in one chunk, with pings and stray CRLFs between them', () => {
    const f = new StreamFramer(65_536)
    const events = f.push(Buffer.from(message(1, 'hello') + '\r\n\r\n' + message(2) + '\r\n' + message(3, 'é')))
    assert.deepEqual(texts(events), [message(1, 'hello'), 'PING', message(2), message(3, 'é')])
    assert.equal(f.pending, false)
  })

  test('one message byte by byte', () => {
    const f = new StreamFramer(65_536)
    const bytes = Buffer.from(message(1, 'a body with\r\n\r\nan empty line inside'))
    const events: FrameEvent[] = []
    for (let i = 0; i < bytes.length; i++) {
      events.push(...f.push(bytes.subarray(i, i + 1)))
      if (i < bytes.length - 1) assert.equal(f.pending, true)
    }
    assert.deepEqual(texts(events), [bytes.toString()])
    assert.equal(f.pending, false)
  })

  test('a ping split over two reads; a lone CRLF is not a pending message', () => {
    const f = new StreamFramer(1000)
    assert.deepEqual(f.push(Buffer.from('\r\n')), [])
    assert.equal(f.pending, false)
    assert.deepEqual(texts(f.push(Buffer.from('\r\n'))), ['PING'])
  })

  test('missing or malformed Content-Length: error with the header section', () => {
    const noLength = message(1).replace(/Content-Length: 0\r\n/, '')
    const e1 = new StreamFramer(1000).push(Buffer.from(noLength))
    assert.equal(e1.length, 1)
    assert.ok(e1[0].kind === 'error' && e1[0].status === 400 && e1[0].head !== undefined)
    assert.match(Buffer.from(e1[0].head).toString(), /^MESSAGE sip:bob@example.com SIP\/2.0\r\n/)
    const e2 = new StreamFramer(1000).push(Buffer.from(message(1).replace('Content-Length: 0', 'l: -5')))
    assert.deepEqual(texts(e2), ['ERROR 400 Malformed Content-Length header'])
  })

  test('a folded Content-Length (RFC 3261 7.3.1, RFC 4475 3.1.1.1), full and compact, frames the body', () => {
    for (const [from, to] of [['Content-Length: 5', 'Content-Length:\r\n 5'], ['Content-Length: 5', 'l :\r\n\t 5'], ['Content-Length: 5', 'Content-Length   :  \r\n   \r\n 5']]) {
      const text = message(1, 'hello').replace(from, to)
      const f = new StreamFramer(65_536)
      assert.deepEqual(texts(f.push(Buffer.from(text + message(2)))), [text, message(2)], JSON.stringify(to))
    }
    // a continuation line is part of the header before it, never a Content-Length of its own
    const inValue = message(1, 'hello').replace('Content-Length: 5', 'Subject: x\r\n l: 99\r\nContent-Length: 5')
    assert.deepEqual(texts(new StreamFramer(65_536).push(Buffer.from(inValue))), [inValue])
  })

  test('too large: declared length over the limit (head known), or a header section that never ends', () => {
    const big = new StreamFramer(500).push(Buffer.from(message(1).replace('Content-Length: 0', 'Content-Length: 100000')))
    assert.ok(big[0].kind === 'error' && big[0].status === 513 && big[0].head !== undefined)
    const f = new StreamFramer(500)
    const endless = f.push(Buffer.from('OPTIONS sip:x SIP/2.0\r\n' + 'X-Filler: yyyyyyyy\r\n'.repeat(100)))
    assert.deepEqual(texts(endless), ['ERROR 513 Message Too Large'])
    assert.deepEqual(f.push(Buffer.from(message(2))), [], 'nothing after an error')
  })

  test('property: any split of a pipelined stream yields the same messages', () => {
    fc.assert(fc.property(
      fc.array(fc.string({ maxLength: 50 }), { minLength: 1, maxLength: 5 }),
      fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 30 }),
      (bodies, cuts) => {
        const expected = bodies.map((b, i) => message(i, b))
        const stream = Buffer.from(expected.join(''))
        const f = new StreamFramer(65_536)
        const events: FrameEvent[] = []
        let at = 0
        for (let k = 0; at < stream.length; k++) {
          const n = cuts[k % cuts.length]
          events.push(...f.push(stream.subarray(at, at + n)))
          at += n
        }
        assert.deepEqual(texts(events), expected)
      }), { numRuns: 200 })
  })
})
