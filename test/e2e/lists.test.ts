// Resource lists end to end: three `sipmesh start` processes on 127.0.0.1. A list is PUT through
// n1's admin API with members registered on n2 and n3 and one registered nowhere; a raw UDP user
// agent on n3 subscribes to it (n3 fetches the list from n1, its home) and gets the multipart
// RLMI full state, then a partial NOTIFY when a member PUBLISHes. n1 restarts: the list is still
// served (persisted, claimed again) to a new subscriber through n2. Hostile PUTs are refused.
// Then edits: a list homed on n1 and subscribed through n3 is edited through n2's API (the home
// moves to n2): the subscriber on n3 sees the member added within 2 s, a member removed as
// terminated, and the deletion at n2 ends its subscription. And a busy lamp field: a list
// subscribed with `Event: dialog` through n3 shows a member's call on n2 (from n1) ring, connect
// and end in its RLMI NOTIFYs.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { run, stop, httpRequest, adminToken, type Proc } from './fixtures/processes.ts'
import { registerOn } from './fixtures/register.ts'
import { TestUa } from '../sip-gateway/gateway/fixtures/ua.ts'
import { subscribe, publish, pidf, waitNotify, notifies as notifiesOf } from '../sip-gateway/presence/fixtures.ts'
import { parseMultipart } from '../sip-gateway/presence/lists/multipart.ts'
import { parseXmlRoot, type XmlElement } from '../../sip-gateway/presence/pidf.ts'
import type { SipRequest } from '../../sip-gateway/codec/index.ts'
import { parseDialogInfo } from '../../sip-gateway/presence/dialog-info.ts'

interface Node { dataDir: string, proc?: Proc, udp: number, admin: string, peerId: string, multiaddr: string }

async function startNode (n: Node, bootstrap?: string): Promise<void> {
  const args = ['start', '--domain', 'example.com', '--sip', '127.0.0.1:0', '--p2p', '/ip4/127.0.0.1/tcp/0',
    '--admin', '127.0.0.1:0', '--data-dir', n.dataDir, '--log-level', process.env.SIPMESH_TEST_LOG !== undefined ? 'debug' : 'info']
  if (bootstrap !== undefined) args.push('--bootstrap', bootstrap)
  n.proc = run(args)
  const gw = JSON.parse(await n.proc.waitForLine(l => l.includes('"sip gateway started"'), 30_000)) as { udp: { port: number } }
  const started = JSON.parse(await n.proc.waitForLine(l => l.includes('"sipmesh node started"'), 30_000)) as { peerId: string, multiaddrs: string[], admin: string }
  n.udp = gw.udp.port
  n.admin = started.admin
  n.peerId = started.peerId
  n.multiaddr = started.multiaddrs[0]
}

/** an admin API request with the node's token (issue 14: writes need it) */
async function http (n: Node, method: string, path: string, body?: string): Promise<{ status: number, body: string }> {
  return await httpRequest(n.admin, method, path, { body, token: adminToken(n.dataDir), ms: 10_000 })
}

const ACCEPT = 'multipart/related, application/rlmi+xml, application/pidf+xml'
const attr = (el: XmlElement, n: string): string | undefined => el.attrs.find(a => a.name === n)?.value
const kids = (el: XmlElement, n: string): XmlElement[] => el.children.filter((c): c is XmlElement => typeof c !== 'string' && c.name === n)

function rlmi (r: SipRequest): { fullState: boolean, version: number, members: Map<string, { state: string, reason?: string, body?: string }> } {
  const parts = parseMultipart(r.headers.get('Content-Type') ?? '', r.body)
  const root = parseXmlRoot(parts[0].body)
  const byCid = new Map(parts.slice(1).map(p => [p.headers.get('content-id') ?? '', p.body.toString()]))
  const members = new Map<string, { state: string, reason?: string, body?: string }>()
  for (const res of kids(root, 'resource')) {
    const i = kids(res, 'instance')[0]
    const cid = attr(i, 'cid')
    members.set(attr(res, 'uri') ?? '', { state: attr(i, 'state') ?? '', reason: attr(i, 'reason'), body: cid === undefined ? undefined : byCid.get(`<${cid}>`) })
  }
  return { fullState: attr(root, 'fullState') === 'true', version: Number(attr(root, 'version')), members }
}

