/**
 * The registrar side of registration at scale (issue 9), one node, no mesh: a child process runs
 * the SIP gateway on LevelDB (node/'s DatastoreDurableStore) with a stub claim registry that
 * stores nothing per AoR (so the figures are the gateway's own: registrar, transactions, LevelDB,
 * known users), and this process is the user agents, over UDP on loopback.
 *
 *   node scripts/bench-registrar.ts [--users 100000] [--window 200] [--rate 0] [--sockets 1]
 *        [--claim-ms 0] [--claim-concurrency 0] [--restart] [--settle] [--max-seconds 300]
 *
 * - new AoRs: --users distinct users REGISTER once; closed loop with --window in flight (--rate 0)
 *   or open loop at --rate/s; retransmissions as RFC 3261 timer E (500 ms doubling to 4 s)
 * - refresh: the same users again (same Call-ID, next CSeq)
 * - memory: RSS and heap of the node after a forced GC, before and after, settled (no live
 *   server transaction: timer J lingers 32 s) when --settle; per registration = delta / users
 * - restart (--restart): the node is killed (SIGKILL) and started again on the same data
 *   directory: time until every stored registration is claimed again, and an OPTIONS answered
 *   meanwhile
 *
 * The stub registry answers a claim after --claim-ms (0: next tick), at most --claim-concurrency
 * at once (0: unbounded): a slow registry, to provoke overload. Bounded by --max-seconds.
 */
import { fork } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createSocket } from 'node:dgram'
import type { Socket } from 'node:dgram'
import { mkdtemp, rm } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import v8 from 'node:v8'

const { values } = parseArgs({
  options: {
    child: { type: 'boolean', default: false },
    dir: { type: 'string' },
    users: { type: 'string', default: '100000' },
    window: { type: 'string', default: '200' },
    rate: { type: 'string', default: '0' },
    sockets: { type: 'string', default: '1' },
    'claim-ms': { type: 'string', default: '0' },
    'claim-concurrency': { type: 'string', default: '0' },
    restart: { type: 'boolean', default: false },
    settle: { type: 'boolean', default: false },
    refresh: { type: 'boolean', default: true },
    'max-seconds': { type: 'string', default: '300' },
    'cpu-prof': { type: 'boolean', default: false },
    snapshot: { type: 'string' }
  },
  allowNegative: true
})

interface Stats {
  rss: number
  heapUsed: number
  heapTotal: number
  external: number
  arrayBuffers: number
  registrations: number
  serverTransactions: number
  claims: number
  overloaded?: number
  /** user + system CPU time of the node, µs */
  cpu: number
  v8?: Record<string, number>
}

if (values.child) await child()
else await parent()

