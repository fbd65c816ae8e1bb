// A replica frozen by SIGSTOP (its connections stay open: nobody knows it is gone) does not hold
// REGISTERs at the other nodes for the claim-put timeout: the 200 goes out once the registering
// node and the first replica store the claim (issue 9), and the AoR resolves on the other node.
// Reads do not wait for it either: a MESSAGE from the other node to a user registered meanwhile is
// routed once the live replica answered, not after the 5 s exchange timeout.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { run, stop, httpGet, waitFor, sipUdpRequest, register, message, UdpUa } from './fixtures/processes.ts'
import type { Proc } from './fixtures/processes.ts'

interface Node { proc: Proc, sip: number, admin: string, peerId: string, p2p: string }

async function startNode (dataDir: string, bootstrap?: string): Promise<Node> {
  const args = ['start', '--domain', 'example.com', '--sip', '127.0.0.1:0', '--p2p', '/ip4/127.0.0.1/tcp/0', '--admin', '127.0.0.1:0', '--data-dir', dataDir, '--log-level', 'info']
  if (bootstrap != null) args.push('--bootstrap', bootstrap)
  const proc = run(args)
  const started = JSON.parse(await proc.waitForLine(l => l.includes('"sipmesh node started"'), 30_000)) as { peerId: string, multiaddrs: string[], sip: string, admin: string }
  return { proc, sip: Number(started.sip.split(':')[1]), admin: started.admin, peerId: started.peerId, p2p: `/ip4/127.0.0.1/tcp/${/\/tcp\/(\d+)\//.exec(started.multiaddrs[0])?.[1]}/p2p/${started.peerId}` }
}

describe('a 3-node mesh with one node stopped by SIGSTOP', () => {
  let dir: string
  const nodes: Node[] = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sipmesh-frozen-'))
    nodes.push(await startNode(join(dir, 'n1')))
    nodes.push(...await Promise.all([startNode(join(dir, 'n2'), nodes[0].p2p), startNode(join(dir, 'n3'), nodes[0].p2p)]))
    await waitFor(async () => {
      for (const n of nodes) {
        const peers = (JSON.parse((await httpGet(n.admin, '/status')).body) as { peers: string[] }).peers
        if (!nodes.filter(o => o !== n).every(o => peers.includes(o.peerId))) return false
      }
      return true
    }, 20_000, 'every node to list the two others')
  })

  after(async () => {
    for (const n of nodes) n.proc.child.kill('SIGCONT')
    await Promise.all(nodes.map(async n => await stop(n.proc, 'SIGKILL')))
    await rm(dir, { recursive: true, force: true })
  })

  test('REGISTERs at the other nodes are answered 200 in well under the 10 s put timeout; the AoRs resolve on the other node', async () => {
    // a first registration with every node up (streams to every replica open)
    assert.match(await sipUdpRequest({ host: '127.0.0.1', port: nodes[0].sip }, port => register('sip:warm@example.com', port)), /^SIP\/2\.0 200 /)
    nodes[2].proc.child.kill('SIGSTOP')
    // every AoR has both other nodes as replicas on a mesh of 3: node 3 is a replica of each
    for (const [at, other, user] of [[0, 1, 'alice'], [1, 0, 'bob'], [0, 1, 'carol']] as const) {
      const aor = `sip:${user}@example.com`
      const t0 = Date.now()
      const answer = await sipUdpRequest({ host: '127.0.0.1', port: nodes[at].sip }, port => register(aor, port), 15_000)
      const ms = Date.now() - t0
      assert.match(answer, /^SIP\/2\.0 200 /)
      assert.ok(ms < 3_000, `${user}'s REGISTER answered after ${ms} ms`)
      // (the other node's lookup asks the frozen node too and waits for it: up to its timeout)
      await waitFor(async () => {
        const res = await httpGet(nodes[other].admin, `/aor/${encodeURIComponent(aor)}`, 15_000)
        return res.status === 200 && (JSON.parse(res.body) as { owner: string }).owner === nodes[at].peerId
      }, 20_000, `${user} to resolve on the other node`)
    }
  })

  test('node 3 still stopped: a MESSAGE from node 2 to a user just registered at node 1 is delivered well under the 5 s exchange timeout', async () => {
    const dave = new UdpUa()
    const erin = new UdpUa()
    await dave.open()
    await erin.open()
    try {
      for (const [i, user] of ['dave', 'dave2', 'dave3'].entries()) {
        const aor = `sip:${user}@example.com`
        assert.match(await dave.request({ host: '127.0.0.1', port: nodes[0].sip }, register(aor, dave.port)), /^SIP\/2\.0 200 /)
        // node 2 has never resolved this user: its first resolve asks both replicas, one frozen
        const t0 = Date.now()
        const answer = await erin.request({ host: '127.0.0.1', port: nodes[1].sip }, message('sip:erin@example.com', aor, erin.port, `hello ${i}`), 15_000)
        const ms = Date.now() - t0
        assert.match(answer, /^SIP\/2\.0 200 /)
        assert.ok(ms < 2_500, `${user}'s MESSAGE answered after ${ms} ms`)
        assert.ok(dave.received.some(r => r.startsWith('MESSAGE ') && r.endsWith(`hello ${i}`)), `${user} got the MESSAGE`)
      }
    } finally {
      dave.close()
      erin.close()
    }
  })
})
