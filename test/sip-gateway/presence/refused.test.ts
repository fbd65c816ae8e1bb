// RefusedWatchers (presence/refused.ts): refused watchers listed a while, then forgotten with a
// change; bounded per presentity and in all, whatever a flood of refused SUBSCRIBEs names.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { RefusedWatchers } from '../../../sip-gateway/presence/refused.ts'

test('a refused watcher is listed until keepMs, then forgotten (and the presentity told); forget() takes her off at once', async () => {
  const changes: string[] = []
  const r = new RefusedWatchers(aor => { changes.push(aor) }, { keepMs: 150 })
  try {
    r.note('sip:bob@x', 'sip:mal@x')
    r.note('sip:bob@x', 'sip:mon@x')
    assert.deepEqual([...r.of('sip:bob@x')], ['sip:mal@x', 'sip:mon@x'])
    assert.deepEqual([...r.of('sip:carol@x')], [])
    r.forget('sip:bob@x', 'sip:mon@x')
    r.forget('sip:nobody@x', 'sip:mon@x')
    assert.deepEqual([...r.of('sip:bob@x')], ['sip:mal@x'])
    assert.deepEqual(changes, ['sip:bob@x', 'sip:bob@x'])
    await new Promise(resolve => setTimeout(resolve, 400))
    assert.deepEqual([...r.of('sip:bob@x')], [])
    assert.deepEqual(changes, ['sip:bob@x', 'sip:bob@x', 'sip:bob@x'], 'told once the record expired')
  } finally { r.stop() }
})

test('bounded: at most maxPerPresentity watchers (the oldest goes) and maxPresentities presentities', () => {
  const r = new RefusedWatchers(() => {}, { keepMs: 60_000, maxPerPresentity: 3, maxPresentities: 2 })
  try {
    for (let i = 0; i < 10_000; i++) r.note('sip:bob@x', `sip:w${i}@x`)
    assert.deepEqual([...r.of('sip:bob@x')], ['sip:w9997@x', 'sip:w9998@x', 'sip:w9999@x'])
    r.note('sip:a@x', 'sip:w@x')
    r.note('sip:b@x', 'sip:w@x')
    assert.deepEqual([...r.of('sip:bob@x')], [], 'the first presentity made room')
    assert.deepEqual([...r.of('sip:b@x')], ['sip:w@x'])
  } finally { r.stop() }
})
