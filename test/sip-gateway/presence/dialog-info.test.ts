// dialog-info (RFC 4235 4) parsing and building: round trips, and hostile or malformed bodies
// refused with DialogInfoError (the agent answers 400).
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { buildDialogInfo, parseDialogInfo, DialogInfoError, DIALOG_STATES, MAX_DIALOGS, type DialogInfo } from '../../../sip-gateway/presence/dialog-info.ts'
import { sipStatusFor } from '../../../sip-gateway/presence/index.ts'

const NS = 'urn:ietf:params:xml:ns:dialog-info'
const doc = (inner: string, attrs = 'version="1" state="full" entity="sip:bob@example.com"'): string => `<dialog-info xmlns="${NS}" ${attrs}>${inner}</dialog-info>`

describe('dialog-info', () => {
  test('a document round-trips through build and parse', () => {
    const token = fc.stringMatching(/^[A-Za-z0-9\-._@:]{1,20}$/)
    fc.assert(fc.property(fc.array(fc.record({
      id: token,
      state: fc.constantFrom(...DIALOG_STATES),
      callId: fc.option(token, { nil: undefined }),
      direction: fc.option(fc.constantFrom('initiator' as const, 'recipient' as const), { nil: undefined }),
      code: fc.option(fc.integer({ min: 100, max: 699 }), { nil: undefined })
    }), { maxLength: 8 }), fc.nat({ max: 1e9 }), (dialogs, version) => {
      const unique = [...new Map(dialogs.map(d => [d.id, Object.fromEntries(Object.entries(d).filter(([, v]) => v !== undefined))])).values()] as unknown as DialogInfo['dialogs']
      const input: DialogInfo = { version, state: 'partial', entity: 'sip:bob@example.com', dialogs: unique }
      assert.deepEqual(parseDialogInfo(buildDialogInfo(input)), input)
    }))
  })

  test('participants and extensions: identity and target kept, unknown elements dropped', () => {
    const d = parseDialogInfo(doc('<dialog id="a" call-id="c@h" local-tag="l" remote-tag="r" direction="recipient"><state event="rejected" code="486">terminated</state><remote><identity>sip:carl@example.com</identity><target uri="sip:carl@10.0.0.1"/></remote><x:ext xmlns:x="urn:x">kept?</x:ext></dialog>'))
    assert.deepEqual(d.dialogs[0], { id: 'a', callId: 'c@h', localTag: 'l', remoteTag: 'r', direction: 'recipient', state: 'terminated', event: 'rejected', code: 486, remote: { identity: 'sip:carl@example.com', target: 'sip:carl@10.0.0.1' } })
  })

  test('hostile and malformed bodies are refused (400)', () => {
    const many = (n: number): string => doc(Array.from({ length: n }, (_, i) => `<dialog id="d${i}"><state>early</state></dialog>`).join(''))
    const bad = [
      '', '   ', 'not xml', '<dialog-info', doc('<dialog id="a"><state>early</state>'),
      `<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "xxxxxxxxxx"><!ENTITY b "&a;&a;&a;&a;&a;">]>${doc('&b;')}`,
      `<!DOCTYPE d SYSTEM "file:///etc/passwd">${doc('')}`,
      doc('&undefined;'),
      many(MAX_DIALOGS + 1),
      many(10_000),
      '<dialog-info xmlns="urn:other" version="1" state="full" entity="sip:a@b"/>',
      doc('', 'version="x" state="full" entity="sip:a@b"'),
      doc('', 'version="1" state="some" entity="sip:a@b"'),
      doc('', 'version="1" state="full" entity="not a uri"'),
      doc('', 'version="99999999999999999999" state="full" entity="sip:a@b"'),
      doc('<dialog><state>early</state></dialog>'),
      doc('<dialog id="a"></dialog>'),
      doc('<dialog id="a"><state>ringing</state></dialog>'),
      doc('<dialog id="a" direction="sideways"><state>early</state></dialog>'),
      doc('<dialog id="a"><state code="99">early</state></dialog>'),
      doc('<dialog id="a"><state event="exploded">terminated</state></dialog>'),
      doc('<dialog id="a"><state>early</state></dialog><dialog id="a"><state>early</state></dialog>'),
      doc('<dialog id="a"><state>early</state><remote><identity>no uri</identity></remote></dialog>'),
      doc('<a><a><a><a><a><a><a><a><a><a><a><a><a><a><a><a><a><a></a></a></a></a></a></a></a></a></a></a></a></a></a></a></a></a></a></a>'),
      Buffer.from([0xff, 0xfe, 0x00]),
      doc('x'.repeat(40_000))
    ]
    for (const body of bad) {
      assert.throws(() => parseDialogInfo(body), (err: unknown) => err instanceof DialogInfoError && sipStatusFor(err)?.status === 400, String(body).slice(0, 80))
    }
  })

  test('random bytes never throw anything but DialogInfoError', () => {
    fc.assert(fc.property(fc.oneof(fc.string({ maxLength: 300 }), fc.uint8Array({ maxLength: 300 })), (body) => {
      try { parseDialogInfo(body) } catch (err) { assert.ok(err instanceof DialogInfoError, String(err)) }
    }))
  })
})
