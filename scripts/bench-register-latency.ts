/**
 * REGISTER latency on a 3-node mesh of real `sipmesh start` processes, with every replica up and
 * with one replica stopped by SIGSTOP (frozen: its connections stay open, nobody knows it is
 * gone). New users REGISTER at node 1 over UDP at a fixed rate; each one's time from the request
 * to its final answer is measured (no retransmissions: one datagram each, on loopback).
 *
 *   npm exec -- node scripts/bench-register-latency.ts [--count 200] [--rate 50] [--bin path/to/sipmesh.js]
 *
 * `--bin` runs another build (for example a worktree at main) with this same driver, so that old
 * and new can be alternated in the same minutes. After each phase it asks node 2's admin API for a
 * few of the users (`/aor/<aor>`: does the AoR resolve on another node, and how fast), then times
 * MESSAGE routing across nodes: `--messages` users registered at node 1 by an agent that answers
 * 200, each sent one MESSAGE through node 2 (its first resolve of that user: a cold read of the
 * replicas, one of them frozen in the second phase), time to the final answer.
 *
 * Bounded: a fixed count per phase at a fixed rate, each REGISTER waits at most `--wait` ms, the
 * processes are stopped (SIGCONT, then SIGKILL) whatever happens.
 */
import { parseArgs } from 'node:util'
import { createSocket } from 'node:dgram'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir, loadavg } from 'node:os'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { ChildProcess } from 'node:child_process'
import { httpGet } from '../test/e2e/fixtures/processes.ts'

const { values: args } = parseArgs({
  options: {
    count: { type: 'string', default: '200' },
    rate: { type: 'string', default: '50' },
    wait: { type: 'string', default: '45000' },
    bin: { type: 'string', default: fileURLToPath(new URL('../node/bin/sipmesh.js', import.meta.url)) },
    label: { type: 'string', default: '' },
    messages: { type: 'string', default: '50' }
  }
})
const COUNT = Math.min(Number(args.count), 5_000)
const RATE = Math.min(Math.max(Number(args.rate), 1), 2_000)
const WAIT_MS = Math.min(Number(args.wait), 120_000)
const BIN = args.bin
const MESSAGES = Math.min(Math.max(Number(args.messages), 0), 1_000)
const run = `${Date.now().toString(36)}`

interface Node { child: ChildProcess, sip: number, admin: string, peerId: string, p2p: string }

function cleanEnv (): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SIPMESH_')) env[k] = v
  return env
}

async function start (dataDir: string, bootstrap?: string): Promise<Node> {
  const a = ['start', '--domain', 'example.com', '--sip', '127.0.0.1:0', '--p2p', '/ip4/127.0.0.1/tcp/0', '--admin', '127.0.0.1:0', '--data-dir', dataDir, '--log-level', 'info']
  if (bootstrap != null) a.push('--bootstrap', bootstrap)
  const child = spawn(process.execPath, [BIN, ...a], { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv() })
  child.stderr!.resume()
  return await new Promise<Node>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error('node did not start within 30 s')) }, 30_000)
    const rl = createInterface({ input: child.stdout! })
    rl.on('line', (line) => {
      if (!line.includes('"sipmesh node started"')) return
      clearTimeout(timer)
      const s = JSON.parse(line) as { peerId: string, multiaddrs: string[], sip: string, admin: string }
      resolve({ child, sip: Number(s.sip.split(':')[1]), admin: s.admin, peerId: s.peerId, p2p: `${s.multiaddrs[0]}` })
    })
    child.once('exit', () => { reject(new Error('node exited at start')) })
  })
}

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
function pct (xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))] ?? NaN
}

/** REGISTER `COUNT` new users at node `n` at `RATE`/s; the ms to each final answer (or undefined) */
async function registers (n: Node, phase: string): Promise<{ ms: number[], status: Map<string, number>, aors: string[], windows: number[] }> {
  const sock = createSocket('udp4')
  await new Promise<void>(resolve => { sock.bind(0, '127.0.0.1', resolve) })
  const port = sock.address().port
  const ms: number[] = []
  /** the slowest answer of each 5 s of sending */
  const windows: number[] = []
  const aors: string[] = []
  const t0 = performance.now()
  const answered = answers(sock, (code, took, sentAt) => {
    if (code === '200') ms.push(took)
    const w = Math.floor((sentAt - t0) / 5_000)
    windows[w] = Math.max(windows[w] ?? 0, took)
  })
  for (let i = 0; i < COUNT; i++) {
    const due = t0 + i * 1000 / RATE
    const now = performance.now()
    if (due > now) await sleep(due - now)
    const user = `u${run}${phase.replace(/[^a-z0-9]/gi, '')}${i}`
    const aor = `sip:${user}@example.com`
    aors.push(aor)
    const callId = `${user}@bench`
    const req = [
      'REGISTER sip:example.com SIP/2.0',
      `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bK${user};rport`,
      'Max-Forwards: 70',
      `From: <${aor}>;tag=${i}`,
      `To: <${aor}>`,
      `Call-ID: ${callId}`,
      'CSeq: 1 REGISTER',
      `Contact: <sip:${user}@127.0.0.1:${port}>`,
      'Expires: 600',
      'Content-Length: 0',
      '',
      ''
    ].join('\r\n')
    answered.sent(callId)
    sock.send(req, n.sip, '127.0.0.1')
  }
  const deadline = performance.now() + WAIT_MS
  while (answered.pending() > 0 && performance.now() < deadline) await sleep(50)
  sock.close()
  return { ms, status: answered.status, aors, windows }
}

