// The relay's own cost per message, for before/after comparisons of hot-path changes: one gateway
// (in-memory registry and store) over real UDP sockets on loopback, with a UAC and a UAS in this
// same process, a window of requests in flight.
//
// --mode relay (the default): the gateway relays MESSAGEs locally from the UAC to the UAS (bob,
//   registered once), which answers each 200.
// --mode cross: the same MESSAGEs across two gateways joined by the node's peer channel over real
//   libp2p (TCP, Noise, yamux) in this process, the UAS registered on the second: what a cross-node
//   relay costs both nodes together (--mesh node: the mesh as node/libp2p.ts sets it up; --mesh
//   plain: libp2p as it comes, for before/after).
// --mode register: the UAC refreshes --users registrations round-robin (each user's own Call-ID,
//   the next CSeq; all registered once before the rounds): the registrar's refresh path. The
//   registry answers the refresh of an AoR it holds from what it holds, as the DHT registry does
//   (no write), so the figure is the gateway's: codec, transactions, registrar, its store.
// --mode publish: --users registered once, then each of --window lanes publishes the presence of
//   its next user (RFC 3903, as uac-publish-bench.xml does it): an initial PUBLISH (PIDF, basic
//   open, Expires 3600), a modify (SIP-If-Match: the SIP-ETag of the 200 before, basic closed),
//   a remove (SIP-If-Match, Expires 0), each waiting for the 200 before: a message is one PUBLISH,
//   answered by the presence agent (nobody watches): codec, transactions, proxy, agent, PIDF,
//   publications store.
//
// Reported: CPU µs per message of the whole process (user + system), bytes allocated on the V8
// heap per message (whole process, from v8.GCProfiler's heap sizes before and after each GC),
// young-generation GCs per 1,000 messages (figures that load on the machine does not move), and
// the rate. The UAC and UAS are the bench's own share: they build each request by writing a
// counter into a pre-built datagram and each answer by copying bytes (no strings, no dns lookup
// tick, no send callback), and a round without the gateway (the UAC sending straight to the UAS)
// measures what they allocate, shown apart (`benchKbPerMsg`) and taken off (`gatewayKbPerMsg`).
// Not a benchmark of the product: see bench-relay.ts and bench-register.ts for that.
//
//   node --min-semi-space-size=16 --max-semi-space-size=16 scripts/bench-relay-path.ts [--mode relay|cross|register|publish] [--mesh node|plain]
//        [--messages 40000] [--window 64] [--rounds 3] [--users 10000]
//   (a fixed young generation: scavenges × 16 MB ≈ the bytes allocated)
import { Buffer } from 'node:buffer'
import { createSocket, type Socket } from 'node:dgram'
import { PerformanceObserver, constants } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { Gateway } from '../sip-gateway/gateway.ts'
import { MemoryStore } from '../sip-gateway/memory-store.ts'
import { MemoryChannelHub } from '../sip-gateway/memory-channel.ts'
import { MemoryMesh, MemoryRegistry } from '../dht/memory-registry.ts'
import type { ClaimResult, LocalBinding, Logger, PeerChannel } from '../sip-gateway/ports.ts'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import type { Libp2p } from '@libp2p/interface'
import { Libp2pPeerChannel } from '../node/peer-channel.ts'
import { coalesceTcpWrites } from '../node/tcp-writes.ts'
import { noiseLengthsWithoutThrow } from '../node/noise-length.ts'
import { allocated } from './lib/heap-allocated.ts'

const { values } = parseArgs({ options: { mode: { type: 'string', default: 'relay' }, mesh: { type: 'string', default: 'node' }, messages: { type: 'string', default: '40000' }, window: { type: 'string', default: '64' }, rounds: { type: 'string', default: '3' }, users: { type: 'string', default: '10000' } } })
const MODE = values.mode === 'register' ? 'register' : values.mode === 'publish' ? 'publish' : values.mode === 'cross' ? 'cross' : 'relay'
/** --mode cross: the mesh between the two gateways as a node sets it up, or libp2p as it comes */
const MESH = values.mesh === 'plain' ? 'plain' : 'node'
const MESSAGES = Math.min(Math.max(Number(values.messages), 1000), 1_000_000)
const WINDOW = Math.min(Math.max(Number(values.window), 1), 1000)
const ROUNDS = Math.min(Math.max(Number(values.rounds), 1), 10)
const USERS = Math.min(Math.max(Number(values.users), WINDOW), 1_000_000)

