/**
 * SIP over UDP with the socket on a thread of its own (`--udp-thread`): the same `UdpEndpoint`
 * as udp.ts, but the datagrams' system calls run in a `worker_threads` worker
 * (udp-thread-worker.ts) and cross to the gateway's event loop in batches, one transferred
 * buffer per event-loop turn each way.
 *
 * Why: a node's SIP path is one event loop, so it uses one core at most, and on loopback a third
 * of a relaying node's busy time was the kernel's `sendmsg` (which also wakes the receiver). With
 * the socket on its own thread those calls use a second core, for ~1 µs of copying per datagram
 * on the gateway's loop. Off by default: on a machine whose cores are all busy, the thread only
 * adds the copies.
 */
import { Worker } from 'node:worker_threads'
import type { RemoteInfo } from 'node:dgram'
import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import { TransportError } from '../errors.ts'
import type { Address } from './types.ts'
import { MAX_UDP_PAYLOAD, type UdpEndpoint } from './udp.ts'
import { BatchWriter, readBatch, type DatagramBatch, type FromThread, type ToThread, type UdpThreadInit } from './udp-thread-frames.ts'

export async function bindUdpThread (address: Address, onDatagram: (data: Buffer, rinfo: RemoteInfo) => void, onError: (err: Error) => void, bufferSize?: number, onSendError?: (err: Error) => void): Promise<UdpEndpoint> {
  const init: UdpThreadInit = { host: address.host, port: address.port, bufferSize }
  const worker = new Worker(new URL('./udp-thread-worker.ts', import.meta.url), { workerData: init })
  const bound = await new Promise<Address>((resolve, reject) => {
    const onExit = (code: number): void => { reject(new TransportError(`udp thread exited (${code}) before binding`)) }
    worker.once('exit', onExit)
    worker.once('error', reject)
    worker.once('message', (msg: FromThread) => {
      worker.off('exit', onExit)
      worker.off('error', reject)
      if (msg.type === 'bound') resolve({ host: msg.host, port: msg.port })
      else {
        void worker.terminate()
        const err = new Error(msg.type === 'bind-error' ? msg.message : `udp thread: unexpected ${msg.type}`) as NodeJS.ErrnoException
        if (msg.type === 'bind-error' && msg.code !== undefined) err.code = msg.code
        reject(err)
      }
    })
  })

  let closed = false
  let onClosed: (() => void) | undefined
  worker.on('message', (msg: FromThread) => {
    switch (msg.type) {
      case 'datagrams': deliver(msg); break
      case 'send-error': onSendError?.(new TransportError(`udp send failed: ${msg.message}`)); break
      case 'error': onError(new TransportError(msg.message)); break
      case 'closed': onClosed?.(); break
      default: break
    }
  })
  worker.on('error', onError)
  worker.on('exit', (code) => {
    if (!closed) onError(new TransportError(`udp thread exited (${code}): SIP over UDP stopped`))
    closed = true
    onClosed?.()
  })

  function deliver (batch: DatagramBatch): void {
    readBatch(batch, (payload, host, port) => {
      // a copy of its own: a parsed message (and a transaction lingering for timer J) keeps its
      // datagram, and a view would keep the whole batch alive with it
      onDatagram(Buffer.from(payload), { address: host, port, family: isIP(host) === 6 ? 'IPv6' : 'IPv4', size: payload.length })
    })
  }

  // datagrams to send, gathered during one event-loop turn and handed over in its check phase
  const out = new BatchWriter((batch: DatagramBatch) => { if (!closed) worker.postMessage(batch, [batch.buffer]) })
  const queue = (data: Uint8Array, host: string, port: number): void => { out.push(data, host, port) }
  const check = (data: Uint8Array, target: Address): void => {
    if (closed) throw new TransportError('udp socket closed')
    if (data.length > MAX_UDP_PAYLOAD) throw new TransportError('message too large for UDP')
    if (!Number.isInteger(target.port) || target.port < 1 || target.port > 65535) throw new TransportError(`bad UDP port: ${target.port}`)
  }

  return {
    address: bound,
    async send (data: Uint8Array, target: Address): Promise<void> {
      check(data, target)
      let host = target.host
      if (isIP(host) === 0) {
        try {
          host = (await lookup(host)).address
        } catch (err) {
          throw new TransportError(`udp send to ${target.host}:${target.port} failed: ${(err as Error).message}`, { cause: err })
        }
      }
      // handed to the thread: a send error there goes to onSendError
      queue(data, host, target.port)
    },
    sendNow (data: Uint8Array, target: Address): void {
      check(data, target)
      if (isIP(target.host) === 0) throw new TransportError(`not an IP address: ${target.host}`)
      queue(data, target.host, target.port)
    },
    async close (): Promise<void> {
      if (closed) return
      out.flush()
      closed = true
      await new Promise<void>(resolve => {
        const timer = setTimeout(() => { void worker.terminate().then(() => resolve()) }, 2000)
        onClosed = () => { clearTimeout(timer); void worker.terminate().then(() => resolve()) }
        const msg: ToThread = { type: 'close' }
        worker.postMessage(msg)
      })
    }
  }
}
