// IM that loses nothing, end to end (issue 5): three `sipmesh start` processes on 127.0.0.1.
// Offline store: a MESSAGE to a known user who is away gets 202 and reaches her when she registers
// on another node, also after the storing node was killed with SIGKILL and restarted; an unknown
// user gets 404. Session IM: SIP.js Inviter / Invitation across nodes over WebSocket with an MSRP
// SDP passed through intact (INVITE, 100, 200, ACK, BYE), and a CANCEL before the answer.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { UserAgent, Registerer, RegistererState, Inviter, SessionState } from 'sip.js'
import type { Invitation, Session, SessionDescriptionHandler, SessionDescriptionHandlerFactory } from 'sip.js'
import { run, stop, waitFor, register, UdpUa, type Proc } from './fixtures/processes.ts'

interface Node { name: string, dataDir: string, proc?: Proc, sip: number, ws: number, admin: string, peerId: string, multiaddr: string }

async function startNode (n: Node, credentials: string, bootstrap?: string): Promise<void> {
  const args = ['start', '--domain', 'example.com', '--sip', '127.0.0.1:0', '--ws', '127.0.0.1:0', '--p2p', '/ip4/127.0.0.1/tcp/0',
    '--admin', '127.0.0.1:0', '--data-dir', n.dataDir, '--credentials', credentials, '--log-level', process.env.SIPMESH_TEST_LOG !== undefined ? 'debug' : 'info']
  if (bootstrap !== undefined) args.push('--bootstrap', bootstrap)
  n.proc = run(args)
  const gw = JSON.parse(await n.proc.waitForLine(l => l.includes('"sip gateway started"'), 30_000)) as { ws?: { port: number }, udp: { port: number } }
  const started = JSON.parse(await n.proc.waitForLine(l => l.includes('"sipmesh node started"'), 30_000)) as { peerId: string, multiaddrs: string[], admin: string }
  n.ws = gw.ws?.port ?? 0
  n.sip = gw.udp.port
  n.admin = started.admin
  n.peerId = started.peerId
  n.multiaddr = started.multiaddrs[0]
  assert.ok(n.ws > 0 && n.sip > 0)
}

const bootOf = (n: Node): string => n.multiaddr.includes('/p2p/') ? n.multiaddr : `${n.multiaddr}/p2p/${n.peerId}`

const within = async <T>(ms: number, p: Promise<T>, what: string): Promise<T> => await Promise.race([
  p, new Promise<never>((_resolve, reject) => setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms).unref())
])

/** a MESSAGE with a fixed Call-ID, so that a retry is the same message (stored once) */
function pager (from: string, to: string, port: number, body: string, callId: string, date: string): string {
  return [
    `MESSAGE ${to} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bK${Math.random().toString(36).slice(2)};rport`,
    'Max-Forwards: 70',
    `From: <${from}>;tag=t-${callId}`,
    `To: <${to}>`,
    `Call-ID: ${callId}`,
    'CSeq: 1 MESSAGE',
    `Date: ${date}`,
    'Content-Type: text/plain',
    `Content-Length: ${Buffer.byteLength(body)}`,
    '',
    body
  ].join('\r\n')
}

const statusOf = (answer: string): number => Number(answer.slice(8, 11))

// MSRP session IM offer/answer (RFC 4975): the proxy must pass it through byte for byte
const MSRP_OFFER = 'v=0\r\no=alice 2890844526 2890844527 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n' +
  'm=message 7654 TCP/MSRP *\r\na=accept-types:text/plain\r\na=path:msrp://127.0.0.1:7654/jshA7weztas;tcp\r\n'
const MSRP_ANSWER = 'v=0\r\no=bob 2890844612 2890844616 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n' +
  'm=message 12763 TCP/MSRP *\r\na=accept-types:text/plain\r\na=path:msrp://127.0.0.1:12763/kjhd37s2s20w2a;tcp\r\n'

/** a session description handler that offers / answers fixed MSRP SDP and records what it got */
function msrpHandler (mine: string, got: string[]): SessionDescriptionHandlerFactory {
  return () => {
    const h: SessionDescriptionHandler = {
      close () {},
      getDescription: async () => ({ body: mine, contentType: 'application/sdp' }),
      hasDescription: (ct: string) => ct === 'application/sdp',
      setDescription: async (sdp: string) => { got.push(sdp) },
      sendDtmf: () => false
    }
    return h
  }
}

