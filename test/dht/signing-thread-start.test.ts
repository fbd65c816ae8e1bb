/**
 * A started registry has its signing thread running before the first claim (its start-up would
 * otherwise be the first REGISTERs' wait). Its own file: the thread is one per process, and any
 * earlier claim in the process would have started it.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Mesh } from '../fixtures/mesh.ts'
import { signingThread } from '../../dht/record/sign-batch.ts'

test('the registry starts the signing thread when it starts, and the first claim is signed on it', async () => {
  assert.equal(signingThread.started, false, 'nothing in this process started it before')
  const mesh = await Mesh.spawn(1)
  try {
    assert.equal(signingThread.started, true)
    const before = { ...signingThread.stats }
    const r = await mesh.nodes[0].registry.claim('sip:first@example.com', { expiresAt: Date.now() + 3_600_000 })
    assert.equal(r.won, true)
    assert.equal(signingThread.stats.signatures - before.signatures, 1)
    assert.equal(signingThread.stats.fallbacks, before.fallbacks)
  } finally {
    await mesh.stop()
  }
})