describe('resource lists across a 3-node mesh of separate processes', () => {
  const nodes: Node[] = []
  const uas: TestUa[] = []
  let dir = ''
  let boot = ''
  const ua = async (user: string, n: Node): Promise<TestUa> => {
    const u = await TestUa.open(user, { host: '127.0.0.1', port: n.udp })
    uas.push(u)
    return u
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sipmesh-lists-e2e-'))
    for (let i = 0; i < 3; i++) nodes.push({ dataDir: join(dir, `n${i + 1}`), udp: 0, admin: '', peerId: '', multiaddr: '' })
    await startNode(nodes[0])
    boot = `${nodes[0].multiaddr.replace(/\/p2p\/.*$/, '')}/p2p/${nodes[0].peerId}`
    await Promise.all([startNode(nodes[1], boot), startNode(nodes[2], boot)])
  })

  after(async () => {
    for (const u of uas) await u.close()
    await Promise.all(nodes.map(async n => await stop(n.proc)))
    rmSync(dir, { recursive: true, force: true })
  })

  test('a list PUT on n1, members on n2 and n3, subscribed through n3: full then partial state; n1 restarts', async () => {
    const bob = await ua('bob', nodes[1])
    const carol = await ua('carol', nodes[2])
    assert.equal(await registerOn(bob), 200)
    assert.equal(await registerOn(carol), 200)
    const list = 'sip:buddies@example.com'
    const path = `/lists/${encodeURIComponent(list)}`
    const put = await http(nodes[0], 'PUT', path, JSON.stringify({ members: [bob.aor, carol.aor, 'sip:ghost@example.com'] }))
    assert.equal(put.status, 200, put.body)
    assert.equal((JSON.parse(put.body) as { home: string }).home, nodes[0].peerId)

    // hostile input at the API; a write without the token is refused
    assert.equal((await httpRequest(nodes[0].admin, 'PUT', path, { body: '{"members":[]}' })).status, 401)
    assert.equal((await http(nodes[0], 'PUT', path, '{"members": [')).status, 400)
    assert.equal((await http(nodes[0], 'PUT', path, JSON.stringify({ members: Array.from({ length: 10_000 }, (_, i) => `sip:u${i}@example.com`) }))).status, 413)
    assert.equal((await http(nodes[0], 'PUT', `/lists/${encodeURIComponent('sip:x@other.org')}`, '{"members":[]}')).status, 400)
    assert.equal((await http(nodes[0], 'PUT', `/lists/${encodeURIComponent('sip:loop@example.com')}`, JSON.stringify({ members: [list] }))).status, 400)
    assert.equal((await http(nodes[0], 'POST', path, '{}')).status, 405)
    assert.equal((await http(nodes[0], 'GET', '/lists/%E0%A4%A')).status, 400)
    assert.equal((await http(nodes[0], 'GET', `/lists/${encodeURIComponent('sip:none@example.com')}`)).status, 404)

    // GET through another node finds it at its home
    const got = await http(nodes[2], 'GET', path)
    assert.equal(got.status, 200, got.body)
    assert.deepEqual((JSON.parse(got.body) as { members: string[] }).members, [bob.aor, carol.aor, 'sip:ghost@example.com'])

    const alice = await ua('alice', nodes[2])
    const s = await subscribe(alice, { to: list, accept: ACCEPT, expires: 300, headers: [['Supported', 'eventlist']] }, 10_000)
    assert.equal(s.response?.status, 200)
    assert.ok(s.dialog !== undefined)
    const full = await waitNotify(alice, s.dialog.callId, r => rlmi(r).fullState, 10_000)
    assert.ok(full !== undefined, 'a full-state NOTIFY')
    assert.match(full.headers.get('Content-Type') ?? '', /^multipart\/related;type="application\/rlmi\+xml";start="<[^>]+>";boundary=/u)
    const f = rlmi(full)
    assert.deepEqual([...f.members.keys()], [bob.aor, carol.aor, 'sip:ghost@example.com'])
    assert.match(f.members.get(bob.aor)?.body ?? '', /<basic>open<\/basic>/u)
    assert.match(f.members.get('sip:ghost@example.com')?.body ?? '', /<basic>closed<\/basic>/u)

    assert.equal((await publish(bob, { body: pidf(bob.aor, 'open', 'on the phone') }, 10_000))?.status, 200)
    const partial = await waitNotify(alice, s.dialog.callId, r => rlmi(r).members.get(bob.aor)?.body?.includes('on the phone') === true, 10_000)
    assert.ok(partial !== undefined, 'a partial NOTIFY after bob published')
    assert.equal(rlmi(partial).fullState, false)
    assert.deepEqual([...rlmi(partial).members.keys()], [bob.aor])

    // without eventlist, through a node that does not hold the list: the home answers the back-end
    // subscription 421 (a list is no presentity), and that node answers its watcher 421 too
    const plain = await subscribe(alice, { to: list, accept: ACCEPT, expires: 60 }, 10_000)
    assert.equal(plain.response?.status, 421)
    assert.equal(plain.response?.headers.get('Require'), 'eventlist')
    // and at the list's home
    const at1 = await ua('amy', nodes[0])
    assert.equal((await subscribe(at1, { to: list, accept: ACCEPT, expires: 60 }, 10_000)).response?.status, 421)

    // n1 (the home) restarts: the list is persisted and claimed again; a new subscriber through n2 gets it
    await stop(nodes[0].proc)
    await startNode(nodes[0], `${nodes[1].multiaddr.replace(/\/p2p\/.*$/, '')}/p2p/${nodes[1].peerId}`)
    const dan = await ua('dan', nodes[1])
    let after: SipRequest | undefined
    for (let i = 0; i < 10 && after === undefined; i++) {
      const d = await subscribe(dan, { to: list, accept: ACCEPT, expires: 300, headers: [['Supported', 'eventlist']] }, 10_000)
      if (d.response?.status === 200 && d.dialog !== undefined && d.response.headers.get('Require') === 'eventlist') after = await waitNotify(dan, d.dialog.callId, r => rlmi(r).fullState, 10_000)
      else await new Promise(resolve => setTimeout(resolve, 1000))
    }
    assert.ok(after !== undefined, 'the list is served after its home restarted')
    assert.equal(rlmi(after).members.size, 3)
    assert.equal((await http(nodes[0], 'DELETE', path)).status, 200)
    assert.equal((await http(nodes[0], 'GET', path)).status, 404)
  })

  test('an edit through any node reaches a subscription served by another node at once; a deletion ends it', async () => {
    const erin = await ua('erin', nodes[1])
    assert.equal(await registerOn(erin), 200)
    const list = 'sip:team@example.com'
    const path = `/lists/${encodeURIComponent(list)}`
    const put = await http(nodes[0], 'PUT', path, JSON.stringify({ members: ['sip:frank@example.com', 'sip:gina@example.com'] }))
    assert.equal(put.status, 200, put.body)
    // the subscriber is on n3, which serves the list from a copy fetched from n1
    const hal = await ua('hal', nodes[2])
    const s = await subscribe(hal, { to: list, accept: ACCEPT, expires: 300, headers: [['Supported', 'eventlist']] }, 10_000)
    assert.equal(s.response?.status, 200)
    assert.ok(s.dialog !== undefined)
    const full = await waitNotify(hal, s.dialog.callId, r => rlmi(r).fullState, 10_000)
    assert.deepEqual([...rlmi(full!).members.keys()], ['sip:frank@example.com', 'sip:gina@example.com'])

    // PUT on n2 (not the home: the home moves there) adds erin (registered on n2)
    const t0 = Date.now()
    const edit = await http(nodes[1], 'PUT', path, JSON.stringify({ members: ['sip:frank@example.com', 'sip:gina@example.com', erin.aor] }))
    assert.equal(edit.status, 200, edit.body)
    const added = await waitNotify(hal, s.dialog.callId, r => rlmi(r).members.get(erin.aor)?.body?.includes('<basic>open</basic>') === true, 2_000)
    const ms = Date.now() - t0
    assert.ok(added !== undefined, 'the member added, with her state, within 2 s of the PUT')
    assert.equal(rlmi(added).fullState, false)
    process.stdout.write(`# edit at n2 reached the subscription on n3 in ${ms} ms\n`)

    // n3 now holds n2's copy: a second edit at n2 is pushed; the member removed is told terminated
    await http(nodes[1], 'PUT', path, JSON.stringify({ members: [erin.aor, 'sip:gina@example.com'] }))
    const removed = await waitNotify(hal, s.dialog.callId, r => rlmi(r).members.get('sip:frank@example.com')?.state === 'terminated', 2_000)
    assert.ok(removed !== undefined, 'the member removed')
    assert.equal(rlmi(removed).members.get('sip:frank@example.com')?.reason, 'noresource')
    assert.equal((JSON.parse((await http(nodes[2], 'GET', path)).body) as { members: string[] }).members.length, 2, 'n3 serves the new list')
    // n1 lost the home to n2: a DELETE there goes to n2 and ends the subscription on n3
    assert.equal((await http(nodes[0], 'DELETE', path)).status, 200)
    const ended = await waitNotify(hal, s.dialog.callId, r => /^terminated;reason=noresource/u.test(r.headers.get('Subscription-State') ?? ''), 2_000)
    assert.ok(ended !== undefined, 'the deletion ended the subscription (noresource)')
    assert.equal((await http(nodes[2], 'GET', path)).status, 404)
    assert.equal((await http(nodes[1], 'GET', path)).status, 404, 'gone at the home too')
    assert.equal((await http(nodes[2], 'DELETE', path)).status, 404, 'nothing left to delete anywhere')
  })

  test('a busy lamp field: a list subscribed with Event: dialog shows a member\'s call ring, connect and end', async () => {
    const ivy = await ua('ivy', nodes[1])
    assert.equal(await registerOn(ivy), 200)
    const list = 'sip:desk@example.com'
    const put = await http(nodes[0], 'PUT', `/lists/${encodeURIComponent(list)}`, JSON.stringify({ members: [ivy.aor, 'sip:jack@example.com'] }))
    assert.equal(put.status, 200, put.body)
    const kim = await ua('kim', nodes[2])
    const s = await subscribe(kim, { to: list, event: 'dialog', accept: 'multipart/related, application/rlmi+xml, application/dialog-info+xml', expires: 300, headers: [['Supported', 'eventlist']] }, 10_000)
    assert.equal(s.response?.status, 200)
    assert.ok(s.dialog !== undefined)
    const callId = s.dialog.callId
    const lamp = (r: SipRequest, aor: string): string[] => {
      const body = rlmi(r).members.get(aor)?.body
      return body === undefined ? [] : parseDialogInfo(body).dialogs.map(d => d.state)
    }
    const full = await waitNotify(kim, callId, r => rlmi(r).fullState, 10_000)
    assert.ok(full !== undefined)
    assert.equal(full.headers.get('Event'), 'dialog')
    assert.deepEqual([...rlmi(full).members.keys()], [ivy.aor, 'sip:jack@example.com'])
    assert.deepEqual(lamp(full, ivy.aor), [], 'no call yet')
    assert.equal(parseDialogInfo(rlmi(full).members.get(ivy.aor)?.body ?? '').entity, ivy.aor)

    // lee on n1 calls ivy on n2
    const lee = await ua('lee', nodes[0])
    ivy.answer = () => undefined
    const call = 'e2e-lamp-call'
    const inv = lee.build({ method: 'INVITE', uri: ivy.aor, callId: call, cseq: 1, fromTag: 'l1', headers: [['Contact', lee.contact]] })
    lee.sendRaw(inv.text)
    const invite = await ivy.waitFor(() => ivy.received.find(m => m.method === 'INVITE' && m.headers.get('Call-ID') === call), 10_000)
    assert.ok(invite !== undefined, 'ivy got the INVITE')
    const rr = invite.headers.getAll('Record-Route').map(r => ['Record-Route', r] as [string, string])
    ivy.reply(invite, 180, rr)
    const ringing = await waitNotify(kim, callId, r => lamp(r, ivy.aor).includes('early'), 10_000)
    assert.ok(ringing !== undefined, 'ringing reached the list subscriber')
    assert.equal(rlmi(ringing).fullState, false)
    assert.deepEqual([...rlmi(ringing).members.keys()], [ivy.aor], 'only the member whose state changed')
    ivy.reply(invite, 200, [...rr, ['Contact', ivy.contact]])
    assert.equal((await lee.waitFinal(inv.branch, 10_000))?.status, 200)
    assert.ok(await waitNotify(kim, callId, r => lamp(r, ivy.aor).includes('confirmed'), 10_000), 'connected')
    ivy.answer = () => 200
    lee.answer = () => 200
    const routes = invite.headers.getAll('Record-Route').map(r => ['Route', r] as [string, string])
    const bye = await ivy.request({ method: 'BYE', uri: lee.contact.slice(1, -1), callId: call, cseq: 1, fromTag: 'uas', to: `<${lee.aor}>;tag=l1`, from: `<${ivy.aor}>`, headers: routes }, 10_000)
    assert.equal(bye?.status, 200)
    assert.ok(await waitNotify(kim, callId, r => lamp(r, ivy.aor).includes('terminated'), 10_000), 'ended')
    const versions = notifiesOf(kim, callId).map(r => rlmi(r).version)
    for (let i = 1; i < versions.length; i++) assert.equal(versions[i], versions[i - 1] + 1, `RLMI versions one by one: ${versions.join(',')}`)
  })
})
