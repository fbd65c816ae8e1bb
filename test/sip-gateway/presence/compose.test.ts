import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { composePresence, presentityDocument, presUriFor, registrationPresence, REGISTRATION_TUPLE_ID } from '../../../sip-gateway/presence/compose.ts'
import { buildPidf, parsePidf, PIDF_NS } from '../../../sip-gateway/presence/pidf.ts'
import type { PidfDocument } from '../../../sip-gateway/presence/pidf.ts'

const ENTITY = 'pres:alice@example.com'
const RPID = 'urn:ietf:params:xml:ns:pidf:rpid'
const DM = 'urn:ietf:params:xml:ns:pidf:data-model'

const pidf = (inner: string, entity = 'pres:alice@example.com'): PidfDocument => parsePidf(
  `<presence xmlns="${PIDF_NS}" xmlns:rpid="${RPID}" xmlns:dm="${DM}" entity="${entity}">${inner}</presence>`)

const phone = pidf(`<tuple id="t1"><status><basic>open</basic></status><contact>sip:alice@10.0.0.1</contact></tuple>
  <note>on the phone</note>
  <dm:person id="p"><rpid:activities><rpid:on-the-phone/></rpid:activities></dm:person>`)
const laptop = pidf(`<tuple id="t1"><status><basic>closed</basic></status><contact>sip:alice@10.0.0.2</contact></tuple>
  <tuple id="t1-2"><status><basic>open</basic></status></tuple>
  <note>on the phone</note><note xml:lang="fr">au téléphone</note>
  <dm:person id="p"><rpid:activities><rpid:away/></rpid:activities></dm:person>
  <x:unknown xmlns:x="urn:vendor:x" a="1"><x:deep>kept</x:deep></x:unknown>`, 'sip:alice@example.com')

function ids (doc: PidfDocument): string[] {
  return [...doc.tuples.map(t => t.id), ...doc.extra.flatMap(e => e.attrs.filter(a => a.ns === '' && a.name === 'id').map(a => a.value))]
}

describe('composePresence', () => {
  test('unions tuples, resolves id collisions deterministically, merges notes, keeps unknown elements', () => {
    const doc = composePresence(ENTITY, [{ key: '0001', doc: phone }, { key: '0002', doc: laptop }])
    assert.equal(doc.entity, ENTITY)
    assert.deepEqual(doc.tuples.map(t => [t.id, t.status.basic, t.contact?.uri]), [
      ['t1', 'open', 'sip:alice@10.0.0.1'],
      ['t1-3', 'closed', 'sip:alice@10.0.0.2'], // t1-2 is used as written by the laptop
      ['t1-2', 'open', undefined]
    ])
    assert.deepEqual(doc.notes, [{ text: 'on the phone' }, { text: 'au téléphone', lang: 'fr' }])
    assert.deepEqual(doc.extra.map(e => [e.name, e.attrs.map(a => a.value)]), [['person', ['p']], ['person', ['p-2']], ['unknown', ['1']]])
    // the result is a valid document: ids are unique, build → parse works, unknown namespace survives
    const xml = buildPidf(doc)
    assert.match(xml, /xmlns:x="urn:vendor:x"/)
    assert.match(xml, /<x:deep>kept<\/x:deep>/)
    assert.equal(parsePidf(xml).tuples.length, 3)
  })

  test('the order of the input array does not matter, only the keys', () => {
    const a = composePresence(ENTITY, [{ key: '0001', doc: phone }, { key: '0002', doc: laptop }])
    const b = composePresence(ENTITY, [{ key: '0002', doc: laptop }, { key: '0001', doc: phone }])
    assert.deepEqual(a, b)
  })

  test('an identical tuple published twice appears once', () => {
    const doc = composePresence(ENTITY, [{ key: 'a', doc: phone }, { key: 'b', doc: phone }])
    assert.equal(doc.tuples.length, 1)
    assert.equal(doc.extra.length, 1)
    assert.equal(doc.notes.length, 1)
  })

  test('does not mutate its inputs', () => {
    const before = JSON.stringify([phone, laptop])
    composePresence(ENTITY, [{ key: '1', doc: phone }, { key: '2', doc: laptop }])
    assert.equal(JSON.stringify([phone, laptop]), before)
  })

  test('property: ids stay unique, every tuple survives (or was an exact duplicate), order-independent', () => {
    const tupleIds = fc.constantFrom('a', 'a-2', 'a-3', 'b', 'p')
    const docArb = fc.record({
      tuples: fc.uniqueArray(fc.record({ id: tupleIds, basic: fc.constantFrom('open' as const, 'closed' as const) }), { selector: t => t.id, maxLength: 4 }),
      persons: fc.uniqueArray(fc.constantFrom('p', 'a', 'q'), { maxLength: 2 })
    }).filter(d => !d.persons.some(p => d.tuples.some(t => t.id === p)))
      .map(d => ({
        entity: ENTITY,
        tuples: d.tuples.map(t => ({ id: t.id, status: { basic: t.basic, extra: [] }, extra: [], notes: [] })),
        notes: [],
        extra: d.persons.map(p => ({ ns: DM, name: 'person', attrs: [{ ns: '', name: 'id', value: p }], children: [] }))
      }) as PidfDocument)
    fc.assert(fc.property(fc.array(docArb, { maxLength: 4 }), fc.func(fc.integer()), (docs, rank) => {
      const inputs = docs.map((doc, i) => ({ key: String(i).padStart(3, '0'), doc }))
      const composed = composePresence(ENTITY, inputs)
      const all = ids(composed)
      assert.equal(new Set(all).size, all.length, `duplicate ids ${all.join(',')}`)
      const distinct = new Set(docs.flatMap(d => d.tuples.map(t => JSON.stringify(t)))).size
      assert.equal(composed.tuples.length, distinct)
      const shuffled = [...inputs].sort((x, y) => rank(x.key) - rank(y.key))
      assert.deepEqual(composePresence(ENTITY, shuffled), composed)
      parsePidf(buildPidf(composed)) // always a valid document
    }), { numRuns: 300 })
  })
})

describe('registration-derived presence', () => {
  test('open with at least one live binding, closed otherwise', () => {
    assert.equal(registrationPresence(ENTITY, 2).tuples[0].status.basic, 'open')
    assert.equal(registrationPresence(ENTITY, 1).tuples[0].status.basic, 'open')
    assert.equal(registrationPresence(ENTITY, 0).tuples[0].status.basic, 'closed')
    const doc = parsePidf(buildPidf(registrationPresence(ENTITY, 1)))
    assert.equal(doc.tuples[0].id, REGISTRATION_TUPLE_ID)
    assert.equal(doc.tuples[0].contact, undefined, 'device addresses are not exposed')
  })

  test('presentityDocument prefers publications over registration state', () => {
    assert.equal(presentityDocument(ENTITY, [], 1).tuples[0].id, REGISTRATION_TUPLE_ID)
    const doc = presentityDocument(ENTITY, [{ key: '1', doc: laptop }], 0)
    assert.deepEqual(doc.tuples.map(t => t.id), ['t1', 't1-2'])
  })

  test('presUriFor maps sip and sips AoRs to pres URIs', () => {
    assert.equal(presUriFor('sip:alice@example.com'), 'pres:alice@example.com')
    assert.equal(presUriFor('SIPS:bob@example.com;transport=tcp'), 'pres:bob@example.com')
    assert.equal(presUriFor('pres:carol@example.com'), 'pres:carol@example.com')
  })
})
