import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import {
  AuthorizationRuleError, BadPublicationError, ConditionalRequestFailedError, IntervalTooBriefError, parsePidf, PathHeaderError,
  PidfError, PIDF_NS, sipStatusFor, TooManyPublicationsError
} from '../../../sip-gateway/presence/index.ts'

describe('sipStatusFor', () => {
  test('maps every presence error to its SIP response', () => {
    assert.deepEqual(sipStatusFor(new ConditionalRequestFailedError('x')), { status: 412, reason: 'Conditional Request Failed' })
    assert.deepEqual(sipStatusFor(new IntervalTooBriefError(60)), { status: 423, reason: 'Interval Too Brief', headers: { 'Min-Expires': '60' } })
    assert.equal(sipStatusFor(new TooManyPublicationsError(16))?.status, 403)
    assert.equal(sipStatusFor(new BadPublicationError('initial PUBLISH without a body'))?.reason, 'Bad Request (initial PUBLISH without a body)')
    assert.equal(sipStatusFor(new PathHeaderError('x'))?.status, 400)
    assert.equal(sipStatusFor(new AuthorizationRuleError('bad-aor', 'x'))?.status, 400)
    assert.equal(sipStatusFor(new Error('other')), undefined)
    assert.equal(sipStatusFor('not an error'), undefined)
  })

  test('a PIDF error becomes a 400 whose reason phrase cannot break the status line', () => {
    let err: unknown
    try {
      parsePidf(`<presence xmlns="${PIDF_NS}" entity="bad&#13;&#10;Via: injected"/>`)
    } catch (e) {
      err = e
    }
    assert.ok(err instanceof PidfError)
    const s = sipStatusFor(err)
    assert.equal(s?.status, 400)
    assert.doesNotMatch(s?.reason ?? '', /[\r\n]/)
    fc.assert(fc.property(fc.string({ maxLength: 300 }), text => {
      const r = sipStatusFor(new PidfError(text))?.reason ?? ''
      assert.ok(![...r].some(c => c.charCodeAt(0) < 0x20), "no control characters")
      assert.ok(r.length <= 140)
    }))
  })
})
