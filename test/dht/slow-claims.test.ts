import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { format } from 'node:util'
import { SlowClaims } from '../../dht/slow-claims.ts'
import type { ClaimTimes } from '../../dht/slow-claims.ts'
import type { Logger } from '@libp2p/interface'

function capture (): { log: Logger, lines: string[] } {
  const lines: string[] = []
  const log = Object.assign(() => {}, {
    error: (f: string, ...args: unknown[]) => { lines.push(format(f.replace(/%p/g, '%s'), ...args)) },
    trace: () => {},
    enabled: true
  }) as unknown as Logger
  return { log, lines }
}

const times = (total: number, over: Partial<ClaimTimes> = {}): ClaimTimes => ({ signed: 1, stored: 2, answered: total - 1, total, replicas: 2, ...over })

describe('slow claims', () => {
  test('a claim under the threshold is neither counted nor told', () => {
    const { log, lines } = capture()
    const s = new SlowClaims(log, { thresholdMs: 250 })
    s.record('sip:a@x', times(249.9), 1_000_000)
    assert.equal(s.count, 0)
    assert.deepEqual(lines, [])
  })

  test('the first slow claim is told with its stages; later ones within the interval are counted, and the next line tells the slowest of them', () => {
    const { log, lines } = capture()
    const s = new SlowClaims(log, { thresholdMs: 250, intervalMs: 5_000 })
    const t = 1_000_000
    s.record('sip:a@x', times(300, { signed: 10, stored: 20 }), t)
    assert.equal(lines.length, 1)
    assert.match(lines[0], /^1 new claims took over 250 ms; the slowest, sip:a@x, 300 ms: signed after 10, then stored here after 20, 2 replicas answered after 299$/)
    s.record('sip:b@x', times(400), t + 1_000)
    s.record('sip:c@x', times(900, { replicas: 1 }), t + 2_000)
    s.record('sip:d@x', times(500), t + 3_000)
    assert.equal(lines.length, 1, 'nothing more within the interval')
    s.record('sip:e@x', times(260), t + 5_000)
    assert.equal(lines.length, 2)
    assert.match(lines[1], /^4 new claims took over 250 ms; the slowest, sip:c@x, 900 ms: .* 1 replicas answered after 899$/)
    assert.equal(s.count, 5)
  })

  test('a hostile AoR is passed as an argument, never as the format', () => {
    const { log, lines } = capture()
    const s = new SlowClaims(log, { thresholdMs: 1 })
    s.record('sip:%s%d%j@x', times(10), 1_000_000)
    assert.match(lines[0], /the slowest, sip:%s%d%j@x, 10 ms/)
  })
})
