// What the mesh leg of a cross-node relay costs per message, in one process: two libp2p nodes
// over TCP on loopback (Noise, yamux, as node/libp2p.ts sets them up), each with the gateway's
// Libp2pPeerChannel; node A sends SIP-sized frames to B at a paced rate (a few per timer tick, as
// datagrams arrive at a relay), B answers each with a frame of its own (the 200), as a relayed
// MESSAGE crosses the mesh twice. Rounds alternate between three set-ups: `plain` (libp2p as it
// comes), `coalesced` (TCP writes coalesced per callback, node/tcp-writes.ts, and the TCP
// connection's reads handed to Noise without its read buffer and event, node/direct-messages.ts)
// and `lazy` (that, the SIP stream's reads the same way, and
// yamux window updates once half the window is used, node/yamux-window.ts: the node's set-up but for
// Noise's length reader, node/noise-length.ts, which bench-relay-path --mode cross includes).
//
// Reported per round trip (one request and its answer): CPU µs of the process (both nodes), TCP
// write and read system calls (`syscw`/`syscr` of /proc/self/io, which do not move with load),
// bytes allocated on the V8 heap, and the round trip's p50/p99 in this process (both nodes share
// one event loop here: the latency is this process's, not a relay's).
//
//   node scripts/bench-mesh-leg.ts [--rate 4000] [--seconds 5] [--rounds 3] [--size 480]
//   BENCH_HEAP_PROF=/tmp/m.heapprofile node scripts/bench-mesh-leg.ts --rounds 1 && node scripts/heap-profile-top.ts /tmp/m.heapprofile --owner
import { readFileSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector'
import { parseArgs } from 'node:util'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import type { Libp2p } from '@libp2p/interface'
import { Libp2pPeerChannel } from '../node/peer-channel.ts'
import { coalesceTcpWrites } from '../node/tcp-writes.ts'
import type { Logger } from '../sip-gateway/ports.ts'
import { allocated } from './lib/heap-allocated.ts'

const { values } = parseArgs({ options: { rate: { type: 'string', default: '4000' }, seconds: { type: 'string', default: '5' }, rounds: { type: 'string', default: '3' }, size: { type: 'string', default: '480' } } })
const RATE = Math.min(Math.max(Number(values.rate), 100), 200_000)
const SECONDS = Math.min(Math.max(Number(values.seconds), 1), 60)
const ROUNDS = Math.min(Math.max(Number(values.rounds), 1), 10)
const SIZE = Math.min(Math.max(Number(values.size), 16), 60_000)

const quiet: Logger = { debug () {}, info () {}, warn () {}, error (msg, f) { console.error(msg, f) }, child () { return quiet } }

async function node (coalesce: boolean): Promise<Libp2p> {
  return await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [coalesce ? coalesceTcpWrites(tcp()) : tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()]
  })
}

function io (): { syscr: number, syscw: number } {
  const text = readFileSync('/proc/self/io', 'utf8')
  const get = (k: string): number => Number(new RegExp(`^${k}: (\\d+)`, 'm').exec(text)?.[1] ?? 0)
  return { syscr: get('syscr'), syscw: get('syscw') }
}

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? Number.NaN
}

// BENCH_HEAP_PROF=<file>: a sampling allocation profile of the last coalesced round (objects collected
// included), for scripts/heap-profile-top.ts
const HEAP_PROF = process.env.BENCH_HEAP_PROF
const session = HEAP_PROF === undefined ? undefined : new Session()
session?.connect()
const post = async (method: string, params?: object): Promise<{ profile: unknown }> => await new Promise((resolve, reject) => { session!.post(method, params, (err, r) => { if (err != null) reject(err); else resolve(r as { profile: unknown }) }) })

interface Round { variant: string, trips: number, cpuUs: number, sysUs: number, syscw: number, syscr: number, kb: number, p50: number, p99: number }

