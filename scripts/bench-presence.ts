// Presence figures on three in-process gateways (memory registry + memory PeerChannel, real UDP
// sockets on 127.0.0.1):
//
// 1. NOTIFY fan-out: one presentity on node A, `--watchers` watchers (distinct AoRs) spread evenly
//    over nodes A, B and C; B and C each hold ONE back-end subscription to A shared by their
//    watchers. Time from sending a PUBLISH to the last watcher's NOTIFY carrying it, over
//    `--rounds` rounds (p50/p99 of that, plus the p50/p99 of every single NOTIFY's delay).
// 2. Memory per subscription (measured first, on a fourth node with short timers): heap growth (after GC, with --expose-gc) over `--mem-subs` extra
//    watcher subscriptions to one local presentity, divided by their number.
// 3. Held subscriptions: a watcher on B subscribes to a user registered nowhere; the user registers
//    on C; time from sending the REGISTER (and from its 200 OK) to the watcher's first NOTIFY with
//    the real state, over `--held` users.
//
// 5. Dialog (RFC 4235) fan-out during a call: `--dialog-watchers` busy lamps of one user on node A,
//    spread over A, B and C (one back-end dialog subscription each from B and C); `--calls` calls
//    to that user from node B: time from the INVITE to the last watcher's `confirmed` NOTIFY (the
//    callee answers at once), and from the BYE to the last `terminated` one.
//
// 6. Resource lists (RFC 4662): `--list-members` users registered evenly on five in-process nodes,
//    one list of them PUT on node 1; `--list-rounds` subscribers on node 5, one after the other:
//    time from the list SUBSCRIBE to the first (full-state) NOTIFY, and to the first NOTIFY in
//    which every member is `active` with her real (open) state; node 5's back-end subscriptions
//    (one per member owned by another node, shared by every subscriber).
//
// 4. The same held-subscription figure over the real DHT: three `sipmesh start` processes (libp2p,
//    kad-dht, interest notices), raw UDP user agents, `--held-real` users (0: skip).
//
// Bounded: every wait has a timeout; ~30-40 s in all with the defaults.
//
//   node --expose-gc scripts/bench-presence.ts [--watchers 1000] [--rounds 10] [--mem-subs 5000] [--held 20] [--held-real 10]
//     [--dialog-watchers 300] [--calls 10] [--list-members 100] [--list-rounds 5]
import { createSocket, type Socket } from 'node:dgram'
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { Gateway } from '../sip-gateway/gateway.ts'
import { MemoryStore } from '../sip-gateway/memory-store.ts'
import { MemoryChannelHub } from '../sip-gateway/memory-channel.ts'
import { MemoryMesh, MemoryRegistry } from '../dht/memory-registry.ts'
import { parseMessage, serializeMessage, createResponse, SipResponse } from '../sip-gateway/codec/index.ts'
import type { Logger } from '../sip-gateway/ports.ts'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { run, stop, type Proc } from '../test/e2e/fixtures/processes.ts'

const { values } = parseArgs({
  options: {
    watchers: { type: 'string', default: '1000' },
    rounds: { type: 'string', default: '10' },
    'mem-subs': { type: 'string', default: '5000' },
    held: { type: 'string', default: '20' },
    'held-real': { type: 'string', default: '10' },
    'dialog-watchers': { type: 'string', default: '300' },
    calls: { type: 'string', default: '10' },
    'list-members': { type: 'string', default: '100' },
    'list-rounds': { type: 'string', default: '5' }
  }
})
const WATCHERS = Math.min(20_000, Number(values.watchers))
const ROUNDS = Math.min(100, Number(values.rounds))
const MEM_SUBS = Math.min(50_000, Number(values['mem-subs']))
const HELD = Math.min(200, Number(values.held))
const HELD_REAL = Math.min(100, Number(values['held-real']))
const DIALOG_WATCHERS = Math.min(20_000, Number(values['dialog-watchers']))
const CALLS = Math.min(100, Number(values.calls))
const LIST_MEMBERS = Math.min(1000, Number(values['list-members']))
const LIST_ROUNDS = Math.min(50, Number(values['list-rounds']))

