import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { Libp2pPeerChannel, FrameDecoder, encodeFrame, FrameTooLargeError, SIP_PROTOCOL } from '../../node/peer-channel.ts'
import { multiaddr } from '@multiformats/multiaddr'
import { createMeshNode } from '../../node/libp2p.ts'
import { bareNode } from './fixtures/libp2p.ts'
import { memoryLogger } from './fixtures/logger.ts'
import type { Libp2p } from '@libp2p/interface'

const enc = new TextEncoder()
const dec = new TextDecoder()

function waitFor (check: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const until = Date.now() + ms
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (check()) { resolve(); return }
      if (Date.now() > until) { reject(new Error(`timed out waiting for ${what}`)); return }
      setTimeout(tick, 5)
    }
    tick()
  })
}

describe('FrameDecoder', () => {
  test('frames split at every byte boundary and packed together come out whole and in order', () => {
    const msgs = ['INVITE sip:a@b SIP/2.0\r\n\r\n', '', 'x'.repeat(300), 'MESSAGE', 'é☃']
    const wire = Buffer.concat(msgs.map(m => encodeFrame(enc.encode(m))))
    for (const step of [1, 2, 3, 7, 64, wire.length]) {
      const d = new FrameDecoder(1024)
      const out: string[] = []
      for (let i = 0; i < wire.length; i += step) {
        for (const f of d.push(wire.subarray(i, i + step))) out.push(dec.decode(f))
      }
      assert.deepEqual(out, msgs, `step ${step}`)
      assert.equal(d.bufferedBytes, 0)
    }
  })

  test('an oversized length is refused before the body arrives', () => {
    const d = new FrameDecoder(100)
    assert.throws(() => d.push(Uint8Array.of(0, 0, 0, 101)), FrameTooLargeError)
    const d2 = new FrameDecoder(100)
    assert.throws(() => d2.push(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 1, 2)), FrameTooLargeError)
    const d3 = new FrameDecoder(100)
    assert.deepEqual(d3.push(Uint8Array.of(0, 0, 0, 100)), [])
    assert.equal(d3.push(new Uint8Array(100)).length, 1)
  })

  test('a chunk of whole frames then a hostile length: the frames before it are not returned, the length is refused', () => {
    const good = encodeFrame(enc.encode('ok'))
    const d = new FrameDecoder(100)
    assert.throws(() => d.push(Buffer.concat([good, Uint8Array.of(0, 0, 0, 101)])), FrameTooLargeError)
    // a frame of exactly the limit passes, in one chunk and across two
    const max = encodeFrame(new Uint8Array(100).fill(7))
    assert.equal(new FrameDecoder(100).push(max)[0].byteLength, 100)
    const d2 = new FrameDecoder(100)
    assert.deepEqual(d2.push(max.subarray(0, 50)), [])
    assert.equal(d2.push(max.subarray(50))[0].byteLength, 100)
    assert.equal(d2.bufferedBytes, 0)
  })

  test('random frames in random chunks: the same frames, in order, the same bytes', () => {
    let seed = 11
    const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n }
    for (let round = 0; round < 100; round++) {
      const msgs = Array.from({ length: 1 + rnd(12) }, () => Uint8Array.from({ length: rnd(4) === 0 ? 0 : rnd(900) }, () => rnd(256)))
      const wire = Buffer.concat(msgs.map(m => encodeFrame(m)))
      const d = new FrameDecoder(1000)
      const out: Uint8Array[] = []
      for (let i = 0; i < wire.length;) {
        const n = 1 + rnd(1200)
        out.push(...d.push(wire.subarray(i, i + n)))
        i += n
      }
      assert.deepEqual(out.map(f => Buffer.from(f).toString('hex')), msgs.map(m => Buffer.from(m).toString('hex')))
      assert.equal(d.bufferedBytes, 0)
    }
  })

  test('a partial header waits for more bytes', () => {
    const d = new FrameDecoder(100)
    assert.deepEqual(d.push(Uint8Array.of(0, 0)), [])
    assert.deepEqual(d.push(Uint8Array.of(0, 2, 65)), [])
    assert.deepEqual(d.push(Uint8Array.of(66)).map(f => dec.decode(f)), ['AB'])
  })
})

