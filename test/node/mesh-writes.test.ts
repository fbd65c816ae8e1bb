// The two changes to how the mesh writes: a TCP connection's writes of one callback leave as one
// writev (node/tcp-writes.ts), and the SIP stream's yamux window updates wait for half the window
// (node/yamux-window.ts), and Noise reads its lengths without a throw (node/noise-length.ts). Real
// libp2p nodes over TCP on loopback.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import type { Libp2p, MultiaddrConnection, Stream } from '@libp2p/interface'
import { coalesceTcpWrites, coalesceWrites } from '../../node/tcp-writes.ts'
import { lazyWindowUpdates } from '../../node/yamux-window.ts'
import { noiseLengthsWithoutThrow, readLength } from '../../node/noise-length.ts'
import { Libp2pPeerChannel } from '../../node/peer-channel.ts'
import { hasDirectMessages } from '../../node/direct-messages.ts'
import { memoryLogger } from './fixtures/logger.ts'
import { waitFor } from '../fixtures/mesh.ts'

const PROTOCOL = '/sipmesh-test/bytes/1.0.0'

async function node (): Promise<Libp2p> {
  return await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [coalesceTcpWrites(tcp())],
    connectionEncrypters: [noiseLengthsWithoutThrow(noise())],
    streamMuxers: [yamux()]
  })
}

/** a deterministic byte pattern: byte i of the whole transfer is (i * 7 + 3) & 0xff */
function pattern (from: number, length: number): Uint8Array {
  const out = new Uint8Array(length)
  for (let i = 0; i < length; i++) out[i] = ((from + i) * 7 + 3) & 0xff
  return out
}

/** counts the yamux window-update frames a stream sends (frame type 1) */
function countWindowUpdates (stream: Stream): { count: number } {
  const counter = { count: 0 }
  const s = stream as unknown as { sendFrame: (header: { type: number }, data?: unknown) => boolean }
  const send = s.sendFrame
  s.sendFrame = (header, data) => {
    if (header.type === 1) counter.count++
    return send(header, data)
  }
  return counter
}

