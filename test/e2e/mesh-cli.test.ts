// The operator interface end to end: `sipmesh start` and `sipmesh cluster` as separate processes on
// 127.0.0.1, checked through the admin API (and one SIP REGISTER to make a claim).
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readFile, realpath, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import { createServer as createHttpServer } from 'node:http'
import { run, stop, httpGet, waitFor, freePortBlock, sipUdpRequest, register, message, tcpPortFree, UdpUa, BIN, cleanEnv, httpRequest, adminToken } from './fixtures/processes.ts'
import type { Proc } from './fixtures/processes.ts'

interface MeshProc {
  name: string
  proc?: Proc
  dataDir: string
  sip: number
  p2p: number
  admin: string
  peerId?: string
}

interface Status { peerId: string, multiaddrs: string[], sip: string, domains: string[], peers: string[], registrations: number }

async function status (n: MeshProc): Promise<Status> {
  const res = await httpGet(n.admin, '/status')
  assert.equal(res.status, 200)
  return JSON.parse(res.body) as Status
}

// Every node binds port 0 (SIP, libp2p, admin) and the test reads the ports from its start log
// line: no window between choosing a free port and binding it.
function startArgs (n: MeshProc, bootstrap: string[]): string[] {
  const args = ['start', '--domain', 'example.com', '--sip', '127.0.0.1:0', '--p2p', '/ip4/127.0.0.1/tcp/0',
    '--admin', '127.0.0.1:0', '--data-dir', n.dataDir, '--log-level', 'info']
  for (const b of bootstrap) args.push('--bootstrap', b)
  return args
}

