/**
 * Yamux window updates at half the window (node/yamux-window.ts), between two real loopback nodes:
 * a receiver does not answer small frames with updates while more than half its window is free,
 * and many times the window still flows through one stream (the updates come when due).
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Mesh, waitFor } from '../fixtures/mesh.ts'
import type { MeshNode } from '../../node/libp2p.ts'
import type { Stream } from '@libp2p/interface'

const PROTOCOL = '/sipmesh/test/yamux-window/1.0.0'
type Window = { recvWindow: number, recvWindowCapacity: number }

describe('yamux window updates at half the window', () => {
  let mesh: Mesh
  let a: MeshNode
  let b: MeshNode
  let inbound: Stream | undefined
  let received = 0
  before(async () => {
    mesh = await Mesh.spawn(2)
    ;[a, b] = mesh.nodes
    await b.libp2p.handle(PROTOCOL, (stream) => {
      inbound = stream
      stream.addEventListener('message', (evt) => { received += evt.data.byteLength })
    })
  })
  after(async () => { await mesh?.stop() })

  test('small frames leave the window used until half of it is; 4 MB flow through one stream in 400-byte messages', async () => {
    const out = await a.libp2p.dialProtocol(b.peerId, PROTOCOL)
    const msg = new Uint8Array(400).fill(7)
    for (let i = 0; i < 10; i++) out.send(msg)
    await waitFor(() => received === 4000, 3_000, 'the first 10 messages')
    const w = inbound as unknown as Window
    // no update yet: the receiver's window shows what it took in (the library's rule restores it at once)
    assert.equal(w.recvWindow - w.recvWindowCapacity, 4000)
    const total = 4 * 2 ** 20
    let sent = 4000
    while (sent < total) {
      if (!out.send(msg)) await new Promise<void>(resolve => { out.addEventListener('drain', () => { resolve() }, { once: true }) })
      sent += msg.byteLength
    }
    await waitFor(() => received >= total, 20_000, `all ${total} bytes (got ${received})`)
    assert.equal(received, sent)
    // updates did come: never more than the window taken in, and it is not exhausted
    assert.ok(w.recvWindowCapacity > 0 && w.recvWindowCapacity <= w.recvWindow)
    assert.ok(w.recvWindow - w.recvWindowCapacity <= w.recvWindow / 2 + msg.byteLength, `${w.recvWindow - w.recvWindowCapacity} bytes of ${w.recvWindow} unacknowledged`)
    await out.close()
  })
})