describe('Libp2pPeerChannel between two nodes over TCP', () => {
  let a: Libp2p
  let b: Libp2p
  let ca: Libp2pPeerChannel
  let cb: Libp2pPeerChannel
  const logs = memoryLogger()

  before(async () => {
    a = await bareNode()
    b = await bareNode()
    ca = new Libp2pPeerChannel({ libp2p: a, logger: logs.child({ node: 'a' }) }, { maxFrameSize: 64 * 1024 })
    cb = new Libp2pPeerChannel({ libp2p: b, logger: logs.child({ node: 'b' }) }, { maxFrameSize: 64 * 1024 })
    await ca.start()
    await cb.start()
    // a knows b's addresses (as it would from the peer store after discovery); b knows nothing of a
    await a.peerStore.merge(b.peerId, { multiaddrs: b.getMultiaddrs() })
  })

  after(async () => {
    await ca?.stop()
    await cb?.stop()
    await a?.stop()
    await b?.stop()
  })

  test('messages arrive in order, from the right node, on one reused stream', async () => {
    const got: string[] = []
    const from = new Set<string>()
    const off = cb.onMessage((node, data) => { from.add(node); got.push(dec.decode(data)) })
    try {
      const n = 2000
      const sends: Array<Promise<void>> = []
      for (let i = 0; i < n; i++) sends.push(ca.send(b.peerId.toString(), enc.encode(`MESSAGE ${i}`)))
      await Promise.all(sends)
      await waitFor(() => got.length >= n, 10_000, 'all messages')
      assert.deepEqual(got, Array.from({ length: n }, (_, i) => `MESSAGE ${i}`))
      assert.deepEqual([...from], [a.peerId.toString()])
      assert.equal(ca.stats.streamsOpened, 1)
    } finally { off() }
  })

  test('the frames of one batch are handled one at a time: a handler\'s awaits end before the next frame starts', async () => {
    // a gateway's handling of a message is a chain of awaits that resolve at once; delivered all
    // in one go, the messages of a batch advanced in lockstep (start 0, start 1, … end 0, end 1, …)
    const events: string[] = []
    const off = cb.onMessage((_node, data) => {
      const m = dec.decode(data)
      events.push(`start ${m}`)
      void (async () => {
        for (let i = 0; i < 3; i++) await Promise.resolve()
        events.push(`end ${m}`)
      })()
    })
    try {
      const n = 100 // under the inbox bound: each frame gets its own turn
      await Promise.all(Array.from({ length: n }, async (_, i) => { await ca.send(b.peerId.toString(), enc.encode(String(i))) }))
      await waitFor(() => events.length >= 2 * n, 10_000, 'all frames handled')
      assert.deepEqual(events, Array.from({ length: n }, (_, i) => [`start ${i}`, `end ${i}`]).flat())
    } finally { off() }
  })

  test('a batch of many tiny frames (past the inbox bound) arrives whole and in order', async () => {
    const got: number[] = []
    const off = cb.onMessage((_node, data) => { got.push(data.byteLength === 0 ? -1 : Number(dec.decode(data))) })
    try {
      const n = 5000
      const sends: Array<Promise<void>> = []
      for (let i = 0; i < n; i++) sends.push(ca.send(b.peerId.toString(), i % 7 === 0 ? new Uint8Array(0) : enc.encode(String(i))))
      await Promise.all(sends)
      await waitFor(() => got.length >= n, 10_000, 'all frames')
      assert.deepEqual(got, Array.from({ length: n }, (_, i) => i % 7 === 0 ? -1 : i))
    } finally { off() }
  })

  test('the answer flows back: b reaches a through the connection a opened', async () => {
    const got: string[] = []
    const off = ca.onMessage((node, data) => { if (node === b.peerId.toString()) got.push(dec.decode(data)) })
    try {
      await cb.send(a.peerId.toString(), enc.encode('SIP/2.0 200 OK'))
      await waitFor(() => got.length === 1, 5000, 'reply')
      assert.equal(got[0], 'SIP/2.0 200 OK')
    } finally { off() }
  })

  test('throughput with backpressure: 20,000 x 1 KB messages, nothing lost', async () => {
    let count = 0
    let bytes = 0
    const off = cb.onMessage((_node, data) => { count++; bytes += data.byteLength })
    try {
      const body = new Uint8Array(1024).fill(65)
      const n = 20_000
      const started = performance.now()
      // bounded window of in-flight sends, as a gateway would have
      let next = 0
      const worker = async (): Promise<void> => {
        while (next < n) { next++; await ca.send(b.peerId.toString(), body) }
      }
      await Promise.all(Array.from({ length: 64 }, worker))
      await waitFor(() => count >= n, 20_000, 'all 1 KB messages')
      const secs = (performance.now() - started) / 1000
      assert.equal(count, n)
      assert.equal(bytes, n * 1024)
      console.log(`# peer channel: ${n} x 1 KB in ${secs.toFixed(2)} s = ${Math.round(n / secs)} msg/s`)
    } finally { off() }
  })

  test('a closed connection is re-opened on the next send', async () => {
    const got: string[] = []
    const off = cb.onMessage((_node, data) => { got.push(dec.decode(data)) })
    try {
      const opened = ca.stats.streamsOpened
      await a.hangUp(b.peerId)
      await waitFor(() => ca.streams().outbound === 0, 5000, 'stream to drop')
      await ca.send(b.peerId.toString(), enc.encode('after hang-up'))
      await waitFor(() => got.includes('after hang-up'), 5000, 'message after reconnect')
      assert.equal(ca.stats.streamsOpened, opened + 1)
    } finally { off() }
  })

  test('messages that waited for a stream leave in chunks, whole and in order, a frame over the chunk size on its own', async () => {
    const got: string[] = []
    const off = cb.onMessage((_node, data) => { got.push(dec.decode(data)) })
    try {
      await a.hangUp(b.peerId)
      await waitFor(() => ca.streams().outbound === 0, 5000, 'stream to drop')
      // count the writes on the stream the queue opens
      const link = (ca as unknown as { links: Map<string, { stream?: { send: (c: Uint8Array) => boolean } }> }).links.get(b.peerId.toString())
      assert.ok(link != null)
      let writes = 0
      let current = link.stream
      Object.defineProperty(link, 'stream', {
        configurable: true,
        get: () => current,
        set: (stream?: { send: (c: Uint8Array) => boolean }) => {
          if (stream != null) {
            const send = stream.send.bind(stream)
            stream.send = (c) => { writes++; return send(c) }
          }
          current = stream
        }
      })
      const big = 'B'.repeat(64 * 1024 - 10)
      const msgs = Array.from({ length: 2000 }, (_, i) => i === 1000 ? big : `queued ${i}`)
      await Promise.all(msgs.map(async m => { await ca.send(b.peerId.toString(), enc.encode(m)) }))
      await waitFor(() => got.length >= msgs.length, 10_000, 'every queued message')
      delete (link as { stream?: unknown }).stream
      link.stream = current
      assert.deepEqual(got, msgs)
      // ~20 KB of small frames before and after the big one: a few chunks, not one write per frame
      assert.ok(writes <= 8, `${writes} writes`)
    } finally { off() }
  })

  test('messages that wait are counted by why: no stream yet, a full write buffer, others before them', async () => {
    const got: number[] = []
    const off = cb.onMessage((_node, data) => { got.push(data.byteLength) })
    const peer = b.peerId.toString()
    try {
      await a.hangUp(b.peerId)
      await waitFor(() => ca.streams().outbound === 0, 5000, 'stream to drop')
      const before = { ...ca.stats.queued }
      await Promise.all([1, 2, 3].map(async n => { await ca.send(peer, new Uint8Array(n)) }))
      assert.equal(ca.stats.queued.no_stream - before.no_stream, 3)
      await waitFor(() => got.length >= 3, 5000, 'the three')
      // the stream is open and idle: a message leaves in its turn, not counted
      const open = { ...ca.stats.queued }
      await ca.send(peer, new Uint8Array(4))
      assert.deepEqual(ca.stats.queued, open)
      // 18 MB in one turn: the write buffer fills (drain), and the rest waits behind the first
      const big = Array.from({ length: 300 }, (_, i) => new Uint8Array(60 * 1024).fill(i))
      await Promise.all(big.map(async m => { await ca.send(peer, m) }))
      assert.ok(ca.stats.queued.drain - open.drain >= 1, `drain ${ca.stats.queued.drain - open.drain}`)
      assert.ok(ca.stats.queued.behind_queue - open.behind_queue >= 1, `behind_queue ${ca.stats.queued.behind_queue - open.behind_queue}`)
      assert.equal(ca.stats.queued.no_stream, open.no_stream)
      await waitFor(() => got.length >= 4 + big.length, 20_000, 'every message')
      assert.deepEqual(got, [1, 2, 3, 4, ...big.map(m => m.byteLength)])
    } finally { off() }
  })

  test('frames of one turn of mixed sizes (the batch buffer grown, written early past 64 KB) arrive whole, in order, the caller\'s bytes copied at once', async () => {
    const got: Buffer[] = []
    const off = cb.onMessage((_node, data) => { got.push(Buffer.from(data)) })
    try {
      const idb = b.peerId.toString()
      await ca.send(idb, enc.encode('warm-up'))
      await waitFor(() => got.length === 1, 5000, 'warm-up')
      const sizes = [10, 20_000, 5, 60_000, 0, 40_000, 3, 64 * 1024]
      const sent = sizes.map((n, i) => Buffer.alloc(n, i + 1))
      for (const m of sent) {
        assert.equal(ca.sendNow(idb, m), true)
        // the caller may reuse its bytes at once
        m.fill(0xee)
      }
      await waitFor(() => got.length === 1 + sizes.length, 5000, 'every frame')
      assert.deepEqual(got.slice(1).map(f => f.byteLength), sizes)
      got.slice(1).forEach((f, i) => { assert.ok(f.every(x => x === i + 1), `frame ${i} intact`) })
      assert.equal(ca.linkState(idb).queued, 0)
    } finally { off() }
  })

  test('writes and chunks read are counted: the messages of one turn in one write, the messages of turns apart in one each', async () => {
    const got: string[] = []
    const off = cb.onMessage((_node, data) => { got.push(dec.decode(data)) })
    try {
      const idb = b.peerId.toString()
      await ca.send(idb, enc.encode('warm-up'))
      await waitFor(() => got.length === 1, 5000, 'warm-up')
      const sent0 = { frames: ca.stats.framesSent, writes: ca.stats.writes }
      const read0 = { frames: cb.stats.framesReceived, chunks: cb.stats.chunksReceived }
      // one turn: 10 messages, one write
      for (let i = 0; i < 10; i++) assert.equal(ca.sendNow(idb, enc.encode(`turn ${i}`)), true)
      await waitFor(() => got.length === 11, 5000, 'the batch')
      assert.equal(ca.stats.framesSent - sent0.frames, 10)
      assert.equal(ca.stats.writes - sent0.writes, 1)
      assert.equal(cb.stats.framesReceived - read0.frames, 10)
      assert.ok(cb.stats.chunksReceived - read0.chunks >= 1)
      // three turns apart: three writes
      for (let i = 0; i < 3; i++) {
        assert.equal(ca.sendNow(idb, enc.encode(`apart ${i}`)), true)
        await waitFor(() => got.length === 12 + i, 5000, 'one message')
      }
      assert.equal(ca.stats.framesSent - sent0.frames, 13)
      assert.equal(ca.stats.writes - sent0.writes, 4)
      assert.equal(cb.stats.chunksReceived - read0.chunks >= 4, true)
    } finally { off() }
  })

  test('frames coalesced in one tick survive their stream failing before the write', async () => {
    const got: string[] = []
    const off = cb.onMessage((_node, data) => { got.push(dec.decode(data)) })
    try {
      await ca.send(b.peerId.toString(), enc.encode('warm-up'))
      await waitFor(() => got.includes('warm-up'), 5000, 'warm-up')
      const link = (ca as unknown as { links: Map<string, { stream?: { abort: (err: Error) => void } }> }).links.get(b.peerId.toString())
      assert.ok(link?.stream != null)
      const sends = ['one', 'two', 'three'].map(async m => { await ca.send(b.peerId.toString(), enc.encode(m)) })
      link.stream.abort(new Error('test: stream dies before the batch is written'))
      await Promise.all(sends)
      await waitFor(() => got.length >= 4, 5000, 'the re-queued frames')
      assert.deepEqual(got, ['warm-up', 'one', 'two', 'three'])
    } finally { off() }
  })

  test('an oversized message is refused by the sender', async () => {
    await assert.rejects(ca.send(b.peerId.toString(), new Uint8Array(64 * 1024 + 1)), { name: 'FrameTooLargeError' })
  })

  test('a hostile peer announcing a huge frame gets its stream aborted; others are unaffected', async () => {
    const got: string[] = []
    const off = cb.onMessage((_node, data) => { got.push(dec.decode(data)) })
    try {
      const raw = await a.dialProtocol(b.peerId, SIP_PROTOCOL)
      const closed = new Promise<void>((resolve) => { raw.addEventListener('close', () => { resolve() }, { once: true }) })
      raw.send(Uint8Array.of(0x7f, 0xff, 0xff, 0xff, 1, 2, 3))
      await Promise.race([closed, new Promise((_resolve, reject) => setTimeout(() => { reject(new Error('hostile stream not closed')) }, 5000))])
      assert.ok(logs.lines.some(l => l.level === 'warn' && l.msg.includes('bad frame')))
      await ca.send(b.peerId.toString(), enc.encode('still fine'))
      await waitFor(() => got.includes('still fine'), 5000, 'message after hostile stream')
    } finally { off() }
  })

  test('a peer that cannot be reached fails the send within the open timeout', async () => {
    const stranger = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
    const started = Date.now()
    await assert.rejects(ca.send(stranger, enc.encode('hello?')))
    assert.ok(Date.now() - started < 6000)
  })

  test('a message to ourselves is delivered locally', async () => {
    const got: string[] = []
    const off = ca.onMessage((node, data) => { got.push(`${node}:${dec.decode(data)}`) })
    try {
      await ca.send(a.peerId.toString(), enc.encode('loop'))
      await waitFor(() => got.length === 1, 1000, 'local delivery')
      assert.equal(got[0], `${a.peerId.toString()}:loop`)
    } finally { off() }
  })
})

