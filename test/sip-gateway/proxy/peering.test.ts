import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { parseMessage, type SipRequest } from '../../../sip-gateway/codec/index.ts'
import { PeerNetworks, headerDomain } from '../../../sip-gateway/proxy/peering.ts'
import { stripInternalHeaders } from '../../../sip-gateway/proxy/core.ts'
import type { Flow } from '../../../sip-gateway/proxy/flow.ts'
import { memoryLogger } from '../transport/fixtures.ts'

function req (from: string, extra: string[] = []): SipRequest {
  return parseMessage(Buffer.from([
    'MESSAGE sip:alice@example.com SIP/2.0',
    'Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKx',
    `From: ${from};tag=1`,
    'To: <sip:alice@example.com>',
    'Call-ID: c@x',
    'CSeq: 1 MESSAGE',
    ...extra,
    'Content-Length: 0',
    '',
    ''
  ].join('\r\n'))) as SipRequest
}

describe('peer networks', () => {
  const peers = new PeerNetworks(memoryLogger(), [
    { domain: 'example.net', addresses: [{ host: '127.0.0.1', port: 1 }, { host: '127.0.0.1', port: 2 }], trusted: true },
    { domain: 'example.org', addresses: [{ host: '127.0.0.1', port: 3 }] }
  ])

  test('a peer\'s From must be in its own domain', () => {
    assert.doesNotThrow(() => { peers.admit(req('<sip:bob@Example.NET>'), 'example.net') })
    for (const from of ['<sip:bob@example.org>', '<sip:bob@sub.example.net>', 'garbage', '<sip:bob@example.net.evil.com>', '"x" <sips:' + 'a'.repeat(5000) + '@x>']) {
      assert.throws(() => { peers.admit(req(from), 'example.net') }, (err: Error & { status?: number }) => err.status === 403, from.slice(0, 40))
    }
    assert.equal(peers.refused, 5)
  })

  test('P-Asserted-Identity: kept from a trusted peer for its own users only, stripped otherwise', () => {
    const own = req('<sip:bob@example.net>', ['P-Asserted-Identity: <sip:bob@example.net>'])
    peers.admit(own, 'example.net')
    assert.equal(own.headers.get('P-Asserted-Identity'), '<sip:bob@example.net>')
    const other = req('<sip:bob@example.net>', ['P-Asserted-Identity: <sip:ceo@example.com>'])
    peers.admit(other, 'example.net')
    assert.equal(other.headers.get('P-Asserted-Identity'), undefined, 'a peer cannot assert one of our users')
    const untrusted = req('<sip:carl@example.org>', ['P-Asserted-Identity: <sip:carl@example.org>'])
    peers.admit(untrusted, 'example.org')
    assert.equal(untrusted.headers.get('P-Asserted-Identity'), undefined)
    const out = req('<sip:alice@example.com>', ['P-Asserted-Identity: <sip:alice@example.com>'])
    peers.outbound(out, 'example.org')
    assert.equal(out.headers.get('P-Asserted-Identity'), undefined, 'not sent to an untrusted peer')
    const outTrusted = req('<sip:alice@example.com>', ['P-Asserted-Identity: <sip:alice@example.com>'])
    peers.outbound(outTrusted, 'example.net')
    assert.equal(outTrusted.headers.get('P-Asserted-Identity'), '<sip:alice@example.com>')
  })

  test('connect fails over along the addresses, then answers 503', async () => {
    const tried: number[] = []
    const flow = { transport: 'TLS', remote: { host: '127.0.0.1', port: 2 }, open: true, reliable: true, peerDomain: 'example.net', send () {} } as unknown as Flow
    const got = await peers.connect('example.net', {
      connect: async (t) => {
        tried.push(t.port)
        assert.equal(t.domain, 'example.net')
        if (t.port === 1) throw new Error('refused')
        return flow
      }
    })
    assert.equal(got, flow)
    assert.deepEqual(tried, [1, 2])
    assert.equal(peers.failovers, 1)
    await assert.rejects(peers.connect('example.org', { connect: async () => { throw new Error('down') } }), (err: Error & { status?: number }) => err.status === 503)
    await assert.rejects(peers.connect('example.biz', { connect: async () => flow }), (err: Error & { status?: number }) => err.status === 403)
  })

  test('headerDomain reads the host of a name-addr, nothing from garbage', () => {
    assert.equal(headerDomain('"Bob" <sip:bob@Example.net:5060;transport=tls>;tag=x'), 'example.net')
    assert.equal(headerDomain(undefined), undefined)
    assert.equal(headerDomain('<>'), undefined)
  })
})

describe('internal headers from a peer network', () => {
  test('every Sipmesh-* header is removed, whatever its spelling; others stay', () => {
    const r = req('<sip:eve@example.net>', ['Sipmesh-Message-Id: m1', 'SIPMESH-NOT-OWNER: x', 'sipmesh-rules-version: 9', 'Sipmesh-Watchers: a', 'Sipmesh-Path: n1', 'X-Other: y', 'Subject: s'])
    assert.equal(stripInternalHeaders(r), 5)
    for (const h of ['Sipmesh-Message-Id', 'Sipmesh-Not-Owner', 'Sipmesh-Rules-Version', 'Sipmesh-Watchers', 'Sipmesh-Path']) assert.equal(r.headers.has(h), false, h)
    assert.equal(r.headers.get('X-Other'), 'y')
    assert.equal(r.headers.get('Subject'), 's')
  })

  test('the back-end headers the presence agent checks itself can be kept', () => {
    const r = req('<sip:eve@example.net>', ['Sipmesh-Watchers: a', 'Sipmesh-Path: n1', 'Sipmesh-Message-Id: m1'])
    assert.equal(stripInternalHeaders(r, new Set(['sipmesh-watchers', 'sipmesh-path'])), 1)
    assert.equal(r.headers.get('Sipmesh-Watchers'), 'a')
    assert.equal(r.headers.has('Sipmesh-Message-Id'), false)
  })
})
