// Timer J's table of final responses kept outside V8's heap: entries live `ms` from their set,
// found by key (collisions of the 30-bit hash told apart by the key's bytes), the ring grown and
// wrapped, segments of bytes given back once their entries expire; its interval under Node's fake
// timers, its clock ours.
import { test, beforeEach, afterEach, mock } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { LingeringResponses } from '../../../sip-gateway/transaction/lingering-responses.ts'

let now = 0
function advance (ms: number): void {
  for (let i = 0; i < ms; i++) { now++; mock.timers.tick(1) }
}
beforeEach(() => { now = 0; mock.timers.enable({ apis: ['setInterval'] }) })
afterEach(() => { mock.timers.reset() })

const bytes = (s: string): Buffer => Buffer.from(s, 'utf8')
const flowA = { name: 'a' }
const flowB = { name: 'b' }

/** FNV-1a, 30 bits, as the table hashes keys (to find two keys that collide) */
function hash30 (key: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193)
  return (h >>> 0) & 0x3fffffff
}
function collidingKeys (): [string, string] {
  const seen = new Map<number, string>()
  for (let i = 0; ; i++) {
    const k = `z9hG4bK${i}|127.0.0.1:5060|REGISTER`
    const h = hash30(k)
    const other = seen.get(h)
    if (other !== undefined) return [other, k]
    seen.set(h, k)
  }
}

test('a response is found by its key with its bytes and flow until its time, then goes; bytes are a copy', () => {
  const t = new LingeringResponses<{ name: string }>(800, () => now)
  const sent = bytes('SIP/2.0 200 OK\r\n\r\n')
  t.set('k1', sent, flowA)
  t.set('k2', bytes('SIP/2.0 404 Not Found\r\n\r\n'), flowB)
  sent.fill(0) // the caller's buffer reused at once
  const got = t.get('k1')
  assert.equal(got?.bytes.toString(), 'SIP/2.0 200 OK\r\n\r\n')
  assert.equal(got?.flow, flowA)
  assert.equal(t.get('k2')?.flow, flowB)
  assert.equal(t.get('k3'), undefined)
  assert.equal(t.get('k'), undefined, 'a prefix of a key is not the key')
  assert.equal(t.get('k1x'), undefined)
  assert.equal(t.has('k2'), true)
  assert.equal(t.size, 2)
  advance(799)
  assert.equal(t.size, 2, 'nothing before its time')
  advance(101)
  assert.equal(t.size, 0)
  assert.equal(t.get('k1'), undefined)
  assert.equal(t.bytes.reserved, 0, 'the segment given back')
  t.set('k1', bytes('again'), flowB)
  assert.equal(t.get('k1')?.bytes.toString(), 'again')
})

test('keys whose hashes collide are told apart by their bytes, while both live and after the older goes', () => {
  const [k1, k2] = collidingKeys()
  assert.equal(hash30(k1), hash30(k2))
  const t = new LingeringResponses<{ name: string }>(800, () => now)
  t.set(k1, bytes('one'), flowA)
  advance(400)
  t.set(k2, bytes('two'), flowB)
  assert.equal(t.get(k1)?.bytes.toString(), 'one')
  assert.equal(t.get(k2)?.bytes.toString(), 'two')
  advance(500) // k1 expired
  assert.equal(t.get(k1), undefined)
  assert.equal(t.get(k2)?.bytes.toString(), 'two')
  advance(400)
  assert.equal(t.get(k2), undefined)
  // the newer first, then the older expires first: the newer stays found
  t.set(k2, bytes('two again'), flowB)
  t.set(k1, bytes('one again'), flowA)
  assert.equal(t.get(k2)?.bytes.toString(), 'two again')
  assert.equal(t.get(k1)?.bytes.toString(), 'one again')
})

test('keys with any characters (UTF-8 longer than their length) and a key set again (its last bytes found)', () => {
  const t = new LingeringResponses<{ name: string }>(800, () => now)
  const odd = 'z9hG4bKé€😀|[::1]:5060|MESSAGE'
  t.set(odd, bytes('odd'), flowA)
  t.set('z9hG4bKe€😀|[::1]:5060|MESSAGE', bytes('near'), flowA)
  assert.equal(t.get(odd)?.bytes.toString(), 'odd')
  assert.equal(t.get('z9hG4bKe€😀|[::1]:5060|MESSAGE')?.bytes.toString(), 'near')
  const long = 'x'.repeat(5000)
  t.set(long, bytes('long'), flowA)
  assert.equal(t.get(long)?.bytes.toString(), 'long')
  assert.equal(t.get('x'.repeat(4999)), undefined)
  t.set(odd, bytes('odd 2'), flowB)
  assert.equal(t.get(odd)?.bytes.toString(), 'odd 2')
  assert.equal(t.get(odd)?.flow, flowB)
})

