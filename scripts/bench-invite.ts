// INVITE setup time across two nodes (issue 5): two `sipmesh start` processes on 127.0.0.1 (libp2p
// over loopback TCP, the DHT registry), a callee UA registered over TCP on node B, a caller UA on
// node A. Each call: INVITE (with an MSRP SDP) → A → mesh → B → callee, who answers 200 at once
// (Record-Route echoed, Contact); the caller sends the ACK along the route set (A → mesh → B →
// callee), then a BYE the same way. Measured per call: INVITE sent → 200 received at the caller
// (setup), and INVITE sent → ACK received at the callee (three-way handshake). Calls run one
// after the other. Bounded by --calls and --max-seconds.
//   node scripts/bench-invite.ts [--calls 500] [--max-seconds 60]
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { run, stop, type Proc } from '../test/e2e/fixtures/processes.ts'
import { TestUa } from '../test/sip-gateway/gateway/fixtures/ua.ts'
import type { SipRequest } from '../sip-gateway/codec/index.ts'

const { values } = parseArgs({ options: {
  calls: { type: 'string', default: '500' },
  'max-seconds': { type: 'string', default: '60' }
} })
const calls = Math.max(1, Math.min(20_000, Number(values.calls)))
const deadline = Date.now() + Math.max(5, Number(values['max-seconds'])) * 1000

const SDP = 'v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=message 7654 TCP/MSRP *\r\na=accept-types:text/plain\r\na=path:msrp://127.0.0.1:7654/bench;tcp\r\n'

function percentile (sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor(p / 100 * sorted.length))]
}

const dir = await mkdtemp(join(tmpdir(), 'sipmesh-bench-invite-'))
const procs: Proc[] = []
const uas: TestUa[] = []
try {
  const nodes: Array<{ sip: { host: string, port: number }, multiaddr: string }> = []
  for (let i = 0; i < 2; i++) {
    const args = ['start', '--domain', 'example.com', '--sip', '127.0.0.1:0', '--p2p', '/ip4/127.0.0.1/tcp/0', '--admin', '127.0.0.1:0', '--data-dir', join(dir, `n${i}`), '--log-level', 'info']
    if (i === 1) args.push('--bootstrap', nodes[0].multiaddr)
    const proc = run(args)
    procs.push(proc)
    const gw = JSON.parse(await proc.waitForLine(l => l.includes('"sip gateway started"'), 30_000)) as { tcp: { host: string, port: number } }
    const started = JSON.parse(await proc.waitForLine(l => l.includes('"sipmesh node started"'), 30_000)) as { peerId: string, multiaddrs: string[] }
    const ma = started.multiaddrs[0]
    nodes.push({ sip: gw.tcp, multiaddr: ma.includes('/p2p/') ? ma : `${ma}/p2p/${started.peerId}` })
  }
  await new Promise(resolve => setTimeout(resolve, 3000)) // let the two nodes meet
  const callee = await TestUa.open('bea', nodes[1].sip, 'TCP')
  const caller = await TestUa.open('abe', nodes[0].sip, 'TCP')
  uas.push(callee, caller)
  callee.answer = (m: SipRequest) => {
    if (m.method === 'INVITE') {
      const rr = m.headers.getAll('Record-Route').map(v => ['Record-Route', v] as [string, string])
      callee.reply(m, 200, [...rr, ['Contact', callee.contact], ['Content-Type', 'application/sdp']], `t${m.headers.get('Call-ID') ?? ''}`)
      return undefined
    }
    return 200
  }
  const reg = await callee.register(3600)
  if (reg?.status !== 200) throw new Error(`REGISTER answered ${reg?.status}`)
  await new Promise(resolve => setTimeout(resolve, 500))

  const setup: number[] = []
  const handshake: number[] = []
  let failed = 0
  for (let i = 0; i < calls && Date.now() < deadline; i++) {
    const callId = `bench-invite-${i}`
    const fromTag = `ft${i}`
    const { text, branch } = caller.build({ method: 'INVITE', uri: 'sip:bea@example.com', callId, cseq: 1, fromTag, headers: [['Contact', caller.contact], ['Content-Type', 'application/sdp']], body: '' })
    const invite = text.replace('Content-Length: 0\r\n\r\n', `Content-Length: ${Buffer.byteLength(SDP)}\r\n\r\n${SDP}`)
    const t0 = performance.now()
    caller.sendRaw(invite)
    const ok = await caller.waitFinal(branch, 5000)
    const t1 = performance.now()
    if (ok?.status !== 200) { failed++; continue }
    setup.push(t1 - t0)
    // ACK and BYE along the route set (Record-Route reversed), to the callee's Contact
    const routes = ok.headers.getAll('Record-Route').reverse()
    const target = /<([^>]+)>/.exec(ok.headers.get('Contact') ?? '')?.[1] ?? ''
    const to = ok.headers.get('To') ?? ''
    const inDialog = (method: string, cseq: number): { text: string, branch: string } => caller.build({
      method, uri: target, callId, cseq, fromTag, to, headers: routes.map(r => ['Route', r] as [string, string])
    })
    const ack = inDialog('ACK', 1)
    caller.sendRaw(ack.text)
    // waitFor re-checks on every message the callee receives: the time is taken on arrival
    const gotAck = await callee.waitFor(() => callee.received.some(m => m.method === 'ACK' && m.headers.get('Call-ID') === callId) ? performance.now() : undefined, 5000)
    if (gotAck === undefined) failed++
    else handshake.push(gotAck - t0)
    const bye = inDialog('BYE', 2)
    caller.sendRaw(bye.text)
    const byeOk = await caller.waitFinal(bye.branch, 5000)
    if (byeOk?.status !== 200) failed++
  }
  setup.sort((x, y) => x - y)
  handshake.sort((x, y) => x - y)
  const f = (v: number): string => v.toFixed(2)
  console.log(`INVITE across two sipmesh processes (TCP UAs, libp2p mesh on loopback), ${setup.length} calls one after the other, ${failed} failures`)
  console.log(`  INVITE → 200 at the caller:   p50 ${f(percentile(setup, 50))} ms  p99 ${f(percentile(setup, 99))} ms  max ${f(setup[setup.length - 1] ?? NaN)} ms`)
  console.log(`  INVITE → ACK at the callee:   p50 ${f(percentile(handshake, 50))} ms  p99 ${f(percentile(handshake, 99))} ms`)
  console.log(JSON.stringify({ bench: 'invite', calls: setup.length, failed, setupP50Ms: +f(percentile(setup, 50)), setupP99Ms: +f(percentile(setup, 99)), handshakeP50Ms: +f(percentile(handshake, 50)), handshakeP99Ms: +f(percentile(handshake, 99)) }))
} finally {
  for (const u of uas) await u.close()
  await Promise.all(procs.map(async p => await stop(p, 'SIGTERM', 5000)))
  await rm(dir, { recursive: true, force: true })
}