async function startNode (n: MeshProc, bootstrap: string[]): Promise<string> {
  n.proc = run(startArgs(n, bootstrap))
  const line = await n.proc.waitForLine(l => l.includes('"sipmesh node started"'), 30_000)
  const started = JSON.parse(line) as { peerId: string, multiaddrs: string[], sip: string, admin: string }
  assert.match(started.peerId, /^12D3KooW/)
  n.admin = started.admin
  n.sip = Number(started.sip.split(':')[1])
  n.p2p = Number(/\/tcp\/(\d+)\//.exec(started.multiaddrs[0])?.[1])
  assert.ok(n.sip > 0 && n.p2p > 0 && /^127\.0\.0\.1:\d+$/.test(n.admin), line)
  return started.peerId
}

function bootAddr (n: MeshProc): string {
  return `/ip4/127.0.0.1/tcp/${n.p2p}/p2p/${n.peerId}`
}

describe('sipmesh start: a 3-node mesh in separate processes', () => {
  let dir: string
  const nodes: MeshProc[] = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sipmesh-e2e-'))
    for (let i = 0; i < 3; i++) {
      nodes.push({ name: `n${i + 1}`, dataDir: join(dir, `n${i + 1}`), sip: 0, p2p: 0, admin: '' })
    }
  })

  after(async () => {
    await Promise.all(nodes.map(async n => await stop(n.proc, 'SIGKILL')))
    await rm(dir, { recursive: true, force: true })
  })

  test('the nodes join through one bootstrap address and every /status lists the others', async () => {
    nodes[0].peerId = await startNode(nodes[0], [])
    const ids = await Promise.all([startNode(nodes[1], [bootAddr(nodes[0])]), startNode(nodes[2], [bootAddr(nodes[0])])])
    nodes[1].peerId = ids[0]
    nodes[2].peerId = ids[1]
    assert.equal(new Set(nodes.map(n => n.peerId)).size, 3)
    await waitFor(async () => {
      for (const n of nodes) {
        const s = await status(n)
        if (!nodes.filter(o => o !== n).every(o => s.peers.includes(o.peerId!))) return false
      }
      return true
    }, 20_000, 'every node to list the two others as peers')
    for (const n of nodes) {
      const s = await status(n)
      assert.equal(s.peerId, n.peerId)
      assert.equal(s.sip, `127.0.0.1:${n.sip}`)
      assert.deepEqual(s.domains, ['example.com'])
      assert.equal(s.registrations, 0)
      assert.ok(s.multiaddrs.some(m => m.includes(`/tcp/${n.p2p}/`)))
    }
  })

  test('/aor: 404 while unclaimed; after a REGISTER at node 2 every node resolves node 2', async () => {
    const aor = 'sip:alice@example.com'
    const path = `/aor/${encodeURIComponent(aor)}`
    for (const n of nodes) {
      const res = await httpGet(n.admin, path)
      assert.equal(res.status, 404, res.body)
      assert.equal(JSON.parse(res.body).error.code, 'aor_not_found')
    }
    const answer = await sipUdpRequest({ host: '127.0.0.1', port: nodes[1].sip }, port => register(aor, port))
    assert.match(answer, /^SIP\/2\.0 200 /)
    for (const n of nodes) {
      let body: { aor: string, owner: string, version: string, sip: string, expires: string } | undefined
      await waitFor(async () => {
        const res = await httpGet(n.admin, path)
        if (res.status === 200) body = JSON.parse(res.body)
        return res.status === 200
      }, 5000, `${n.name} to resolve ${aor}`)
      assert.equal(body?.aor, aor)
      assert.equal(body?.owner, nodes[1].peerId)
      assert.equal(body?.sip, `127.0.0.1:${nodes[1].sip}`)
      assert.match(body?.version ?? '', /^\d+$/)
      assert.ok(Date.parse(body?.expires ?? '') > Date.now())
    }
    assert.equal((await status(nodes[1])).registrations, 1)
  })

  test('a MESSAGE sent at node 1 reaches a user registered at node 3, across the SIP peer channel', async () => {
    const bob = new UdpUa()
    const carol = new UdpUa()
    await bob.open()
    await carol.open()
    try {
      const reg = await carol.request({ host: '127.0.0.1', port: nodes[2].sip }, register('sip:carol@example.com', carol.port))
      assert.match(reg, /^SIP\/2\.0 200 /)
      const answer = await bob.request({ host: '127.0.0.1', port: nodes[0].sip }, message('sip:bob@example.com', 'sip:carol@example.com', bob.port, 'hello across the mesh'))
      assert.match(answer, /^SIP\/2\.0 200 /)
      assert.equal(carol.received.length, 1)
      assert.match(carol.received[0], /^MESSAGE sip:carol@127\.0\.0\.1:\d+ SIP\/2\.0/)
      assert.ok(carol.received[0].endsWith('hello across the mesh'))
      const metrics = await httpGet(nodes[0].admin, '/metrics')
      assert.match(metrics.body, /^sipmesh_peer_channel_frames_sent_total [1-9]/m)
      for (const reason of ['no_stream', 'drain', 'behind_queue']) assert.match(metrics.body, new RegExp(`^sipmesh_peer_channel_messages_queued_total\\{reason="${reason}"\\} \\d+$`, 'm'))
    } finally {
      bob.close()
      carol.close()
    }
  })

  test('a node killed with SIGKILL: the others keep serving; restarted, it has the same peer id and rejoins', async () => {
    const victim = nodes[1]
    const before = victim.peerId
    const ended = await stop(victim.proc, 'SIGKILL')
    assert.equal(ended?.signal, 'SIGKILL')
    for (const n of [nodes[0], nodes[2]]) {
      const s = await status(n)
      assert.equal(s.peerId, n.peerId)
    }
    await waitFor(async () => !(await status(nodes[0])).peers.includes(before!), 10_000, 'node 1 to notice the dead peer')
    // P5: its claim's lease runs on, but no node routes to a dead node: the AoR resolves to nothing
    for (const n of [nodes[0], nodes[2]]) {
      await waitFor(async () => (await httpGet(n.admin, `/aor/${encodeURIComponent('sip:alice@example.com')}?fresh=1`)).status === 404, 10_000, `${n.name} to stop routing to the dead node`)
    }

    victim.peerId = await startNode(victim, [bootAddr(nodes[0])])
    assert.equal(victim.peerId, before)
    await waitFor(async () => (await status(nodes[0])).peers.includes(before!) && (await status(victim)).peers.includes(nodes[0].peerId!), 10_000, 'the restarted node to rejoin')
    // its still-valid registration came back from the data dir, and the claim still names it
    // everywhere, the restarted node included (a fresh DHT lookup, not a cache)
    // (claimed again in the background once the node serves: wait for it)
    await waitFor(async () => (await status(victim)).registrations === 1, 10_000, 'the stored registration to be re-claimed')
    for (const n of nodes) {
      const res = await httpGet(n.admin, `/aor/${encodeURIComponent('sip:alice@example.com')}?fresh=1`)
      assert.equal(res.status, 200, `${n.name}: ${res.body}`)
      assert.equal(JSON.parse(res.body).owner, before, `${n.name} resolves the restarted node`)
    }
  })

  test('SIGTERM stops a node cleanly (exit 0) and frees its ports', async () => {
    const results = await Promise.all(nodes.map(async n => await stop(n.proc, 'SIGTERM')))
    for (const r of results) assert.deepEqual(r, { code: 0, signal: null })
    for (const n of nodes) {
      assert.ok(n.proc?.lines.some(l => l.includes('"sipmesh node stopped"')), `${n.name} logged its stop`)
      assert.equal(await tcpPortFree(Number(n.admin.split(':')[1])), true)
    }
  })
})

