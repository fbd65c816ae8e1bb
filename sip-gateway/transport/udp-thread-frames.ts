/** Messages between the gateway and its UDP thread (udp-thread.ts, udp-thread-worker.ts). */

/** per datagram in a batch: u32 payload length, u16 port, u8 address length, u8 flags, u32 reserved */
export const HEAD = 12
/**
 * a batch buffer's size: small, since V8 counts each one as external memory (large ones made it
 * scavenge twice as often); a batch that outgrows it goes out at once, a datagram larger than it
 * gets a buffer of its own
 */
export const BATCH_BYTES = 16 * 1024

export interface UdpThreadInit {
  host: string
  port: number
  bufferSize?: number
}

/** a batch of datagrams: `count` framed datagrams in the first `length` bytes of `buffer` */
export interface DatagramBatch {
  type: 'datagrams'
  buffer: ArrayBuffer
  length: number
  count: number
}

export type FromThread =
  | DatagramBatch
  | { type: 'bound', host: string, port: number }
  | { type: 'bind-error', message: string, code?: string }
  | { type: 'error', message: string }
  | { type: 'send-error', message: string }
  | { type: 'closed' }

export type ToThread = DatagramBatch | { type: 'close' }

/**
 * Datagrams framed into batch buffers of BATCH_BYTES (a larger one gets a buffer of its own) and
 * handed to `post` once per event-loop turn (in its check phase), or at once when the next one
 * does not fit. `push` copies the payload (the caller may reuse its buffer).
 */
export class BatchWriter {
  #buf: Buffer | undefined
  #used = 0
  #count = 0
  #scheduled = false
  readonly #post: (batch: DatagramBatch) => void

  constructor (post: (batch: DatagramBatch) => void) {
    this.#post = post
  }

  /** post what is gathered now */
  flush (): void {
    const batch = this.take()
    if (batch !== undefined) this.#post(batch)
  }

  push (payload: Uint8Array, host: string, port: number): void {
    const addrLen = Buffer.byteLength(host, 'latin1')
    const need = HEAD + addrLen + payload.length
    if (this.#buf !== undefined && this.#used + need > this.#buf.length) this.flush()
    // allocUnsafeSlow: an ArrayBuffer of its own, to transfer; not zeroed, every byte is written
    this.#buf ??= Buffer.allocUnsafeSlow(Math.max(BATCH_BYTES, need))
    const b = this.#buf
    const at = this.#used
    b.writeUInt32LE(payload.length, at)
    b.writeUInt16LE(port, at + 4)
    b[at + 6] = addrLen
    b[at + 7] = 0
    b.writeUInt32LE(0, at + 8)
    b.write(host, at + HEAD, 'latin1')
    b.set(payload, at + HEAD + addrLen)
    this.#used += need
    this.#count++
    if (!this.#scheduled) {
      this.#scheduled = true
      setImmediate(() => {
        this.#scheduled = false
        this.flush()
      })
    }
  }

  /** the batch so far (its buffer changes hands), or undefined when there is none */
  private take (): DatagramBatch | undefined {
    if (this.#buf === undefined || this.#count === 0) return undefined
    const batch: DatagramBatch = { type: 'datagrams', buffer: this.#buf.buffer as ArrayBuffer, length: this.#used, count: this.#count }
    this.#buf = undefined
    this.#used = 0
    this.#count = 0
    return batch
  }
}

/** each datagram of a batch, in order: its payload as a view into the batch, its address and port */
export function readBatch (batch: DatagramBatch, each: (payload: Buffer, host: string, port: number) => void): void {
  const b = Buffer.from(batch.buffer, 0, batch.length)
  let p = 0
  while (p + HEAD <= batch.length) {
    const len = b.readUInt32LE(p)
    const port = b.readUInt16LE(p + 4)
    const addrLen = b[p + 6]
    const start = p + HEAD + addrLen
    if (start + len > batch.length) throw new RangeError('truncated datagram batch')
    const host = b.toString('latin1', p + HEAD, start)
    p = start + len
    each(b.subarray(start, start + len), host, port)
  }
}
