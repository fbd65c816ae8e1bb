/**
 * The TCP writes of a libp2p connection coalesced per callback: one `writev` system call (and one
 * TCP segment on loopback) for everything the connection's layers write in one go, instead of one
 * `write` per piece.
 *
 * Why: `@libp2p/tcp` (11.0) writes every buffer of what it is given with its own `socket.write`,
 * and with Nagle off (`noDelay`, its default and ours) each is its own system call and segment.
 * Noise hands it every message as two buffers, the 2-byte length and the ciphertext, and yamux
 * answers every data frame it receives with a window update (a Noise message of its own, so two
 * more writes). A peer-channel batch of SIP messages thus cost its sender two writes and its
 * receiver two, and the receiver was woken for a 2-byte segment before each payload. Corking the
 * socket at the first write and uncorking it once the current callback and its ticks are done
 * (`process.nextTick`) hands all of them to libuv as one `writev`. Nothing waits for a timer: the
 * bytes leave before the event loop moves on, in the order they were written.
 *
 * Hand-written because no libp2p option does it (its TCP options are the socket's connect
 * options), and it has to sit between libp2p's upgrader and the raw connection: `coalesceTcpWrites`
 * wraps a transport factory, as node/connection-failures.ts does, and patches each raw connection
 * it dials or accepts before the upgrade (Noise, yamux) starts writing on it. A connection that is
 * not over a `net.Socket` (the memory transport) is left as it is.
 */
import { Socket } from 'node:net'
import type { Transport, Upgrader, MultiaddrConnection } from '@libp2p/interface'
import { directMessages } from './direct-messages.ts'

type TransportFactory = (components: any) => Transport // eslint-disable-line @typescript-eslint/no-explicit-any

/** What `@libp2p/tcp`'s connection gives its send queue: a list of buffers, sent in order. */
type SendData = (data: Iterable<Uint8Array>) => { sentBytes: number, canSendMore: boolean }

const patched = new WeakSet<object>()

/**
 * Cork `maConn`'s socket at its first write of a callback and uncork it on the next tick, so that
 * the writes of that callback leave as one `writev`. Returns whether the connection was patched
 * (false: not a TCP socket connection, or already patched).
 */
export function coalesceWrites (maConn: MultiaddrConnection): boolean {
  const conn = maConn as MultiaddrConnection & { socket?: unknown, sendData?: SendData }
  const socket = conn.socket
  const sendData = conn.sendData
  if (!(socket instanceof Socket) || typeof sendData !== 'function' || patched.has(conn)) return false
  patched.add(conn)
  let corked = false
  const uncork = (): void => {
    corked = false
    socket.uncork()
  }
  conn.sendData = function (this: unknown, data: Iterable<Uint8Array>) {
    if (!corked && !socket.destroyed) {
      socket.cork()
      corked = true
      process.nextTick(uncork)
    }
    return sendData.call(this, data)
  }
  return true
}

/**
 * The upgrader with `upgradeOutbound` and `upgradeInbound` patching the raw connection first: its
 * writes coalesced, and its reads handed to Noise without a read buffer and event in between
 * (node/direct-messages.ts).
 */
function coalescingUpgrader (upgrader: Upgrader): Upgrader {
  return new Proxy(upgrader, {
    get (target, prop, receiver) {
      if (prop === 'upgradeOutbound') {
        return async (maConn: MultiaddrConnection, opts: Parameters<Upgrader['upgradeOutbound']>[1]) => {
          coalesceWrites(maConn)
          directMessages(maConn)
          return await target.upgradeOutbound(maConn, opts)
        }
      }
      if (prop === 'upgradeInbound') {
        return async (maConn: MultiaddrConnection, opts: Parameters<Upgrader['upgradeInbound']>[1]) => {
          coalesceWrites(maConn)
          directMessages(maConn)
          await target.upgradeInbound(maConn, opts)
        }
      }
      const value = Reflect.get(target, prop, receiver) as unknown
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
    }
  })
}

/** Wrap a transport factory (`tcp()`) so that every connection it dials or accepts coalesces its writes. */
export function coalesceTcpWrites (factory: TransportFactory): TransportFactory {
  return (components) => {
    const transport = factory(components)
    const dial = transport.dial.bind(transport)
    const createListener = transport.createListener.bind(transport)
    transport.dial = async (ma, options) => await dial(ma, { ...options, upgrader: coalescingUpgrader(options.upgrader) })
    transport.createListener = (options) => createListener({ ...options, upgrader: coalescingUpgrader(options.upgrader) })
    return transport
  }
}
