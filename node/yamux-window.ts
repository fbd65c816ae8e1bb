/**
 * Yamux window updates once half the receive window is used, as go-yamux sends them, instead of
 * one after every data frame received.
 *
 * @chainsafe/libp2p-yamux 8 answers every data frame a stream receives with a WINDOW_UPDATE frame
 * (`dist/src/stream.js`: `handleData` calls `sendWindowUpdate`, which sends whenever any of the
 * window is used, lines 165-250), and no option changes it. Each of those frames is one more Noise
 * encryption and one more socket write, back to the sender, for every batch of SIP messages or
 * claim-exchange requests a node receives: on loopback the socket writes were the largest single
 * item of a node's busy time with presentities watched from another node (issue 11). go-yamux
 * sends an update only once the receiver has taken in at least half of its window
 * (`stream.go`, `sendWindowUpdate`: `if delta < (max / 2) && flags == 0 { return }`); the yamux
 * specification leaves the timing to the receiver, so either side may run either rule.
 *
 * What is kept: the first frames of a stream (SYN, ACK flags) and a paused stream go through the
 * library's own method unchanged, and so does every update once half the window is used (with the
 * library's window growth). A sender never waits for an update while more than half of the window
 * is free, and the window is 256 KB by default.
 */
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream'

type WindowFields = { state: StreamState, recvWindow: number, recvWindowCapacity: number }

let installed = false

/** Install the half-window rule on every yamux stream of this process (once; idempotent). */
export function windowUpdatesAtHalf (): void {
  if (installed) return
  installed = true
  const proto = YamuxStream.prototype as unknown as WindowFields & { sendWindowUpdate: () => void }
  const eager = proto.sendWindowUpdate
  proto.sendWindowUpdate = function (this: WindowFields & { sendWindowUpdate: () => void }): void {
    if (this.state === StreamState.Established && this.recvWindowCapacity * 2 > this.recvWindow) return
    eager.call(this)
  }
}