const quiet: Logger = { debug () {}, info () {}, warn () {}, error (msg, f) { console.error(msg, f) }, child () { return quiet } }
const CLAIM_NOW = process.env.BENCH_CLAIM_NOW !== '0'
/** new claims by the in-memory registry; the refresh of a claim held answered from it at once */
class HeldClaims extends MemoryRegistry {
  readonly #held = new Map<string, ClaimResult>()
  override async claim (aor: string, binding: LocalBinding): Promise<ClaimResult> {
    const held = this.#held.get(aor)
    if (held !== undefined && held.route.expiresAt > Date.now()) return held
    const result = await super.claim(aor, binding)
    if (result.won) this.#held.set(aor, result)
    return result
  }

  /** as the DHT registry: the refresh of a claim held answered at once (BENCH_CLAIM_NOW=0: never) */
  claimNow (aor: string): ClaimResult | undefined {
    if (!CLAIM_NOW) return undefined
    const held = this.#held.get(aor)
    return held !== undefined && held.route.expiresAt > Date.now() ? held : undefined
  }
}
const limits = { maxServerTransactions: 2_000_000 }
/**
 * --mode cross: the UAS registered on a second gateway, the two joined by the node's peer channel
 * over two libp2p nodes in this process (TCP on loopback, Noise, yamux): --mesh node, as
 * node/libp2p.ts sets them up (TCP writes coalesced, lazy yamux window updates, Noise lengths read
 * without a throw, each layer's reads handed up without its read buffer and event); --mesh plain,
 * libp2p as it comes. The registry is the in-memory one, shared, keyed by the libp2p peer ids.
 */
async function meshNodes (): Promise<{ ids: [string, string], channels: [PeerChannel, PeerChannel], stop: () => Promise<void> }> {
  const nodes: Libp2p[] = []
  for (let i = 0; i < 2; i++) {
    nodes.push(await createLibp2p({
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [MESH === 'node' ? coalesceTcpWrites(tcp()) : tcp()],
      connectionEncrypters: [MESH === 'node' ? noiseLengthsWithoutThrow(noise()) : noise()],
      streamMuxers: [yamux()]
    }))
  }
  await nodes[0].peerStore.merge(nodes[1].peerId, { multiaddrs: nodes[1].getMultiaddrs() })
  await nodes[1].peerStore.merge(nodes[0].peerId, { multiaddrs: nodes[0].getMultiaddrs() })
  const channels = nodes.map(n => new Libp2pPeerChannel({ libp2p: n, logger: quiet }, { lazyWindowUpdates: MESH === 'node', directReads: MESH === 'node' }))
  for (const c of channels) await c.start()
  return {
    ids: [nodes[0].peerId.toString(), nodes[1].peerId.toString()],
    channels: [channels[0], channels[1]],
    stop: async () => { for (const c of channels) await c.stop(); for (const n of nodes) await n.stop() }
  }
}
const mesh = MODE === 'cross' ? await meshNodes() : undefined
const memoryMesh = new MemoryMesh()
const registry = new HeldClaims(memoryMesh, { nodeId: mesh?.ids[0] ?? 'node-a' })
const gateway = new Gateway({ registry, peerChannel: mesh?.channels[0] ?? new MemoryChannelHub().channel('node-a'), store: new MemoryStore(), logger: quiet, announceSip: (hp) => { registry.sip = hp } }, {
  domains: ['example.com'], sip: { host: '127.0.0.1', port: 0 }, limits, registrar: { maxExpires: 3600 }
})
await gateway.start()
const relay = gateway.addresses.udp
/** the gateway the UAS registers with: the second one (--mode cross), else the one relaying */
let owner = relay
let stopOwner = async (): Promise<void> => {}
if (mesh !== undefined) {
  const registryB = new HeldClaims(memoryMesh, { nodeId: mesh.ids[1] })
  const b = new Gateway({ registry: registryB, peerChannel: mesh.channels[1], store: new MemoryStore(), logger: quiet, announceSip: (hp) => { registryB.sip = hp } }, {
    domains: ['example.com'], sip: { host: '127.0.0.1', port: 0 }, limits, registrar: { maxExpires: 3600 }
  })
  await b.start()
  owner = b.addresses.udp
  stopOwner = async () => { await b.stop(); await mesh.stop() }
}

