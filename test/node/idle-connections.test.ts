import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Mesh, waitFor } from '../fixtures/mesh.ts'
import { Libp2pPeerChannel } from '../../node/peer-channel.ts'
import { IdleConnections } from '../../node/idle-connections.ts'
import { memoryLogger } from './fixtures/logger.ts'
import type { MeshNode } from '../../node/libp2p.ts'
import type { PeerId } from '@libp2p/interface'

const IDLE_MS = 1500

function connected (a: MeshNode, b: MeshNode): boolean {
  return a.libp2p.getConnections(b.peerId).some(c => c.status === 'open')
}

describe('IdleConnections: connections that carry no work close, on real libp2p nodes over TCP', () => {
  let mesh: Mesh
  const channels: Libp2pPeerChannel[] = []
  const closers: IdleConnections[] = []
  const kept = new Set<PeerId>()

  before(async () => {
    mesh = await Mesh.spawn(4)
    for (const node of mesh.nodes) {
      const channel = new Libp2pPeerChannel({ libp2p: node.libp2p, logger: memoryLogger() })
      await channel.start()
      channels.push(channel)
    }
  })

  after(async () => {
    for (const c of closers) c.stop()
    for (const c of channels) await c.stop()
    await mesh.stop()
  })

  test('only the dialler closes; kept peers and peers with traffic stay; the others go; work dials again', async () => {
    const [a, b, c, d] = mesh.nodes
    // the full mesh: each later node dialled the earlier ones, so d's connections are all outbound
    assert.ok([a, b, c].every(n => connected(d, n)))
    assert.ok(d.libp2p.getConnections().every(conn => conn.direction === 'outbound'))
    kept.add(c.peerId)
    const closer = new IdleConnections({
      libp2p: d.libp2p,
      logger: memoryLogger(),
      kept: () => kept,
      activity: [(peer) => channels[3].lastActivity(peer)]
    }, { idleMs: IDLE_MS, intervalMs: 200 })
    closers.push(closer)
    // as kad-dht does for its 20 closest peers (every peer of a mesh this small), once its
    // routing table has pinged them: libp2p's reconnect queue dials such a peer again at once
    for (const [x, y] of [[a, d], [d, a], [b, d], [d, b]]) await x.libp2p.peerStore.merge(y.peerId, { tags: { 'keep-alive-kad-dht': { value: 1 } } })
    // every node runs one, as every sipmesh node does; a's closes nothing (a dialled nobody: the
    // later nodes dialled it)
    const others = [a, b, c].map((n, i) => new IdleConnections({ libp2p: n.libp2p, logger: memoryLogger(), kept: () => [], activity: [(peer) => channels[i].lastActivity(peer)] }, { idleMs: IDLE_MS, intervalMs: 200 }))
    const inboundOnly = others[0]
    closers.push(...others)
    closer.start()
    for (const o of others) o.start()

    // keep d ↔ b busy on the peer channel while the others idle
    const got: string[] = []
    channels[1].onMessage((_node, data) => { got.push(new TextDecoder().decode(data)) })
    const busy = setInterval(() => { channels[3].send(b.peerId.toString(), new TextEncoder().encode('ping')).catch(() => {}) }, 250)
    try {
      await waitFor(() => !connected(d, a), IDLE_MS * 4, 'd to close its idle connection to a')
      // and it stays closed: kad-dht's keep-alive tags (libp2p's reconnect queue dials tagged
      // peers again at once, from either side) went first
      await new Promise(resolve => setTimeout(resolve, IDLE_MS + 500))
      assert.equal(connected(d, a), false, 'closed connections are not dialled again by libp2p')
      assert.equal(connected(d, b), true, 'traffic keeps d ↔ b')
      assert.equal(connected(d, c), true, 'c is kept')
      assert.equal(inboundOnly.closed, 0, 'a never closes what it did not dial')
      assert.ok(closer.closed >= 1)
      assert.ok(got.length >= 5)
    } finally {
      clearInterval(busy)
    }

    // work after the close dials again and is delivered
    const toA: string[] = []
    channels[0].onMessage((_node, data) => { toA.push(new TextDecoder().decode(data)) })
    await channels[3].send(a.peerId.toString(), new TextEncoder().encode('after'))
    await waitFor(() => toA.includes('after'), 5000, 'the message to a after its connection closed')
    assert.equal(connected(d, a), true)

    // once b's traffic stops, b goes too; c (kept) still stays
    await waitFor(() => !connected(d, b), IDLE_MS * 4, 'd to close the connection to b once idle').catch((err: Error) => {
      throw new Error(`${err.message}: ${d.libp2p.getConnections(b.peerId).map(x => `${x.direction} ${x.status}, open ${Date.now() - x.timeline.open} ms`).join('; ')}`)
    })
    assert.equal(connected(d, c), true)
  })

  test('a stream of one of our protocols counts as work; 0 keeps every connection', async () => {
    const [a, , , d] = mesh.nodes
    const never = new IdleConnections({ libp2p: d.libp2p, logger: memoryLogger(), kept: () => [] }, { idleMs: 0 })
    never.start()
    assert.equal(never.sweep(Date.now() + 3_600_000), 0)
    never.stop()

    // a claim (streams of the registry's put protocol to its replicas) marks the connections busy
    const closer = new IdleConnections({ libp2p: d.libp2p, logger: memoryLogger(), kept: () => [] }, { idleMs: IDLE_MS, intervalMs: 3_600_000 })
    closers.push(closer)
    closer.start()
    if (!connected(d, a)) await d.libp2p.dial(a.peerId)
    await new Promise(resolve => setTimeout(resolve, IDLE_MS + 500))
    const result = await d.registry.claim('sip:idle-test@example.com', { expiresAt: Date.now() + 3_600_000 })
    assert.ok(result.replicas >= 1)
    assert.equal(closer.sweep(), 0, 'every connection carried a claim just now')
    // with no new work, they idle out
    await new Promise(resolve => setTimeout(resolve, IDLE_MS + 500))
    assert.ok(closer.sweep() >= 1)
  })
})
