import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { XMLParser } from 'fast-xml-parser'
import { buildPidf, DEFAULT_LIMITS, parsePidf, PARSER_OPTIONS, PidfError, PIDF_NS, readCommonXml, readXmlWithLibrary, XML_NS } from '../../../sip-gateway/presence/pidf.ts'
import type { PidfDocument, XmlElement, XmlNode } from '../../../sip-gateway/presence/pidf.ts'

const RPID = 'urn:ietf:params:xml:ns:pidf:rpid'
const DM = 'urn:ietf:params:xml:ns:pidf:data-model'

// RFC 3863 section 5.2 example, extended with RPID (RFC 4480) and a data-model person
const SAMPLE = `<?xml version="1.0" encoding="UTF-8"?>
<impp:presence xmlns:impp="urn:ietf:params:xml:ns:pidf"
    xmlns:local="urn:example-com:pidf-status-type"
    xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    entity="pres:someone@example.com">
  <impp:tuple id="sg89ae">
    <impp:status>
      <impp:basic>open</impp:basic>
      <local:location>home</local:location>
    </impp:status>
    <impp:contact priority="0.8">tel:+09012345678</impp:contact>
    <impp:note xml:lang="en">Don't &amp; &lt;disturb&gt; &#x263A;</impp:note>
    <impp:timestamp>2001-10-27T16:49:29Z</impp:timestamp>
  </impp:tuple>
  <impp:tuple id="x2"><impp:status/></impp:tuple>
  <impp:note>I'll be in Tokyo next week</impp:note>
  <dm:person id="p1">
    <rpid:activities><rpid:on-the-phone/></rpid:activities>
    <dm:note>mixed <![CDATA[<raw> & stuff]]> text</dm:note>
  </dm:person>
</impp:presence>`

const stripHints = (k: string, v: unknown): unknown => k === 'prefix' ? undefined : v
function sameModel (a: PidfDocument, b: PidfDocument): void {
  assert.deepEqual(JSON.parse(JSON.stringify(a, stripHints)), JSON.parse(JSON.stringify(b, stripHints)))
}

function rejects (body: string | Uint8Array, pattern: RegExp, limits?: Parameters<typeof parsePidf>[1]): void {
  assert.throws(() => parsePidf(body, limits), (err: unknown) => {
    assert.ok(err instanceof PidfError, `expected PidfError, got ${String(err)}`)
    assert.equal(err.name, 'PidfError')
    assert.match(err.reason, pattern)
    return true
  })
}

const doc = (inner: string, attrs = 'entity="pres:a@example.com"'): string =>
  `<presence xmlns="${PIDF_NS}" ${attrs}>${inner}</presence>`