/** dgram's address lookup answered at once for the IP address we send to (no tick per datagram) */
function lookup (host: string, _options: unknown, callback: (err: Error | null, address: string, family: number) => void): void {
  callback(null, host, 4)
}
async function bind (): Promise<Socket> {
  const s = createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20, lookup: lookup as never })
  await new Promise<void>(resolve => s.bind(0, '127.0.0.1', resolve))
  return s
}
const uas = await bind()
const uac = await bind()
const uasPort = uas.address().port
const uacPort = uac.address().port

/**
 * Datagrams made from a text with `#` runs as counter fields: each send takes the next buffer of
 * a ring (a datagram may still wait in the kernel's queue when the next one is made) and writes
 * the counter into the fields, zero-padded. No allocation per datagram.
 */
class Template {
  readonly #ring: Buffer[]
  readonly #fields: Array<[at: number, width: number]> = []
  #next = 0
  constructor (text: string) {
    for (const m of text.matchAll(/#+/g)) this.#fields.push([m.index, m[0].length])
    const bytes = Buffer.from(text, 'latin1')
    this.#ring = Array.from({ length: 4 * WINDOW + 16 }, () => Buffer.from(bytes))
  }

  /** the datagram with `values[f]` in field f (the fields in the order of the text) */
  makeWith (values: readonly number[]): Buffer {
    const b = this.#ring[this.#next]
    this.#next = (this.#next + 1) % this.#ring.length
    for (let f = 0; f < this.#fields.length; f++) {
      const [at, width] = this.#fields[f]
      let v = values[f]
      for (let i = at + width - 1; i >= at; i--) { b[i] = 48 + v % 10; v = Math.floor(v / 10) }
    }
    return b
  }

  /** the offset of `text`'s first occurrence in the template (for bytes written after `make`) */
  offsetOf (text: string, bytes = this.#ring[0]): number { return bytes.indexOf(text, 0, 'latin1') }

  /** the datagram for `n` (and `n2` in fields after the first `split` ones) */
  make (n: number, n2 = n, split = this.#fields.length): Buffer {
    const b = this.#ring[this.#next]
    this.#next = (this.#next + 1) % this.#ring.length
    for (let f = 0; f < this.#fields.length; f++) {
      const [at, width] = this.#fields[f]
      let v = f < split ? n : n2
      for (let i = at + width - 1; i >= at; i--) { b[i] = 48 + v % 10; v = Math.floor(v / 10) }
    }
    return b
  }
}

const N = '##########'
const messageTemplate = new Template([`MESSAGE sip:bob@example.com SIP/2.0`, `Via: SIP/2.0/UDP 127.0.0.1:${uacPort};branch=z9hG4bK-${N}-bench;rport`, `From: <sip:alice@example.com>;tag=a${N}`,
  'To: <sip:bob@example.com>', `Call-ID: ${N}-bench@127.0.0.1`, 'CSeq: 1 MESSAGE', 'Max-Forwards: 70', 'Content-Type: text/plain', 'Content-Length: 16', '', `hello ${N}`].join('\r\n'))
// a user's fields (From, To, Contact, Call-ID) first, then the request's (branch, CSeq)
const registerTemplate = new Template([`REGISTER sip:example.com SIP/2.0`, 'From: <sip:u########@example.com>;tag=r########', 'To: <sip:u########@example.com>', 'Call-ID: reg-########@bench',
  `Contact: <sip:u########@127.0.0.1:${uasPort}>`, `Via: SIP/2.0/UDP 127.0.0.1:${uacPort};branch=z9hG4bK-${N}-reg;rport`, `CSeq: ${N} REGISTER`, 'Max-Forwards: 70', 'Expires: 3600', 'Content-Length: 0', '', ''].join('\r\n'))

// --mode publish: one lane's publication in three requests; fields: the user (R-URI, From, To,
// entity), the lane and its cycle (Call-ID), the request's number (branch); `@` runs: the entity tag
const ETAG = '@'.repeat(22)
const publishHead = (user: string, cseq: number, expires: number): string[] => [`PUBLISH sip:${user}@example.com SIP/2.0`,
  `Via: SIP/2.0/UDP 127.0.0.1:${uacPort};branch=z9hG4bK-${N}-pub;rport`, `From: <sip:${user}@example.com>;tag=p1`, `To: <sip:${user}@example.com>`,
  'Call-ID: pub-#####-##########@bench', `CSeq: ${cseq} PUBLISH`, 'Max-Forwards: 70', 'Event: presence', `Expires: ${expires}`]
const pidf = (user: string, basic: string): string => `<?xml version="1.0" encoding="UTF-8"?>\r\n<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:${user}@example.com"><tuple id="t1"><status><basic>${basic}</basic></status></tuple></presence>\r\n`
const withBody = (head: string[], body: string): string => [...head, 'Content-Type: application/pidf+xml', `Content-Length: ${body.length}`, '', body].join('\r\n')
const U = 'u########'
const publishTemplates = [
  new Template(withBody(publishHead(U, 1, 3600), pidf(U, 'open'))),
  new Template(withBody([...publishHead(U, 2, 3600), `SIP-If-Match: ${ETAG}`], pidf(U, 'closed'))),
  new Template([...publishHead(U, 3, 0), `SIP-If-Match: ${ETAG}`, 'Content-Length: 0', '', ''].join('\r\n'))
]
const etagAt = publishTemplates.map(t => t.offsetOf(ETAG))
/** per lane: its step (0 initial, 1 modify, 2 remove), cycles done, the entity tag of its last 200 */
const lanes = Array.from({ length: WINDOW }, () => ({ step: 0, cycle: 0, etag: Buffer.alloc(22, 0x41) }))
const publishValues = [0, 0, 0, 0, 0, 0, 0, 0]

// the UAS: 200 to every request, its Via, From, Call-ID and CSeq lines copied, its To with a tag
// added (bytes copied into a ring of buffers: the bench's share stays small and constant)
const answers = Array.from({ length: 4 * WINDOW + 16 }, () => Buffer.alloc(4096))
let nextAnswer = 0
const STATUS = Buffer.from('SIP/2.0 200 OK\r\n')
const TAIL = Buffer.from('Content-Length: 0\r\n\r\n')
const TO_TAG = Buffer.from(';tag=uas')
/** lower-cased byte at i */
const lc = (m: Buffer, i: number): number => m[i] | 0x20
uas.on('message', (m: Buffer, rinfo) => {
  if (m[0] !== 0x4d && m[0] !== 0x52 && m[0] !== 0x50) return // MESSAGE, REGISTER, PUBLISH (the direct round)
  const out = answers[nextAnswer]
  nextAnswer = (nextAnswer + 1) % answers.length
  let o = STATUS.copy(out, 0)
  let i = m.indexOf(10) + 1
  while (i < m.length && m[i] !== 13 && m[i] !== 10) {
    let end = m.indexOf(10, i)
    if (end === -1) end = m.length - 1
    const c = lc(m, i)
    const keep = (c === 0x76 && lc(m, i + 1) === 0x69 && m[i + 3] === 0x3a) || // via:
      (c === 0x66 && lc(m, i + 1) === 0x72 && m[i + 4] === 0x3a) || // from:
      (c === 0x63 && (m[i + 4] === 0x3a || m[i + 7] === 0x3a) && (lc(m, i + 1) === 0x73 || lc(m, i + 1) === 0x61)) // cseq:, call-id:
    if (keep && o + end + 1 - i < out.length - 64) o += m.copy(out, o, i, end + 1)
    else if (c === 0x74 && m[i + 2] === 0x3a && lc(m, i + 1) === 0x6f) { // to:
      const stop = m[end - 1] === 13 ? end - 1 : end
      o += m.copy(out, o, i, stop)
      o += TO_TAG.copy(out, o)
      out[o++] = 13; out[o++] = 10
    }
    i = end + 1
  }
  o += TAIL.copy(out, o)
  uas.send(out, 0, o, rinfo.port, '127.0.0.1')
})

// register the UAS as bob (relay), or every user once (register)
async function request (text: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no answer to REGISTER')), 5000)
    uac.once('message', (m) => {
      clearTimeout(t)
      if (m.toString().startsWith('SIP/2.0 200')) resolve()
      else reject(new Error(m.toString().slice(0, 80)))
    })
    uac.send(text, owner.port, '127.0.0.1')
  })
}
await request([`REGISTER sip:example.com SIP/2.0`, `Via: SIP/2.0/UDP 127.0.0.1:${uacPort};branch=z9hG4bKreg1;rport`, 'Max-Forwards: 70',
  'From: <sip:bob@example.com>;tag=r1', 'To: <sip:bob@example.com>', 'Call-ID: reg-1', 'CSeq: 1 REGISTER',
  `Contact: <sip:bob@127.0.0.1:${uasPort}>`, 'Expires: 3600', 'Content-Length: 0', '', ''].join('\r\n'))

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
/** --mode publish: the users' REGISTERs first */
let registering = false
/** lane `l`'s next PUBLISH: its step's request for its current user (lane + cycle × window) */
function nextPublish (l: number): Buffer {
  seq++
  const lane = lanes[l]
  const user = (l + lane.cycle * WINDOW) % USERS
  const v = publishValues
  v[0] = v[2] = v[3] = user; v[1] = seq; v[4] = l; v[5] = lane.cycle; v[6] = user
  // the fields in text order: R-URI user, branch, From, To, Call-ID lane and cycle, then the entity
  const b = publishTemplates[lane.step].makeWith(v)
  if (lane.step > 0) lane.etag.copy(b, etagAt[lane.step])
  return b
}
const CALL_ID = Buffer.from('Call-ID: pub-')
const SIP_ETAG = Buffer.from('SIP-ETag: ')
/** the lane a response to a PUBLISH belongs to (its Call-ID), its entity tag kept, the lane moved on */
function publishAnswered (m: Buffer): number {
  const c = m.indexOf(CALL_ID) + CALL_ID.length
  let l = 0
  for (let i = c; i < c + 5; i++) l = l * 10 + m[i] - 48
  const lane = lanes[l]
  const e = m.indexOf(SIP_ETAG)
  if (e !== -1) m.copy(lane.etag, 0, e + SIP_ETAG.length, e + SIP_ETAG.length + 22)
  lane.step++
  if (lane.step === 3) { lane.step = 0; lane.cycle++ }
  return l
}

/** the next request: a MESSAGE, or the next user's refresh (CSeq 1 + its refreshes so far) */
function next (): Buffer {
  seq++
  if (MODE !== 'register' && !registering) return messageTemplate.make(seq)
  const user = seq % USERS
  return registerTemplate.make(user, seq, 5) // branch and CSeq: unique, rising per user
}

/** send `count` requests with `WINDOW` in flight to `port`; resolves with the 200s received */
async function round (count: number, port = relay.port): Promise<number> {
  let sent = 0
  let ok = 0
  return await new Promise<number>((resolve) => {
    const t = setTimeout(() => { uac.off('message', on); resolve(ok) }, 120_000)
    const publish = MODE === 'publish' && !registering
    const send = (lane: number): void => { if (sent < count) { sent++; uac.send(publish ? nextPublish(lane) : next(), port, '127.0.0.1') } }
    const on = (m: Buffer): void => {
      const is200 = m[8] === 0x32 && m[9] === 0x30 && m[10] === 0x30 // 'SIP/2.0 200'
      if (is200) ok++
      let lane = 0
      if (publish) {
        // a lane waits for its 200 (a provisional answer moves nothing; anything else is a bug)
        if (!is200) { if (m[8] !== 0x31) throw new Error(`PUBLISH answered ${m.toString('latin1', 0, 200)}`); return }
        lane = publishAnswered(m)
      }
      if (ok === count) { clearTimeout(t); uac.off('message', on); resolve(ok); return }
      send(lane)
    }
    uac.on('message', on)
    for (let i = 0; i < WINDOW; i++) send(i)
  })
}

if (MODE === 'register' || MODE === 'publish') {
  // every user registered once (new AoRs), then the rounds refresh them (or publish their presence)
  seq = 0
  registering = true
  const first = await round(USERS)
  registering = false
  if (first !== USERS) throw new Error(`${USERS - first} of ${USERS} first REGISTERs not answered 200`)
}
await round(Math.min(5000, MESSAGES)) // warm-up (JIT)
// BENCH_HEAP_PROF=<file>: a sampling allocation profile of the measured rounds (objects collected included);
// with BENCH_HEAP_PROF_SURVIVORS=1 only of the objects that survived a scavenge (those a scavenge
// collected are left out): who allocates what the young generation copies and promotes
const heapProf = process.env.BENCH_HEAP_PROF
const session = heapProf === undefined ? undefined : new (await import('node:inspector')).Session()
const post = async (method: string, params?: object): Promise<{ profile: unknown }> => await new Promise((resolve, reject) => { session!.post(method, params, (err, r) => { if (err != null) reject(err); else resolve(r as { profile: unknown }) }) })
// the bench's own share: the same requests and answers without the gateway (UAC → UAS → UAC)
await round(Math.min(5000, MESSAGES), uasPort)
const own = await allocated(async () => await round(MESSAGES, uasPort))
const benchKb = own.bytes / own.result / 1000
// the direct round's answers carried no entity tags: each lane starts a new publication
for (const lane of lanes) { lane.step = 0; lane.cycle++ }
console.log(`the UAC and UAS alone: ${benchKb.toFixed(2)} KB allocated/msg`)
// the profile covers the measured rounds only (messages × rounds), not the bench's own round
if (session !== undefined) {
  session.connect()
  await post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: process.env.BENCH_HEAP_PROF_SURVIVORS !== '1' })
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
  console.log(`round ${r + 1}: ${ok}/${MESSAGES} answered, ${(ok / ms * 1000).toFixed(0)}/s, CPU ${((cpu.user + cpu.system) / ok).toFixed(1)} µs/msg (user ${(cpu.user / ok).toFixed(1)}, system ${(cpu.system / ok).toFixed(1)}), ${(bytes / ok / 1000).toFixed(2)} KB allocated/msg (gateway ${(bytes / ok / 1000 - benchKb).toFixed(2)}), ${((scavenges - s0) * 1000 / ok).toFixed(2)} scavenges per 1,000, GC ${((gcMs - g0) * 1000 / ok).toFixed(1)} µs/msg, ${majors - m0} mark-compact`)
}
if (session !== undefined) {
  const { profile } = await post('HeapProfiler.stopSampling')
  ;(await import('node:fs')).writeFileSync(heapProf!, JSON.stringify(profile))
  session.disconnect()
}
const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const kb = med(figures.map(f => f.kbPerMsg))
console.log(JSON.stringify({ bench: 'relay-path', mode: MODE, ...(MODE === 'cross' ? { mesh: MESH } : {}), messages: MESSAGES, window: WINDOW, ...(MODE === 'register' || MODE === 'publish' ? { users: USERS } : {}), cpuUsPerMsg: Number(med(figures.map(f => f.cpuUs)).toFixed(1)), kbAllocatedPerMsg: Number(kb.toFixed(2)), benchKbPerMsg: Number(benchKb.toFixed(2)), gatewayKbPerMsg: Number((kb - benchKb).toFixed(2)), scavengesPerK: Number(med(figures.map(f => f.scavengesPerK)).toFixed(2)), gcUsPerMsg: Number(med(figures.map(f => f.gcUs)).toFixed(1)), markCompacts: figures.reduce((a, f) => a + f.majors, 0), rate: Math.round(med(figures.map(f => f.rate))) }))
obs.disconnect()
uac.close()
uas.close()
await gateway.stop()
await stopOwner()
await registry.stop()