test('thousands of entries of a burst (the ring grown while wrapped, many arenas): each found whole, then all given back', () => {
  const t = new LingeringResponses<number>(800, () => now, 1 << 20)
  const body = 'v'.repeat(1500)
  // a ring that wraps before it grows: 40 set and expired, then the burst
  for (let i = 0; i < 40; i++) t.set(`warm${i}`, bytes('w'), i)
  advance(900)
  const n = 3000
  for (let i = 0; i < n; i++) {
    t.set(`z9hG4bK${i}|10.0.0.${i % 250}:5060|REGISTER`, bytes(`${i} ${body}`), i)
    if (i === n / 2) advance(400)
  }
  assert.equal(t.size, n)
  assert.ok(t.bytes.reserved >= 4 << 20, 'more than one segment')
  for (let i = 0; i < n; i += 7) {
    const got = t.get(`z9hG4bK${i}|10.0.0.${i % 250}:5060|REGISTER`)
    assert.equal(got?.bytes.toString(), `${i} ${body}`)
    assert.equal(got?.flow, i)
  }
  advance(500) // the first half expired: their segments given back
  assert.equal(t.size, n / 2 - 1)
  assert.equal(t.get('z9hG4bK0|10.0.0.0:5060|REGISTER'), undefined)
  assert.equal(t.get(`z9hG4bK${n - 1}|10.0.0.${(n - 1) % 250}:5060|REGISTER`)?.flow, n - 1)
  assert.ok(t.bytes.reserved < 4 << 20, `arenas of expired entries dropped (${t.bytes.reserved})`)
  const spare = t.bytes.spare
  assert.equal(spare, 1 << 20, 'one kept for reuse')
  for (let i = 0; i < 1000; i++) t.set(`again${i}`, bytes(`${i} ${body}`), i)
  assert.equal(t.bytes.spare, 0, 'the spare arena written again')
  assert.equal(t.get('again999')?.bytes.toString(), `999 ${body}`)
  assert.equal(t.get(`z9hG4bK${n - 1}|10.0.0.${(n - 1) % 250}:5060|REGISTER`)?.bytes.toString(), `${n - 1} ${body}`)
  advance(900)
  assert.equal(t.size, 0)
  assert.equal(t.bytes.reserved, 0)
  assert.equal(t.bytes.spare, 0, 'all given back once empty')
  t.clear()
  t.set('after', bytes('a'), 1)
  assert.equal(t.get('after')?.flow, 1)
})

test('a steady load writes one arena as a ring: its start used again once the oldest entries leave room, every live entry found whole', () => {
  const arena = 256 << 10
  const t = new LingeringResponses<number>(800, () => now, arena)
  const body = 'r'.repeat(400)
  let maxUsed = 0
  // 2 entries every 10 ms, each living 800 ms: ~160 live (~75 KB), ~550 KB written over the run in an arena of 256 KiB
  for (let tick = 0; tick < 600; tick++) {
    for (let j = 0; j < 2; j++) {
      const i = tick * 2 + j
      t.set(`z9hG4bK${i}|10.0.0.1:5060|REGISTER`, bytes(`${i} ${body}`), i)
    }
    maxUsed = Math.max(maxUsed, t.bytes.used)
    advance(10)
    // every live entry is whole (none overwritten by a write that wrapped)
    if (tick % 20 === 19) {
      for (let i = Math.max(0, tick * 2 - 150); i <= tick * 2 + 1; i++) {
        const got = t.get(`z9hG4bK${i}|10.0.0.1:5060|REGISTER`)
        if (got !== undefined) assert.equal(got.bytes.toString(), `${i} ${body}`)
      }
      assert.ok(t.get(`z9hG4bK${tick * 2 + 1}|10.0.0.1:5060|REGISTER`) !== undefined, 'the newest found')
    }
  }
  assert.ok(t.size >= 150 && t.size <= 170, `about 160 live (${t.size})`)
  assert.equal(t.bytes.reserved, arena, 'one arena all along')
  assert.ok(maxUsed < 200 << 10, `its start used again (${maxUsed})`)
  assert.ok(t.bytes.spare === 0)
  advance(900)
  assert.equal(t.size, 0)
  assert.equal(t.bytes.reserved, 0)
})