// ---------------------------------------------------------------- the node
async function child (): Promise<void> {
  const { openDatastore, DatastoreDurableStore } = await import('../node/persistence.ts')
  const { Gateway } = await import('../sip-gateway/gateway.ts')
  const { MemoryChannelHub } = await import('../sip-gateway/memory-channel.ts')
  const quiet = { debug () {}, info (m: string, f?: unknown) { if (/stored registrations|gateway started/.test(m)) process.stderr.write(`info ${m} ${JSON.stringify(f)} at ${Math.round(performance.now())} ms\n`) }, warn (m: string, f?: unknown) { process.stderr.write(`warn ${m} ${JSON.stringify(f)}\n`) }, error (m: string, f?: unknown) { process.stderr.write(`error ${m} ${JSON.stringify(f)}\n`) }, child () { return quiet } }
  const claimMs = Number(values['claim-ms'])
  const claimConcurrency = Number(values['claim-concurrency'])
  let claims = 0
  let active = 0
  const waiting: Array<() => void> = []
  const registry = {
    nodeId: 'bench-node',
    async claim (aor: string, binding: { expiresAt: number }) {
      if (claimConcurrency > 0 && active >= claimConcurrency) await new Promise<void>(resolve => waiting.push(resolve))
      active++
      try {
        if (claimMs > 0) await new Promise(resolve => setTimeout(resolve, claimMs))
        else await new Promise(resolve => setImmediate(resolve))
      } finally {
        active--
        waiting.shift()?.()
      }
      claims++
      const route = { aor, node: 'bench-node', sip: '127.0.0.1:5060', version: 1n, expiresAt: binding.expiresAt + 30_000 }
      return { won: true, route, replicas: 1 }
    },
    async release () {},
    async resolve () { return undefined },
    async known () { return false },
    watch () { return () => {} },
    onDisplaced () { return () => {} }
  }
  const ds = await openDatastore(String(values.dir))
  const hub = new MemoryChannelHub()
  const gateway = new Gateway({ registry, peerChannel: hub.channel('bench-node'), store: new DatastoreDurableStore(ds), logger: quiet }, {
    domains: ['example.com'],
    sip: { host: '127.0.0.1', port: 0 },
    registrar: { minExpires: 60, maxExpires: 3600 }
  })
  const t0 = performance.now()
  await gateway.start()
  const startMs = performance.now() - t0
  // what `sipmesh start` runs beside the node: gives back what a burst left resident
  const { MemoryTrimmer } = await import('../node/memory-trim.ts')
  const trimmer = new MemoryTrimmer({ logger: quiet })
  trimmer.start()
  // resident anonymous memory by mapping size (V8 pages are 256 KiB mappings), for --smaps
  const anonMaps = (): Record<string, number> => {
    const out: Record<string, number> = {}
    let name = ''
    let size = 0
    for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line)
      if (m !== null) { name = m[3] === '' ? 'anon' : m[3].startsWith('[') ? m[3] : 'file'; size = (parseInt(m[2], 16) - parseInt(m[1], 16)) / 1024; continue }
      const lazy = /^LazyFree:\s+(\d+) kB/.exec(line)
      if (lazy !== null) { out.lazyFree = (out.lazyFree ?? 0) + Number(lazy[1]) * 1024; continue }
      const r = /^Rss:\s+(\d+) kB/.exec(line)
      if (r !== null && Number(r[1]) > 0) {
        const k = name === 'anon' ? (size === 256 ? 'anon 256 KiB' : size < 256 ? 'anon < 256 KiB' : 'anon > 256 KiB') : name
        out[k] = (out[k] ?? 0) + Number(r[1]) * 1024
      }
    }
    return out
  }
  const stats = (): Stats => {
    const gc = (globalThis as { gc?: () => void }).gc
    gc?.(); gc?.()
    const m = process.memoryUsage()
    const s = gateway.stats
    const c = process.cpuUsage()
    const h = v8.getHeapStatistics()
    return { v8: { physical: h.total_physical_size, malloced: h.malloced_memory, peakMalloced: h.peak_malloced_memory, external: h.external_memory }, cpu: c.user + c.system, rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, registrations: s.registrations, serverTransactions: s.serverTransactions, claims, overloaded: (s as { overloaded?: number }).overloaded }
  }
  process.on('message', (msg: { type: string }) => {
    if (msg.type === 'stats') process.send?.({ type: 'stats', stats: stats() })
    // settled: wait (at most 60 s) for the memory trim that follows a burst once the loop has been
    // quiet for 40 s, as in `sipmesh start`, then collect
    if (msg.type === 'settled') {
      const trims = trimmer.trims
      const until = performance.now() + 60_000
      const poll = (): void => {
        if (trimmer.trims === trims && performance.now() < until) { setTimeout(poll, 1000); return }
        process.send?.({ type: 'settled', trimmed: trimmer.trims > trims, stats: stats(), maps: { ...anonMaps(), ...Object.fromEntries(v8.getHeapSpaceStatistics().map(x => [x.space_name, x.physical_space_size])) } })
      }
      poll()
    }
    if (msg.type === 'snapshot') {
      void import('node:v8').then(v8 => { process.send?.({ type: 'snapshot', file: v8.writeHeapSnapshot(String(values.snapshot)) }) })
    }
    if (msg.type === 'quick') process.send?.({ type: 'quick', registrations: gateway.stats.registrations, claims, reclaimed: (gateway.stats as { reclaim?: { done: boolean } }).reclaim?.done ?? true })
    if (msg.type === 'cpu') { const c = process.cpuUsage(); process.send?.({ type: 'cpu', cpu: c.user + c.system }) }
    if (msg.type === 'stop') {
      void (async () => { await gateway.stop(); await ds.close(); process.exit(0) })()
    }
  })
  process.send?.({ type: 'ready', port: gateway.addresses.udp.port, startMs, stats: stats() })
}

