// The UDP endpoint whose socket runs on a thread of its own (transport/udp-thread.ts), on real
// sockets on 127.0.0.1: what crosses between the threads arrives whole, in order, and the edges
// (a busy port, a datagram larger than a batch, an empty datagram, sends after close) behave like
// the event-loop socket of udp.ts.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import type { RemoteInfo } from 'node:dgram'
import { bindUdpThread } from '../../../sip-gateway/transport/udp-thread.ts'
import { bindUdp, MAX_UDP_PAYLOAD } from '../../../sip-gateway/transport/udp.ts'
import { BATCH_BYTES, BatchWriter, readBatch, type DatagramBatch } from '../../../sip-gateway/transport/udp-thread-frames.ts'
import { TransportError } from '../../../sip-gateway/errors.ts'
import { until, UdpClient } from './fixtures.ts'

interface Got { data: Buffer, rinfo: RemoteInfo }

async function endpoint (got: Got[] = [], sendErrors: Error[] = []): Promise<{ ep: Awaited<ReturnType<typeof bindUdpThread>>, got: Got[], sendErrors: Error[] }> {
  const ep = await bindUdpThread({ host: '127.0.0.1', port: 0 }, (data, rinfo) => got.push({ data, rinfo }), () => {}, 1 << 20, (err) => sendErrors.push(err))
  return { ep, got, sendErrors }
}

/** a client whose datagrams are kept as bytes */
async function rawClient (): Promise<UdpClient & { raw: Buffer[] }> {
  const c = await UdpClient.open() as UdpClient & { raw: Buffer[] }
  c.raw = []
  c.socket.on('message', (d) => c.raw.push(d))
  // the tests send it hundreds of answers in one burst: the default receive buffer (~208 KB,
  // ~800 B of kernel accounting per small datagram) drops part of one when this loop is slow
  // under load, which is the client's loss, not the endpoint's
  c.socket.setRecvBufferSize(4 * 1024 * 1024)
  return c
}

describe('UDP thread batch framing', () => {
  test('a batch reads back as written; a truncated or garbled one throws RangeError instead of reading past its end', async () => {
    const posted: DatagramBatch[] = []
    const w = new BatchWriter((b) => posted.push(b))
    w.push(Buffer.from('one'), '127.0.0.1', 5060)
    w.push(new Uint8Array(0), '::1', 1)
    w.push(Buffer.alloc(BATCH_BYTES + 1, 7), '10.0.0.1', 65535) // does not fit: the first two go at once
    w.flush()
    assert.equal(posted.length, 2)
    const seen: Array<[string, string, number]> = []
    for (const b of posted) readBatch(b, (payload, host, port) => seen.push([payload.length > 8 ? `${payload.length} bytes` : payload.toString(), host, port]))
    assert.deepEqual(seen, [['one', '127.0.0.1', 5060], ['', '::1', 1], [`${BATCH_BYTES + 1} bytes`, '10.0.0.1', 65535]])
    const first = posted[0]
    assert.throws(() => readBatch({ ...first, length: first.length - 1 }, () => {}), RangeError)
    const garbled = Buffer.from(first.buffer, 0, first.length)
    garbled.writeUInt32LE(0xffffffff, 0) // a payload length past the end
    assert.throws(() => readBatch(first, () => {}), RangeError)
    await new Promise(resolve => setImmediate(resolve)) // the writer's scheduled flush finds nothing
    assert.equal(posted.length, 2)
  })
})

