/**
 * The UDP socket's own thread (see udp-thread.ts): binds the SIP port, and moves datagrams
 * between the kernel and the gateway's event loop in batches, one transferred buffer per
 * event-loop turn each way. The system calls (`recvmsg`, and `sendmsg`, which on loopback also
 * does the receiver's wake-up) run here, on another core, instead of on the gateway's loop.
 *
 * Batch framing, both directions: udp-thread-frames.ts.
 */
import { createSocket, type RemoteInfo } from 'node:dgram'
import { isIPv6 } from 'node:net'
import { parentPort, workerData } from 'node:worker_threads'
import { BatchWriter, readBatch, type DatagramBatch, type FromThread, type ToThread, type UdpThreadInit } from './udp-thread-frames.ts'

const init = workerData as UdpThreadInit
const port = parentPort!
const socket = createSocket({ type: isIPv6(init.host) ? 'udp6' : 'udp4', reuseAddr: false, recvBufferSize: init.bufferSize, sendBufferSize: init.bufferSize })

const received = new BatchWriter((batch: DatagramBatch) => { port.postMessage(batch, [batch.buffer]) })
socket.on('message', (data: Buffer, rinfo: RemoteInfo) => { received.push(data, rinfo.address, rinfo.port) })

const afterSend = (err: Error | null): void => {
  if (err != null) {
    const msg: FromThread = { type: 'send-error', message: err.message }
    port.postMessage(msg)
  }
}

port.on('message', (msg: ToThread) => {
  if (msg.type === 'datagrams') {
    readBatch(msg, (payload, host, rport) => {
      try {
        // the batch buffer is not reused: a view is safe for dgram's asynchronous send
        socket.send(payload, rport, host, afterSend)
      } catch (err) {
        afterSend(err as Error) // thrown at once (a bad port, the socket closing): one datagram lost, not the thread
      }
    })
  } else if (msg.type === 'close') {
    socket.close(() => {
      const out: FromThread = { type: 'closed' }
      port.postMessage(out)
    })
  }
})

const onBindError = (err: Error): void => {
  const msg: FromThread = { type: 'bind-error', message: err.message, code: (err as NodeJS.ErrnoException).code }
  port.postMessage(msg)
}
socket.once('error', onBindError)
socket.bind({ address: init.host, port: init.port, exclusive: true }, () => {
  socket.off('error', onBindError)
  socket.on('error', (err) => {
    const msg: FromThread = { type: 'error', message: err.message }
    port.postMessage(msg)
  })
  const a = socket.address()
  const msg: FromThread = { type: 'bound', host: a.address, port: a.port }
  port.postMessage(msg)
})
