import { test } from 'node:test'
import assert from 'node:assert/strict'
import { PeerActivity } from '../../node/peer-activity.ts'
import { bareNode } from './fixtures/libp2p.ts'

test('a tracked libp2p hands out each method bound once, to the node, and follows a method replaced on it', async () => {
  const a = await bareNode()
  const b = await bareNode()
  try {
    const tracked = new PeerActivity().track(a)
    const getConnections = tracked.getConnections
    assert.equal(tracked.getConnections, getConnections, 'the same function at every read')
    assert.deepEqual(getConnections(b.peerId), [])
    await a.dial(b.getMultiaddrs()[0])
    // bound to the node, called detached
    assert.equal(getConnections(b.peerId).length, 1)
    assert.equal(tracked.peerId, a.peerId)
    // a method replaced on the node (as node/ does to wrap libp2p parts) is the one handed out
    const replaced = (): [] => []
    Object.defineProperty(a, 'getConnections', { value: replaced, configurable: true, writable: true })
    assert.deepEqual(tracked.getConnections(b.peerId), [])
    assert.notEqual(tracked.getConnections, getConnections)
  } finally {
    await a.stop()
    await b.stop()
  }
})
