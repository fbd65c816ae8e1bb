// The meaning of a device's answer to a stored MESSAGE (offline/delivery.ts): delivered, try
// again later, or refused for good.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Delivery, deliveryOf, decidingResponse } from '../../../sip-gateway/offline/index.ts'

test('2xx delivered; state of the device or user (timeouts, busy, offline, 5xx, 600, redirects, challenges) transient; about the message permanent', () => {
  for (const s of [200, 202, 299]) assert.equal(deliveryOf(s), Delivery.Delivered, String(s))
  for (const s of [undefined, 100, 180, 301, 302, 401, 404, 405, 407, 408, 410, 480, 481, 482, 483, 486, 491, 500, 501, 502, 503, 504, 505, 600, 604]) {
    assert.equal(deliveryOf(s), Delivery.Retry, String(s))
  }
  for (const s of [400, 402, 403, 406, 413, 415, 417, 488, 493, 499, 513, 603, 606]) assert.equal(deliveryOf(s), Delivery.Refused, String(s))
})

test('among several devices with no 2xx: a 6xx speaks for all, then a transient failure, then a refusal', () => {
  const r = (status: number): { status: number } => ({ status })
  assert.equal(decidingResponse([r(415), r(480)])?.status, 480)
  assert.equal(decidingResponse([r(513), r(408), r(415)])?.status, 408)
  assert.equal(decidingResponse([r(415), r(488)])?.status, 415)
  assert.equal(decidingResponse([r(408), r(603)])?.status, 603)
  assert.equal(decidingResponse([]), undefined)
})