const silent: Logger = { debug () {}, info () {}, warn () {}, error () {}, child () { return silent } }
const gc = (globalThis as { gc?: () => void }).gc

function pct (xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))]
}
const ms = (x: number): string => `${x.toFixed(1)} ms`

/** One UDP socket acting as many user agents: sends requests, answers NOTIFYs 200, reports them. */
class Endpoint {
  readonly sock: Socket
  port = 0
  readonly finals = new Map<string, (r: SipResponse) => void>()
  onNotify: (callId: string, body: string, at: number) => void = () => {}
  cseq = 1

  constructor () {
    this.sock = createSocket({ type: 'udp4', recvBufferSize: 8 << 20, sendBufferSize: 8 << 20 })
  }

  async open (): Promise<void> {
    await new Promise<void>(resolve => this.sock.bind(0, '127.0.0.1', () => resolve()))
    this.port = this.sock.address().port
    this.sock.on('message', (data, rinfo) => {
      const at = performance.now()
      let m
      try { m = parseMessage(data) } catch { return }
      if (m instanceof SipResponse) {
        if (m.status < 200) return
        const key = `${m.headers.get('Call-ID') ?? ''} ${m.headers.get('CSeq') ?? ''}`
        const f = this.finals.get(key)
        if (f !== undefined) { this.finals.delete(key); f(m) }
        return
      }
      if (m.method === 'NOTIFY') this.onNotify(m.headers.get('Call-ID') ?? '', Buffer.from(m.body).toString('utf8'), at)
      this.sock.send(serializeMessage(createResponse(m, 200, undefined, undefined, { toTag: true })), rinfo.port, rinfo.address)
    })
  }

  /** send a request; resolves with its final response (undefined after `timeoutMs`) */
  async request (target: { port: number }, method: string, uri: string, from: string, to: string, callId: string, headers: Array<[string, string]>, body = '', timeoutMs = 5000): Promise<SipResponse | undefined> {
    const cseq = this.cseq++
    const lines = [
      `${method} ${uri} SIP/2.0`,
      `Via: SIP/2.0/UDP 127.0.0.1:${this.port};branch=z9hG4bK${randomBytes(6).toString('hex')};rport`,
      'Max-Forwards: 70',
      `From: <${from}>;tag=${randomBytes(4).toString('hex')}`,
      `To: <${to}>`,
      `Call-ID: ${callId}`,
      `CSeq: ${cseq} ${method}`,
      ...headers.map(([n, v]) => `${n}: ${v}`),
      `Content-Length: ${Buffer.byteLength(body)}`, '', body
    ]
    const done = new Promise<SipResponse | undefined>(resolve => {
      const t = setTimeout(() => { this.finals.delete(`${callId} ${cseq} ${method}`); resolve(undefined) }, timeoutMs)
      this.finals.set(`${callId} ${cseq} ${method}`, (r) => { clearTimeout(t); resolve(r) })
    })
    this.sock.send(lines.join('\r\n'), target.port, '127.0.0.1')
    return await done
  }

  async close (): Promise<void> { await new Promise<void>(resolve => this.sock.close(() => resolve())) }
}

