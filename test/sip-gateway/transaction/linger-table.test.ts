// The table of lingering transactions (timers J and K): entries live `ms` from their last set, in
// a ring of keys that grows and wraps around; its interval under Node's fake timers, its clock ours.
import { test, beforeEach, afterEach, mock } from 'node:test'
import assert from 'node:assert/strict'
import { LingerTable } from '../../../sip-gateway/transaction/linger-table.ts'

let now = 0
/** the clock and the table's interval move together */
function advance (ms: number): void {
  for (let i = 0; i < ms; i++) { now++; mock.timers.tick(1) }
}
beforeEach(() => { now = 0; mock.timers.enable({ apis: ['setInterval'] }) })
afterEach(() => { mock.timers.reset() })

test('entries linger their time from their set, then go (within one sweep interval); it works again once empty', () => {
  const t = new LingerTable<number>(800, () => now) // swept every 100 ms
  for (let i = 0; i < 10; i++) t.set(`a${i}`, i)
  advance(400)
  for (let i = 0; i < 10; i++) t.set(`b${i}`, i)
  assert.equal(t.size, 20)
  assert.equal(t.get('a3'), 3)
  assert.equal(t.has('b9'), true)
  assert.equal(t.get('nope'), undefined)
  advance(399)
  assert.equal(t.size, 20, 'nothing before its time')
  advance(101)
  assert.equal(t.has('a0'), false)
  assert.equal(t.size, 10)
  advance(400)
  assert.equal(t.size, 0)
  t.set('c', 1)
  assert.equal(t.get('c'), 1)
  advance(900)
  assert.equal(t.size, 0)
})

test('a key set again lingers from its last set (its earlier entries do not drop it), with its last value', () => {
  const t = new LingerTable<string>(800, () => now)
  t.set('k', 'first')
  t.set('other', 'x')
  advance(500)
  t.set('k', 'second')
  t.set('k', 'third')
  advance(500) // the first set of k is past its time; the last two are not
  assert.equal(t.get('k'), 'third')
  assert.equal(t.has('other'), false)
  advance(400)
  assert.equal(t.has('k'), false)
  assert.equal(t.size, 0)
  t.set('k', 'fourth')
  advance(500)
  assert.equal(t.get('k'), 'fourth')
  advance(400)
  assert.equal(t.has('k'), false, 'the count of sets again went with the key')
})

test('the ring grows past its first room while wrapped around, keeping the order of expiry; clear empties it', () => {
  const t = new LingerTable<number>(800, () => now)
  for (let i = 0; i < 40; i++) t.set(`old${i}`, i)
  advance(900)
  assert.equal(t.size, 0)
  // the ring's head is now past its start: the next sets wrap around before it grows
  for (let i = 0; i < 50; i++) t.set(`x${i}`, i)
  advance(400)
  for (let i = 0; i < 2000; i++) t.set(`y${i}`, i)
  assert.equal(t.size, 2050)
  advance(500) // x* gone, y* there
  assert.equal(t.has('x0'), false)
  assert.equal(t.has('x49'), false)
  for (let i = 0; i < 2000; i++) assert.equal(t.get(`y${i}`), i)
  advance(400)
  assert.equal(t.size, 0)
  // after a burst the table works on (its room given back)
  t.set('after', 1)
  assert.equal(t.get('after'), 1)
  for (let i = 0; i < 100; i++) t.set(`z${i}`, i)
  t.clear()
  assert.equal(t.size, 0)
  assert.equal(t.has('after'), false)
  t.set('z', 1)
  assert.equal(t.get('z'), 1)
  advance(900)
  assert.equal(t.size, 0)
})
