import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import {
  backEndOutcomeFor, checkIncoming, DEFAULT_MAX_HOPS, formatPath, forwardPath, LOOP_DETECTED, MAX_PATH_ENTRIES, parsePath,
  PathHeaderError, SubscriptionPairs
} from '../../../sip-gateway/presence/loop.ts'
import { frontEndDecision } from '../../../sip-gateway/presence/authorization.ts'

const A = '12D3KooWA'
const B = '12D3KooWB'
const C = '12D3KooWC'

describe('hop list header', () => {
  test('parses and formats', () => {
    assert.deepEqual(parsePath(undefined), [])
    assert.deepEqual(parsePath('  '), [])
    assert.deepEqual(parsePath(`${A},${B} , ${C}`), [A, B, C])
    assert.equal(formatPath([A, B]), `${A}, ${B}`)
    assert.deepEqual(parsePath(formatPath([A, B, C])), [A, B, C])
  })

  for (const bad of [',', `${A},,${B}`, 'a b', '<x>', 'x'.repeat(129), Array.from({ length: MAX_PATH_ENTRIES + 1 }, (_, i) => `n${i}`).join(','), 'x,'.repeat(5000)]) {
    test(`rejects ${JSON.stringify(bad).slice(0, 30)}`, () => {
      assert.throws(() => parsePath(bad), (err: unknown) => err instanceof PathHeaderError && err.status === 400)
    })
  }

  test('formatPath refuses ids that would corrupt the header', () => {
    assert.throws(() => formatPath(['a,b']), PathHeaderError)
    assert.throws(() => formatPath(['a\r\nX: y']), PathHeaderError)
  })

  test('property: arbitrary header values either parse or throw PathHeaderError', () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), s => {
      try {
        const path = parsePath(s)
        assert.ok(path.length <= MAX_PATH_ENTRIES)
        assert.deepEqual(parsePath(formatPath(path)), path)
      } catch (err) {
        if (!(err instanceof PathHeaderError)) throw err
      }
    }), { numRuns: 500 })
  })
})

describe('checks', () => {
  test('incoming: refused when this node is already on the path or the budget is spent', () => {
    assert.deepEqual(checkIncoming(B, [A]), { loop: false })
    assert.deepEqual(checkIncoming(A, [A]), { loop: true, reason: 'self-in-path' })
    assert.deepEqual(checkIncoming(B, [A, C, A]), { loop: true, reason: 'repeated-in-path' })
    assert.deepEqual(checkIncoming('n9', ['n1', 'n2', 'n3', 'n4'].slice(0, DEFAULT_MAX_HOPS)), { loop: false })
    assert.deepEqual(checkIncoming('n9', ['n1', 'n2', 'n3', 'n4', 'n5']), { loop: true, reason: 'too-many-hops' })
  })

  test('forward: never to self or a node on the path, and within the budget', () => {
    assert.deepEqual(forwardPath(A, B, []), { loop: false, path: [A] })
    assert.deepEqual(forwardPath(B, C, [A]), { loop: false, path: [A, B] })
    assert.deepEqual(forwardPath(B, A, [A]), { loop: true, reason: 'target-in-path' })
    assert.deepEqual(forwardPath(A, A, []), { loop: true, reason: 'target-in-path' })
    assert.deepEqual(forwardPath('n5', 'n6', ['n1', 'n2', 'n3', 'n4']), { loop: true, reason: 'too-many-hops' })
    assert.deepEqual(forwardPath('n2', 'n3', ['n1'], 1), { loop: true, reason: 'too-many-hops' })
  })

  test('a refused back-end subscription (482) means: proceed without that input', () => {
    assert.equal(backEndOutcomeFor(LOOP_DETECTED), 'loop')
    assert.equal(backEndOutcomeFor(200), 'accepted')
    assert.equal(backEndOutcomeFor(202), 'accepted')
    assert.equal(backEndOutcomeFor(403), 'denied')
    assert.equal(backEndOutcomeFor(603), 'denied')
    assert.equal(backEndOutcomeFor(408), 'failed')
    assert.equal(frontEndDecision('allow', backEndOutcomeFor(LOOP_DETECTED)), 'allow')
    assert.equal(frontEndDecision('allow', backEndOutcomeFor(403)), 'block')
  })

  test('property: whatever each node believes about ownership, a back-end chain ends within the budget and never revisits a node', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 8 }), fc.array(fc.nat(7), { minLength: 8, maxLength: 8 }), fc.nat(7), fc.integer({ min: 1, max: 6 }),
      (n, beliefs, startRaw, maxHops) => {
        const nodes = Array.from({ length: n }, (_, i) => `node${i}`)
        // each node believes some node owns the presentity; a node that believes itself serves
        const owner = (i: number): number => beliefs[i] % n
        let at = startRaw % n
        let path: string[] = []
        const visited = [nodes[at]]
        for (let step = 0; step < 100; step++) {
          assert.deepEqual(checkIncoming(nodes[at], path, maxHops).loop, false)
          const target = owner(at)
          if (target === at) return // served here
          const f = forwardPath(nodes[at], nodes[target], path, maxHops)
          if (f.loop) return // refused before sending: proceed without back-end input
          const incoming = checkIncoming(nodes[target], f.path, maxHops)
          if (incoming.loop) return // refused by the receiver with 482
          path = f.path
          at = target
          assert.ok(!visited.includes(nodes[at]), 'no node is visited twice')
          visited.push(nodes[at])
          assert.ok(path.length <= maxHops)
        }
        assert.fail('chain did not end')
      }), { numRuns: 500 })
  })
})

describe('SubscriptionPairs (the draft 7.2.1 pair rule)', () => {
  test('the draft example: the subscription that comes back around is refused', () => {
    // Bob subscribes to Alice at server 1, which holds the pair and passes it to server 2;
    // server 2 subscribes to its child, server 1, with a new dialog: server 1 refuses (loop).
    const server1 = new SubscriptionPairs()
    const server2 = new SubscriptionPairs()
    assert.equal(server1.admit('sip:alice@x', 'sip:bob@x', 'dialog-bob-1'), 'new')
    assert.equal(server2.admit('sip:alice@x', 'sip:bob@x', 'dialog-1-2'), 'new')
    assert.equal(server1.admit('sip:alice@x', 'sip:bob@x', 'dialog-2-1'), 'loop')
    // refreshes of the same dialog are fine; release frees the pair for a new dialog
    assert.equal(server1.admit('sip:alice@x', 'sip:bob@x', 'dialog-bob-1'), 'existing')
    server1.release('sip:alice@x', 'sip:bob@x', 'dialog-2-1') // not the holder: no effect
    assert.equal(server1.size, 1)
    server1.release('sip:alice@x', 'sip:bob@x', 'dialog-bob-1')
    assert.equal(server1.admit('sip:alice@x', 'sip:bob@x', 'dialog-bob-2'), 'new')
  })

  test('pairs are exact (no ambiguity from separators) and bounded', () => {
    const pairs = new SubscriptionPairs(2)
    assert.equal(pairs.admit('a","b', 'c', 'd1'), 'new')
    assert.equal(pairs.admit('a', '","b","c', 'd2'), 'new')
    assert.equal(pairs.admit('x', 'y', 'd3'), 'full')
  })
})
