// A response forwarded as the bytes it came in, less its top Via line (RFC 3261 16.7 step 3, wire.ts):
// the parser keeps the bytes only of a response written plainly (CRLF lines, none folded, one byte
// a character, Content-Length to the last byte, one element on the top Via line); everything else,
// hostile or odd input included, and every response changed after its bytes were kept, is
// serialized from its headers as before.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { parseMessage, serializeMessage, isResponse, cutTopVia, SipRequest, type SipResponse } from '../../../sip-gateway/codec/index.ts'
import { receivedBytes } from '../../../sip-gateway/codec/wire.ts'

const OURS = 'Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKours.1;rport'
const THEIRS = 'Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKtheirs;received=192.0.2.9'
const REST = ['From: <sip:a@example.com>;tag=1', 'To: <sip:b@example.com>;tag=2', 'Call-ID: wire-1', 'CSeq: 1 MESSAGE']

function lines (ls: string[], body = ''): Buffer {
  return Buffer.from([...ls, `Content-Length: ${Buffer.byteLength(body)}`, '', body].join('\r\n'))
}
function res (data: Uint8Array): SipResponse {
  const m = parseMessage(data)
  assert.ok(isResponse(m))
  return m
}
/** what the proxy does: the top Via cut off the response as received; the bytes then written for it when they are its own */
function forward (data: Uint8Array): { copy: SipResponse, bytes: Uint8Array | undefined } {
  const copy = res(data)
  cutTopVia(copy)
  const bytes = receivedBytes(copy)
  if (bytes !== undefined) assert.deepEqual(serializeMessage(copy), bytes)
  return { copy, bytes }
}
const text = (b: Uint8Array): string => Buffer.from(b).toString('latin1')