describe('parsePidf', () => {
  test('parses an RFC 3863 document with prefixes, keeping RPID and unknown elements', () => {
    const d = parsePidf(SAMPLE)
    assert.equal(d.entity, 'pres:someone@example.com')
    assert.equal(d.tuples.length, 2)
    const [t1, t2] = d.tuples
    assert.equal(t1.id, 'sg89ae')
    assert.equal(t1.status.basic, 'open')
    assert.equal(t1.status.extra.length, 1)
    assert.equal(t1.status.extra[0].ns, 'urn:example-com:pidf-status-type')
    assert.equal(t1.status.extra[0].name, 'location')
    assert.deepEqual(t1.status.extra[0].children, ['home'])
    assert.deepEqual(t1.contact, { uri: 'tel:+09012345678', priority: '0.8' })
    assert.deepEqual(t1.notes, [{ text: "Don't & <disturb> \u263A", lang: 'en' }])
    assert.equal(t1.timestamp, '2001-10-27T16:49:29Z')
    assert.equal(t2.status.basic, undefined)
    assert.deepEqual(d.notes, [{ text: "I'll be in Tokyo next week" }])
    assert.equal(d.extra.length, 1)
    const person = d.extra[0]
    assert.equal(person.ns, DM)
    assert.equal(person.name, 'person')
    assert.deepEqual(person.attrs, [{ ns: '', name: 'id', value: 'p1' }])
    const activities = person.children[0] as XmlElement
    assert.equal(activities.ns, RPID)
    assert.equal((activities.children[0] as XmlElement).name, 'on-the-phone')
    // CDATA content is literal, not entity-decoded
    assert.deepEqual((person.children[1] as XmlElement).children, ['mixed <raw> & stuff text'])
  })

  test('build → parse keeps the model, unknown namespaces included', () => {
    const d = parsePidf(SAMPLE)
    const xml = buildPidf(d)
    assert.match(xml, /^<\?xml version="1.0" encoding="UTF-8"\?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf"/)
    assert.match(xml, /xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"/)
    assert.match(xml, /<rpid:on-the-phone\/>/)
    sameModel(parsePidf(xml), d)
  })

  test('accepts an XML declaration with UTF-8 in any spelling, comments and processing instructions', () => {
    for (const decl of ['<?xml version="1.0" encoding="utf-8"?>', "<?xml version='1.0' encoding='UTF8'?>", '<?xml version="1.0"?>']) {
      assert.equal(parsePidf(`${decl}\n<!-- hi --><?pi x?>${doc('<!-- in -->')}\n<!-- bye -->\n`).entity, 'pres:a@example.com')
    }
  })

  test('accepts bytes, a BOM and a default namespace', () => {
    const body = new TextEncoder().encode('\ufeff' + doc('<tuple id="a"><status><basic>closed</basic></status></tuple>'))
    const d = parsePidf(body)
    assert.equal(d.tuples[0].status.basic, 'closed')
  })

  test('clashing prefixes from the input are renamed on output', () => {
    const d = parsePidf(doc('<a:x xmlns:a="urn:one"><a:y xmlns:a="urn:two"/></a:x>'))
    const xml = buildPidf(d)
    sameModel(parsePidf(xml), d)
    assert.match(xml, /xmlns:a="urn:one"/)
    assert.match(xml, /xmlns:a1="urn:two"/)
  })

  test('elements in no namespace survive under the PIDF default namespace', () => {
    const d = parsePidf(doc('<x xmlns=""><y>t</y></x>'))
    assert.equal(d.extra[0].ns, '')
    assert.equal((d.extra[0].children[0] as XmlElement).ns, '')
    sameModel(parsePidf(buildPidf(d)), d)
  })

  test('PIDF-namespace elements and attributes inside foreign extensions round-trip', () => {
    const d = parsePidf(doc(`<x xmlns=""><y xmlns="${PIDF_NS}" xmlns:p="${PIDF_NS}" p:a="1"/></x>`))
    const y = d.extra[0].children[0] as XmlElement
    assert.equal(y.ns, PIDF_NS)
    assert.deepEqual(y.attrs.map(a => [a.ns, a.name]), [[PIDF_NS, 'a']])
    sameModel(parsePidf(buildPidf(d)), d)
  })

  const bad: Array<[string, string, RegExp]> = [
    ['empty', '', /empty/],
    ['not XML', 'hello', /well-formed|no root|outside the root/],
    ['unclosed', doc('<tuple id="a"><status>'), /well-formed|nested/],
    ['mismatched', '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b"></tuple>', /well-formed/],
    ['two roots', doc('') + doc(''), /well-formed|more than one root/],
    ['wrong root', `<pres xmlns="${PIDF_NS}" entity="pres:a@b"/>`, /root element must be <presence>/],
    ['no namespace', '<presence entity="pres:a@b"/>', /without namespace/],
    ['wrong namespace', '<presence xmlns="urn:other" entity="pres:a@b"/>', /in urn:other/],
    ['no entity', doc('', ''), /no entity/],
    ['empty entity', doc('', 'entity=""'), /no entity/],
    ['entity not a URI', doc('', 'entity="alice"'), /not a URI/],
    ['tuple without id', doc('<tuple><status/></tuple>'), /no id/],
    ['bad tuple id', doc('<tuple id="1a"><status/></tuple>'), /xs:ID/],
    ['duplicate tuple ids', doc('<tuple id="a"><status/></tuple><tuple id="a"><status/></tuple>'), /not unique/],
    ['duplicate tuple ids, first and third', doc('<tuple id="a"><status/></tuple><tuple id="b"><status/></tuple><tuple id="a"><status/></tuple>'), /'a' is not unique/],
    ['duplicate tuple ids, second and third', doc('<tuple id="a"><status/></tuple><tuple id="b"><status/></tuple><tuple id="b"><status/></tuple>'), /'b' is not unique/],
    ['tuple without status', doc('<tuple id="a"><contact>sip:x@y</contact></tuple>'), /no <status>/],
    ['two status', doc('<tuple id="a"><status/><status/></tuple>'), /more than one <status>/],
    ['basic neither open nor closed', doc('<tuple id="a"><status><basic>busy</basic></status></tuple>'), /open or closed/],
    ['two basics', doc('<tuple id="a"><status><basic>open</basic><basic>open</basic></status></tuple>'), /more than one <basic>/],
    ['element inside basic', doc('<tuple id="a"><status><basic><b/></basic></status></tuple>'), /only text/],
    ['bad priority', doc('<tuple id="a"><status/><contact priority="2">sip:x@y</contact></tuple>'), /priority/],
    ['bad timestamp', doc('<tuple id="a"><status/><timestamp>yesterday</timestamp></tuple>'), /xs:dateTime/],
    ['text in presence', doc('stray'), /text directly inside <presence>/],
    ['unbound element prefix', doc('<x:y/>'), /unbound prefix 'x'/],
    ['unbound attribute prefix', doc('<y x:a="1" xmlns="urn:q"/>'), /unbound prefix 'x'/],
    ['undefined entity', doc('<note>&nbsp;</note>'), /undefined entity/],
    ['bare ampersand', doc('<note>a & b</note>'), /bare '&'|well-formed/],
    ['bad char reference', doc('<note>&#0;</note>'), /character reference/],
    ['surrogate char reference', doc('<note>&#xD800;</note>'), /character reference/],
    ['control character', doc('<note>\u0001</note>'), /character not allowed/],
    ['repeated attribute', doc('<tuple id="a" id="b"><status/></tuple>'), /well-formed|repeated/],
    ['same expanded attribute twice', doc('<e xmlns:p="urn:z" xmlns:q="urn:z" p:a="1" q:a="2"/>'), /repeated/],
    ['xmlns prefix redeclared', doc('<e xmlns:xmlns="urn:z"/>'), /reserved prefix|well-formed/],
    ['lower-case doctype', `<!doctype presence>${doc('')}`, /DOCTYPE/],
    ['spaced doctype', `<! DOCTYPE presence>${doc('')}`, /DOCTYPE/],
    ['doctype after a comment', `<?xml version="1.0"?><!-- c --><!DOCTYPE presence>${doc('')}`, /DOCTYPE/],
    ['element declaration', doc('<!ELEMENT note ANY>'), /markup declarations/],
    ['< in an attribute value', doc('<note xml:lang="<">x</note>'), /'<' in the value/],
    ['text after the root', doc('') + 'trailing', /text outside the root/],
    ['text before the root', 'leading' + doc(''), /text outside the root/],
    ['non-UTF-8 encoding declared', `<?xml version="1.0" encoding="ISO-8859-1"?>${doc('')}`, /not UTF-8/],
    ['non-UTF-8 encoding declared after white space', ` \r\n<?xml version="1.0" encoding="latin1"?>${doc('')}`, /not UTF-8/],
    ['prototype pollution names', doc('<__proto__ constructor="x"/>'), /.+/]
  ]
  for (const [name, body, reason] of bad) {
    test(`rejects: ${name}`, () => rejects(body, reason))
  }

  test('rejects a body larger than the limit, by bytes', () => {
    const big = doc(`<note>${'é'.repeat(40000)}</note>`)
    rejects(big, /larger than 65536/)
    rejects(new TextEncoder().encode(big), /larger than 65536/)
    rejects(doc('<note>ok</note>'), /larger than 10/, { maxBytes: 10 })
  })

  test('rejects invalid UTF-8 bytes', () => {
    const bytes = new Uint8Array([...new TextEncoder().encode(doc('<note>')), 0xff, 0xfe, ...new TextEncoder().encode('</note>')])
    rejects(bytes, /UTF-8/)
  })

  test('billion laughs: DOCTYPE with nested entities is refused without expanding', () => {
    let dtd = '<!ENTITY lol0 "lol">'
    for (let i = 1; i < 10; i++) dtd += `<!ENTITY lol${i} "${`&lol${i - 1};`.repeat(10)}">`
    const body = `<?xml version="1.0"?><!DOCTYPE presence [${dtd}]>` + doc('<note>&lol9;</note>')
    const start = performance.now()
    rejects(body, /DOCTYPE/)
    assert.ok(performance.now() - start < 50)
  })

  test('defence in depth: with our options fast-xml-parser itself does not expand declared entities', () => {
    let dtd = '<!ENTITY lol0 "lol">'
    for (let i = 1; i < 10; i++) dtd += `<!ENTITY lol${i} "${`&lol${i - 1};`.repeat(10)}">`
    const body = `<!DOCTYPE presence [${dtd}]><presence><note>&lol9;</note></presence>`
    const out = JSON.stringify(new XMLParser(PARSER_OPTIONS).parse(body))
    assert.ok(out.includes('&lol9;'), 'the reference is left as written')
    assert.ok(out.length < 500, 'nothing expanded')
  })

  test('external entities and bare entity declarations are refused', () => {
    rejects(`<!DOCTYPE presence SYSTEM "file:///etc/passwd">${doc('')}`, /DOCTYPE/)
    rejects(`${doc('<note><!ENTITY x "y"></note>')}`, /entity declarations|well-formed/)
  })

  test('deep nesting is refused quickly, before the XML library recurses', () => {
    const depth = 20000
    const body = doc('<a xmlns="urn:x">'.repeat(depth) + '</a>'.repeat(depth))
    const start = performance.now()
    rejects(body, /nested deeper than 32/, { maxBytes: 1 << 20 })
    assert.ok(performance.now() - start < 200, 'linear pre-scan')
    // depth within the limit is fine; the limit is configurable
    const ok = doc('<a xmlns="urn:x">'.repeat(10) + '</a>'.repeat(10))
    assert.equal(parsePidf(ok).extra.length, 1)
    rejects(ok, /nested deeper than 5/, { maxDepth: 5 })
  })

  test('comments, CDATA and quoted ">" do not fool the depth scan', () => {
    const body = doc('<!-- <a><a><a> --><e xmlns="urn:x" v="&gt;>" w=\'<\'><![CDATA[<a><a>]]></e>'.replace('w=\'<\'', 'w="x"'))
    const d = parsePidf(body, { maxDepth: 2 })
    assert.equal(d.extra[0].name, 'e')
  })

  test('reasons stay short whatever the input', () => {
    assert.throws(() => parsePidf(doc(`<${':'.repeat(5000)}/>`)), (err: unknown) => err instanceof PidfError && err.reason.length <= 201)
    assert.throws(() => parsePidf(doc('', `entity="${'x'.repeat(5000)}"`)), (err: unknown) => err instanceof PidfError && err.message.length < 250)
  })

  test('huge attribute counts and element counts are refused', () => {
    const attrs = Array.from({ length: 5000 }, (_, i) => `a${i}="v"`).join(' ')
    rejects(doc(`<e xmlns="urn:x" ${attrs}/>`), /more than 64 attributes/)
    const many = '<e xmlns="urn:x"/>'.repeat(3000)
    rejects(doc(many), /more than 2048 elements/)
  })

  test('xml:lang on notes is recognised in the XML namespace', () => {
    const d = parsePidf(doc('<note xml:lang="fr">salut</note>'))
    assert.deepEqual(d.notes, [{ text: 'salut', lang: 'fr' }])
    assert.match(buildPidf(d), /<note xml:lang="fr">salut<\/note>/)
    assert.ok(!buildPidf(d).includes(`xmlns:xml=`))
    assert.equal(XML_NS, 'http://www.w3.org/XML/1998/namespace')
  })
})

describe('buildPidf', () => {
  test('escapes text and attributes, and replaces characters XML cannot carry', () => {
    const xml = buildPidf({
      entity: 'pres:a&b@example.com?x=1',
      tuples: [{ id: 't', status: { basic: 'open', extra: [] }, extra: [], notes: [{ text: '<b>&"\u0001', lang: 'e"n' }] }],
      notes: [],
      extra: [{ ns: 'urn:x', name: 'e', attrs: [{ ns: '', name: 'v', value: 'a\nb\t"<&' }], children: ['x\r\ny'] }]
    })
    const d = parsePidf(xml)
    assert.equal(d.entity, 'pres:a&b@example.com?x=1')
    assert.deepEqual(d.tuples[0].notes, [{ text: '<b>&"\ufffd', lang: 'e"n' }])
    assert.deepEqual(d.extra[0].attrs, [{ ns: '', name: 'v', value: 'a\nb\t"<&' }])
    assert.deepEqual(d.extra[0].children, ['x\r\ny'])
  })
})

// ---------------------------------------------------------------------------------------------
// properties

const ncname = fc.stringMatching(/^[a-z][a-z0-9-]{0,6}$/).filter(s => !s.startsWith('xml'))
const nsUri = fc.constantFrom('', PIDF_NS, 'urn:ietf:params:xml:ns:pidf:rpid', 'urn:ietf:params:xml:ns:pidf:data-model', 'urn:x:one', 'urn:x:two', 'http://example.com/a?b=c&d')
const prefixHint = fc.option(fc.constantFrom('a', 'rpid', 'dm', 'ns', 'p'), { nil: undefined })
const textChars = fc.string({ unit: fc.constantFrom('a', 'Z', ' ', '&', '<', '>', '"', "'", ';', '\t', '\n', 'é', '\u263A', '#', ']]>'), maxLength: 12 })
const someText = textChars.filter(s => s.trim() !== '')
const trimmedText = textChars.map(s => s.trim())

const element: fc.Memo<XmlElement> = fc.memo(n => fc.record({
  ns: nsUri,
  name: ncname,
  prefix: prefixHint.filter(p => p !== undefined),
  attrs: fc.uniqueArray(fc.record({ ns: fc.constantFrom('', 'urn:x:one', XML_NS, PIDF_NS), name: ncname, value: textChars }), { maxLength: 3, selector: a => `${a.ns} ${a.name}` }),
  children: n <= 1
    ? fc.oneof(fc.constant([] as XmlNode[]), someText.map(t => [t] as XmlNode[]))
    : fc.array(fc.tuple(element(n - 1), fc.option(someText, { nil: undefined })), { maxLength: 3 })
      .map(pairs => pairs.flatMap(([e, t]) => t === undefined ? [e] : [e, t]) as XmlNode[])
}, { requiredKeys: ['ns', 'name', 'attrs', 'children'] }) as fc.Arbitrary<XmlElement>)
// at the top of an extension tree a PIDF-namespace element must not carry a name PIDF gives a
// meaning to there (it would parse back as that element); nested ones may
const PIDF_NAMES = new Set(['presence', 'tuple', 'status', 'basic', 'contact', 'note', 'timestamp'])
const extras = fc.array(element(3).filter(e => !(e.ns === PIDF_NS && PIDF_NAMES.has(e.name))), { maxLength: 2 })
const note = fc.record({ text: trimmedText, lang: fc.option(fc.constantFrom('en', 'fr-CA'), { nil: undefined }) })
  .map(n => n.lang === undefined ? { text: n.text } : n)

const pidfModel: fc.Arbitrary<PidfDocument> = fc.record({
  entity: fc.stringMatching(/^(pres|sip):[a-z0-9.]{1,8}@[a-z.]{1,8}$/),
  tuples: fc.uniqueArray(fc.record({
    id: ncname,
    basic: fc.option(fc.constantFrom('open' as const, 'closed' as const), { nil: undefined }),
    statusExtra: extras,
    extra: extras,
    contact: fc.option(fc.record({ uri: fc.constantFrom('sip:a@b', 'tel:+1234'), priority: fc.option(fc.constantFrom('0', '0.5', '1', '1.000'), { nil: undefined }) }), { nil: undefined }),
    notes: fc.array(note, { maxLength: 2 }),
    timestamp: fc.option(fc.constantFrom('2026-11-22T00:00:00Z', '2001-10-27T16:49:29.123+09:00'), { nil: undefined })
  }), { maxLength: 3, selector: t => t.id }).map(ts => ts.map(t => {
    const tuple: PidfDocument['tuples'][number] = { id: t.id, status: t.basic === undefined ? { extra: t.statusExtra } : { basic: t.basic, extra: t.statusExtra }, extra: t.extra, notes: t.notes }
    if (t.contact !== undefined) tuple.contact = t.contact.priority === undefined ? { uri: t.contact.uri } : { uri: t.contact.uri, priority: t.contact.priority }
    if (t.timestamp !== undefined) tuple.timestamp = t.timestamp
    return tuple
  })),
  notes: fc.array(note, { maxLength: 2 }),
  extra: extras
})

function onlyPidfError (fn: () => unknown): void {
  try {
    fn()
  } catch (err) {
    if (!(err instanceof PidfError)) throw new Error(`threw ${String(err)} instead of PidfError`, { cause: err })
  }
}

describe('properties', () => {
  test('build → parse returns the model (up to prefix hints)', () => {
    fc.assert(fc.property(pidfModel, model => {
      sameModel(parsePidf(buildPidf(model)), model)
    }), { numRuns: 300 })
  })

  test('arbitrary strings never throw anything but PidfError', () => {
    fc.assert(fc.property(fc.string({ maxLength: 200 }), s => onlyPidfError(() => parsePidf(s))), { numRuns: 500 })
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), b => onlyPidfError(() => parsePidf(b))), { numRuns: 300 })
  })

  test('XML-ish garbage never throws anything but PidfError', () => {
    const piece = fc.constantFrom('<', '>', '/', '</', '/>', '<!--', '-->', '<![CDATA[', ']]>', '<!DOCTYPE', '&', ';', '&amp;', '&#', 'x', ':', 'xmlns', 'xmlns:a', '=', '"', "'", ' ',
      '<presence', `xmlns="${PIDF_NS}"`, 'entity="pres:a@b"', '<tuple', 'id="a"', '<status>', '</status>', '<basic>', 'open', '</basic>', '</tuple>', '</presence>', '<?xml', '?>', '__proto__', 'constructor')
    fc.assert(fc.property(fc.array(piece, { maxLength: 60 }), parts => onlyPidfError(() => parsePidf(parts.join('')))), { numRuns: 1000 })
  })

  test('mutations of a valid document never throw anything but PidfError', () => {
    fc.assert(fc.property(fc.nat(SAMPLE.length), fc.nat(20), fc.string({ maxLength: 5 }), (at, del, ins) => {
      onlyPidfError(() => parsePidf(SAMPLE.slice(0, at) + ins + SAMPLE.slice(at + del)))
    }), { numRuns: 1000 })
  })
})