/**
 * the final answer's status and ms for each request a socket sends, by Call-ID; `onAnswer` is
 * also told each one, with the time its request was sent
 */
function answers (sock: ReturnType<typeof createSocket>, onAnswer?: (status: string, ms: number, sentAt: number) => void): { sent: (callId: string) => void, ms: number[], status: Map<string, number>, pending: () => number } {
  const sentAt = new Map<string, number>()
  const ms: number[] = []
  const status = new Map<string, number>()
  sock.on('message', (msg) => {
    const text = msg.toString('latin1')
    const m = /^SIP\/2\.0 (\d{3})/.exec(text)
    if (m == null || m[1].startsWith('1')) return
    const callId = /\r\nCall-ID: *([^\r\n]+)/i.exec(text)?.[1]
    const t = callId != null ? sentAt.get(callId) : undefined
    if (t == null) return
    sentAt.delete(callId!)
    status.set(m[1], (status.get(m[1]) ?? 0) + 1)
    const took = performance.now() - t
    ms.push(took)
    onAnswer?.(m[1], took, t)
  })
  return { sent: (callId) => { sentAt.set(callId, performance.now()) }, ms, status, pending: () => sentAt.size }
}

/**
 * `MESSAGES` users registered at node `to` (by an agent that answers every request 200), then one
 * MESSAGE to each sent through node `via`, at RATE: the ms to each final answer.
 */
async function messageRouting (via: Node, to: Node, phase: string): Promise<string> {
  const ua = createSocket('udp4')
  const sender = createSocket('udp4')
  await Promise.all([ua, sender].map(async s => { await new Promise<void>(resolve => { s.bind(0, '127.0.0.1', resolve) }) }))
  try {
    const uaPort = ua.address().port
    const senderPort = sender.address().port
    let delivered = 0
    ua.on('message', (msg, rinfo) => {
      const text = msg.toString('latin1')
      if (text.startsWith('SIP/2.0')) return
      delivered++
      const keep = text.split('\r\n').filter(l => /^(Via|From|To|Call-ID|CSeq):/i.test(l)).map(l => /^To:/i.test(l) && !/;tag=/.test(l) ? `${l};tag=ua` : l)
      ua.send(['SIP/2.0 200 OK', ...keep, 'Content-Length: 0', '', ''].join('\r\n'), rinfo.port, rinfo.address)
    })
    const reg = answers(ua)
    const users: string[] = []
    for (let i = 0; i < MESSAGES; i++) {
      const user = `m${run}${phase.replace(/[^a-z0-9]/gi, '')}${i}`
      users.push(user)
      const callId = `${user}@reg`
      reg.sent(callId)
      ua.send([
        'REGISTER sip:example.com SIP/2.0', `Via: SIP/2.0/UDP 127.0.0.1:${uaPort};branch=z9hG4bK${user}r;rport`, 'Max-Forwards: 70',
        `From: <sip:${user}@example.com>;tag=r${i}`, `To: <sip:${user}@example.com>`, `Call-ID: ${callId}`, 'CSeq: 1 REGISTER',
        `Contact: <sip:${user}@127.0.0.1:${uaPort}>`, 'Expires: 600', 'Content-Length: 0', '', ''
      ].join('\r\n'), to.sip, '127.0.0.1')
      await sleep(1000 / RATE)
    }
    const regDeadline = performance.now() + WAIT_MS
    while (reg.pending() > 0 && performance.now() < regDeadline) await sleep(50)
    const out = answers(sender)
    const t0 = performance.now()
    for (const [i, user] of users.entries()) {
      const due = t0 + i * 1000 / RATE
      const now = performance.now()
      if (due > now) await sleep(due - now)
      const callId = `${user}@msg`
      const body = `hello ${i}`
      out.sent(callId)
      sender.send([
        `MESSAGE sip:${user}@example.com SIP/2.0`, `Via: SIP/2.0/UDP 127.0.0.1:${senderPort};branch=z9hG4bK${user}m;rport`, 'Max-Forwards: 70',
        `From: <sip:sender${run}@example.com>;tag=m${i}`, `To: <sip:${user}@example.com>`, `Call-ID: ${callId}`, 'CSeq: 1 MESSAGE',
        'Content-Type: text/plain', `Content-Length: ${body.length}`, '', body
      ].join('\r\n'), via.sip, '127.0.0.1')
    }
    const deadline = performance.now() + WAIT_MS
    while (out.pending() > 0 && performance.now() < deadline) await sleep(50)
    const statuses = [...out.status].map(([st, c]) => `${st}:${c}`).join(' ')
    return `MESSAGE via node 2 to users of node 1, first resolve each: n=${users.length} p50 ${pct(out.ms, 50).toFixed(1)} ms  p99 ${pct(out.ms, 99).toFixed(1)} ms  max ${Math.max(...out.ms).toFixed(1)} ms  [${statuses}${out.pending() > 0 ? ` none:${out.pending()}` : ''}]  delivered ${delivered}`
  } finally {
    ua.close()
    sender.close()
  }
}