describe('sipmesh cluster', () => {
  let dir: string
  let proc: Proc | undefined

  before(async () => { dir = await mkdtemp(join(tmpdir(), 'sipmesh-cluster-')) })
  after(async () => {
    await stop(proc, 'SIGKILL')
    await rm(dir, { recursive: true, force: true })
  })

  test('--nodes 5 comes up wired together, prints the table, and stops cleanly on SIGINT', async () => {
    const base = await freePortBlock(5)
    proc = run(['cluster', '--nodes', '5', '--domain', 'example.com', '--base-port', String(base), '--data-dir', dir])
    await proc.waitForLine(l => l.includes('5 nodes up'), 45_000)
    const header = proc.lines.findIndex(l => l.startsWith('node'))
    assert.ok(header >= 0, proc.lines.join('\n'))
    assert.match(proc.lines[header], /^node\s+peer id\s+SIP\s+admin\s+WebSocket\s+admin token$/)
    const rows = proc.lines.slice(header + 1, header + 6).map(l => l.split(/\s+/))
    assert.equal(rows.length, 5)
    for (const [i, row] of rows.entries()) {
      assert.equal(row.length, 6, row.join(' '))
      const [index, peerId, sip, admin, ws, token] = row
      assert.equal(index, String(i + 1))
      assert.match(peerId, /^12D3KooW/)
      assert.equal(sip, `127.0.0.1:${base + 10 * i}`)
      assert.equal(admin, `http://127.0.0.1:${base + 10 * i + 2}`)
      assert.equal(ws, `ws://127.0.0.1:${base + 10 * i + 3}`)
      const s = JSON.parse((await httpGet(admin.replace('http://', ''), '/status')).body) as Status
      assert.equal(s.peerId, peerId)
      // the browser phone of every node connects to that node's WebSocket
      assert.equal((JSON.parse((await httpGet(admin.replace('http://', ''), '/phone/config.json')).body) as { ws: string }).ws, ws)
      // the token the cluster prints is the node's: a PUT with it is taken, without it refused
      assert.equal(token, adminToken(join(dir, `node-${i + 1}`)))
      const rules = `/presence/${encodeURIComponent('sip:bob@example.com')}/rules`
      const body = JSON.stringify({ watchers: { 'sip:eve@example.com': 'block' } })
      assert.equal((await httpRequest(admin.replace('http://', ''), 'PUT', rules, { body })).status, 401)
      const put = await httpRequest(admin.replace('http://', ''), 'PUT', rules, { body, token })
      assert.equal(put.status, 200, put.body)
      // the node is a child of the cluster process itself, on the cluster's Node (no npm, no shell between)
      const pid = (JSON.parse((await readFile(join(dir, `node-${i + 1}`, 'node.log'), 'utf8')).split('\n')[0]) as { pid: number }).pid
      const ppid = Number(/^PPid:\s+(\d+)$/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1])
      assert.equal(ppid, proc.child.pid)
      assert.equal(await realpath(`/proc/${pid}/exe`), await realpath(process.execPath))
    }
    // wired to each other: every node connects to the four others (the table shows it when it
    // happened within the cluster's wait; on a loaded machine it may come a little later)
    await waitFor(async () => {
      for (const row of rows) {
        const s = JSON.parse((await httpGet(row[3].replace('http://', ''), '/status')).body) as Status
        if (!rows.filter(r => r !== row).every(r => s.peers.includes(r[1]))) return false
      }
      return true
    }, 15_000, 'every cluster node to list the four others')
    proc.child.kill('SIGINT')
    let timer: ReturnType<typeof setTimeout> | undefined
    const ended = await Promise.race([proc.exited, new Promise<'timeout'>(resolve => { timer = setTimeout(() => { resolve('timeout') }, 15_000) })])
    clearTimeout(timer)
    assert.deepEqual(ended, { code: 0, signal: null })
    assert.ok(proc.lines.some(l => l.includes('sipmesh cluster: stopped')))
    for (let i = 0; i < 5; i++) assert.equal(await tcpPortFree(base + 10 * i + 2), true, `admin port of node ${i + 1} is free`)
    for (let i = 0; i < 5; i++) assert.equal(await tcpPortFree(base + 10 * i + 3), true, `WebSocket port of node ${i + 1} is free`)
  })

  test('a port of node 2 in use: the cluster names the address and EADDRINUSE, and leaves nothing running', async () => {
    const base = await freePortBlock(2)
    // another process on node 2's admin port, answering /status as some other node (the issue's
    // case: the cluster read it and said "node 2 came up as <id>")
    const squatter = createHttpServer((_req, res) => { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify({ peerId: '12D3KooWSquatter', peers: [] })) })
    await new Promise<void>(resolve => squatter.listen(base + 12, '127.0.0.1', () => { resolve() }))
    const busy = run(['cluster', '--nodes', '2', '--base-port', String(base), '--data-dir', join(dir, 'busy'), '--log-level', 'warn'])
    try {
      const ended = await Promise.race([busy.exited, new Promise<'timeout'>(resolve => setTimeout(() => { resolve('timeout') }, 30_000))])
      assert.deepEqual(ended, { code: 1, signal: null })
      const said = busy.stderr.join('\n')
      assert.match(said, new RegExp(`node 2 cannot listen on 127\\.0\\.0\\.1:${base + 12} \\(admin API, TCP\\): EADDRINUSE`), said)
      assert.doesNotMatch(said, /came up as/)
      assert.equal(await tcpPortFree(base + 2), true, 'node 1 was not left running')
    } finally {
      await stop(busy, 'SIGKILL')
      await new Promise(resolve => squatter.close(resolve))
    }
  })

  test('the process that started the cluster dies (npx on SIGTERM kills its shell only): the nodes stop', async () => {
    const base = await freePortBlock(2)
    // as `npx sipmesh cluster` runs it: under `sh -c`, which is not replaced by the command
    const shell = spawn('/bin/sh', ['-c', `"$0" "$@"; true`, process.execPath, BIN, 'cluster', '--nodes', '2', '--base-port', String(base), '--data-dir', join(dir, 'orphan'), '--log-level', 'warn'],
      { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv(), detached: true })
    let out = ''
    shell.stdout?.on('data', (c: Buffer) => { out += c.toString() })
    shell.stderr?.on('data', (c: Buffer) => { out += c.toString() })
    try {
      await waitFor(() => out.includes('2 nodes up'), 45_000, `the cluster to be up: ${out}`)
      assert.equal((await httpGet(`127.0.0.1:${base + 2}`, '/status')).status, 200)
      shell.kill('SIGTERM')
      await waitFor(async () => await tcpPortFree(base + 2) && await tcpPortFree(base + 12), 15_000, 'the nodes to stop')
      await waitFor(() => out.includes('sipmesh cluster: stopped'), 5000, `the cluster to say it stopped: ${out}`)
    } finally {
      try { process.kill(-(shell.pid ?? 0), 'SIGKILL') } catch { /* gone */ }
    }
  })

  test('nodes do not outlive a cluster that is killed with SIGKILL', async () => {
    const base = await freePortBlock(2)
    const killed = run(['cluster', '--nodes', '2', '--base-port', String(base), '--data-dir', join(dir, 'killed'), '--log-level', 'warn'])
    try {
      await killed.waitForLine(l => l.includes('2 nodes up'), 45_000)
      assert.equal((await httpGet(`127.0.0.1:${base + 2}`, '/status')).status, 200)
      killed.child.kill('SIGKILL')
      await killed.exited
      await waitFor(async () => await tcpPortFree(base + 2) && await tcpPortFree(base + 12), 15_000, 'the orphaned nodes to stop')
    } finally {
      await stop(killed, 'SIGKILL')
    }
  })
})
