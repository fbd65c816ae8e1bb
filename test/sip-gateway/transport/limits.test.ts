import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { SourceRateLimiter, LogSampler } from '../../../sip-gateway/transport/index.ts'
import { echoLayer, request, until, UdpClient } from './fixtures.ts'

describe('SourceRateLimiter', () => {
  test('burst, then the sustained rate, per source', () => {
    const l = new SourceRateLimiter({ perSecond: 10, burst: 3 })
    const t = 1_000_000
    assert.deepEqual([1, 2, 3, 4].map(() => l.take('a', t)), [true, true, true, false])
    assert.equal(l.take('b', t), true, 'another source has its own bucket')
    assert.equal(l.take('a', t + 50), false, 'half a token after 50 ms')
    assert.equal(l.take('a', t + 100), true, 'one token after 100 ms')
    assert.equal(l.take('a', t + 10_000), true)
    assert.equal(l.take('a', t + 10_000), true)
    assert.equal(l.take('a', t + 10_000), true)
    assert.equal(l.take('a', t + 10_000), false, 'never more than the burst')
  })

  test('forgets the oldest sources beyond maxSources', () => {
    const l = new SourceRateLimiter({ perSecond: 0, burst: 1, maxSources: 2 })
    assert.equal(l.take('a', 0), true)
    assert.equal(l.take('a', 0), false)
    l.take('b', 0)
    l.take('c', 0) // evicts a
    assert.equal(l.take('a', 0), true)
  })
})

describe('LogSampler', () => {
  test('at most N per second, the suppressed count reported with the next window', () => {
    const s = new LogSampler(2)
    const t = 5_000_000
    assert.deepEqual([0, 1, 2, 3].map(i => s.allow(t + i).log), [true, true, false, false])
    assert.deepEqual(s.allow(t + 1000), { log: true, suppressed: 2 })
    assert.deepEqual(s.allow(t + 1001), { log: true, suppressed: 0 })
  })
})

describe('transport layer limits', () => {
  test('a source over its rate is dropped and counted; malformed-input logging is sampled', async () => {
    const { layer, logger } = await echoLayer({ rateLimit: { perSecond: 1, burst: 3 }, logSamplePerSecond: 2 })
    const client = await UdpClient.open()
    try {
      const port = layer.addresses().udp?.port as number
      for (let i = 0; i < 10; i++) await client.send(request('OPTIONS'), port)
      await until(() => layer.counters().rateLimited === 7, 3000, 'rate limited')
      await until(() => client.messages.length === 3, 3000, 'answers')
      await new Promise(resolve => setTimeout(resolve, 50))
      assert.equal(client.messages.length, 3)
      assert.equal(layer.counters().messagesIn.udp, 3)
      const lines = logger.lines.filter(l => l.level === 'info' && /rate limit|malformed/.test(l.msg))
      assert.equal(lines.length, 2, 'sampled to 2 lines per second')
    } finally {
      await client.close()
      await layer.stop()
    }
  })
})
