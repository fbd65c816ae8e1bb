/** SIP over UDP (RFC 3261 18): one message per datagram. */
import { createSocket, type RemoteInfo } from 'node:dgram'
import { lookup as dnsLookup, type LookupAddress } from 'node:dns'
import { isIP, isIPv6 } from 'node:net'
import { TransportError } from '../errors.ts'
import type { Address } from './types.ts'

/** Largest UDP payload over IPv4 (65,535 − 8 bytes UDP header − 20 bytes IP header). */
export const MAX_UDP_PAYLOAD = 65_507

export interface UdpEndpoint {
  address: Address
  /** resolves once sent; rejects with TransportError (a name that does not resolve, a send error) */
  send (data: Uint8Array, target: Address): Promise<void>
  /**
   * Send to an IP address without waiting (the relay's hot path: no promise, no closure, no tick
   * per datagram). Throws TransportError at once when the socket is closed, the datagram too large
   * or the host not an IP address; a send error goes to `onSendError`, not to the caller: always
   * for an address of the other family, else as seen on one datagram in `SEND_ERROR_SAMPLE`.
   */
  sendNow (data: Uint8Array, target: Address): void
  /**
   * the socket's receive buffer as the kernel granted it, in bytes (Linux reports twice what it
   * set, and sets at most `net.core.rmem_max`); undefined where not known
   */
  readonly receiveBufferSize?: number
  close (): Promise<void>
}

/**
 * dgram's address lookup, synchronous for IP addresses: with the default one (`dns.lookup`)
 * every `send` to an IP address waits one `process.nextTick` for an answer it already has, with a
 * closure and a tick object per datagram. Names still go to `dns.lookup`.
 */
function lookup (host: string, options: unknown, callback: (err: Error | null, address: string | LookupAddress[], family?: number) => void): void {
  const family = isIP(host)
  if (family !== 0) {
    if (typeof options === 'object' && options !== null && (options as { all?: boolean }).all === true) callback(null, [{ address: host, family }])
    else callback(null, host, family)
    return
  }
  dnsLookup(host, options as number, callback as (err: Error | null, address: string, family: number) => void)
}

/**
 * dgram tells a send error only to a send callback, and a callback costs a `process.nextTick` per
 * datagram even when the send completed at once (a tick object, and a drain of the tick queue in
 * which Node 22 allocates a Map: ~600 bytes of heap per datagram measured). The kernel's errors
 * for an IP address of the right family (no route, a firewall) hold for every datagram to that
 * address, so watching one datagram in 16 shows them, at 1/16 of the cost.
 */
export const SEND_ERROR_SAMPLE = 16

export async function bindUdp (address: Address, onDatagram: (data: Buffer, rinfo: RemoteInfo) => void, onError: (err: Error) => void, bufferSize?: number, onSendError?: (err: Error) => void): Promise<UdpEndpoint> {
  // large socket buffers absorb bursts under load (the kernel caps them at net.core.rmem_max)
  const family = isIPv6(address.host) ? 6 : 4
  const socket = createSocket({ type: family === 6 ? 'udp6' : 'udp4', reuseAddr: false, recvBufferSize: bufferSize, sendBufferSize: bufferSize, lookup: lookup as never })
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
  // one callback for the sendNow datagrams that are watched (SEND_ERROR_SAMPLE)
  const afterSendNow = (err: Error | null): void => { if (err != null) onSendError?.(err) }
  let unwatched = 0
  let receiveBufferSize: number | undefined
  try { receiveBufferSize = socket.getRecvBufferSize() } catch { /* not known here */ }
  return {
    address: { host: bound.address, port: bound.port },
    receiveBufferSize,
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
    sendNow (data: Uint8Array, target: Address): void {
      if (closed) throw new TransportError('udp socket closed')
      if (data.length > MAX_UDP_PAYLOAD) throw new TransportError('message too large for UDP')
      const targetFamily = isIP(target.host)
      if (targetFamily === 0) throw new TransportError(`not an IP address: ${target.host}`)
      if (targetFamily !== family || ++unwatched === SEND_ERROR_SAMPLE) {
        unwatched = 0
        socket.send(data, target.port, target.host, afterSendNow)
      } else {
        socket.send(data, target.port, target.host)
      }
    },
    async close (): Promise<void> {
      if (closed) return
      closed = true
      await new Promise<void>(resolve => socket.close(() => resolve()))
    }
  }
}