type Variant = 'plain' | 'coalesced' | 'lazy'
/** plain: libp2p as it comes; coalesced: TCP writes per callback (and TCP reads direct); lazy: that, yamux window updates at half the window and the SIP stream's reads direct */
const VARIANTS: Variant[] = ['plain', 'coalesced', 'lazy']

async function round (variant: Variant): Promise<Round> {
  const coalesce = variant !== 'plain'
  const lazy = variant === 'lazy'
  const a = await node(coalesce)
  const b = await node(coalesce)
  const ca = new Libp2pPeerChannel({ libp2p: a, logger: quiet }, { lazyWindowUpdates: lazy, directReads: lazy })
  const cb = new Libp2pPeerChannel({ libp2p: b, logger: quiet }, { lazyWindowUpdates: lazy, directReads: lazy })
  await ca.start()
  await cb.start()
  await a.peerStore.merge(b.peerId, { multiaddrs: b.getMultiaddrs() })
  const to = b.peerId.toString()
  const request = new Uint8Array(SIZE).fill(0x41)
  const answer = new Uint8Array(Math.round(SIZE * 0.8)).fill(0x42)
  cb.onMessage((from, data) => { void cb.send(from, answer.subarray(0, data[0] === 0x41 ? answer.length : 1)) })
  const sentAt: number[] = []
  let answered = 0
  const rtts: number[] = []
  ca.onMessage(() => { rtts.push(performance.now() - sentAt[answered++]) })
  // warm-up: the stream open, the JIT
  for (let i = 0; i < 2000; i++) { sentAt.push(performance.now()); void ca.send(to, request) }
  while (answered < sentAt.length) await new Promise(resolve => setTimeout(resolve, 5))
  rtts.length = 0
  const first = answered
  const total = RATE * SECONDS
  if (session !== undefined && lazy) await post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true })
  const io0 = io()
  const cpu0 = process.cpuUsage()
  const started = performance.now()
  let sent = 0
  // paced: each 1 ms tick sends what the rate owes by now
  const { bytes } = await allocated(async () => {
    await new Promise<void>((resolve) => {
      const tick = (): void => {
        const due = Math.min(total, Math.floor((performance.now() - started) * RATE / 1000))
        while (sent < due) { sentAt.push(performance.now()); void ca.send(to, request); sent++ }
        if (sent < total) setTimeout(tick, 1)
        else resolve()
      }
      tick()
    })
    while (answered < first + total) await new Promise(resolve => setTimeout(resolve, 2))
  })
  const cpu = process.cpuUsage(cpu0)
  const io1 = io()
  if (session !== undefined && lazy) writeFileSync(HEAP_PROF!, JSON.stringify((await post('HeapProfiler.stopSampling')).profile))
  await ca.stop()
  await cb.stop()
  await a.stop()
  await b.stop()
  return {
    variant,
    trips: total,
    cpuUs: Number(((cpu.user + cpu.system) / total).toFixed(1)),
    sysUs: Number((cpu.system / total).toFixed(1)),
    syscw: Number(((io1.syscw - io0.syscw) / total).toFixed(2)),
    syscr: Number(((io1.syscr - io0.syscr) / total).toFixed(2)),
    kb: Number((bytes / total / 1024).toFixed(2)),
    p50: Number(pct(rtts, 0.5).toFixed(2)),
    p99: Number(pct(rtts, 0.99).toFixed(2))
  }
}

const results: Round[] = []
for (let r = 0; r < ROUNDS; r++) {
  // each round starts with the next variant
  for (const variant of VARIANTS.map((_v, i) => VARIANTS[(i + r) % VARIANTS.length])) {
    const x = await round(variant)
    results.push(x)
    console.log(`${x.variant.padEnd(9)} ${x.trips} round trips at ${RATE}/s: CPU ${x.cpuUs} µs (system ${x.sysUs}), TCP writes ${x.syscw}, reads ${x.syscr}, ~${x.kb} KB collected per round trip; RTT p50 ${x.p50} ms, p99 ${x.p99} ms`)
  }
}
console.log(JSON.stringify({ bench: 'mesh-leg', rate: RATE, seconds: SECONDS, size: SIZE, results }))
