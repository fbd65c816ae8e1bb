// The libp2p assembly keeps a healthy connection: libp2p's connection monitor pings every
// connection on a stream of its own while kad-dht pings contacts through the ping service, and
// the two must not trip the ping protocol's stream limit (the monitor then aborts the connection,
// with the SIP stream on it, and both nodes dial again: issue 10 item 13).
import { describe, test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createMeshNode, type MeshNode } from '../../node/libp2p.ts'

const PING = '/ipfs/ping/1.0.0'

describe('mesh libp2p assembly', () => {
  const nodes: MeshNode[] = []
  after(async () => { await Promise.all(nodes.map(async n => { await n.stop() })) })

  test('a ping in flight (as kad-dht pings a contact) does not make the connection monitor abort the connection', async () => {
    const a = await createMeshNode({ pingIntervalMs: 100 })
    const b = await createMeshNode({ pingIntervalMs: 100 })
    nodes.push(a, b)
    const opened = { a: 0, b: 0 }
    const closed: string[] = []
    a.libp2p.addEventListener('connection:open', () => { opened.a++ })
    b.libp2p.addEventListener('connection:open', () => { opened.b++ })
    a.libp2p.addEventListener('connection:close', (e) => { closed.push(`a: ${e.detail.status}`) })
    await a.start()
    await b.start()
    const conn = await a.libp2p.dial(b.libp2p.getMultiaddrs()[0])
    // a ping stream that stays open a while, as a contact ping on a slow peer does
    const held = await conn.newStream(PING)
    try {
      await new Promise(resolve => setTimeout(resolve, 800))
      assert.equal(conn.status, 'open', 'the monitor kept the connection')
      assert.deepEqual(closed, [])
      assert.deepEqual(opened, { a: 1, b: 1 }, 'one connection, one handshake on each side')
      assert.ok(conn.rtt != null && conn.rtt >= 0, 'the monitor did ping')
    } finally {
      held.abort(new Error('test over'))
    }
  })
})
