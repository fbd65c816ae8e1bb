/** The batch pacer (dht/batch-pace.ts): at once when idle, after the spacing when a batch just left. */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { BatchPacer } from '../../dht/batch-pace.ts'

const ran = async (pacer: BatchPacer): Promise<number> => {
  const t0 = performance.now()
  await new Promise<void>(resolve => { pacer.schedule(resolve) })
  return performance.now() - t0
}

test('a pacer lets a batch go in the next turn when none left within the spacing, and waits out the spacing otherwise', async () => {
  const pacer = new BatchPacer(150)
  assert.ok(pacer.wait() <= 0, 'nothing sent yet: no wait')
  assert.ok(await ran(pacer) < 100)
  pacer.sent()
  assert.ok(pacer.wait() > 100)
  // (libuv's timers count from the loop's cached time, in whole ms: up to a few ms early)
  assert.ok(await ran(pacer) >= 140)
  const none = new BatchPacer(0)
  none.sent()
  assert.ok(none.wait() <= 0, 'spacing 0: never a wait')
  assert.throws(() => new BatchPacer(-1), RangeError)
  assert.throws(() => new BatchPacer(Number.NaN), RangeError)
})