// ---------------------------------------------------------------------------------------------
// the common-case reader against the library's

/** what SIPp and most user agents publish (uac-publish-bench.xml), with CR LF line ends */
const SIPP_BODY = '<?xml version="1.0" encoding="UTF-8"?>\r\n<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:u1@example.com"><tuple id="t1"><status><basic>open</basic></status></tuple></presence>\r\n'
/** SAMPLE without its CDATA section (the common reader leaves CDATA to the library) */
const SAMPLE_PLAIN = SAMPLE.replace(' <![CDATA[<raw> & stuff]]>', ' &lt;raw&gt; &amp; stuff')

/** the common reader's tree, checked equal to the library's (which must accept what it accepts) */
function sameAsLibrary (text: string): XmlElement | undefined {
  const common = readCommonXml(text, DEFAULT_LIMITS)
  if (common === undefined) return undefined
  let library: XmlElement
  try {
    library = readXmlWithLibrary(text, DEFAULT_LIMITS)
  } catch (err) {
    throw new Error(`the common reader accepted what the library refuses (${String(err)}): ${JSON.stringify(text)}`, { cause: err })
  }
  assert.deepEqual(common, library, JSON.stringify(text))
  return common
}

describe('readCommonXml', () => {
  test('reads the usual documents itself, as the library does', () => {
    for (const text of [SIPP_BODY, SAMPLE_PLAIN, SAMPLE_PLAIN.replaceAll('\n', '\r\n'), SAMPLE_PLAIN.replaceAll('"', "'"), `<presence xmlns="${PIDF_NS}" entity="pres:a@b"/>`,
      `<?xml version='1.0'?><p:presence xmlns:p="${PIDF_NS}" xmlns="urn:x" entity="pres:a@b"><p:tuple id="a"><p:status><e xmlns="" a="1" p:b="&#x263A;&amp;">t\tx</e></p:status></p:tuple></p:presence>  \n`]) {
      assert.notEqual(sameAsLibrary(text), undefined, text)
    }
    assert.notEqual(sameAsLibrary(`<?xml version="1.0" ?><a/>`), undefined)
    assert.equal(parsePidf(SIPP_BODY).tuples[0].status.basic, 'open')
  })

  test('leaves comments, CDATA, processing instructions, unusual names and spacing, and broken rules to the library', () => {
    for (const text of [SAMPLE, `<a xmlns="urn:x"><!-- c --></a>`, `<a xmlns="urn:x"><?pi x?></a>`, '<?xml  version="1.0"?><a/>', '<a b = "1"/>', '<a b="1"c="2"/>',
      '<a></a >', '<a b="1" b="2"/>', '<a x:b="1" y:b="2" xmlns:x="urn:x" xmlns:y="urn:x"/>', '<a xmlns:x=""/>', '<x:a/>', '<a>x > y</a>', '<a b="x>y"/>', '<a b="x<y"/>', '<a>&nbsp;</a>', '<a>&</a>',
      '<_a/>', '<é/>', '<a:b:c/>', '<a></b>', '<a>', '<a/><b/>', '<a/>x', 'x<a/>', '<a><b></a></b>', '<a xmlns:xml="urn:y"/>', '<a xmlns:xmlns="urn:y"/>', `<a>${'<b>'.repeat(40)}</a>`]) {
      assert.equal(readCommonXml(text, DEFAULT_LIMITS), undefined, text)
    }
    assert.equal(readCommonXml('<a>' + '<b/>'.repeat(10) + '</a>', { ...DEFAULT_LIMITS, maxElements: 10 }), undefined)
    assert.equal(readCommonXml('<a ' + Array.from({ length: 5 }, (_, i) => `a${i}="1"`).join(' ') + '/>', { ...DEFAULT_LIMITS, maxAttributes: 4 }), undefined)
    assert.notEqual(readCommonXml('<a ' + Array.from({ length: 4 }, (_, i) => `a${i}="1"`).join(' ') + '/>', { ...DEFAULT_LIMITS, maxAttributes: 4 }), undefined)
  })

  test('the checks before reading skip what String.prototype.trim removes, no more and no less', () => {
    const reason = (text: string): string => { try { parsePidf(text); return 'parsed' } catch (err) { return (err as PidfError).reason } }
    // eslint-disable-next-line no-control-regex -- the characters XML cannot carry, as pidf.ts refuses them
    const notXml = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff\ud800-\udfff]/u
    for (let c = 0; c <= 0xffff; c++) {
      const ch = String.fromCharCode(c)
      const trimmed = ch.trim() === ''
      assert.equal(reason(ch) === 'empty body', trimmed, `U+${c.toString(16)} alone`)
      if (notXml.test(ch)) continue
      if (ch !== '<') assert.equal(reason(`${ch}<a/>`) === 'text outside the root element', !trimmed, `U+${c.toString(16)} before the root`)
      if (ch !== '>') assert.equal(reason(`<a/>${ch}`) === 'text outside the root element', !trimmed, `U+${c.toString(16)} after the root`)
    }
  })

  test('every document buildPidf writes is read by the common reader, as the library reads it', () => {
    fc.assert(fc.property(pidfModel, model => {
      assert.notEqual(sameAsLibrary(buildPidf(model)), undefined)
    }), { numRuns: 300 })
  })

  test('whatever the common reader accepts, the library accepts as the same tree (garbage, mutations)', () => {
    const piece = fc.constantFrom('<', '>', '/', '</', '/>', '<!--', '-->', '<![CDATA[', ']]>', '&', ';', '&amp;', '&#', '&#65;', 'x', 'a', ':', 'xmlns', 'xmlns:a', 'a:', '=', '"', "'", ' ', '\r\n', '\r', '\t',
      '<a', '<a>', '</a>', '<b', '<b>', '</b>', '<a:b', '</a:b>', 'x="1"', "y='2'", `xmlns="${PIDF_NS}"`, 'xmlns:a="urn:a"', 'xmlns=""', '<?xml version="1.0"?>', '?>')
    fc.assert(fc.property(fc.array(piece, { maxLength: 40 }), parts => { sameAsLibrary(parts.join('')) }), { numRuns: 3000 })
    let accepted = 0
    for (const doc of [SIPP_BODY, SAMPLE_PLAIN]) {
      fc.assert(fc.property(fc.nat(doc.length), fc.nat(6), fc.string({ unit: fc.constantFrom('<', '>', '/', '"', "'", '=', ' ', ':', '&', ';', 'a', '\r', '\n', '-', '!', '?'), maxLength: 4 }), (at, del, ins) => {
        if (sameAsLibrary(doc.slice(0, at) + ins + doc.slice(at + del)) !== undefined) accepted++
      }), { numRuns: 2000 })
    }
    assert.ok(accepted > 100, `only ${accepted} mutations were read by the common reader`)
  })
})