describe('IM across a 3-node mesh of separate processes', () => {
  const nodes: Node[] = []
  const agents: UserAgent[] = []
  const udp: UdpUa[] = []
  let dir = ''
  let credentials = ''

  async function agent (user: string, node: Node, sdp: string, got: string[], onInvite?: (i: Invitation) => void): Promise<UserAgent> {
    const ua = new UserAgent({
      uri: UserAgent.makeURI(`sip:${user}@example.com`)!,
      transportOptions: { server: `ws://127.0.0.1:${node.ws}` },
      logLevel: 'error',
      logBuiltinEnabled: false,
      sessionDescriptionHandlerFactory: msrpHandler(sdp, got),
      delegate: onInvite === undefined ? undefined : { onInvite }
    })
    agents.push(ua)
    await within(5000, ua.start(), `${user} connects`)
    const reg = new Registerer(ua, { expires: 300 })
    const registered = new Promise<void>(resolve => { reg.stateChange.addListener(s => { if (s === RegistererState.Registered) resolve() }) })
    await reg.register()
    await within(5000, registered, `${user} registers`)
    return ua
  }

  async function udpUa (): Promise<UdpUa> {
    const u = new UdpUa()
    await u.open()
    udp.push(u)
    return u
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sipmesh-im-'))
    credentials = join(dir, 'credentials')
    writeFileSync(credentials, '# users of the mesh\nolga@example.com:secret\n')
    for (let i = 0; i < 3; i++) nodes.push({ name: `n${i + 1}`, dataDir: join(dir, `n${i + 1}`), sip: 0, ws: 0, admin: '', peerId: '', multiaddr: '' })
    await startNode(nodes[0], credentials)
    const boot = bootOf(nodes[0])
    await Promise.all([startNode(nodes[1], credentials, boot), startNode(nodes[2], credentials, boot)])
  })

  after(async () => {
    for (const ua of agents) await ua.stop().catch(() => {})
    for (const u of udp) u.close()
    await Promise.all(nodes.map(async n => await stop(n.proc, 'SIGKILL')))
    rmSync(dir, { recursive: true, force: true })
  })

  test('offline: 202 for known users (credentials; registered on another node), 404 for strangers; stored node killed -9 and restarted; delivered where they register', async () => {
    const [n1, n2, n3] = nodes
    const sender = await udpUa()
    const to = (n: Node): { host: string, port: number } => ({ host: '127.0.0.1', port: n.sip })
    // peter registers on n2 and leaves: every node knows him from then on (his marker claim)
    const peter = await udpUa()
    assert.equal(statusOf(await peter.request(to(n2), register('sip:peter@example.com', peter.port, 300))), 200)
    assert.equal(statusOf(await peter.request(to(n2), register('sip:peter@example.com', peter.port, 0))), 200)

    const date = 'Sun, 22 Nov 2026 01:02:03 GMT'
    assert.equal(statusOf(await sender.request(to(n1), pager('sip:sam@example.com', 'sip:olga@example.com', sender.port, 'for olga 1', 'olga-1', date))), 202)
    assert.equal(statusOf(await sender.request(to(n1), pager('sip:sam@example.com', 'sip:olga@example.com', sender.port, 'for olga 2', 'olga-2', date))), 202)
    assert.equal(statusOf(await sender.request(to(n1), pager('sip:sam@example.com', 'sip:nobody@example.com', sender.port, 'x', 'nobody-1', date))), 404)
    // the marker claim may take a moment to be readable on n1: a retry is the same message
    let peterAnswer = 0
    await waitFor(async () => {
      peterAnswer = statusOf(await sender.request(to(n1), pager('sip:sam@example.com', 'sip:peter@example.com', sender.port, 'for peter', 'peter-1', date)))
      return peterAnswer === 202
    }, 10_000, 'peter known on n1')
    assert.equal(peterAnswer, 202)

    // the storing node dies hard and comes back on the same data directory
    const ended = await stop(n1.proc, 'SIGKILL')
    assert.equal(ended?.signal, 'SIGKILL')
    await startNode(n1, credentials, bootOf(n2))

    const olga = await udpUa()
    assert.equal(statusOf(await olga.request(to(n3), register('sip:olga@example.com', olga.port, 300))), 200)
    const peter2 = await udpUa()
    assert.equal(statusOf(await peter2.request(to(n3), register('sip:peter@example.com', peter2.port, 300))), 200)
    await waitFor(() => olga.received.length >= 2 && peter2.received.length >= 1, 45_000, 'the stored messages to arrive')
    const bodies = olga.received.map(m => m.split('\r\n\r\n')[1])
    assert.deepEqual(bodies, ['for olga 1', 'for olga 2'])
    assert.match(olga.received[0], /\r\nFrom: <sip:sam@example\.com>;tag=t-olga-1\r\n/)
    assert.match(olga.received[0], new RegExp(`\\r\\nDate: ${date}\\r\\n`))
    assert.match(olga.received[0], /\r\nP-Asserted-Identity: <sip:sam@example\.com>\r\n/)
    assert.equal(peter2.received[0].split('\r\n\r\n')[1], 'for peter')
    await new Promise(resolve => setTimeout(resolve, 500))
    assert.equal(olga.received.length, 2, 'none delivered twice')
  })

  test('session IM: SIP.js Inviter on n1, Invitation on n2; MSRP SDP intact both ways; ACK and BYE follow the route set', async () => {
    const [n1, n2] = nodes
    const calleeGot: string[] = []
    const callerGot: string[] = []
    let invitation: Invitation | undefined
    const invited = new Promise<Invitation>(resolve => {
      void agent('bea', n2, MSRP_ANSWER, calleeGot, (i) => { invitation = i; resolve(i) })
    })
    await waitFor(() => agents.length > 0, 5000, 'bea')
    const caller = await agent('abe', n1, MSRP_OFFER, callerGot)
    await new Promise(resolve => setTimeout(resolve, 300))
    const inviter = new Inviter(caller, UserAgent.makeURI('sip:bea@example.com')!)
    const established = new Promise<void>(resolve => { inviter.stateChange.addListener(s => { if (s === SessionState.Established) resolve() }) })
    let trying = false
    await inviter.invite({ requestDelegate: { onTrying: () => { trying = true } } })
    const inv = await within(10_000, invited, 'bea is invited')
    // SIP.js reports Established on accept(): watch the ACK itself arrive through both nodes
    let acked = false
    const hook = inv as unknown as { onAckRequest: (r: unknown) => Promise<void> }
    const onAck = hook.onAckRequest.bind(inv)
    hook.onAckRequest = async (r) => { acked = true; await onAck(r) }
    assert.equal(inv.request.body, MSRP_OFFER)
    assert.ok(inv.request.getHeaders('Record-Route').length >= 2, 'both nodes record-route')
    const calleeUp = new Promise<void>(resolve => { inv.stateChange.addListener(s => { if (s === SessionState.Established) resolve() }) })
    await inv.accept()
    await within(10_000, established, 'abe established')
    await within(10_000, calleeUp, 'bea established')
    await waitFor(() => acked, 10_000, 'the ACK to reach bea')
    assert.ok(trying, '100 Trying reached the caller')
    assert.deepEqual(callerGot, [MSRP_ANSWER])
    assert.deepEqual(calleeGot, [MSRP_OFFER])
    const ended = new Promise<void>(resolve => { (invitation as Session).stateChange.addListener(s => { if (s === SessionState.Terminated) resolve() }) })
    await inviter.bye()
    await within(10_000, ended, 'bea sees the BYE')
    assert.equal(inviter.state, SessionState.Terminated)
  })

  test('session IM: CANCEL before the answer reaches the callee on another node, the caller gets 487', async () => {
    const [, n2, n3] = nodes
    let invitation: Invitation | undefined
    const invited = new Promise<Invitation>(resolve => {
      void agent('cleo', n3, MSRP_ANSWER, [], (i) => { invitation = i; resolve(i) })
    })
    await new Promise(resolve => setTimeout(resolve, 1000))
    const caller = await agent('dirk', n2, MSRP_OFFER, [])
    await new Promise(resolve => setTimeout(resolve, 300))
    const inviter = new Inviter(caller, UserAgent.makeURI('sip:cleo@example.com')!)
    let finalStatus = 0
    await inviter.invite({ requestDelegate: { onReject: (r) => { finalStatus = r.message.statusCode ?? 0 } } })
    const inv = await within(10_000, invited, 'cleo is invited')
    await inv.progress()
    const calleeEnded = new Promise<void>(resolve => { inv.stateChange.addListener(s => { if (s === SessionState.Terminated) resolve() }) })
    await new Promise(resolve => setTimeout(resolve, 200))
    await inviter.cancel()
    await within(10_000, calleeEnded, 'cleo sees the CANCEL')
    await waitFor(() => finalStatus !== 0, 10_000, 'the caller gets a final answer')
    assert.equal(finalStatus, 487)
    assert.ok(invitation !== undefined)
  })

  test('a user whose node was killed -9 is offline, not unreachable: MESSAGEs are stored (202, none 480) and reach him where he registers next (issue 10 item 4)', async () => {
    const [n1, n2, n3] = nodes
    const to = (n: Node): { host: string, port: number } => ({ host: '127.0.0.1', port: n.sip })
    const quinn = await udpUa()
    assert.equal(statusOf(await quinn.request(to(n3), register('sip:quinn@example.com', quinn.port, 3600))), 200)
    const sender = await udpUa()
    const date = 'Sun, 22 Nov 2026 02:00:00 GMT'
    // n1 knows the route to n3 before the crash
    assert.equal(statusOf(await sender.request(to(n1), pager('sip:sam@example.com', 'sip:quinn@example.com', sender.port, 'before', 'quinn-0', date))), 200)
    assert.equal(quinn.received.length, 1)
    const ended = await stop(n3.proc, 'SIGKILL')
    assert.equal(ended?.signal, 'SIGKILL')
    // at once, and for as long as his claim's lease would run: stored, never refused
    const answers: number[] = []
    for (let i = 1; i <= 5; i++) {
      answers.push(statusOf(await sender.request(to(n1), pager('sip:sam@example.com', 'sip:quinn@example.com', sender.port, `after ${i}`, `quinn-${i}`, date), 10_000)))
    }
    assert.deepEqual(answers, [202, 202, 202, 202, 202])
    const quinn2 = await udpUa()
    assert.equal(statusOf(await quinn2.request(to(n2), register('sip:quinn@example.com', quinn2.port, 300))), 200)
    await waitFor(() => quinn2.received.length >= 5, 45_000, 'the stored messages to reach quinn on n2')
    assert.deepEqual(quinn2.received.map(m => m.split('\r\n\r\n')[1]), ['after 1', 'after 2', 'after 3', 'after 4', 'after 5'])
  })
})
