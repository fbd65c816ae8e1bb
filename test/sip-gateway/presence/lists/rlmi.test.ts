// RFC 4662 list NOTIFY bodies: the RLMI document read back by the hardened XML reader, the
// multipart/related parts matched to its cids, and a boundary no part can contain.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { buildListNotify, buildMultipart, buildRlmi, memberToken, RLMI_NS } from '../../../../sip-gateway/presence/lists/rlmi.ts'
import { parseXmlRoot, type XmlElement } from '../../../../sip-gateway/presence/pidf.ts'
import { parseMultipart } from './multipart.ts'

const attr = (el: XmlElement, n: string): string | undefined => el.attrs.find(a => a.name === n)?.value
const kids = (el: XmlElement, n: string): XmlElement[] => el.children.filter((c): c is XmlElement => typeof c !== 'string' && c.name === n)

describe('RLMI and multipart/related', () => {
  test('a full-state NOTIFY body: root part first, one part per member with state, cids match', () => {
    const pidf = (s: string): Uint8Array => Buffer.from(`<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="${s}"/>`)
    const { contentType, body } = buildListNotify('sip:friends@example.com', 0, true, [
      { uri: 'sip:bob@example.com', state: 'active', body: pidf('sip:bob@example.com'), contentType: 'application/pidf+xml' },
      { uri: 'sip:carol@example.com', state: 'pending' },
      { uri: 'sip:dan@example.com', state: 'terminated', reason: 'rejected' }
    ], 'node1.example.com')
    assert.match(contentType, /^multipart\/related;type="application\/rlmi\+xml";start="<[^>]+>";boundary="[^"]+"$/u)
    const start = /start="<([^>]+)>"/u.exec(contentType)?.[1]
    const parts = parseMultipart(contentType, body)
    assert.equal(parts.length, 2)
    assert.equal(parts[0].headers.get('content-id'), `<${start}>`)
    assert.match(parts[0].headers.get('content-type') ?? '', /^application\/rlmi\+xml/u)
    const root = parseXmlRoot(parts[0].body)
    assert.equal(root.ns, RLMI_NS)
    assert.equal(attr(root, 'uri'), 'sip:friends@example.com')
    assert.equal(attr(root, 'version'), '0')
    assert.equal(attr(root, 'fullState'), 'true')
    const res = kids(root, 'resource')
    assert.deepEqual(res.map(r => attr(r, 'uri')), ['sip:bob@example.com', 'sip:carol@example.com', 'sip:dan@example.com'])
    const inst = res.map(r => kids(r, 'instance')[0])
    assert.deepEqual(inst.map(i => attr(i, 'state')), ['active', 'pending', 'terminated'])
    assert.equal(attr(inst[2], 'reason'), 'rejected')
    assert.equal(attr(inst[1], 'cid'), undefined)
    assert.equal(parts[1].headers.get('content-id'), `<${attr(inst[0], 'cid')}>`)
    assert.equal(parts[1].headers.get('content-type'), 'application/pidf+xml')
    assert.match(parts[1].body.toString(), /entity="sip:bob@example.com"/u)
  })

  test('instance ids are stable per member and distinct between members', () => {
    assert.equal(memberToken('sip:a@x'), memberToken('sip:a@x'))
    assert.notEqual(memberToken('sip:a@x'), memberToken('sip:b@x'))
    assert.match(memberToken('sip:"<&>@x'), /^[A-Za-z0-9_-]+$/u)
  })

  test('hostile member URIs are escaped in the RLMI document', () => {
    const xml = buildRlmi({ uri: 'sip:l@x', version: 3, fullState: false, resources: [{ uri: 'sip:a"/><evil x="@x', instances: [{ id: 'i', state: 'active' }] }] })
    const root = parseXmlRoot(xml)
    assert.equal(attr(kids(root, 'resource')[0], 'uri'), 'sip:a"/><evil x="@x')
    assert.equal(kids(root, 'evil').length, 0)
  })

  test('a part containing the boundary makes the builder choose another one', () => {
    const { boundary, body } = buildMultipart([{ contentType: 'text/plain', contentId: 'a@x', body: Buffer.from('x\r\n--fixed\r\ny') }], 'fixed')
    assert.notEqual(boundary, 'fixed')
    const parts = parseMultipart(`multipart/related;boundary="${boundary}"`, body)
    assert.equal(parts.length, 1)
    assert.equal(parts[0].body.toString(), 'x\r\n--fixed\r\ny')
  })

  test('binary and empty parts survive', () => {
    const bin = Buffer.from([0, 255, 13, 10, 45, 45, 1])
    const { boundary, body } = buildMultipart([{ contentType: 'a/b', contentId: 'a@x', body: bin }, { contentType: 'a/c', contentId: 'b@x', body: new Uint8Array() }])
    const parts = parseMultipart(`multipart/related;boundary=${boundary}`, body)
    assert.deepEqual(parts.map(p => p.body), [bin, Buffer.alloc(0)])
  })
})