const pidf = (aor: string, note: string): string =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="${aor.replace('sip:', 'pres:')}"><tuple id="t"><status><basic>open</basic></status></tuple><note>${note}</note></presence>`

async function main (): Promise<void> {
  const mesh = new MemoryMesh()
  const hub = new MemoryChannelHub()
  const gateways: Gateway[] = []
  const registries: MemoryRegistry[] = []
  const endpoints: Endpoint[] = []
  for (const id of ['node-a', 'node-b', 'node-c', 'node-d']) {
    const registry = new MemoryRegistry(mesh, { nodeId: id })
    const gw = new Gateway({ registry, peerChannel: hub.channel(id), store: new MemoryStore(), logger: silent }, {
      domains: ['example.com'],
      sip: { host: '127.0.0.1', port: 0 },
      // node d only serves the memory measurement: short timers so finished UDP transactions go quickly
      ...(id === 'node-d' ? { timers: { t1: 20, t2: 160, t4: 100 } } : {}),
      presence: { rateLimit: { burst: 1e9, perSecond: 1e9 }, maxSubscriptions: 1_000_000, publications: { minExpires: 1 } }
    })
    await gw.start()
    registry.sip = `127.0.0.1:${gw.addresses.udp.port}`
    gateways.push(gw)
    registries.push(registry)
    const ep = new Endpoint()
    await ep.open()
    endpoints.push(ep)
  }
  const port = (i: number): { port: number } => ({ port: gateways[i].addresses.udp.port })
  const summary: Record<string, number> = {}
  try {
    // ---- 2. memory per subscription ------------------------------------------------------------
    const memTarget = 'sip:memstar@example.com'
    const memUa = new Endpoint()
    await memUa.open()
    endpoints.push(memUa)
    await memUa.request(port(3), 'REGISTER', 'sip:example.com', memTarget, memTarget, 'reg-mem', [['Contact', `<sip:memstar@127.0.0.1:${memUa.port}>`], ['Expires', '3600']])
    const sink = new Endpoint()
    await sink.open()
    endpoints.push(sink)
    // let UDP server transactions of the fan-out phase finish (timer J, 32 s, would skew the heap)
    const settle = async (): Promise<number> => {
      // node d's UDP transactions end within 64*T1 = 1.3 s of their answer
      for (let i = 0; i < 40 && gateways[3].stats.serverTransactions + gateways[3].stats.clientTransactions > 0; i++) await new Promise(resolve => setTimeout(resolve, 100))
      for (let i = 0; i < 3; i++) { gc?.(); await new Promise(resolve => setTimeout(resolve, 50)) }
      return process.memoryUsage().heapUsed
    }
    const before = await settle()
    for (let i = 0; i < MEM_SUBS; i += 200) {
      const batch: Array<Promise<SipResponse | undefined>> = []
      for (let j = i; j < Math.min(MEM_SUBS, i + 200); j++) {
        batch.push(sink.request(port(3), 'SUBSCRIBE', memTarget, `sip:m${j}@example.com`, memTarget, `m${j}`, [
          ['Event', 'presence'], ['Expires', '3600'], ['Contact', `<sip:m${j}@127.0.0.1:${sink.port}>`]
        ], '', 10_000))
      }
      await Promise.all(batch)
    }
    const after = await settle()
    const tx = gateways[3].stats.serverTransactions + gateways[3].stats.clientTransactions
    const subs = gateways[3].presence.stats.subscriptions
    summary.memory_per_subscription_bytes = Math.round((after - before) / MEM_SUBS)
    console.log(`memory: ${MEM_SUBS} subscriptions to a local presentity (node d holds ${subs}, ${tx} transactions left) grew the heap by ${((after - before) / 1e6).toFixed(1)} MB: ~${summary.memory_per_subscription_bytes} B per subscription${gc === undefined ? ' (run with --expose-gc for a settled figure)' : ''}`)

    // ---- 1. fan-out ---------------------------------------------------------------------------
    const presentity = 'sip:star@example.com'
    const star = new Endpoint()
    await star.open()
    endpoints.push(star)
    const reg = await star.request(port(0), 'REGISTER', 'sip:example.com', presentity, presentity, 'reg-star', [['Contact', `<sip:star@127.0.0.1:${star.port}>`], ['Expires', '3600']])
    if (reg?.status !== 200) throw new Error(`REGISTER failed: ${reg?.status}`)
    const seen = new Map<string, number>() // callId → time of the NOTIFY with the current round's note
    let note = ''
    let roundStart = 0
    const delays: number[] = []
    let onAll: (() => void) | undefined
    for (const ep of endpoints.slice(0, 3)) {
      ep.onNotify = (callId, body, at) => {
        if (note === '' || seen.has(callId) || !body.includes(note)) return
        seen.set(callId, at)
        delays.push(at - roundStart)
        if (seen.size === WATCHERS) onAll?.()
      }
    }
    const t0 = performance.now()
    const subscribed: Array<Promise<SipResponse | undefined>> = []
    for (let i = 0; i < WATCHERS; i++) {
      const node = i % 3
      subscribed.push(endpoints[node].request(port(node), 'SUBSCRIBE', presentity, `sip:w${i}@example.com`, presentity, `w${i}`, [
        ['Event', 'presence'], ['Accept', 'application/pidf+xml'], ['Expires', '3600'], ['Contact', `<sip:w${i}@127.0.0.1:${endpoints[node].port}>`]
      ], '', 10_000))
      if (i % 100 === 99) await Promise.all(subscribed.slice(-100))
    }
    const answers = await Promise.all(subscribed)
    const okSubs = answers.filter(r => r?.status === 200).length
    console.log(`fan-out: ${okSubs}/${WATCHERS} watchers subscribed in ${ms(performance.now() - t0)} (node a: ${gateways[0].presence.stats.subscriptions} dialogs incl. back-end, b: ${gateways[1].presence.stats.backendSubscriptions} back-end, c: ${gateways[2].presence.stats.backendSubscriptions} back-end)`)
    await new Promise(resolve => setTimeout(resolve, 300))
    let etag: string | undefined
    const lasts: number[] = []
    for (let round = 0; round < ROUNDS + 1; round++) {
      seen.clear()
      delays.length = round === 0 ? 0 : delays.length
      note = `round-${round}-${randomBytes(3).toString('hex')}`
      const all = new Promise<boolean>(resolve => {
        const t = setTimeout(() => resolve(false), 10_000)
        onAll = () => { clearTimeout(t); resolve(true) }
      })
      roundStart = performance.now()
      const headers: Array<[string, string]> = [['Event', 'presence'], ['Content-Type', 'application/pidf+xml'], ['Expires', '3600']]
      if (etag !== undefined) headers.push(['SIP-If-Match', etag])
      const pub = await star.request(port(0), 'PUBLISH', presentity, presentity, presentity, 'pub-star', headers, pidf(presentity, note))
      if (pub?.status !== 200) throw new Error(`PUBLISH failed: ${pub?.status}`)
      etag = pub.headers.get('SIP-ETag')
      const complete = await all
      const last = Math.max(...seen.values()) - roundStart
      if (round === 0) { delays.length = 0; continue } // warm-up
      lasts.push(last)
      console.log(`  round ${round}: ${seen.size}/${WATCHERS} NOTIFYs, last after ${ms(last)}${complete ? '' : ' (INCOMPLETE after 10 s)'}`)
      await new Promise(resolve => setTimeout(resolve, 200))
    }
    note = ''
    summary.fanout_watchers = WATCHERS
    summary.fanout_last_p50_ms = pct(lasts, 50)
    summary.fanout_last_p99_ms = pct(lasts, 99)
    summary.fanout_each_p50_ms = pct(delays, 50)
    summary.fanout_each_p99_ms = pct(delays, 99)
    console.log(`fan-out, PUBLISH → last of ${WATCHERS} NOTIFYs over ${lasts.length} rounds: p50 ${ms(summary.fanout_last_p50_ms)}, p99 ${ms(summary.fanout_last_p99_ms)}; each NOTIFY: p50 ${ms(summary.fanout_each_p50_ms)}, p99 ${ms(summary.fanout_each_p99_ms)}`)

    // ---- 3. held subscriptions -------------------------------------------------------------------
    const fromRegister: number[] = []
    const fromOk: number[] = []
    const watcher = new Endpoint()
    await watcher.open()
    endpoints.push(watcher)
    const firstReal = new Map<string, (at: number) => void>()
    watcher.onNotify = (callId, body, at) => { if (body.includes('<basic>open</basic>')) firstReal.get(callId)?.(at) }
    for (let i = 0; i < HELD; i++) {
      const user = `sip:held${i}@example.com`
      const callId = `held-${i}`
      const r = await watcher.request(port(1), 'SUBSCRIBE', user, `sip:hw${i}@example.com`, user, callId, [['Event', 'presence'], ['Expires', '600'], ['Contact', `<sip:hw${i}@127.0.0.1:${watcher.port}>`]])
      if (r?.status !== 200) throw new Error(`held SUBSCRIBE failed: ${r?.status}`)
      await new Promise(resolve => setTimeout(resolve, 20))
      const got = new Promise<number | undefined>(resolve => {
        const t = setTimeout(() => resolve(undefined), 5000)
        firstReal.set(callId, (at) => { clearTimeout(t); resolve(at) })
      })
      const ua = new Endpoint()
      await ua.open()
      const sent = performance.now()
      const ok = await ua.request(port(2), 'REGISTER', 'sip:example.com', user, user, `hreg-${i}`, [['Contact', `<sip:held${i}@127.0.0.1:${ua.port}>`], ['Expires', '600']])
      const okAt = performance.now()
      const at = await got
      await ua.close()
      if (ok?.status !== 200 || at === undefined) { console.log(`  held ${i}: not extended (REGISTER ${ok?.status})`); continue }
      fromRegister.push(at - sent)
      fromOk.push(at - okAt)
    }
    summary.held_register_to_notify_p50_ms = pct(fromRegister, 50)
    summary.held_register_to_notify_p99_ms = pct(fromRegister, 99)
    summary.held_ok_to_notify_p50_ms = pct(fromOk, 50)
    console.log(`held: ${fromRegister.length}/${HELD} extended; REGISTER sent → first real NOTIFY p50 ${ms(summary.held_register_to_notify_p50_ms)}, p99 ${ms(summary.held_register_to_notify_p99_ms)}; after the 200 OK p50 ${ms(summary.held_ok_to_notify_p50_ms)} (memory registry: no DHT in these figures)`)

    // ---- 5. dialog fan-out during a call -----------------------------------------------------------
    if (DIALOG_WATCHERS > 0 && CALLS > 0) await dialogFanout(endpoints.slice(0, 3), port, summary)
  } finally {
    for (const ep of endpoints) await ep.close()
    for (const gw of gateways) await gw.stop()
    for (const r of registries) await r.stop()
  }
  if (LIST_MEMBERS > 0 && LIST_ROUNDS > 0) await listBench(summary)
  if (HELD_REAL > 0) await heldReal(summary)
  console.log(JSON.stringify({ bench: 'presence', ...summary }))
}

/** a list of LIST_MEMBERS users on five nodes, subscribed from the fifth (see 6. above) */
async function listBench (summary: Record<string, number>): Promise<void> {
  const mesh = new MemoryMesh()
  const hub = new MemoryChannelHub()
  const gateways: Gateway[] = []
  const registries: MemoryRegistry[] = []
  const endpoints: Endpoint[] = []
  try {
    for (let n = 0; n < 5; n++) {
      const registry = new MemoryRegistry(mesh, { nodeId: `list-node-${n}` })
      const gw = new Gateway({ registry, peerChannel: hub.channel(`list-node-${n}`), store: new MemoryStore(), logger: silent }, {
        domains: ['example.com'],
        sip: { host: '127.0.0.1', port: 0 },
        presence: { rateLimit: { burst: 1e9, perSecond: 1e9 }, maxSubscriptions: 1_000_000 }
      })
      await gw.start()
      registry.sip = `127.0.0.1:${gw.addresses.udp.port}`
      gateways.push(gw)
      registries.push(registry)
      const ep = new Endpoint()
      await ep.open()
      endpoints.push(ep)
    }
    const port = (i: number): { port: number } => ({ port: gateways[i].addresses.udp.port })
    const members: string[] = []
    for (let i = 0; i < LIST_MEMBERS; i++) {
      const aor = `sip:lm${i}@example.com`
      const n = i % 5
      const r = await endpoints[n].request(port(n), 'REGISTER', 'sip:example.com', aor, aor, `lreg-${i}`, [['Contact', `<sip:lm${i}@127.0.0.1:${endpoints[n].port}>`], ['Expires', '3600']])
      if (r?.status !== 200) throw new Error(`member REGISTER failed: ${r?.status}`)
      members.push(aor)
    }
    const list = 'sip:bench-list@example.com'
    await gateways[0].presence.putList(list, { members })
    const toFirst: number[] = []
    const toAll: number[] = []
    const sub = endpoints[4]
    for (let round = 0; round < LIST_ROUNDS; round++) {
      const callId = `list-${round}`
      let first: number | undefined
      const all = new Promise<number | undefined>(resolve => {
        const t = setTimeout(() => resolve(undefined), 10_000)
        sub.onNotify = (id, body, at) => {
          if (id !== callId) return
          first ??= at
          // every member active with a part (its PIDF, open: registered)
          const active = body.match(/state="active" cid=/gu)?.length ?? 0
          const open = body.match(/<basic>open<\/basic>/gu)?.length ?? 0
          if (active === LIST_MEMBERS && open === LIST_MEMBERS) { clearTimeout(t); resolve(at) }
        }
      })
      const sent = performance.now()
      const r = await sub.request(port(4), 'SUBSCRIBE', list, `sip:ls${round}@example.com`, list, callId, [
        ['Event', 'presence'], ['Supported', 'eventlist'], ['Accept', 'multipart/related, application/rlmi+xml, application/pidf+xml'],
        ['Expires', '600'], ['Contact', `<sip:ls${round}@127.0.0.1:${sub.port}>`]
      ], '', 10_000)
      if (r?.status !== 200) throw new Error(`list SUBSCRIBE failed: ${r?.status}`)
      const at = await all
      if (first !== undefined) toFirst.push(first - sent)
      if (at !== undefined) toAll.push(at - sent)
      console.log(`  list round ${round}: first NOTIFY after ${first === undefined ? 'none' : ms(first - sent)}, all ${LIST_MEMBERS} active and open after ${at === undefined ? 'NOT within 10 s' : ms(at - sent)}`)
    }
    summary.list_members = LIST_MEMBERS
    summary.list_subscribe_to_first_notify_p50_ms = pct(toFirst, 50)
    summary.list_subscribe_to_full_state_p50_ms = pct(toAll, 50)
    summary.list_subscribe_to_full_state_max_ms = Math.max(...toAll)
    summary.list_backend_subscriptions = gateways[4].presence.stats.backendSubscriptions
    console.log(`lists: ${LIST_MEMBERS} members on 5 nodes, ${LIST_ROUNDS} subscribers on node 5: SUBSCRIBE → first NOTIFY p50 ${ms(summary.list_subscribe_to_first_notify_p50_ms)}; → every member active and open p50 ${ms(summary.list_subscribe_to_full_state_p50_ms)}, max ${ms(summary.list_subscribe_to_full_state_max_ms)} (${toAll.length}/${LIST_ROUNDS} complete); node 5 holds ${summary.list_backend_subscriptions} back-end subscriptions`)
  } finally {
    for (const ep of endpoints) await ep.close()
    for (const gw of gateways) await gw.stop()
    for (const r of registries) await r.stop()
  }
}

/** busy lamps of one user on node A watched from A, B and C; calls to it from node B */
async function dialogFanout (eps: Endpoint[], port: (i: number) => { port: number }, summary: Record<string, number>): Promise<void> {
  const user = 'sip:lamp@example.com'
  const callee = new Endpoint()
  const caller = new Endpoint()
  await callee.open()
  await caller.open()
  try {
    const reg = await callee.request(port(0), 'REGISTER', 'sip:example.com', user, user, 'reg-lamp', [['Contact', `<sip:lamp@127.0.0.1:${callee.port}>`], ['Expires', '3600']])
    if (reg?.status !== 200) throw new Error(`REGISTER failed: ${reg?.status}`)
    let want = ''
    let start = 0
    const seen = new Map<string, number>()
    let onAll: (() => void) | undefined
    for (const ep of eps) {
      ep.onNotify = (callId, body, at) => {
        if (want === '' || seen.has(callId) || !callId.startsWith('lamp-') || !body.includes(want)) return
        seen.set(callId, at - start)
        if (seen.size === DIALOG_WATCHERS) onAll?.()
      }
    }
    const subs: Array<Promise<SipResponse | undefined>> = []
    for (let i = 0; i < DIALOG_WATCHERS; i++) {
      const node = i % 3
      subs.push(eps[node].request(port(node), 'SUBSCRIBE', user, `sip:lw${i}@example.com`, user, `lamp-${i}`, [
        ['Event', 'dialog'], ['Accept', 'application/dialog-info+xml'], ['Expires', '3600'], ['Contact', `<sip:lw${i}@127.0.0.1:${eps[node].port}>`]
      ], '', 10_000))
      if (i % 100 === 99) await Promise.all(subs.slice(-100))
    }
    const ok = (await Promise.all(subs)).filter(r => r?.status === 200).length
    await new Promise(resolve => setTimeout(resolve, 300))
    const phase = async (state: string, send: () => Promise<SipResponse | undefined>): Promise<number | undefined> => {
      seen.clear()
      want = `<state>${state}</state>`
      const all = new Promise<boolean>(resolve => {
        const t = setTimeout(() => resolve(false), 10_000)
        onAll = () => { clearTimeout(t); resolve(true) }
      })
      start = performance.now()
      const r = await send()
      if (r === undefined || r.status >= 300) throw new Error(`call step failed: ${r?.status}`)
      const complete = await all
      want = ''
      return complete ? Math.max(...seen.values()) : undefined
    }
    const connected: number[] = []
    const ended: number[] = []
    for (let c = 0; c < CALLS + 1; c++) {
      const callId = `bench-call-${c}`
      const a = await phase('confirmed', async () => await caller.request(port(1), 'INVITE', user, 'sip:caller@example.com', user, callId, [['Contact', `<sip:caller@127.0.0.1:${caller.port}>`]]))
      const b = await phase('terminated', async () => await caller.request(port(1), 'BYE', user, 'sip:caller@example.com', user, callId, []))
      if (c === 0) continue // warm-up
      if (a === undefined || b === undefined) { console.log(`  call ${c}: INCOMPLETE (${seen.size}/${DIALOG_WATCHERS})`); continue }
      connected.push(a)
      ended.push(b)
      await new Promise(resolve => setTimeout(resolve, 3500)) // the ended call leaves the state (3 s)
    }
    summary.dialog_watchers = DIALOG_WATCHERS
    summary.dialog_invite_to_last_confirmed_p50_ms = pct(connected, 50)
    summary.dialog_invite_to_last_confirmed_p99_ms = pct(connected, 99)
    summary.dialog_bye_to_last_terminated_p50_ms = pct(ended, 50)
    summary.dialog_bye_to_last_terminated_p99_ms = pct(ended, 99)
    console.log(`dialog: ${ok}/${DIALOG_WATCHERS} busy lamps on 3 nodes, ${connected.length} calls; INVITE → last 'confirmed' NOTIFY p50 ${ms(summary.dialog_invite_to_last_confirmed_p50_ms)}, p99 ${ms(summary.dialog_invite_to_last_confirmed_p99_ms)}; BYE → last 'terminated' p50 ${ms(summary.dialog_bye_to_last_terminated_p50_ms)}, p99 ${ms(summary.dialog_bye_to_last_terminated_p99_ms)}`)
  } finally {
    await callee.close()
    await caller.close()
  }
}

/** held subscriptions over three real nodes (separate processes, kad-dht) */
async function heldReal (summary: Record<string, number>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'sipmesh-bench-presence-'))
  const procs: Proc[] = []
  const sips: number[] = []
  const eps: Endpoint[] = []
  try {
    let boot: string | undefined
    for (let i = 0; i < 3; i++) {
      const args = ['start', '--domain', 'example.com', '--sip', '127.0.0.1:0', '--p2p', '/ip4/127.0.0.1/tcp/0', '--admin', '127.0.0.1:0', '--data-dir', join(dir, `n${i}`), '--log-level', 'info']
      if (boot !== undefined) args.push('--bootstrap', boot)
      const p = run(args)
      procs.push(p)
      const started = JSON.parse(await p.waitForLine(l => l.includes('"sipmesh node started"'), 30_000)) as { peerId: string, multiaddrs: string[], sip: string }
      sips.push(Number(started.sip.split(':')[1]))
      boot ??= started.multiaddrs[0]
    }
    await new Promise(resolve => setTimeout(resolve, 3000)) // let the mesh settle (first seconds run cold)
    const watcher = new Endpoint()
    await watcher.open()
    eps.push(watcher)
    const firstReal = new Map<string, (at: number) => void>()
    watcher.onNotify = (callId, body, at) => { if (body.includes('<basic>open</basic>')) firstReal.get(callId)?.(at) }
    const fromRegister: number[] = []
    const fromOk: number[] = []
    for (let i = 0; i < HELD_REAL; i++) {
      const user = `sip:realheld${i}@example.com`
      const callId = `real-held-${i}`
      const r = await watcher.request({ port: sips[1] }, 'SUBSCRIBE', user, `sip:rw${i}@example.com`, user, callId, [['Event', 'presence'], ['Expires', '600'], ['Contact', `<sip:rw${i}@127.0.0.1:${watcher.port}>`]])
      if (r?.status !== 200) { console.log(`  real held ${i}: SUBSCRIBE ${r?.status}`); continue }
      await new Promise(resolve => setTimeout(resolve, 300)) // interest registered in the DHT
      const got = new Promise<number | undefined>(resolve => {
        const t = setTimeout(() => resolve(undefined), 5000)
        firstReal.set(callId, (at) => { clearTimeout(t); resolve(at) })
      })
      const ua = new Endpoint()
      await ua.open()
      eps.push(ua)
      const sent = performance.now()
      const ok = await ua.request({ port: sips[2] }, 'REGISTER', 'sip:example.com', user, user, `rhreg-${i}`, [['Contact', `<sip:realheld${i}@127.0.0.1:${ua.port}>`], ['Expires', '600']])
      const okAt = performance.now()
      const at = await got
      if (ok?.status !== 200 || at === undefined) { console.log(`  real held ${i}: not extended within 5 s (REGISTER ${ok?.status})`); continue }
      fromRegister.push(at - sent)
      fromOk.push(at - okAt)
    }
    summary.held_real_register_to_notify_p50_ms = pct(fromRegister, 50)
    summary.held_real_register_to_notify_p99_ms = pct(fromRegister, 99)
    summary.held_real_ok_to_notify_p50_ms = pct(fromOk, 50)
    console.log(`held over the real DHT (3 processes): ${fromRegister.length}/${HELD_REAL} extended; REGISTER sent → first real NOTIFY p50 ${ms(summary.held_real_register_to_notify_p50_ms)}, p99 ${ms(summary.held_real_register_to_notify_p99_ms)}; after the 200 OK p50 ${ms(summary.held_real_ok_to_notify_p50_ms)}`)
  } finally {
    for (const e of eps) await e.close()
    await Promise.all(procs.map(async p => await stop(p)))
    rmSync(dir, { recursive: true, force: true })
  }
}

await main()
process.exit(0)
