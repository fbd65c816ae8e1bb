// Offline store benchmark: N MESSAGEs stored for one user in LevelDB (each store() awaited, as the
// gateway does before answering 202), the store reopened (a node restart), then the whole backlog
// delivered through deliverBacklog with a sender that answers 2xx at once (each removal writes a
// tombstone and deletes the message). Uses node/'s LevelDB-backed DurableStore. Bounded: fixed
// counts, and it gives up after --max-seconds.
//   node scripts/bench-offline.ts [--count 10000] [--body 120] [--max-seconds 120]
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { openDatastore, DatastoreDurableStore } from '../node/persistence.ts'
import { OfflineStore, messageIdOf } from '../sip-gateway/offline/index.ts'
import type { Logger } from '../sip-gateway/ports.ts'

const { values } = parseArgs({ options: {
  count: { type: 'string', default: '10000' },
  body: { type: 'string', default: '120' },
  'max-seconds': { type: 'string', default: '120' }
} })
const count = Math.max(1, Math.min(200_000, Number(values.count)))
const bodyBytes = Math.max(0, Math.min(60_000, Number(values.body)))
const deadline = Date.now() + Math.max(1, Number(values['max-seconds'])) * 1000

const quiet: Logger = { debug () {}, info () {}, warn () {}, error () {}, child () { return quiet } }
const AOR = 'sip:alice@example.com'
const body = new TextEncoder().encode('x'.repeat(bodyBytes))
const init = { maxMessagesPerUser: count + 1, maxBytesPerUser: 2 ** 31, maxMessages: count + 1, maxBytes: 2 ** 31 }

const dir = await mkdtemp(join(tmpdir(), 'sipmesh-bench-offline-'))
try {
  let ds = await openDatastore(dir)
  let store = new OfflineStore({ store: new DatastoreDurableStore(ds), logger: quiet }, init)
  await store.start()

  let t0 = performance.now()
  let stored = 0
  for (let i = 0; i < count && Date.now() < deadline; i++) {
    const r = await store.store(AOR, {
      id: messageIdOf(`call-${i}@bench`, 1, `tag${i}`),
      from: `"Bob" <sip:bob@example.com>;tag=tag${i}`,
      to: `<${AOR}>`,
      date: new Date().toUTCString(),
      contentType: 'text/plain',
      body,
      headers: [['P-Asserted-Identity', '<sip:bob@example.com>']]
    })
    if (r.stored) stored++
  }
  const storeMs = performance.now() - t0

  // restart: close LevelDB, reopen, index the backlog
  await store.stop()
  await ds.close()
  t0 = performance.now()
  ds = await openDatastore(dir)
  store = new OfflineStore({ store: new DatastoreDurableStore(ds), logger: quiet }, init)
  await store.start()
  const loadMs = performance.now() - t0
  const pendingAfterRestart = store.count(AOR)

  t0 = performance.now()
  let expected = 0
  let outOfOrder = 0
  let previous = ''
  const ac = new AbortController()
  const guard = setTimeout(() => { ac.abort() }, Math.max(0, deadline - Date.now()))
  const result = await store.deliverBacklog(AOR, async (rec) => {
    const key = `${rec.receivedAt}`
    if (key < previous) outOfOrder++
    previous = key
    expected++
    return true
  }, { signal: ac.signal })
  clearTimeout(guard)
  const deliverMs = performance.now() - t0
  await store.stop()
  await ds.close()

  const storedPerSec = stored / (storeMs / 1000)
  const deliveredPerSec = result.delivered / (deliverMs / 1000)
  console.log(`offline store on LevelDB, one user, body ${bodyBytes} bytes`)
  console.log(`  stored     ${stored} in ${storeMs.toFixed(0)} ms  → ${storedPerSec.toFixed(0)} stored/s (each awaited until durable)`)
  console.log(`  restart    indexed ${pendingAfterRestart} pending in ${loadMs.toFixed(0)} ms`)
  console.log(`  delivered  ${result.delivered} in ${deliverMs.toFixed(0)} ms  → ${deliveredPerSec.toFixed(0)} delivered/s (2xx at once; tombstone + delete each)`)
  console.log(`  remaining ${result.remaining}, out of order ${outOfOrder}, send calls ${expected}`)
  console.log(JSON.stringify({ bench: 'offline', count, bodyBytes, stored, storedPerSec: Math.round(storedPerSec), restartIndexMs: Math.round(loadMs), delivered: result.delivered, deliveredPerSec: Math.round(deliveredPerSec), remaining: result.remaining, outOfOrder }))
} finally {
  await rm(dir, { recursive: true, force: true })
}