describe('UDP socket on its own thread', () => {
  test('datagrams cross both ways whole, with their source, in the order sent', async () => {
    const { ep, got } = await endpoint()
    const client = await rawClient()
    try {
      assert.ok(ep.address.port > 0)
      const n = 300
      for (let i = 0; i < n; i++) await client.send(`datagram ${i} ${'x'.repeat(i % 97)}`, ep.address.port)
      await until(() => got.length === n, 5000, 'every datagram')
      got.forEach((g, i) => {
        assert.equal(g.data.toString(), `datagram ${i} ${'x'.repeat(i % 97)}`)
        assert.deepEqual({ address: g.rinfo.address, port: g.rinfo.port, family: g.rinfo.family }, { address: '127.0.0.1', port: client.port, family: 'IPv4' })
      })
      // sent back in one event-loop turn: one batch, every datagram whole and in order
      for (let i = 0; i < n; i++) ep.sendNow(Buffer.from(`answer ${i}`), { host: '127.0.0.1', port: client.port })
      await until(() => client.raw.length === n, 5000, 'every answer')
      client.raw.forEach((d, i) => assert.equal(d.toString(), `answer ${i}`))
      // each received datagram owns its bytes: later batches do not overwrite it
      assert.equal(got[0].data.toString(), 'datagram 0 ')
    } finally {
      await client.close()
      await ep.close()
    }
  })

  test('a datagram larger than a batch buffer, and an empty one, arrive as sent both ways', async () => {
    const { ep, got } = await endpoint()
    const client = await rawClient()
    try {
      const big = Buffer.alloc(BATCH_BYTES * 3, 0x41)
      big.write('head', 0)
      big.write('tail', big.length - 4)
      await client.send(Buffer.alloc(0), ep.address.port)
      await client.send(big, ep.address.port)
      await client.send('after', ep.address.port)
      await until(() => got.length === 3, 5000, 'three datagrams')
      assert.equal(got[0].data.length, 0)
      assert.ok(got[1].data.equals(big))
      assert.equal(got[2].data.toString(), 'after')
      ep.sendNow(Buffer.from('small'), { host: '127.0.0.1', port: client.port })
      ep.sendNow(big, { host: '127.0.0.1', port: client.port })
      ep.sendNow(new Uint8Array(0), { host: '127.0.0.1', port: client.port })
      await until(() => client.raw.length === 3, 5000, 'three answers')
      assert.equal(client.raw[0].toString(), 'small')
      assert.ok(client.raw[1].equals(big))
      assert.equal(client.raw[2].length, 0)
    } finally {
      await client.close()
      await ep.close()
    }
  })

  test('what cannot be sent throws TransportError at once; a name is resolved first; a failed send is reported', async () => {
    const { ep, sendErrors } = await endpoint()
    const client = await rawClient()
    try {
      assert.throws(() => ep.sendNow(new Uint8Array(MAX_UDP_PAYLOAD + 1), { host: '127.0.0.1', port: client.port }), TransportError)
      assert.throws(() => ep.sendNow(Buffer.from('x'), { host: 'localhost', port: client.port }), /not an IP address/)
      await assert.rejects(ep.send(Buffer.from('x'), { host: 'no-such-host.invalid', port: 5060 }), TransportError)
      await ep.send(Buffer.from('by name'), { host: 'localhost', port: client.port })
      await until(() => client.raw.length === 1, 3000, 'the named send')
      assert.equal(client.raw[0].toString(), 'by name')
      assert.throws(() => ep.sendNow(Buffer.from('x'), { host: '127.0.0.1', port: 0 }), /bad UDP port/)
      assert.throws(() => ep.sendNow(Buffer.from('x'), { host: '127.0.0.1', port: 70_000 }), /bad UDP port/)
      // the kernel refuses a broadcast address on a socket without SO_BROADCAST: the error comes
      // back from the thread, which goes on sending
      ep.sendNow(Buffer.from('nowhere'), { host: '255.255.255.255', port: 5060 })
      await until(() => sendErrors.length === 1, 3000, 'the send error')
      assert.ok(sendErrors[0] instanceof TransportError)
      ep.sendNow(Buffer.from('still here'), { host: '127.0.0.1', port: client.port })
      await until(() => client.raw.length === 2, 3000, 'a send after the error')
    } finally {
      await client.close()
      await ep.close()
    }
  })

  test('a port already bound is refused with EADDRINUSE, like the event-loop socket', async () => {
    const taken = await bindUdp({ host: '127.0.0.1', port: 0 }, () => {}, () => {})
    try {
      await assert.rejects(bindUdpThread(taken.address, () => {}, () => {}), (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE')
    } finally {
      await taken.close()
    }
  })

  test('after close: sends throw, nothing more is delivered, the port is free again, close again is a no-op', async () => {
    const { ep, got } = await endpoint()
    const port = ep.address.port
    await ep.close()
    await ep.close()
    assert.throws(() => ep.sendNow(Buffer.from('x'), { host: '127.0.0.1', port: 9 }), /closed/)
    await assert.rejects(ep.send(Buffer.from('x'), { host: '127.0.0.1', port: 9 }), /closed/)
    const again = await bindUdp({ host: '127.0.0.1', port }, () => {}, () => {})
    await again.close()
    assert.equal(got.length, 0)
  })
})