describe('cutTopVia: a response forwarded as its bytes', () => {
  test('a plain response: its bytes less the top Via line, nothing else changed', () => {
    const data = lines(['SIP/2.0 200 OK', OURS, THEIRS, ...REST, 'X-Odd:   spaced  value ', 'Record-Route: <sip:p1;lr>,<sip:p2;lr>'], 'hello')
    const { copy, bytes } = forward(data)
    assert.ok(bytes !== undefined)
    assert.equal(text(bytes), text(data).replace(OURS + '\r\n', ''))
    // and what it says is what the copy's headers say
    const again = res(bytes)
    assert.equal(again.headers.get('Via'), copy.headers.get('Via'))
    assert.deepEqual([...again.headers], [...copy.headers])
    assert.equal(Buffer.from(again.body).toString(), 'hello')
  })

  test('the top Via anywhere among the lines, in compact form, or the last line before the blank one', () => {
    const mid = lines(['SIP/2.0 180 Ringing', REST[0], 'v: SIP/2.0/TCP 198.51.100.7;branch=z9hG4bKx', THEIRS, ...REST.slice(1)])
    assert.equal(text(forward(mid).bytes!), text(mid).replace('v: SIP/2.0/TCP 198.51.100.7;branch=z9hG4bKx\r\n', ''))
    const last = Buffer.from(['SIP/2.0 200 OK', ...REST, 'Content-Length: 0', THEIRS.replace('Via:', 'Via :'), '', ''].join('\r\n'))
    const cut = forward(last).bytes!
    assert.equal(text(cut), ['SIP/2.0 200 OK', ...REST, 'Content-Length: 0', '', ''].join('\r\n'))
    assert.throws(() => parseMessage(cut), /Missing Via/)
  })

  test('bytes that are not UTF-8 keep their places (one character each) and go on as they came', () => {
    const data = Buffer.concat([Buffer.from('SIP/2.0 200 OK\r\nX-Bin: \xff\xfe\x80\r\n', 'latin1'), lines([OURS, THEIRS, ...REST])])
    const bytes = forward(data).bytes
    assert.ok(bytes !== undefined)
    assert.equal(text(bytes), text(data).replace(OURS + '\r\n', ''))
    // in the reason phrase, which the response holds as U+FFFD: written from the headers
    const inReason = Buffer.concat([Buffer.from('SIP/2.0 200 Fine\xff\r\n', 'latin1'), lines([OURS, THEIRS, ...REST])])
    const { copy, bytes: none } = forward(inReason)
    assert.equal(none, undefined)
    assert.equal(res(serializeMessage(copy)).headers.get('Via'), THEIRS.slice(5))
  })

  test('not kept: several Vias on the top line, folding, bare LF, UTF-8, leading CRLF, Content-Length not the body', () => {
    const refused: Array<[string, Buffer]> = [
      ['two Vias on one line', lines(['SIP/2.0 200 OK', `${OURS}, SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKb`, ...REST])],
      ['a quoted comma on the top Via line', lines(['SIP/2.0 200 OK', `${OURS};x="a,b"`, THEIRS, ...REST])],
      ['a folded line', lines(['SIP/2.0 200 OK', OURS, THEIRS, REST[0], ' ;more=1', ...REST.slice(1)])],
      ['a folded top Via', lines(['SIP/2.0 200 OK', 'Via: SIP/2.0/UDP 198.51.100.7', '\t;branch=z9hG4bKf', THEIRS, ...REST])],
      ['a bare LF line end', Buffer.from(['SIP/2.0 200 OK', OURS, THEIRS, ...REST].join('\r\n').replace('Call-ID: wire-1\r\n', 'Call-ID: wire-1\n') + '\r\nContent-Length: 0\r\n\r\n')],
      ['a bare LF start line', Buffer.from(['SIP/2.0 200 OK\n' + OURS, THEIRS, ...REST, 'Content-Length: 0', '', ''].join('\r\n'))],
      ['a bare LF blank line', Buffer.from([OURS, THEIRS, ...REST, 'Content-Length: 0'].reduce((a, l) => a + l + '\r\n', 'SIP/2.0 200 OK\r\n').slice(0, -2) + '\n\n')],
      ['UTF-8 in a header', lines(['SIP/2.0 200 OK', OURS, THEIRS, ...REST, 'Subject: Grüße'])],
      ['leading CRLF', Buffer.concat([Buffer.from('\r\n\r\n'), lines(['SIP/2.0 200 OK', OURS, THEIRS, ...REST])])],
      ['no Content-Length', Buffer.from(['SIP/2.0 200 OK', OURS, THEIRS, ...REST, '', 'body'].join('\r\n'))],
      ['bytes after the body', Buffer.concat([lines(['SIP/2.0 200 OK', OURS, THEIRS, ...REST], 'ab'), Buffer.from('junk')])],
      ['the top Via line ending beyond 32 KB', lines(['SIP/2.0 200 OK', `X-Pad: ${'p'.repeat(33_000)}`, OURS, THEIRS, ...REST])],
      ['no blank line', Buffer.from(['SIP/2.0 200 OK', OURS, THEIRS, ...REST, 'Content-Length: 0'].join('\r\n'))]
    ]
    for (const [why, data] of refused) {
      const { copy, bytes } = forward(data)
      assert.equal(bytes, undefined, why)
      // serialized from its headers, as before
      const out = res(serializeMessage(copy))
      assert.deepEqual([...out.headers].filter(([n]) => n !== 'Content-Length'), [...copy.headers].filter(([n]) => n !== 'Content-Length'), why)
    }
  })

  test('a request keeps no bytes; a response changed before the cut is serialized', () => {
    const req = parseMessage(lines(['MESSAGE sip:b@example.com SIP/2.0', OURS, THEIRS, ...REST]))
    assert.ok(req instanceof SipRequest)
    const r = res(lines(['SIP/2.0 200 OK', OURS, THEIRS, ...REST]))
    r.headers.set('X-Added', '1')
    cutTopVia(r)
    const out = res(serializeMessage(r))
    assert.equal(out.headers.get('X-Added'), '1')
    assert.equal(out.headers.get('Via'), THEIRS.slice(5))
    // lower-case version, a status line without reason: kept or not, what is sent says the same
    const lower = res(lines(['sip/2.0 200 OK', OURS, THEIRS, ...REST]))
    assert.equal(lower._received, undefined)
    const bare = lines(['SIP/2.0 200', OURS, THEIRS, ...REST])
    assert.equal(text(forward(bare).bytes!), text(bare).replace(OURS + '\r\n', ''))
  })

  test('any change after the cut: serialized from the headers, the change in it', () => {
    const data = lines(['SIP/2.0 200 OK', OURS, THEIRS, OURS, ...REST, 'X-Gone: 1'], 'hi')
    const changes: Array<[string, (c: SipResponse) => void, (out: SipResponse) => void]> = [
      ['a header added', c => { c.headers.append('X-Late', 'yes') }, out => assert.equal(out.headers.get('X-Late'), 'yes')],
      ['a header removed', c => { c.headers.delete('X-Gone') }, out => assert.equal(out.headers.get('X-Gone'), undefined)],
      ['a header set', c => { c.headers.set('Call-ID', 'other') }, out => assert.equal(out.headers.get('Call-ID'), 'other')],
      ['another Via shifted', c => { c.headers.shift('Via') }, out => assert.equal(out.headers.get('Via'), OURS.slice(5))],
      ['another cut', c => { cutTopVia(c) }, out => assert.equal(out.headers.get('Via'), OURS.slice(5))],
      ['a Via prepended', c => { c.headers.prepend('Via', OURS.slice(5)) }, out => assert.equal(out.headers.getAll('Via').length, 3)],
      ['the status', c => { c.status = 480 }, out => assert.equal(out.status, 480)],
      ['the status, same first digit', c => { c.status = 202 }, out => assert.equal(out.status, 202)],
      ['the reason', c => { c.reason = 'Fine' }, out => assert.equal(out.reason, 'Fine')],
      ['the reason, longer', c => { c.reason = 'OKAY' }, out => assert.equal(out.reason, 'OKAY')],
      ['no reason', c => { c.reason = '' }, out => assert.equal(out.reason, '')],
      ['the body', c => { c.body = Buffer.from('other') }, out => assert.equal(Buffer.from(out.body).toString(), 'other')],
      ['the body, same length', c => { c.body = Buffer.from('ho') }, out => assert.equal(Buffer.from(out.body).toString(), 'ho')],
      ['no body', c => { c.body = new Uint8Array(0) }, out => assert.equal(out.body.length, 0)],
      ['new headers', c => { c.headers = c.headers.clone(); c.headers.append('X-New', '1') }, out => assert.equal(out.headers.get('X-New'), '1')]
    ]
    for (const [why, change, check] of changes) {
      const { copy, bytes } = forward(data)
      assert.ok(bytes !== undefined)
      change(copy)
      const out = serializeMessage(copy)
      assert.notEqual(text(out), text(bytes), why)
      check(res(out))
    }
    // and a response without a body given one
    const empty = lines(['SIP/2.0 200 OK', OURS, THEIRS, ...REST])
    const { copy } = forward(empty)
    copy.body = Buffer.from('x')
    assert.equal(Buffer.from(res(serializeMessage(copy)).body).toString(), 'x')
  })
})
