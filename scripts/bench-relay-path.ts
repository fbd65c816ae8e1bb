// The relay's own cost per MESSAGE, for before/after comparisons of hot-path changes: one gateway
// (in-memory registry) relaying locally over real UDP sockets on loopback, a UAC and a UAS in this
// same process (the UAS answers every MESSAGE 200 from a pre-built template), a window of MESSAGEs
// in flight. Reported: CPU µs per relayed MESSAGE of the whole process (user + system, the UAC and
// UAS included: constant between builds), bytes allocated on the V8 heap per MESSAGE (whole
// process, from v8.GCProfiler's heap sizes before and after each GC), young-generation GCs per
// 1,000 MESSAGEs (figures that load on the machine does not move), and the rate. Not a benchmark of the product: see
// bench-relay.ts for that.
//
//   node --min-semi-space-size=16 --max-semi-space-size=16 scripts/bench-relay-path.ts [--messages 40000] [--window 64] [--rounds 3]
//   (a fixed young generation: scavenges × 16 MB ≈ the bytes allocated)
import { createSocket, type Socket } from 'node:dgram'
import { PerformanceObserver, constants } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { GCProfiler, getHeapStatistics } from 'node:v8'
import { Gateway } from '../sip-gateway/gateway.ts'
import { MemoryStore } from '../sip-gateway/memory-store.ts'
import { MemoryChannelHub } from '../sip-gateway/memory-channel.ts'
import { MemoryMesh, MemoryRegistry } from '../dht/memory-registry.ts'
import type { Logger } from '../sip-gateway/ports.ts'

const { values } = parseArgs({ options: { messages: { type: 'string', default: '40000' }, window: { type: 'string', default: '64' }, rounds: { type: 'string', default: '3' } } })
const MESSAGES = Math.min(Math.max(Number(values.messages), 1000), 1_000_000)
const WINDOW = Math.min(Math.max(Number(values.window), 1), 1000)
const ROUNDS = Math.min(Math.max(Number(values.rounds), 1), 10)

const quiet: Logger = { debug () {}, info () {}, warn () {}, error (msg, f) { console.error(msg, f) }, child () { return quiet } }
const registry = new MemoryRegistry(new MemoryMesh(), { nodeId: 'node-a' })
const gateway = new Gateway({ registry, peerChannel: new MemoryChannelHub().channel('node-a'), store: new MemoryStore(), logger: quiet, announceSip: (hp) => { registry.sip = hp } }, {
  domains: ['example.com'], sip: { host: '127.0.0.1', port: 0 }, limits: { maxServerTransactions: 2_000_000 }
})
await gateway.start()
const relay = gateway.addresses.udp

async function bind (): Promise<Socket> {
  const s = createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 })
  await new Promise<void>(resolve => s.bind(0, '127.0.0.1', resolve))
  return s
}
const uas = await bind()
const uac = await bind()
const uasPort = uas.address().port
const uacPort = uac.address().port

// the UAS: 200 to every MESSAGE, its Via, From, To, Call-ID and CSeq copied
uas.on('message', (m) => {
  const text = m.toString('latin1')
  if (!text.startsWith('MESSAGE ')) return
  const head = text.slice(0, text.indexOf('\r\n\r\n'))
  const keep = head.split('\r\n').filter(l => /^(via|from|call-id|cseq):/i.test(l))
  const to = head.split('\r\n').find(l => /^to:/i.test(l)) ?? ''
  uas.send(`SIP/2.0 200 OK\r\n${keep.join('\r\n')}\r\n${to};tag=uas\r\nContent-Length: 0\r\n\r\n`, relay.port, '127.0.0.1') // the relay's Via: its own port
})

// register the UAS as bob
await new Promise<void>((resolve, reject) => {
  const t = setTimeout(() => reject(new Error('no answer to REGISTER')), 5000)
  uac.once('message', (m) => {
    clearTimeout(t)
    if (m.toString().startsWith('SIP/2.0 200')) resolve()
    else reject(new Error(m.toString().slice(0, 80)))
  })
  uac.send([`REGISTER sip:example.com SIP/2.0`, `Via: SIP/2.0/UDP 127.0.0.1:${uacPort};branch=z9hG4bKreg1;rport`, 'Max-Forwards: 70',
    'From: <sip:bob@example.com>;tag=r1', 'To: <sip:bob@example.com>', 'Call-ID: reg-1', 'CSeq: 1 REGISTER',
    `Contact: <sip:bob@127.0.0.1:${uasPort}>`, 'Expires: 3600', 'Content-Length: 0', '', ''].join('\r\n'), relay.port, '127.0.0.1')
})

let scavenges = 0
let majors = 0
let gcMs = 0
const obs = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const kind = ((e as unknown as { detail?: { kind?: number } }).detail)?.kind
    if (kind === constants.NODE_PERFORMANCE_GC_MINOR) scavenges++
    else if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++
    gcMs += e.duration
  }
})
obs.observe({ entryTypes: ['gc'] })

let seq = 0
function message (n: number): string {
  const body = `hello ${n}`
  return [`MESSAGE sip:bob@example.com SIP/2.0`, `Via: SIP/2.0/UDP 127.0.0.1:${uacPort};branch=z9hG4bK-${n}-bench;rport`, `From: <sip:alice@example.com>;tag=a${n}`,
    'To: <sip:bob@example.com>', `Call-ID: ${n}-bench@127.0.0.1`, 'CSeq: 1 MESSAGE', 'Max-Forwards: 70', 'Content-Type: text/plain', `Content-Length: ${body.length}`, '', body].join('\r\n')
}