async function phase (name: string, n: Node[]): Promise<void> {
  const load = loadavg()[0].toFixed(1)
  const t = performance.now()
  const { ms, status, aors, windows } = await registers(n[0], name)
  const took = (performance.now() - t) / 1000
  const statuses = [...status].map(([s, c]) => `${s}:${c}`).join(' ')
  const unanswered = COUNT - [...status.values()].reduce((a, b) => a + b, 0)
  // a few of them on node 2: resolved there (its cache or a lookup), and how long that took
  const sample = aors.filter((_, i) => i % Math.max(1, Math.floor(COUNT / 10)) === 0).slice(0, 10)
  const resolveMs: number[] = []
  let resolved = 0
  for (const aor of sample) {
    const r0 = performance.now()
    const res = await httpGet(n[1].admin, `/aor/${encodeURIComponent(aor)}`, 15_000).catch(() => ({ status: 0, body: '' }))
    resolveMs.push(performance.now() - r0)
    if (res.status === 200 && (JSON.parse(res.body) as { owner: string }).owner === n[0].peerId) resolved++
  }
  console.log(`${args.label} ${name.padEnd(18)} n=${COUNT} at ${RATE}/s  200 p50 ${pct(ms, 50).toFixed(1)} ms  p99 ${pct(ms, 99).toFixed(1)} ms  max ${Math.max(...ms).toFixed(1)} ms  [${statuses}${unanswered > 0 ? ` none:${unanswered}` : ''}]  ${took.toFixed(1)} s  node 2 resolves ${resolved}/${sample.length} (p50 ${pct(resolveMs, 50).toFixed(0)} ms, max ${Math.max(...resolveMs).toFixed(0)} ms)  load ${load}`)
  if (windows.length > 1) console.log(`${args.label} ${name.padEnd(18)} slowest answer per 5 s of sending: ${windows.map(w => w.toFixed(0)).join(' ')} ms`)
  if (MESSAGES > 0) console.log(`${args.label} ${name.padEnd(18)} ${await messageRouting(n[1], n[0], name)}  load ${loadavg()[0].toFixed(1)}`)
  // what the registry counted (a build without these metrics prints nothing for them)
  const counted: string[] = []
  for (const [i, node] of [[0, n[0]], [1, n[1]]] as const) {
    const body = (await httpGet(node.admin, '/metrics', 15_000).catch(() => ({ body: '' }))).body
    for (const line of body.split('\n')) {
      if (/^sipmesh_registry_(put_claims_dropped_total|early_reads_total|late_read_corrections_total|peers_down_total)/.test(line) && !line.endsWith(' 0')) counted.push(`node ${i + 1} ${line}`)
    }
  }
  if (counted.length > 0) console.log(`${args.label} ${name.padEnd(18)} ${counted.join('; ')}`)
}

const dir = await mkdtemp(join(tmpdir(), 'sipmesh-reglat-'))
const nodes: Node[] = []
try {
  nodes.push(await start(join(dir, 'n1')))
  const boot = nodes[0].p2p.includes('/p2p/') ? nodes[0].p2p : `${nodes[0].p2p}/p2p/${nodes[0].peerId}`
  nodes.push(...await Promise.all([start(join(dir, 'n2'), boot), start(join(dir, 'n3'), boot)]))
  // every node lists the two others
  const until = Date.now() + 30_000
  while (Date.now() < until) {
    const peers = await Promise.all(nodes.map(async n => (JSON.parse((await httpGet(n.admin, '/status', 15_000)).body) as { peers: string[] }).peers.length))
    if (peers.every(p => p >= 2)) break
    await sleep(200)
  }
  await sleep(2_000)
  await phase('all up', nodes)
  nodes[2].child.kill('SIGSTOP')
  await sleep(500)
  await phase('node 3 stopped', nodes)
  nodes[2].child.kill('SIGCONT')
} finally {
  for (const n of nodes) {
    n.child.kill('SIGCONT')
    n.child.kill('SIGKILL')
  }
  await sleep(200)
  await rm(dir, { recursive: true, force: true })
}
