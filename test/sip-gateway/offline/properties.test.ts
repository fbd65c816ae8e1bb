// Model-based properties: any sequence (and any concurrent batch) of store / remove / deliver /
// restart keeps each user's backlog in arrival order, and never stores or sends a message twice.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { OfflineStore } from '../../../sip-gateway/offline/index.ts'
import { MapStore, RecordingLogger, message } from './fixtures.ts'

const USERS = ['sip:a@example.com', 'sip:b@example.com'] as const

type Op =
  | { t: 'store', u: number, id: number }
  | { t: 'remove', u: number, id: number }
  | { t: 'deliver', u: number, ok: number }

type Cmd = Op | { t: 'batch', ops: Op[] } | { t: 'restart' }

const user = fc.integer({ min: 0, max: USERS.length - 1 })
const id = fc.integer({ min: 0, max: 12 })
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ t: fc.constant('store' as const), u: user, id }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('remove' as const), u: user, id }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('deliver' as const), u: user, ok: fc.integer({ min: 0, max: 4 }) }) }
)
const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 6, arbitrary: op },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('batch' as const), ops: fc.array(op, { minLength: 2, maxLength: 8 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('restart' as const) }) }
)

interface Model { pending: string[][], done: Array<Set<string>> }

test('store / remove / deliver / restart in any order and interleaving: order kept, nothing twice', async () => {
  await fc.assert(fc.asyncProperty(fc.array(cmd, { maxLength: 30 }), fc.integer({ min: 1, max: 2 ** 30 }), async (cmds, seed) => {
    const db = new MapStore()
    let rnd = seed
    // a few microtask hops per write, pseudo-random: real interleavings, reproducible from the seed
    db.beforePut = async () => {
      rnd = (rnd * 1103515245 + 12345) % 2 ** 31
      for (let i = rnd % 4; i > 0; i--) await Promise.resolve()
    }
    let store = new OfflineStore({ store: db, logger: new RecordingLogger() })
    await store.start()
    const m: Model = { pending: USERS.map(() => []), done: USERS.map(() => new Set()) }
    const sent: string[][] = USERS.map(() => [])
    const okSent: string[][] = USERS.map(() => [])

    // stores and removes, applied to the model in call order (the store serializes per user in call order)
    const model = (o: Op): void => {
      const key = `m-${o.t === 'deliver' ? '' : o.id}`
      const p = m.pending[o.u]
      if (o.t === 'store') {
        if (!p.includes(key) && !m.done[o.u].has(key)) p.push(key)
      } else if (o.t === 'remove') {
        const i = p.indexOf(key)
        if (i >= 0) { p.splice(i, 1); m.done[o.u].add(key) }
      }
    }
    const run = async (o: Op): Promise<void> => {
      const aor = USERS[o.u]
      if (o.t === 'store') await store.store(aor, message(o.id))
      else if (o.t === 'remove') await store.remove(aor, `m-${o.id}`)
      else {
        let left = o.ok
        await store.deliverBacklog(aor, async (r) => {
          sent[o.u].push(r.id)
          const ok = left-- > 0
          if (ok) okSent[o.u].push(r.id)
          return ok
        })
      }
    }
    try {
      for (const c of cmds) {
        if (c.t === 'restart') {
          await store.stop()
          store = new OfflineStore({ store: db, logger: new RecordingLogger() })
          await store.start()
        } else if (c.t === 'batch') {
          // deliveries race with the stores and removes of the batch: whatever got a 2xx is gone
          const before = okSent.map(x => x.length)
          await Promise.all(c.ops.map(o => run(o)))
          for (const o of c.ops) model(o)
          for (let u = 0; u < USERS.length; u++) {
            const ok = new Set(okSent[u].slice(before[u]))
            for (const x of ok) m.done[u].add(x)
            m.pending[u] = m.pending[u].filter(x => !ok.has(x))
          }
        } else if (c.t === 'deliver') {
          const before = [...m.pending[c.u]]
          const n = sent[c.u].length
          await run(c)
          // in order from the head: `ok` successes, then the one failure that stops it
          assert.deepEqual(sent[c.u].slice(n), before.slice(0, Math.min(before.length, c.ok + 1)))
          const okCount = Math.min(before.length, c.ok)
          for (const x of before.slice(0, okCount)) m.done[c.u].add(x)
          m.pending[c.u] = before.slice(okCount)
        } else {
          await run(c)
          model(c)
        }
        for (let u = 0; u < USERS.length; u++) {
          const got: string[] = []
          for await (const r of store.pending(USERS[u])) got.push(r.id)
          assert.deepEqual(got, m.pending[u], `user ${u}`)
          assert.equal(store.count(USERS[u]), m.pending[u].length)
          // a message that got a 2xx is never sent again
          assert.equal(new Set(okSent[u]).size, okSent[u].length, `user ${u} got a message twice`)
        }
      }
    } finally {
      await store.stop()
    }
  }), { numRuns: 150 })
})