/** relay `count` MESSAGEs with `WINDOW` in flight; resolves with the 200s received */
async function round (count: number): Promise<number> {
  let sent = 0
  let ok = 0
  return await new Promise<number>((resolve) => {
    const t = setTimeout(() => { uac.off('message', on); resolve(ok) }, 120_000)
    const next = (): void => { if (sent < count) { sent++; uac.send(message(++seq), relay.port, '127.0.0.1') } }
    const on = (m: Buffer): void => {
      if (m[8] === 0x32 && m[9] === 0x30 && m[10] === 0x30) ok++ // 'SIP/2.0 200'
      if (ok === count) { clearTimeout(t); uac.off('message', on); resolve(ok); return }
      next()
    }
    uac.on('message', on)
    for (let i = 0; i < WINDOW; i++) next()
  })
}

await round(Math.min(5000, MESSAGES)) // warm-up (JIT)
// BENCH_HEAP_PROF=<file>: a sampling allocation profile of the rounds (objects collected included)
const heapProf = process.env.BENCH_HEAP_PROF
const session = heapProf === undefined ? undefined : new (await import('node:inspector')).Session()
const post = async (method: string, params?: object): Promise<{ profile: unknown }> => await new Promise((resolve, reject) => { session!.post(method, params, (err, r) => { if (err != null) reject(err); else resolve(r as { profile: unknown }) }) })
if (session !== undefined) {
  session.connect()
  await post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true })
}
/**
 * Bytes allocated on the V8 heap while `run` runs: what each GC found used less what the one
 * before left, plus the growth since the last GC (exact, unlike a sampling profile).
 */
async function allocated<T> (run: () => Promise<T>): Promise<{ bytes: number, result: T }> {
  const profiler = new GCProfiler()
  const used0 = getHeapStatistics().used_heap_size
  profiler.start()
  const result = await run()
  const used1 = getHeapStatistics().used_heap_size
  const { statistics } = profiler.stop()
  let bytes = 0
  let after = used0
  for (const gc of statistics) {
    bytes += gc.beforeGC.heapStatistics.usedHeapSize - after
    after = gc.afterGC.heapStatistics.usedHeapSize
  }
  return { bytes: bytes + used1 - after, result }
}
const figures: Array<{ cpuUs: number, scavengesPerK: number, rate: number, gcUs: number, majors: number, kbPerMsg: number }> = []
for (let r = 0; r < ROUNDS; r++) {
  const cpu0 = process.cpuUsage()
  const s0 = scavenges
  const m0 = majors
  const g0 = gcMs
  const t0 = performance.now()
  const { bytes, result: ok } = await allocated(async () => await round(MESSAGES))
  const ms = performance.now() - t0
  const cpu = process.cpuUsage(cpu0)
  await new Promise(resolve => setTimeout(resolve, 50)) // the observer's last entries
  // with --expose-gc: what the last second's messages keep alive (lingering transactions)
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc !== undefined) { gc(); console.log(`  heap after a full GC: ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(1)} MB (${gateway.stats.serverTransactions} server, ${gateway.stats.clientTransactions} client transactions live)`) }
  figures.push({ cpuUs: (cpu.user + cpu.system) / ok, scavengesPerK: (scavenges - s0) * 1000 / ok, rate: ok / ms * 1000, gcUs: (gcMs - g0) * 1000 / ok, majors: majors - m0, kbPerMsg: bytes / ok / 1000 })
  console.log(`round ${r + 1}: ${ok}/${MESSAGES} answered, ${(ok / ms * 1000).toFixed(0)}/s, CPU ${((cpu.user + cpu.system) / ok).toFixed(1)} µs/msg (user ${(cpu.user / ok).toFixed(1)}, system ${(cpu.system / ok).toFixed(1)}), ${(bytes / ok / 1000).toFixed(2)} KB allocated/msg, ${((scavenges - s0) * 1000 / ok).toFixed(2)} scavenges per 1,000, GC ${((gcMs - g0) * 1000 / ok).toFixed(1)} µs/msg, ${majors - m0} mark-compact`)
}
if (session !== undefined) {
  const { profile } = await post('HeapProfiler.stopSampling')
  ;(await import('node:fs')).writeFileSync(heapProf!, JSON.stringify(profile))
  session.disconnect()
}
const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
console.log(JSON.stringify({ bench: 'relay-path', messages: MESSAGES, window: WINDOW, cpuUsPerMsg: Number(med(figures.map(f => f.cpuUs)).toFixed(1)), kbAllocatedPerMsg: Number(med(figures.map(f => f.kbPerMsg)).toFixed(2)), scavengesPerK: Number(med(figures.map(f => f.scavengesPerK)).toFixed(2)), gcUsPerMsg: Number(med(figures.map(f => f.gcUs)).toFixed(1)), markCompacts: figures.reduce((a, f) => a + f.majors, 0), rate: Math.round(med(figures.map(f => f.rate))) }))
obs.disconnect()
uac.close()
uas.close()
await gateway.stop()
await registry.stop()