describe('mesh reads and writes over real libp2p TCP connections', () => {
  let a: Libp2p
  let b: Libp2p
  /** what b's handler received, per stream */
  const received: Array<{ stream: Stream, bytes: number, bad: number, chunks: Uint8Array[] }> = []

  before(async () => {
    a = await node()
    b = await node()
    await a.peerStore.merge(b.peerId, { multiaddrs: b.getMultiaddrs() })
    await b.handle(PROTOCOL, (stream) => {
      const r = { stream, bytes: 0, bad: 0, chunks: [] as Uint8Array[] }
      received.push(r)
      stream.addEventListener('message', (evt) => {
        const data = evt.data.subarray()
        for (let i = 0; i < data.byteLength; i++) if (data[i] !== (((r.bytes + i) * 7 + 3) & 0xff)) r.bad++
        r.bytes += data.byteLength
      })
    })
  })

  after(async () => {
    await a?.stop()
    await b?.stop()
  })

  test('a connection whose writes are coalesced carries 8 MB written in one turn intact and in order, through backpressure', async () => {
    const stream = await a.dialProtocol(b.peerId, PROTOCOL)
    const total = 8 * 1024 * 1024
    let sent = 0
    // everything in one synchronous run: one cork, far past the socket's high-water mark
    let full = false
    while (sent < total) {
      const n = Math.min(1000 + (sent % 3000), total - sent)
      if (!stream.send(pattern(sent, n))) full = true
      sent += n
      if (full) break
    }
    // the rest as the stream drains
    while (sent < total) {
      if (stream.writableNeedsDrain) await new Promise(resolve => stream.addEventListener('drain', resolve, { once: true }))
      const n = Math.min(60_000, total - sent)
      stream.send(pattern(sent, n))
      sent += n
    }
    await waitFor(() => received.some(r => r.bytes === total), 30_000, 'all bytes')
    const r = received.find(x => x.bytes === total)!
    assert.equal(r.bad, 0)
    assert.equal(full, true, 'the transfer met backpressure')
    await stream.close()
  })

  test('only a net.Socket connection is patched, and only once', () => {
    const fake = { sendData: () => ({ sentBytes: 0, canSendMore: true }) } as unknown as MultiaddrConnection
    assert.equal(coalesceWrites(fake), false)
    const conn = a.getConnections(b.peerId)[0] as unknown as { maConn: MultiaddrConnection }
    assert.ok(conn.maConn != null)
    assert.equal(coalesceWrites(conn.maConn), false, 'already patched when it was dialled')
  })

  test('both ends of a connection read Noise lengths with readLength', () => {
    for (const [x, y] of [[a, b], [b, a]]) {
      const conn = x.getConnections(y.peerId)[0] as unknown as { muxer: { maConn: { decoder: { lengthDecoder: unknown } } } }
      assert.equal(conn.muxer.maConn.decoder.lengthDecoder, readLength)
    }
  })

  test('both ends hand reads up directly at the TCP connection and at Noise\'s stream', () => {
    for (const [x, y] of [[a, b], [b, a]]) {
      const conn = x.getConnections(y.peerId)[0] as unknown as { maConn: unknown, muxer: { maConn: unknown } }
      assert.equal(hasDirectMessages(conn.maConn), true, 'the TCP connection')
      assert.equal(hasDirectMessages(conn.muxer.maConn), true, 'Noise\'s stream')
      assert.notEqual(conn.maConn, conn.muxer.maConn)
    }
  })

  test('a lazy stream sends no window update for frames within half the window, and one when past it', async () => {
    const stream = await a.dialProtocol(b.peerId, PROTOCOL)
    // the first frame establishes the stream (SYN, then ACK): the library's own path
    stream.send(pattern(0, 100))
    await waitFor(() => received.some(r => r.stream.id === stream.id && r.bytes === 100), 5000, 'the first frame')
    const r = received.find(x => x.stream.id === stream.id)!
    assert.equal(lazyWindowUpdates(r.stream), true)
    const updates = countWindowUpdates(r.stream)
    const w = r.stream as unknown as { recvWindow: number, recvWindowCapacity: number }
    // what may be received before half the window is used (the library may have grown the window)
    const room = w.recvWindowCapacity - w.recvWindow / 2
    const send1000 = async (frames: number): Promise<void> => {
      for (let i = 0; i < frames; i++) {
        stream.send(pattern(sent, 1000))
        sent += 1000
        await new Promise(resolve => setImmediate(resolve))
      }
      await waitFor(() => r.bytes === sent, 5000, `${frames} frames`)
    }
    let sent = 100
    // frames of 1,000 bytes, one per turn, up to just under half the window
    const under = Math.floor(room / 1000) - 1
    assert.ok(under >= 50, `room for ${under} frames`)
    await send1000(under)
    assert.equal(updates.count, 0)
    // past half the window: one update, and the window is whole again
    await send1000(2)
    assert.equal(updates.count, 1)
    assert.equal(w.recvWindowCapacity >= w.recvWindow - 2000, true)
    assert.equal(r.bad, 0)
    await stream.close()
  })

  test('a lazy stream carries 4 MB (16 initial windows) intact: flow control still works', async () => {
    const stream = await a.dialProtocol(b.peerId, PROTOCOL)
    stream.send(pattern(0, 10))
    await waitFor(() => received.some(r => r.stream.id === stream.id && r.bytes === 10), 5000, 'the first frame')
    const r = received.find(x => x.stream.id === stream.id)!
    lazyWindowUpdates(r.stream)
    const updates = countWindowUpdates(r.stream)
    const total = 4 * 1024 * 1024
    let sent = 10
    while (sent < total) {
      if (stream.writableNeedsDrain) await new Promise(resolve => stream.addEventListener('drain', resolve, { once: true }))
      const n = Math.min(7000, total - sent)
      stream.send(pattern(sent, n))
      sent += n
    }
    await waitFor(() => r.bytes === total, 30_000, 'all bytes')
    assert.equal(r.bad, 0)
    // the library grows the window of a busy stream (up to 16 MB): at least one update per 8 MB
    assert.ok(updates.count >= 1, `window updates: ${updates.count}`)
    await stream.close()
  })

  test('not a yamux stream: left alone', () => {
    assert.equal(lazyWindowUpdates({} as unknown as Stream), false)
  })

  test('peer channels on these connections exchange 5,000 messages each way, in order, none lost', async () => {
    const logs = memoryLogger()
    const ca = new Libp2pPeerChannel({ libp2p: a, logger: logs })
    const cb = new Libp2pPeerChannel({ libp2p: b, logger: logs })
    await ca.start()
    await cb.start()
    try {
      const atB: number[] = []
      const atA: number[] = []
      cb.onMessage((from, data) => {
        const n = new DataView(data.buffer, data.byteOffset).getUint32(0)
        atB.push(n)
        void cb.send(from, data)
      })
      ca.onMessage((_from, data) => { atA.push(new DataView(data.buffer, data.byteOffset).getUint32(0)) })
      for (let i = 0; i < 5000; i++) {
        const m = new Uint8Array(400)
        new DataView(m.buffer).setUint32(0, i)
        void ca.send(b.peerId.toString(), m)
        if (i % 50 === 49) await new Promise(resolve => setImmediate(resolve))
      }
      await waitFor(() => atA.length === 5000, 20_000, 'all answers')
      assert.deepEqual(atB, Array.from({ length: 5000 }, (_v, i) => i))
      assert.deepEqual(atA, atB)
      assert.equal(ca.stats.streamErrors + cb.stats.streamErrors, 0)
    } finally {
      await ca.stop()
      await cb.stop()
    }
  })

  test('sendNow takes a message only when a stream is open with room, and never throws', async () => {
    const logs = memoryLogger()
    const ca = new Libp2pPeerChannel({ libp2p: a, logger: logs }, { maxFrameSize: 1000 })
    const cb = new Libp2pPeerChannel({ libp2p: b, logger: logs })
    const to = b.peerId.toString()
    const got: string[] = []
    cb.onMessage((_from, data) => { got.push(new TextDecoder().decode(data)) })
    // not started: nothing
    assert.equal(ca.sendNow(to, new Uint8Array(1)), false)
    await ca.start()
    await cb.start()
    try {
      // no stream yet: nothing (send opens one)
      assert.equal(ca.sendNow(to, new TextEncoder().encode('first')), false)
      await ca.send(to, new TextEncoder().encode('first'))
      assert.equal(ca.sendNow(to, new TextEncoder().encode('second')), true)
      // too large, to ourselves, to a peer never seen: nothing, no throw
      assert.equal(ca.sendNow(to, new Uint8Array(1001)), false)
      assert.equal(ca.sendNow(a.peerId.toString(), new Uint8Array(1)), false)
      assert.equal(ca.sendNow('not a peer id', new Uint8Array(1)), false)
      await waitFor(() => got.length === 2, 5000, 'two messages')
      assert.deepEqual(got, ['first', 'second'])
    } finally {
      await ca.stop()
      await cb.stop()
    }
    assert.equal(ca.sendNow(to, new Uint8Array(1)), false)
  })
})
