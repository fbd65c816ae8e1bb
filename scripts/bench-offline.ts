// Offline store benchmark: N MESSAGEs stored for one user in LevelDB (each store() awaited, as the
// gateway does before answering 202), the store reopened (a node restart), then the whole backlog
// delivered through deliverBacklog with a sender that answers 2xx at once (each removal writes a
// tombstone and deletes the message). Uses node/'s LevelDB-backed DurableStore. Bounded: fixed
// counts, and it gives up after --max-seconds.
//
// Then end to end through the gateway (issue 5): two in-process gateways (memory registry and
// channel, real TCP sockets), node A on LevelDB. A UA sends --e2e-count MESSAGEs over TCP to a
// known user who is offline (--window in flight), each answered 202 once durable on A; then the
// user REGISTERs over TCP on node B (--where remote, default) or on A (--where local), and the
// deliveries are counted at her UA: A relays its backlog one by one over the mesh to B, each
// removed after her 200. Reports stored/s via SIP and delivered/s after the REGISTER.
//   node scripts/bench-offline.ts [--count 10000] [--body 120] [--max-seconds 120]
//        [--e2e-count 10000] [--window 64] [--where remote|local|both]
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { openDatastore, DatastoreDurableStore } from '../node/persistence.ts'
import { OfflineStore, messageIdOf } from '../sip-gateway/offline/index.ts'
import type { Logger } from '../sip-gateway/ports.ts'
import { Gateway } from '../sip-gateway/gateway.ts'
import { MemoryChannelHub } from '../sip-gateway/memory-channel.ts'
import { MemoryStore } from '../sip-gateway/memory-store.ts'
import { MemoryMesh, MemoryRegistry } from '../dht/memory-registry.ts'
import { TestUa } from '../test/sip-gateway/gateway/fixtures/ua.ts'

const { values } = parseArgs({ options: {
  count: { type: 'string', default: '10000' },
  body: { type: 'string', default: '120' },
  'max-seconds': { type: 'string', default: '120' },
  'e2e-count': { type: 'string', default: '10000' },
  window: { type: 'string', default: '64' },
  where: { type: 'string', default: 'both' }
} })
const e2eCount = Math.max(0, Math.min(100_000, Number(values['e2e-count'])))
const windowSize = Math.max(1, Math.min(1000, Number(values.window)))
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
  const e2e: Record<string, unknown> = {}
  for (const where of ['remote', 'local'] as const) {
    if (e2eCount === 0 || (values.where !== 'both' && values.where !== where)) continue
    const r = await endToEnd(where)
    e2e[where] = r
    console.log(`end to end through the gateway (${where === 'remote' ? 'stored on A, she registers on B: relayed over the mesh' : 'stored on A, she registers on A'}), ${e2eCount} MESSAGEs over TCP, window ${windowSize}`)
    console.log(`  stored     ${r.accepted} answered 202 in ${r.storeMs} ms → ${r.storedPerSec} stored/s via SIP (others: ${JSON.stringify(r.otherAnswers)})`)
    console.log(`  delivered  ${r.delivered} at her UA in ${r.deliverMs} ms after the REGISTER's 200 → ${r.deliveredPerSec} delivered/s; in order: ${String(r.inOrder)}, duplicates ${r.duplicates}, left on A ${r.left}`)
  }
  console.log(JSON.stringify({ bench: 'offline', count, bodyBytes, stored, storedPerSec: Math.round(storedPerSec), restartIndexMs: Math.round(loadMs), delivered: result.delivered, deliveredPerSec: Math.round(deliveredPerSec), remaining: result.remaining, outOfOrder, e2e }))
} finally {
  await rm(dir, { recursive: true, force: true })
}

async function endToEnd (where: 'remote' | 'local'): Promise<{ accepted: number, otherAnswers: Record<number, number>, storeMs: number, storedPerSec: number, delivered: number, deliverMs: number, deliveredPerSec: number, inOrder: boolean, duplicates: number, left: number }> {
  const e2eDir = await mkdtemp(join(tmpdir(), 'sipmesh-bench-offline-e2e-'))
  const mesh = new MemoryMesh()
  const hub = new MemoryChannelHub()
  const ds = await openDatastore(e2eDir)
  const gateways: Gateway[] = []
  const registries: MemoryRegistry[] = []
  const uas: TestUa[] = []
  try {
    for (const id of ['node-a', 'node-b']) {
      const registry = new MemoryRegistry(mesh, { nodeId: id })
      const store = id === 'node-a' ? new DatastoreDurableStore(ds) : new MemoryStore()
      const gw = new Gateway({ registry, peerChannel: hub.channel(id), store, logger: quiet }, {
        domains: ['example.com'],
        sip: { host: '127.0.0.1', port: 0 },
        offline: {
          store: { maxMessagesPerUser: e2eCount + 1, maxBytesPerUser: 2 ** 31, maxMessages: e2eCount + 1, maxBytes: 2 ** 31 },
          known: { credentials: ['sip:olga@example.com'] }
        }
      })
      await gw.start()
      registry.sip = `127.0.0.1:${gw.addresses.udp.port}`
      gateways.push(gw)
      registries.push(registry)
    }
    const [a, b] = gateways
    const sender = await TestUa.open('sam', a.addresses.tcp, 'TCP')
    uas.push(sender)
    const answers: Record<number, number> = {}
    let accepted = 0
    const text = 'y'.repeat(bodyBytes)
    let t0 = performance.now()
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < e2eCount && Date.now() < deadline) {
        const i = next++
        const r = await sender.request({ uri: 'sip:olga@example.com', body: `${i} ${text}`, callId: `bench-${i}` }, 10_000)
        const status = r?.status ?? 0
        if (status === 202) accepted++
        else answers[status] = (answers[status] ?? 0) + 1
      }
    }
    await Promise.all(Array.from({ length: windowSize }, worker))
    const storeMs = performance.now() - t0

    const olga = await TestUa.open('olga', (where === 'remote' ? b : a).addresses.tcp, 'TCP')
    uas.push(olga)
    t0 = performance.now()
    const reg = await olga.register(3600)
    if (reg?.status !== 200) throw new Error(`REGISTER answered ${reg?.status}`)
    t0 = performance.now()
    while (olga.received.length < accepted && Date.now() < deadline) {
      await olga.waitFor(() => olga.received.length >= accepted ? true : undefined, 1000)
    }
    const deliverMs = performance.now() - t0
    const seen = olga.received.filter(m => m.method === 'MESSAGE').map(m => Number(Buffer.from(m.body).toString().split(' ')[0]))
    let inOrder = true
    for (let i = 1; i < seen.length; i++) if (seen[i] < seen[i - 1]) inOrder = false
    const duplicates = seen.length - new Set(seen).size
    await new Promise(resolve => setTimeout(resolve, 200))
    const left = a.im.offline.count('sip:olga@example.com')
    return {
      accepted,
      otherAnswers: answers,
      storeMs: Math.round(storeMs),
      storedPerSec: Math.round(accepted / (storeMs / 1000)),
      delivered: new Set(seen).size,
      deliverMs: Math.round(deliverMs),
      deliveredPerSec: Math.round(new Set(seen).size / (deliverMs / 1000)),
      inOrder,
      duplicates,
      left
    }
  } finally {
    for (const u of uas) await u.close()
    for (const g of gateways) await g.stop()
    for (const r of registries) await r.stop()
    await ds.close()
    await rm(e2eDir, { recursive: true, force: true })
  }
}
