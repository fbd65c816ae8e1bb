/**
 * A preload (`node --import`) for the benchmarks' node processes: where a relayed MESSAGE spends
 * its time inside a node, and what the event loop and the garbage collector did meanwhile.
 *
 * It records, per Call-ID, the moments a SIP message crosses the node's edges: a datagram received
 * and sent (node:dgram), a message handed to the peer channel and one delivered from it (the
 * channel's `sendNow`/`deliver`, i.e. before the per-turn batch, yamux, Noise and TCP, and after
 * them on the other side). Timestamps are `performance.timeOrigin + performance.now()` (ms, µs
 * resolution), comparable between processes of one machine. Beside them: the event loop's delay
 * (`monitorEventLoopDelay`, 1 ms resolution) and every GC pause (PerformanceObserver 'gc').
 *
 * At exit it writes `<RELAY_TRACE_DIR>/trace-<pid>.json`. Only for benchmarks: it wraps library
 * prototypes, and a node that runs without it pays nothing.
 */
import dgram from 'node:dgram'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { monitorEventLoopDelay, performance, PerformanceObserver } from 'node:perf_hooks'
import { Session } from 'node:inspector'
import { Libp2pPeerChannel } from '../../node/peer-channel.ts'

const dir = process.env.RELAY_TRACE_DIR
/** record one Call-ID in this many (all the edges of a sampled one) */
const EVERY = Math.max(1, Number(process.env.RELAY_TRACE_EVERY ?? '1'))
/** bounded: at most this many messages' events are kept */
const MAX_EVENTS = 400_000

type Edge = 'udp-in' | 'udp-out' | 'mesh-out' | 'mesh-in'
/** [edge, time ms, Call-ID, first line's first word (method or SIP/2.0), status or 0] */
const events: Array<[Edge, number, string, string, number]> = []
const gc: Array<[number, number, number]> = [] // [start ms (absolute), duration ms, kind]
const now = (): number => performance.timeOrigin + performance.now()

const CALL_ID = Buffer.from('\r\nCall-ID:')
const CALL_ID_SHORT = Buffer.from('\r\ni:')

function record (edge: Edge, data: Uint8Array | string): void {
  if (events.length >= MAX_EVENTS) return
  const t = now()
  const buf = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  let at = buf.indexOf(CALL_ID)
  let skip = CALL_ID.length
  if (at < 0) { at = buf.indexOf(CALL_ID_SHORT); skip = CALL_ID_SHORT.length }
  if (at < 0) return
  const end = buf.indexOf(13, at + skip)
  if (end < 0) return
  const callId = buf.toString('latin1', at + skip, end).trim()
  if (EVERY > 1 && hash(callId) % EVERY !== 0) return
  const sp = buf.indexOf(32)
  const first = buf.toString('latin1', 0, Math.min(sp, 16))
  const status = first === 'SIP/2.0' ? Number(buf.toString('latin1', sp + 1, sp + 4)) : 0
  events.push([edge, t, callId, first, status])
}

function hash (s: string): number {
  let h = 0
  for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0
  return h
}

if (dir !== undefined) {
  const proto = dgram.Socket.prototype as unknown as { send: (...a: unknown[]) => void, emit: (ev: string | symbol, ...a: unknown[]) => boolean }
  const send = proto.send
  proto.send = function (this: unknown, ...a: unknown[]) {
    if (a[0] instanceof Uint8Array || typeof a[0] === 'string') record('udp-out', a[0])
    return send.apply(this, a)
  }
  const emit = proto.emit
  proto.emit = function (this: unknown, ev: string | symbol, ...a: unknown[]) {
    if (ev === 'message' && a[0] instanceof Uint8Array) record('udp-in', a[0])
    return emit.call(this, ev, ...a)
  }
  // every message handed to the channel goes through sendNow first (send tries it before queueing)
  const channel = Libp2pPeerChannel.prototype as unknown as { sendNow: (node: string, data: Uint8Array) => boolean, deliver: (node: string, frame: Uint8Array) => void }
  const chSend = channel.sendNow
  channel.sendNow = function (this: unknown, node: string, data: Uint8Array) {
    record('mesh-out', data)
    return chSend.call(this, node, data)
  }
  const deliver = channel.deliver
  channel.deliver = function (this: unknown, node: string, frame: Uint8Array) {
    record('mesh-in', frame)
    deliver.call(this, node, frame)
  }

  const loop = monitorEventLoopDelay({ resolution: 1 })
  loop.enable()
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gc.push([performance.timeOrigin + e.startTime, e.duration, (e as unknown as { detail?: { kind?: number } }).detail?.kind ?? 0])
  })
  obs.observe({ entryTypes: ['gc'] })
  /**
   * per second: event-loop delay (max and p99, ms), so a stall can be placed in time, and how long
   * the main thread waited in the kernel's run queue for a CPU (ms, from /proc/<pid>/schedstat on
   * Linux; -1 elsewhere): the share of the delay that is the machine's load, not the node's work
   */
  const perSecond: Array<[number, number, number, number]> = []
  const runQueueNs = (): number => {
    try { return Number(readFileSync(`/proc/${process.pid}/task/${process.pid}/schedstat`, 'utf8').split(' ')[1]) } catch { return Number.NaN }
  }
  let waited = runQueueNs()
  const sampler = setInterval(() => {
    const w = runQueueNs()
    perSecond.push([now(), loop.max / 1e6, loop.percentile(99) / 1e6, Number.isNaN(w) ? -1 : (w - waited) / 1e6])
    waited = w
    loop.reset()
  }, 1000)
  sampler.unref()
  // RELAY_TRACE_ALLOC=1: where the node allocates, collected objects included (V8's sampling heap
  // profiler, one sample per 32 KiB), into alloc-<pid>.heapprofile (read it with
  // scripts/heap-profile-top.ts)
  let session: Session | undefined
  // RELAY_TRACE_ALLOC=survivors: only the objects that lived through a scavenge (what the young
  // generation copies and promotes, and what makes a scavenge long)
  if (process.env.RELAY_TRACE_ALLOC === '1' || process.env.RELAY_TRACE_ALLOC === 'survivors') {
    session = new Session()
    session.connect()
    session.post('HeapProfiler.startSampling', { samplingInterval: 32768, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: process.env.RELAY_TRACE_ALLOC === '1' })
  }
  const stopping = (): void => {
    if (session === undefined) return
    const s = session
    session = undefined
    s.post('HeapProfiler.stopSampling', (err, res) => {
      if (err === null) writeFileSync(join(dir, `alloc-${process.pid}.heapprofile`), JSON.stringify(res.profile))
    })
  }
  // the benchmark stops a node by closing its stdin: the profile is taken then, while the
  // inspector still answers (it cannot in an 'exit' handler)
  process.stdin.once('end', stopping)
  process.on('exit', () => {
    writeFileSync(join(dir, `trace-${process.pid}.json`), JSON.stringify({ pid: process.pid, events, gc, loop: perSecond }))
  })
}