// ---------------------------------------------------------------- the user agents
async function parent (): Promise<void> {
  const users = Math.max(1, Math.min(1_000_000, Number(values.users)))
  const windowSize = Math.max(1, Number(values.window))
  const rate = Math.max(0, Number(values.rate))
  const nSockets = Math.max(1, Math.min(1000, Number(values.sockets)))
  const deadline = Date.now() + Number(values['max-seconds']) * 1000
  const dir = await mkdtemp(join(tmpdir(), 'sipmesh-bench-registrar-'))
  const mb = (b: number): string => (b / 1048576).toFixed(1) + ' MB'

  const spawnNode = async (): Promise<{ proc: ChildProcess, port: number, startMs: number, stats: Stats }> => {
    const args = ['--child', '--dir', dir, ...(values.snapshot !== undefined ? ['--snapshot', values.snapshot] : []), '--claim-ms', String(values['claim-ms']), '--claim-concurrency', String(values['claim-concurrency'])]
    const execArgv = ['--expose-gc', ...(process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(f => f !== ''), ...(values['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', join(process.cwd(), '.bench-prof')] : [])]
    const proc = fork(new URL(import.meta.url).pathname, args, { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    return await new Promise((resolve, reject) => {
      proc.once('message', (m: { type: string, port: number, startMs: number, stats: Stats }) => { resolve({ proc, ...m }) })
      proc.once('exit', (code) => { reject(new Error(`node exited ${code}`)) })
    })
  }
  const ask = async <T>(proc: ChildProcess, type: string): Promise<T> => await new Promise(resolve => {
    const on = (m: { type: string }): void => { if (m.type === type) { proc.off('message', on); resolve(m as T) } }
    proc.on('message', on)
    proc.send({ type })
  })
  const statsOf = async (proc: ChildProcess): Promise<Stats> => (await ask<{ stats: Stats }>(proc, 'stats')).stats

  const sockets: Socket[] = []
  for (let i = 0; i < nSockets; i++) {
    const s = createSocket('udp4')
    await new Promise<void>(resolve => s.bind(0, '127.0.0.1', resolve))
    sockets.push(s)
  }

  interface Pending { i: number, msg: Buffer, sock: Socket, sentAt: number, next: number, interval: number, resolve: (status: number) => void }
  const pending = new Map<string, Pending>()
  let retransmissions = 0
  let port = 0
  for (const s of sockets) {
    s.on('message', (data) => {
      const text = data.toString('latin1')
      const status = Number(text.slice(8, 11))
      const m = /branch=([^;\r\n,]+)/.exec(text)
      if (m === null) return
      const p = pending.get(m[1])
      if (p === undefined || status < 200) return
      pending.delete(m[1])
      p.resolve(status)
    })
  }
  const retransmitter = setInterval(() => {
    const now = performance.now()
    for (const [branch, p] of pending) {
      if (now - p.sentAt > 32_000) { pending.delete(branch); p.resolve(408); continue }
      if (now >= p.next) {
        retransmissions++
        p.interval = Math.min(p.interval * 2, 4000)
        p.next = now + p.interval
        p.sock.send(p.msg, port, '127.0.0.1')
      }
    }
  }, 20)

  const register = (phase: string, i: number, cseq: number, method = 'REGISTER'): Promise<number> => {
    const sock = sockets[i % nSockets]
    const lport = sock.address().port
    const branch = `z9hG4bK-${phase}-${i}`
    const user = `user${i}`
    const msg = Buffer.from(method === 'REGISTER'
      ? `REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${lport};branch=${branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:${user}@example.com>;tag=t${i}\r\nTo: <sip:${user}@example.com>\r\nCall-ID: reg-${i}@bench\r\nCSeq: ${cseq} REGISTER\r\nContact: <sip:${user}@127.0.0.1:${lport}>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n`
      : `OPTIONS sip:127.0.0.1:${port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${lport};branch=${branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:probe@example.com>;tag=p${i}\r\nTo: <sip:127.0.0.1:${port}>\r\nCall-ID: opt-${i}-${phase}@bench\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n`)
    return new Promise(resolve => {
      const now = performance.now()
      pending.set(branch, { i, msg, sock, sentAt: now, next: now + 500, interval: 500, resolve })
      sock.send(msg, port, '127.0.0.1')
    })
  }

  const cpuOf = async (): Promise<number> => (await ask<{ cpu: number }>(node.proc, 'cpu')).cpu
  const run = async (phase: string, cseq: number): Promise<{ rate: number, ok: number, failed: Record<string, number>, retrans: number, cpuUs: number }> => {
    const r0 = retransmissions
    const c0 = await cpuOf()
    let ok = 0
    const failed: Record<string, number> = {}
    const count = (s: number): void => { if (s === 200) ok++; else failed[s] = (failed[s] ?? 0) + 1 }
    const t0 = performance.now()
    if (rate === 0) {
      let next = 0
      await Promise.all(Array.from({ length: windowSize }, async () => {
        while (next < users && Date.now() < deadline) count(await register(phase, next++, cseq))
      }))
    } else {
      const all: Array<Promise<void>> = []
      for (let i = 0; i < users && Date.now() < deadline; i++) {
        const due = t0 + i * 1000 / rate
        const wait = due - performance.now()
        if (wait > 1) await new Promise(resolve => setTimeout(resolve, wait))
        all.push(register(phase, i, cseq).then(count))
      }
      await Promise.all(all)
    }
    const secs = (performance.now() - t0) / 1000
    const cpuUs = (await cpuOf() - c0) / users
    return { cpuUs, rate: Math.round((ok + Object.values(failed).reduce((a, b) => a + b, 0)) / secs), ok, failed, retrans: retransmissions - r0 }
  }

  const settle = async (proc: ChildProcess): Promise<Stats> => {
    let s = await statsOf(proc)
    if (!values.settle) return s
    while (s.serverTransactions > 0 && Date.now() < deadline) {
      await new Promise(resolve => setTimeout(resolve, 2000))
      s = await statsOf(proc)
    }
    const r = await ask<{ stats: Stats, maps: Record<string, number>, trimmed: boolean }>(proc, 'settled')
    console.log(r.trimmed ? 'the node trimmed its memory after the burst (node/memory-trim.ts)' : 'the node did NOT trim its memory within 60 s')
    console.log(`resident memory by mapping: ${JSON.stringify(Object.fromEntries(Object.entries(r.maps).map(([k, v]) => [k, mb(v)])))}`)
    return r.stats
  }

  let node = await spawnNode()
  try {
    port = node.port
    const base = node.stats
    console.log(`node up in ${node.startMs.toFixed(0)} ms; baseline rss ${mb(base.rss)} heap ${mb(base.heapUsed)}`)
    const fresh = await run('new', 1)
    console.log(`new AoRs:  ${fresh.ok}/${users} ok at ${fresh.rate}/s, failed ${JSON.stringify(fresh.failed)}, retransmissions ${fresh.retrans}, node CPU ${fresh.cpuUs.toFixed(0)} µs/REGISTER`)
    if (values.refresh) {
      const again = await run('refresh', 2)
      console.log(`refresh:   ${again.ok}/${users} ok at ${again.rate}/s, failed ${JSON.stringify(again.failed)}, retransmissions ${again.retrans}, node CPU ${again.cpuUs.toFixed(0)} µs/REGISTER`)
    }
    const live = await statsOf(node.proc)
    console.log(`memory at once: rss ${mb(live.rss)} heap ${mb(live.heapUsed)} with ${live.serverTransactions} live server transactions (+${((live.heapUsed - base.heapUsed) / Math.max(1, live.serverTransactions)).toFixed(0)} B heap per transaction+registration)`)
    const s = await settle(node.proc)
    console.log(`memory at ${s.registrations} registrations (${s.serverTransactions} live server transactions): rss ${mb(s.rss)} (+${((s.rss - base.rss) / s.registrations).toFixed(0)} B/registration), heap ${mb(s.heapUsed)} (+${((s.heapUsed - base.heapUsed) / s.registrations).toFixed(0)} B/registration), heap committed ${mb(s.heapTotal)}, external ${mb(s.external)}; v8 ${JSON.stringify(Object.fromEntries(Object.entries(s.v8 ?? {}).map(([k, v]) => [k, mb(v)])))}`)
    if (values.snapshot !== undefined) console.log(`heap snapshot: ${(await ask<{ file: string }>(node.proc, 'snapshot')).file}`)
    if (values.restart) {
      node.proc.kill('SIGKILL')
      await new Promise(resolve => node.proc.once('exit', resolve))
      const t0 = performance.now()
      node = await spawnNode()
      port = node.port
      const up = performance.now() - t0
      const probeT = performance.now()
      const probe = await register('probe', 0, 1, 'OPTIONS')
      const probeMs = performance.now() - probeT
      let q = await ask<{ registrations: number, claims: number, reclaimed: boolean }>(node.proc, 'quick')
      while (!q.reclaimed && Date.now() < deadline) {
        await new Promise(resolve => setTimeout(resolve, 100))
        q = await ask<{ registrations: number, claims: number, reclaimed: boolean }>(node.proc, 'quick')
      }
      const done = performance.now() - t0
      console.log(`restart: node answering SIP ${up.toFixed(0)} ms after spawn (OPTIONS ${probe} in ${probeMs.toFixed(0)} ms); ${q.registrations} registrations re-claimed ${(done / 1000).toFixed(1)} s after spawn`)
    }
  } finally {
    clearInterval(retransmitter)
    node.proc.send({ type: 'stop' })
    await new Promise(resolve => { node.proc.once('exit', resolve); setTimeout(resolve, 5000) })
    node.proc.kill('SIGKILL')
    for (const s of sockets) s.close()
    await rm(dir, { recursive: true, force: true })
  }
}
