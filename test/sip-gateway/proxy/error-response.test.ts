// The error boundary (proxy/error-response.ts): statuses from errors, Retry-After from their hint.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { responseForError } from '../../../sip-gateway/proxy/error-response.ts'
import { parseMessage, SipRequest } from '../../../sip-gateway/codec/index.ts'
import { SipStatusError } from '../../../sip-gateway/errors.ts'
import { OfflineQuotaError, QuotaScope } from '../../../sip-gateway/offline/index.ts'
import { RecordingLogger } from '../offline/fixtures.ts'

const request = parseMessage(Buffer.from([
  'MESSAGE sip:gina@example.com SIP/2.0',
  'Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKerr1',
  'From: <sip:ivan@example.com>;tag=a1',
  'To: <sip:gina@example.com>',
  'Call-ID: err-1',
  'CSeq: 1 MESSAGE',
  'Content-Length: 0',
  '', ''
].join('\r\n'))) as SipRequest

test('an over-quota store is 480 with its reason and a Retry-After of its hint, in whole seconds', () => {
  const log = new RecordingLogger()
  const user = responseForError(request, new OfflineQuotaError(QuotaScope.User, 'full'), log)
  assert.equal(user.status, 480)
  assert.equal(user.reason, 'Mailbox Full')
  assert.equal(user.headers.get('Retry-After'), '3600')
  const node = responseForError(request, new OfflineQuotaError(QuotaScope.Global, 'full', 90.2), log)
  assert.equal(node.reason, 'Offline Storage Full')
  assert.equal(node.headers.get('Retry-After'), '91')
})

test('an error without a hint gets no Retry-After; a bug is 500', () => {
  const log = new RecordingLogger()
  const r = responseForError(request, new SipStatusError(480, 'Temporarily Unavailable'), log)
  assert.equal(r.status, 480)
  assert.equal(r.headers.get('Retry-After'), undefined)
  const bad = Object.assign(new SipStatusError(503, 'Busy'), { retryAfter: Number.NaN })
  assert.equal(responseForError(request, bad, log).headers.get('Retry-After'), undefined)
  const bug = responseForError(request, new TypeError('oops'), log)
  assert.equal(bug.status, 500)
  assert.equal(log.at('error').length, 1)
})
