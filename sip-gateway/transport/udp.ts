/** SIP over UDP (RFC 3261 18): one message per datagram. */
import { createSocket, type Socket, type RemoteInfo } from 'node:dgram'
import { isIPv6 } from 'node:net'
import { TransportError } from '../errors.ts'
import type { Address } from './types.ts'

/** Largest UDP payload over IPv4 (65,535 − 8 bytes UDP header − 20 bytes IP header). */
export const MAX_UDP_PAYLOAD = 65_507

export interface UdpEndpoint {
  socket: Socket
  address: Address
  send (data: Uint8Array, target: Address): Promise<void>
  close (): Promise<void>
}

export async function bindUdp (address: Address, onDatagram: (data: Buffer, rinfo: RemoteInfo) => void, onError: (err: Error) => void, bufferSize?: number): Promise<UdpEndpoint> {
  // large socket buffers absorb bursts under load (the kernel caps them at net.core.rmem_max)
  const socket = createSocket({ type: isIPv6(address.host) ? 'udp6' : 'udp4', reuseAddr: false, recvBufferSize: bufferSize, sendBufferSize: bufferSize })
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject)
    socket.bind({ address: address.host, port: address.port, exclusive: true }, () => {
      socket.off('error', reject)
      resolve()
    })
  })
  socket.on('message', onDatagram)
  socket.on('error', onError)
  const bound = socket.address()
  let closed = false
  return {
    socket,
    address: { host: bound.address, port: bound.port },
    async send (data: Uint8Array, target: Address): Promise<void> {
      if (closed) throw new TransportError('udp socket closed')
      if (data.length > MAX_UDP_PAYLOAD) throw new TransportError('message too large for UDP')
      await new Promise<void>((resolve, reject) => {
        socket.send(data, target.port, target.host, (err) => {
          if (err != null) reject(new TransportError(`udp send to ${target.host}:${target.port} failed: ${err.message}`, { cause: err }))
          else resolve()
        })
      })
    },
    async close (): Promise<void> {
      if (closed) return
      closed = true
      await new Promise<void>(resolve => socket.close(() => resolve()))
    }
  }
}
