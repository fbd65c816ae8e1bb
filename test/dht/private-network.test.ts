/**
 * P4, the connection side: with a pre-shared key a node outside the mesh cannot even connect,
 * and with an allow-list only the listed peer ids can.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { generateKey } from '@libp2p/pnet'
import { createMeshNode } from '../../node/libp2p.ts'
import { waitFor } from '../fixtures/mesh.ts'
import type { MeshNode } from '../../node/libp2p.ts'

function psk (): Uint8Array {
  const bytes = new Uint8Array(95)
  generateKey(bytes)
  return bytes
}

async function started (...nodes: Array<Promise<MeshNode>>): Promise<MeshNode[]> {
  const all = await Promise.all(nodes)
  await Promise.all(all.map(async n => { await n.start() }))
  return all
}

test('a node with the wrong pre-shared key, or none, cannot connect; the right key can', async () => {
  const key = psk()
  const [a, b, wrong, open] = await started(
    createMeshNode({ psk: key }), createMeshNode({ psk: key }), createMeshNode({ psk: psk() }), createMeshNode({}))
  try {
    await b.libp2p.dial(a.libp2p.getMultiaddrs(), { signal: AbortSignal.timeout(5_000) })
    await waitFor(() => a.libp2p.getConnections(b.peerId).length === 1, 2_000, 'inbound connection')
    for (const outsider of [wrong, open]) {
      await assert.rejects(outsider.libp2p.dial(a.libp2p.getMultiaddrs(), { signal: AbortSignal.timeout(3_000) }))
      await assert.rejects(a.libp2p.dial(outsider.libp2p.getMultiaddrs(), { signal: AbortSignal.timeout(3_000) }))
      assert.equal(a.libp2p.getConnections(outsider.peerId).length, 0)
    }
    // the insiders form a DHT and claims work between them
    const res = await a.registry.claim('sip:psk@example.com', { expiresAt: Date.now() + 60_000 })
    assert.ok(res.won)
    assert.equal((await b.registry.resolve('sip:psk@example.com', { fresh: true }))?.node, a.peerId.toString())
    assert.equal(await wrong.registry.resolve('sip:psk@example.com', { fresh: true }), undefined)
  } finally {
    await Promise.all([a, b, wrong, open].map(async n => { await n.stop() }))
  }
})

test('an allow-list of peer ids keeps every other peer out, both ways', async () => {
  const [a, friend, stranger] = await started(createMeshNode({}), createMeshNode({}), createMeshNode({}))
  const guarded = await createMeshNode({ allowPeers: [a.peerId.toString(), friend.peerId.toString()] })
  await guarded.start()
  try {
    await friend.libp2p.dial(guarded.libp2p.getMultiaddrs(), { signal: AbortSignal.timeout(5_000) })
    // the stranger's handshake may complete on its side before the guarded node drops it
    await stranger.libp2p.dial(guarded.libp2p.getMultiaddrs(), { signal: AbortSignal.timeout(3_000) }).catch(() => {})
    await assert.rejects(guarded.libp2p.dial(stranger.libp2p.getMultiaddrs(), { signal: AbortSignal.timeout(3_000) }))
    await new Promise(resolve => setTimeout(resolve, 300))
    assert.equal(guarded.libp2p.getConnections(stranger.peerId).length, 0)
    assert.equal(stranger.libp2p.getConnections(guarded.peerId).length, 0)
    await waitFor(() => guarded.libp2p.getConnections(friend.peerId).length === 1, 2_000, 'friend connected')
  } finally {
    await Promise.all([a, friend, stranger, guarded].map(async n => { await n.stop() }))
  }
})

test('bad init is refused: a malformed pre-shared key, a malformed allow-list entry', async () => {
  await assert.rejects(async () => { const n = await createMeshNode({ psk: new TextEncoder().encode('not a key') }); await n.start(); await n.stop() })
  await assert.rejects(createMeshNode({ allowPeers: ['not-a-peer-id'] }))
})