describe('Libp2pPeerChannel on the mesh assembly: the figures of the design', () => {
  const stops: Array<() => Promise<void>> = []
  after(async () => { for (const stop of stops.reverse()) await stop() })

  test('two nodes exchanging requests and answers use one connection and one stream, with no stream error', async () => {
    const logs = memoryLogger()
    // the connection monitor pings every 100 ms, as it does every 10 s in production
    const a = await createMeshNode({ pingIntervalMs: 100 })
    const connections = { a: 0, b: 0 }
    a.libp2p.addEventListener('connection:open', () => { connections.a++ })
    await a.start()
    stops.push(async () => { await a.stop() })
    const b = await createMeshNode({ pingIntervalMs: 100, bootstrap: [a.libp2p.getMultiaddrs()[0].toString()] })
    b.libp2p.addEventListener('connection:open', () => { connections.b++ })
    await b.start()
    stops.push(async () => { await b.stop() })
    const ca = new Libp2pPeerChannel({ libp2p: a.libp2p, logger: logs.child({ node: 'a' }) })
    const cb = new Libp2pPeerChannel({ libp2p: b.libp2p, logger: logs.child({ node: 'b' }) })
    await ca.start()
    await cb.start()
    stops.push(async () => { await ca.stop(); await cb.stop() })
    await waitFor(() => a.libp2p.getPeers().length === 1, 5000, 'b to join a')
    const answers: string[] = []
    cb.onMessage((node, data) => { void cb.send(node, enc.encode(`SIP/2.0 200 OK for ${dec.decode(data)}`)) })
    ca.onMessage((_node, data) => { answers.push(dec.decode(data)) })
    for (let i = 0; i < 8; i++) {
      await ca.send(b.peerId.toString(), enc.encode(`MESSAGE ${i}`))
      await waitFor(() => answers.length === i + 1, 5000, `answer ${i}`)
      // spread over several connection-monitor pings
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    assert.deepEqual(answers, Array.from({ length: 8 }, (_, i) => `SIP/2.0 200 OK for MESSAGE ${i}`))
    assert.equal(ca.stats.streamsOpened + cb.stats.streamsOpened, 1, 'one stream between the two nodes, opened by the first sender')
    assert.equal(ca.stats.streamErrors + cb.stats.streamErrors, 0)
    assert.deepEqual(connections, { a: 1, b: 1 }, 'one connection: one Noise handshake on each side')
    assert.equal(a.libp2p.getConnections().length, 1)
  })

  test('cold start: messages sent before the peer listens wait for the stream and all arrive, in order', async () => {
    const logs = memoryLogger()
    const port = await freePort()
    const b = await createMeshNode({ listen: [`/ip4/127.0.0.1/tcp/${port}`] })
    const a = await createMeshNode()
    await a.start()
    stops.push(async () => { await a.stop() })
    // a knows where b will listen (a bootstrap address); b is not up yet
    await a.libp2p.peerStore.merge(b.peerId, { multiaddrs: [multiaddr(`/ip4/127.0.0.1/tcp/${port}`)] })
    const ca = new Libp2pPeerChannel({ libp2p: a.libp2p, logger: logs.child({ node: 'a' }) })
    const cb = new Libp2pPeerChannel({ libp2p: b.libp2p, logger: logs.child({ node: 'b' }) })
    await ca.start()
    stops.push(async () => { await ca.stop() })
    const got: string[] = []
    cb.onMessage((_node, data) => { got.push(dec.decode(data)) })
    const n = 200
    const sends = Array.from({ length: n }, async (_, i) => { await ca.send(b.peerId.toString(), enc.encode(`MESSAGE ${i}`)) })
    await new Promise(resolve => setTimeout(resolve, 400))
    await b.start()
    await cb.start()
    stops.push(async () => { await cb.stop(); await b.stop() })
    const results = await Promise.allSettled(sends)
    assert.deepEqual(results.filter(r => r.status === 'rejected').map(r => String((r as PromiseRejectedResult).reason)), [], 'no send failed')
    await waitFor(() => got.length >= n, 5000, 'every message')
    assert.deepEqual(got, Array.from({ length: n }, (_, i) => `MESSAGE ${i}`))
    assert.ok(ca.stats.openRetries > 0, 'the first dials failed and were tried again')
  })
})

describe('Libp2pPeerChannel: the SIP stream opened as the connection comes up (openOnConnect)', () => {
  const stops: Array<() => Promise<void>> = []
  after(async () => { for (const stop of stops.reverse()) await stop() })

  /** a and b with channels started, b about to dial a; `init` for both channels */
  async function pair (init: { openOnConnect?: boolean } = {}): Promise<{ a: Libp2p, b: Libp2p, ca: Libp2pPeerChannel, cb: Libp2pPeerChannel, logs: ReturnType<typeof memoryLogger> }> {
    const logs = memoryLogger()
    const a = await bareNode()
    const b = await bareNode()
    const ca = new Libp2pPeerChannel({ libp2p: a, logger: logs.child({ node: 'a' }) }, init)
    const cb = new Libp2pPeerChannel({ libp2p: b, logger: logs.child({ node: 'b' }) }, init)
    await ca.start()
    await cb.start()
    stops.push(async () => { await ca.stop(); await cb.stop(); await a.stop(); await b.stop() })
    return { a, b, ca, cb, logs }
  }

  test('the dialler opens the stream before any message; the first message in either direction waits for nothing', async () => {
    const { a, b, ca, cb } = await pair()
    await b.dial(a.getMultiaddrs()[0])
    const ida = a.peerId.toString()
    const idb = b.peerId.toString()
    await waitFor(() => cb.linkState(ida).open && ca.linkState(idb).open, 5000, 'the stream open on both sides')
    assert.equal(cb.stats.streamsPrepared, 1)
    assert.equal(cb.stats.streamsOpened, 1, 'b, the dialler, opened it')
    assert.equal(ca.stats.streamsOpened + ca.stats.streamsPrepared, 0, 'a answers on it')
    const got: string[] = []
    ca.onMessage((node, data) => { got.push(`${node === idb ? 'b' : '?'}: ${dec.decode(data)}`) })
    cb.onMessage((node, data) => { got.push(`${node === ida ? 'a' : '?'}: ${dec.decode(data)}`); void cb.send(node, enc.encode(`200 for ${dec.decode(data)}`)) })
    // the first message of a route from a, the node that was dialled, goes out in its turn
    assert.equal(ca.sendNow(idb, enc.encode('MESSAGE 1')), true, 'a stream to send on, open and idle')
    await waitFor(() => got.length === 2, 5000, 'the message and its answer')
    assert.deepEqual(got, ['a: MESSAGE 1', 'b: 200 for MESSAGE 1'])
    assert.deepEqual(ca.stats.queued, { no_stream: 0, drain: 0, behind_queue: 0 })
    assert.deepEqual(cb.stats.queued, { no_stream: 0, drain: 0, behind_queue: 0 })
    assert.equal(ca.stats.streamsOpened + cb.stats.streamsOpened, 1, 'one stream between the two nodes')
    assert.equal(ca.stats.streamErrors + cb.stats.streamErrors, 0)
  })

  test('off: no stream until the first message, which waits for one', async () => {
    const { a, b, ca, cb } = await pair({ openOnConnect: false })
    await b.dial(a.getMultiaddrs()[0])
    await new Promise(resolve => setTimeout(resolve, 300))
    const idb = b.peerId.toString()
    assert.equal(ca.linkState(idb).open, false)
    assert.equal(cb.linkState(a.peerId.toString()).open, false)
    assert.equal(ca.sendNow(idb, enc.encode('MESSAGE 1')), false)
    const got: string[] = []
    cb.onMessage((_node, data) => { got.push(dec.decode(data)) })
    await ca.send(idb, enc.encode('MESSAGE 1'))
    await waitFor(() => got.length === 1, 5000, 'the message')
    assert.equal(ca.stats.queued.no_stream, 1)
    assert.equal(cb.stats.streamsPrepared + ca.stats.streamsPrepared, 0)
  })

  test('connections open before the channel starts get their stream at start; a peer without the protocol yet is not dialled again for it', async () => {
    const logs = memoryLogger()
    const a = await bareNode()
    const b = await bareNode()
    const ca = new Libp2pPeerChannel({ libp2p: a, logger: logs.child({ node: 'a' }) })
    const cb = new Libp2pPeerChannel({ libp2p: b, logger: logs.child({ node: 'b' }) })
    stops.push(async () => { await ca.stop(); await cb.stop(); await a.stop(); await b.stop() })
    let dials = 0
    b.addEventListener('connection:open', (evt) => { if (evt.detail.direction === 'outbound') dials++ })
    await b.dial(a.getMultiaddrs()[0])
    // b's channel starts with the connection open, a does not speak the protocol yet: the early
    // open fails once, quietly, and nothing is dialled again for it
    await cb.start()
    assert.equal(cb.stats.streamsPrepared, 1)
    await waitFor(() => logs.lines.some(l => l.msg === 'SIP stream not opened ahead of use'), 5000, 'the failed early open logged')
    await new Promise(resolve => setTimeout(resolve, 300))
    assert.equal(dials, 1)
    assert.equal(cb.stats.openRetries, 0)
    // a starts: the first message opens a stream on demand, as without the early open
    await ca.start()
    const got: string[] = []
    ca.onMessage((_node, data) => { got.push(dec.decode(data)) })
    await cb.send(a.peerId.toString(), enc.encode('MESSAGE 1'))
    await waitFor(() => got.length === 1, 5000, 'the message')
    assert.equal(cb.stats.queued.no_stream, 1)
    assert.equal(cb.stats.streamsOpened, 1)
    // and a channel started with a connection it dialled open, its peer ready, prepares at start
    const c = await bareNode()
    const cc = new Libp2pPeerChannel({ libp2p: c, logger: logs.child({ node: 'c' }) })
    stops.push(async () => { await cc.stop(); await c.stop() })
    await c.dial(a.getMultiaddrs()[0])
    await cc.start()
    await waitFor(() => cc.linkState(a.peerId.toString()).open, 5000, 'c\'s stream to a')
    assert.equal(cc.stats.streamsPrepared, 1)
    assert.equal(cc.stats.queued.no_stream, 0)
  })
})

async function freePort (): Promise<number> {
  const { createServer } = await import('node:net')
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => { resolve(port) })
    })
  })
}
