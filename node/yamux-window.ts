/**
 * Yamux window updates for a stream of small messages: sent once half the receive window is used,
 * not after every data frame.
 *
 * `@chainsafe/libp2p-yamux` (8.0) answers every data frame it receives with a window update frame
 * as soon as any of the window is used. On the SIP stream between two nodes every relayed message
 * is a data frame of its own at ordinary rates, so every one cost a second frame back: its own
 * Noise encryption and decryption, its own pass through the write queues of yamux, Noise and TCP
 * on one node and the read path on the other, and the garbage of all of them. The yamux
 * specification leaves it to the receiver when to send updates; Go's yamux sends one when half the
 * window has been consumed, and so does a stream given to `lazyWindowUpdates`: with the default
 * 256 KB window, one update per 128 KB received (about 250 SIP messages), which is far ahead of
 * the sender running out (it may send 256 KB unacknowledged).
 *
 * Hand-written because the library has no option for it: the stream's own `sendWindowUpdate` is
 * wrapped on the instance and still does the work (flags, the window's growth, the frame), only
 * called less often. Anything but an established yamux stream (its first frames carry SYN/ACK
 * flags, a paused stream's bookkeeping) goes straight to the library's method. A stream that is
 * not a yamux stream, or a yamux whose fields are not the ones this was written against, is left
 * alone.
 */
import { YamuxStream, StreamState } from '@chainsafe/libp2p-yamux/stream'
import type { Stream } from '@libp2p/interface'

/** the fields of YamuxStream read here (private in its typings) */
interface Window { state: StreamState, recvWindow: number, recvWindowCapacity: number, sendWindowUpdate: () => void }

/** Send `stream`'s window updates only once half its receive window is used; whether it applied. */
export function lazyWindowUpdates (stream: Stream): boolean {
  if (!(stream instanceof YamuxStream)) return false
  const w = stream as unknown as Window
  if (typeof w.recvWindow !== 'number' || typeof w.recvWindowCapacity !== 'number' || typeof w.sendWindowUpdate !== 'function') return false
  const send = w.sendWindowUpdate
  w.sendWindowUpdate = function (this: Window): void {
    if (this.state === StreamState.Established && this.recvWindowCapacity * 2 > this.recvWindow) return
    send.call(this)
  }
  return true
}
