// Logs a person can read (issue 14): two `sipmesh start` processes, real SIP.js user agents over
// WebSocket; the info lines for peers, registration changes (not refreshes), a move, and a
// forwarded request that failed appear on the nodes' stdout, in JSON and with --log-format pretty.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { UserAgent, Registerer, RegistererState, Messager } from 'sip.js'
import { run, stop, httpGet, freePorts, freeSipPort, waitFor, type Proc } from './fixtures/processes.ts'

const within = async <T>(ms: number, p: Promise<T>, what: string): Promise<T> => await Promise.race([
  p, new Promise<never>((_resolve, reject) => setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms).unref())
])

interface Line { msg: string, level: string, [field: string]: unknown }

describe('readable logs', () => {
  let dir = ''
  // a: pretty, fixed ports; b: JSON, bootstrapped from a
  let a: Proc | undefined
  let b: Proc | undefined
  let aWs = 0
  let aPeer = ''
  let bWs = 0
  let bPeer = ''
  const agents: UserAgent[] = []

  const json = (p: Proc | undefined): Line[] => (p?.lines ?? []).filter(l => l.startsWith('{')).map(l => JSON.parse(l) as Line)
  const pretty = (p: Proc | undefined, msg: string): string[] => (p?.lines ?? []).filter(l => l.includes(` ${msg}`))

  async function agent (user: string, ws: number): Promise<UserAgent> {
    const ua = new UserAgent({ uri: UserAgent.makeURI(`sip:${user}@example.com`)!, transportOptions: { server: `ws://127.0.0.1:${ws}` }, logLevel: 'error', logBuiltinEnabled: false })
    agents.push(ua)
    await within(5000, ua.start(), `${user} connects`)
    return ua
  }

  async function register (ua: UserAgent, expires = 300): Promise<Registerer> {
    const r = new Registerer(ua, { expires })
    const ok = new Promise<void>(resolve => { r.stateChange.addListener(s => { if (s === RegistererState.Registered) resolve() }) })
    await r.register()
    await within(10_000, ok, 'registration')
    return r
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sipmesh-logs-'))
    const [admin, p2p, ws] = await freePorts(3)
    const sip = await freeSipPort()
    aWs = ws
    a = run(['start', '--domain', 'example.com', '--sip', `127.0.0.1:${sip}`, '--ws', `127.0.0.1:${ws}`, '--p2p', `/ip4/127.0.0.1/tcp/${p2p}`,
      '--admin', `127.0.0.1:${admin}`, '--data-dir', join(dir, 'a'), '--log-format', 'pretty'])
    await a.waitForLine(l => l.includes('sipmesh node started'), 30_000)
    aPeer = (JSON.parse((await httpGet(`127.0.0.1:${admin}`, '/status')).body) as { peerId: string }).peerId
    b = run(['start', '--domain', 'example.com', '--sip', '127.0.0.1:0', '--ws', '127.0.0.1:0', '--p2p', '/ip4/127.0.0.1/tcp/0',
      '--admin', '127.0.0.1:0', '--data-dir', join(dir, 'b'), '--bootstrap', `/ip4/127.0.0.1/tcp/${p2p}/p2p/${aPeer}`])
    const gw = JSON.parse(await b.waitForLine(l => l.includes('"sip gateway started"'), 30_000)) as { ws: { port: number } }
    bWs = gw.ws.port
    bPeer = (JSON.parse(await b.waitForLine(l => l.includes('"sipmesh node started"'), 30_000)) as { peerId: string }).peerId
  })

  after(async () => {
    for (const ua of agents) await within(5000, ua.stop(), 'ua stop').catch(() => {})
    await Promise.all([stop(a), stop(b)])
    rmSync(dir, { recursive: true, force: true })
  })

  test('pretty lines for a terminal, JSON by default; the token file is named, never the token', async () => {
    const started = pretty(a, 'sipmesh node started')
    assert.equal(started.length, 1, a?.lines.join('\n'))
    assert.match(started[0], /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] INFO: sipmesh node started/)
    assert.ok(a?.lines.every(l => !l.startsWith('{')), 'no JSON line in pretty mode')
    assert.ok(b?.lines.every(l => l.startsWith('{')), 'JSON lines by default')
    const tokenLine = json(b).find(l => l.msg === 'admin API token generated')
    assert.equal(tokenLine?.tokenFile, join(dir, 'b', 'admin.token'))
    const token = (await import('node:fs')).readFileSync(join(dir, 'b', 'admin.token'), 'utf8').trim()
    assert.ok(b?.lines.every(l => !l.includes(token)), 'the token itself is never logged')
  })

  test('peer connected, on both sides', async () => {
    await waitFor(() => json(b).some(l => l.msg === 'peer connected' && l.peer === aPeer), 10_000, 'b to log a')
    await waitFor(() => pretty(a, 'peer connected').some(l => l.includes(bPeer)), 10_000, 'a to log b')
  })

  test('a registration: one line when added, none for refreshes; a move: added with from on one side, moved away on the other; removed', async () => {
    const onA = await agent('alice', aWs)
    const reg = await register(onA)
    await waitFor(() => pretty(a, 'registration added').some(l => l.includes('sip:alice@example.com') && l.includes('"claim":"won"')), 5000, 'registration added on a')
    // refreshes: no new line
    for (let i = 0; i < 3; i++) await register(onA)
    await reg.register()
    await new Promise(resolve => setTimeout(resolve, 500))
    assert.equal(pretty(a, 'registration added').filter(l => l.includes('sip:alice@example.com')).length, 1, a?.lines.join('\n'))

    // alice on b (another device): the claim moves
    const onB = await agent('alice', bWs)
    const regB = await register(onB)
    await waitFor(() => json(b).some(l => l.msg === 'registration added' && l.aor === 'sip:alice@example.com' && l.from === aPeer), 10_000, 'registration added on b, from a')
    await waitFor(() => pretty(a, 'registration moved away').some(l => l.includes('sip:alice@example.com') && l.includes(bPeer)), 10_000, 'moved away on a')

    // alice leaves b: removed, unregistered
    const gone = new Promise<void>(resolve => { regB.stateChange.addListener(s => { if (s === RegistererState.Unregistered) resolve() }) })
    await regB.unregister()
    await within(5000, gone, 'unregister')
    await waitFor(() => json(b).some(l => l.msg === 'registration removed' && l.aor === 'sip:alice@example.com' && l.why === 'unregistered'), 5000, 'removed on b')
    // each line at info
    for (const l of json(b).filter(l => l.msg.startsWith('registration '))) assert.equal(l.level, 'info')
  })

  test('a forwarded request that failed: the node it went to stopped answering; then it died', async () => {
    const carol = await agent('carol', bWs)
    await register(carol)
    const dave = await agent('dave', aWs)
    await register(dave)
    const send = async (text: string): Promise<number> => await new Promise<number>((resolve) => {
      void new Messager(dave, UserAgent.makeURI('sip:carol@example.com')!, text).message({ requestDelegate: { onAccept: (r) => { resolve(r.message.statusCode ?? 0) }, onReject: (r) => { resolve(r.message.statusCode ?? 0) } } })
    })
    // a knows where carol is, and the mesh path works
    assert.equal(await within(10_000, send('hello'), 'first MESSAGE'), 200)
    // b hangs (SIGSTOP): the request forwarded to it gets no answer
    b?.child.kill('SIGSTOP')
    const status = await within(45_000, send('are you there?'), 'the MESSAGE to carol answered')
    // the user agent's own timer F (32 s) may fire before node a's, which started a little later
    await waitFor(() => pretty(a, 'forwarded request failed').length >= 1, 15_000, `the failure logged (status ${status}; ${a?.lines.slice(-5).join('\n')})`)
    const failed = pretty(a, 'forwarded request failed')
    assert.match(failed[0], /"method":"MESSAGE"/)
    assert.match(failed[0], /"aor":"sip:carol@example.com"/)
    assert.ok(failed[0].includes(bPeer), failed[0])
    b?.child.kill('SIGKILL')
    await waitFor(() => pretty(a, 'peer disconnected').some(l => l.includes(bPeer)), 10_000, 'a to log that b left')
  })
})
