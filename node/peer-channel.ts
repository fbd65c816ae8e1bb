/**
 * The gateway's `PeerChannel` over libp2p: SIP messages between nodes on a protocol of ours.
 *
 * Wire format: on a stream of `/sipmesh/sip/1.0.0`, frames of a 4-byte big-endian length followed
 * by that many bytes (one SIP message per frame). Two nodes share one long-lived stream, used both
 * ways: the node that sends first opens it on demand (dialling the peer id: libp2p finds its
 * addresses in the peer store or through the DHT), and the other node sends its messages (the
 * responses, for a start) back on that same stream instead of opening one of its own. Only when
 * both open at the same moment is there one stream each way. Frames are read from every stream. A
 * stream that closes or fails is dropped and the next send opens a new one; a send that hits a
 * dead stream is retried once on a fresh stream. Delivery is at most once (a message written into
 * a stream that then resets is lost).
 *
 * Cold start: the node that dialled a connection opens the SIP stream on it as soon as the
 * connection is up (`openOnConnect`), before any message needs it: the first messages of a new
 * route then find it open instead of waiting for a stream to be negotiated (a round trip, and
 * the first turns of a loaded event loop). Messages to a peer with no stream yet wait, in order,
 * while it opens (bounded by `maxQueuedPerPeer`); they never fail for it. A dial that fails (the peer not listening yet, a connection closing as it is
 * dialled) is tried again with a growing pause until `openTimeout` has passed since the first
 * attempt; only then do the waiting messages fail.
 *
 * Frames sent in the same event-loop turn are coalesced into one stream write (one yamux frame,
 * one Noise encryption, one `writev`: node/tcp-writes.ts; the receiver answers with a yamux window
 * update only once half its window is used: node/yamux-window.ts), flushed by `setImmediate`, i.e. right after the poll phase that read the requests: every UDP
 * datagram is its own I/O callback with its own microtask checkpoint, so coalescing per microtask
 * wrote one frame per relayed message under UDP load. With many concurrent senders batching
 * multiplies throughput (~76,000 400-byte messages/s one way between two nodes in one process
 * here, against ~13,000 with one write per message).
 *
 * Delivery: a batch arrives as one chunk holding many frames. Handing them all to the gateway in
 * one go made a convoy: each message's handling is a chain of microtasks (awaits that resolve at
 * once), so the messages of a batch advanced in lockstep and the first was forwarded only once
 * the last had been parsed and routed; then all went out together, their answers came back
 * together, and the next node got them as one batch again. So each frame of a chunk after the
 * first is delivered in a task of its own (a setImmediate each, all run in the same turn of the
 * event loop, each followed by Node's microtask checkpoint): one message is handled to its end,
 * forwarded, before the next starts, as UDP datagrams are, each its own I/O callback. (One frame
 * per turn of the loop instead starved them: a turn reads up to 32 datagrams of new requests per
 * socket but would have taken one answer from the mesh.)
 *
 * Backpressure: when the stream's write buffer is full (`send` returned false), later messages
 * queue in order and `send()` resolves only once its message is handed to the stream, so callers
 * that await `send` slow down with the network. The queue per peer is bounded, and leaves in
 * chunks of up to `MAX_BATCH_BYTES` (never slower than the batches it stands in for).
 *
 * Hostile input: a frame longer than `maxFrameSize` aborts the stream that carried it (logged);
 * libp2p's own read-buffer limit bounds what a slow reader can be made to hold.
 */
import { Buffer } from 'node:buffer'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Connection, Libp2p, Startable, Stream } from '@libp2p/interface'
import type { AbortOptions, Logger, PeerChannel, Unwatch } from '../sip-gateway/ports.ts'
import { lazyWindowUpdates } from './yamux-window.ts'
import { directMessages } from './direct-messages.ts'

export const SIP_PROTOCOL = '/sipmesh/sip/1.0.0'

export class FrameTooLargeError extends Error {
  static readonly NAME = 'FrameTooLargeError'
  override readonly name = FrameTooLargeError.NAME
}

export class PeerChannelClosedError extends Error {
  static readonly NAME = 'PeerChannelClosedError'
  override readonly name = PeerChannelClosedError.NAME
}

export class SendQueueFullError extends Error {
  static readonly NAME = 'SendQueueFullError'
  override readonly name = SendQueueFullError.NAME
}

export interface PeerChannelComponents {
  /** `addEventListener`, `removeEventListener` and `getConnections`: for `openOnConnect` */
  libp2p: Pick<Libp2p, 'handle' | 'unhandle' | 'dialProtocol' | 'peerId'> & Partial<Pick<Libp2p, 'addEventListener' | 'removeEventListener' | 'getConnections'>>
  logger: Logger
}

export interface PeerChannelInit {
  /** @default '/sipmesh/sip/1.0.0' */
  protocol?: string
  /** largest frame sent or accepted, bytes @default 262144 */
  maxFrameSize?: number
  /** how long opening a stream to a peer (dials, retried, and protocol negotiation) may take, ms @default 5000 */
  openTimeout?: number
  /** messages that may wait for one peer's stream to drain before send() fails @default 10000 */
  maxQueuedPerPeer?: number
  /** inbound streams of our protocol per connection @default 8 */
  maxInboundStreams?: number
  /**
   * yamux window updates once half the receive window is used instead of after every frame
   * (node/yamux-window.ts) @default true
   */
  lazyWindowUpdates?: boolean
  /**
   * the SIP stream's bytes handed over as yamux delivers them, without the stream's read buffer
   * and message event (node/direct-messages.ts) @default true
   */
  directReads?: boolean
  /**
   * open the SIP stream on every connection this node dials, as soon as it is open (and on those
   * open when the channel starts), so that the first message to the peer does not wait for it
   * @default true
   */
  openOnConnect?: boolean
}

/** Incremental decoder for 4-byte-length frames. */
export class FrameDecoder {
  private readonly maxFrameSize: number
  private chunks: Uint8Array[] = []
  private buffered = 0

  constructor (maxFrameSize: number) {
    this.maxFrameSize = maxFrameSize
  }

  /** Feed bytes; returns the complete frames. Throws FrameTooLargeError on an oversized length. */
  push (data: Uint8Array): Uint8Array[] {
    // nothing held over: the whole frames of `data` read in place (one view each), the rest kept
    if (this.buffered === 0) {
      const frames: Uint8Array[] = []
      let at = 0
      while (data.byteLength - at >= 4) {
        const length = this.lengthAt(data, at)
        if (data.byteLength - at - 4 < length) break
        frames.push(data.subarray(at + 4, at + 4 + length))
        at += 4 + length
      }
      if (at < data.byteLength) {
        this.chunks.push(at === 0 ? data : data.subarray(at))
        this.buffered = data.byteLength - at
      }
      return frames
    }
    if (data.byteLength > 0) {
      this.chunks.push(data)
      this.buffered += data.byteLength
    }
    const frames: Uint8Array[] = []
    while (this.buffered >= 4) {
      const length = this.lengthAt(this.peek(4), 0)
      if (this.buffered < 4 + length) break
      this.consume(4)
      frames.push(this.consume(length))
    }
    return frames
  }

  /** the big-endian frame length at `at`; throws FrameTooLargeError beyond the limit */
  private lengthAt (b: Uint8Array, at: number): number {
    const length = ((b[at] << 24) >>> 0) + (b[at + 1] << 16) + (b[at + 2] << 8) + b[at + 3]
    if (length > this.maxFrameSize) {
      throw new FrameTooLargeError(`frame of ${length} bytes exceeds the limit of ${this.maxFrameSize}`)
    }
    return length
  }

  get bufferedBytes (): number {
    return this.buffered
  }

  private peek (n: number): Uint8Array {
    const first = this.chunks[0]
    if (first.byteLength >= n) return first.subarray(0, n)
    const out = new Uint8Array(n)
    let off = 0
    for (const c of this.chunks) {
      const take = Math.min(c.byteLength, n - off)
      out.set(c.subarray(0, take), off)
      off += take
      if (off === n) break
    }
    return out
  }

  private consume (n: number): Uint8Array {
    if (n === 0) return new Uint8Array(0)
    this.buffered -= n
    const first = this.chunks[0]
    if (first.byteLength > n) {
      this.chunks[0] = first.subarray(n)
      return first.subarray(0, n)
    }
    if (first.byteLength === n) {
      this.chunks.shift()
      return first
    }
    const out = new Uint8Array(n)
    let off = 0
    while (off < n) {
      const c = this.chunks[0]
      const take = Math.min(c.byteLength, n - off)
      out.set(c.subarray(0, take), off)
      off += take
      if (take === c.byteLength) this.chunks.shift()
      else this.chunks[0] = c.subarray(take)
    }
    return out
  }
}

/** frames as one chunk for one stream write (`size`: their bytes, when known) */
function joinFrames (frames: Uint8Array[], size = -1): Uint8Array {
  if (frames.length === 1) return frames[0]
  if (size < 0) {
    size = 0
    for (const f of frames) size += f.byteLength
  }
  const chunk = new Uint8Array(size)
  let off = 0
  for (const f of frames) { chunk.set(f, off); off += f.byteLength }
  return chunk
}

/** why a message to a peer cannot go out in its turn (`sendNow` said no for a message that fits) */
function queuedReason (link: Link): QueuedReason {
  const stream = link.stream
  if (stream == null || stream.writeStatus !== 'writable') return 'no_stream'
  if (link.queue.length !== 0) return 'behind_queue'
  return 'drain'
}

export function encodeFrame (data: Uint8Array): Uint8Array {
  const frame = new Uint8Array(4 + data.byteLength)
  const n = data.byteLength
  frame[0] = (n >>> 24) & 0xff
  frame[1] = (n >>> 16) & 0xff
  frame[2] = (n >>> 8) & 0xff
  frame[3] = n & 0xff
  frame.set(data, 4)
  return frame
}

function toBytes (data: Uint8Array | { subarray: () => Uint8Array }): Uint8Array {
  return data instanceof Uint8Array ? data : data.subarray()
}

/**
 * Wait for a stream's 'drain' event. Not `stream.onDrain()`: in @libp2p/utils 7.4 its promise is
 * created once per stream and never reset, so after the first drain it resolves at once forever
 * and a writer loop built on it spins without yielding.
 */
export function waitForDrain (stream: Stream, signal?: AbortSignal): Promise<void> {
  if (!stream.writableNeedsDrain) return Promise.resolve()
  return new Promise<void>((resolve, reject) => {
    const cleanup = (): void => {
      stream.removeEventListener('drain', onDrain)
      stream.removeEventListener('close', onClose)
      signal?.removeEventListener('abort', onAbort)
    }
    const onDrain = (): void => { cleanup(); resolve() }
    const onClose = (evt: Event): void => { cleanup(); reject((evt as Event & { error?: Error }).error ?? new PeerChannelClosedError('stream closed while waiting to send')) }
    const onAbort = (): void => { cleanup(); reject(signal?.reason as Error) }
    if (signal?.aborted === true) { onAbort(); return }
    stream.addEventListener('drain', onDrain)
    stream.addEventListener('close', onClose)
    signal?.addEventListener('abort', onAbort)
  })
}

interface Pending {
  frame: Uint8Array
  resolve: () => void
  reject: (err: Error) => void
}

/** One peer's outbound stream and the messages waiting for it to drain. */
interface Link {
  stream?: Stream
  opening?: Promise<Stream>
  queue: Pending[]
  flushing: boolean
  /**
   * frames accepted in this event-loop turn, written together as one chunk by setImmediate: their
   * bytes, length prefixes included, in `batch[0, batchBytes)` (a buffer of this link's, reused
   * from one turn to the next; null until the first), `batchFrames` of them
   */
  batch: Buffer | null
  batchBytes: number
  batchFrames: number
  /** `writeBatch` for this link, made once (the setImmediate of every batch) */
  writeSoon: () => void
}

/** Frames of one stream waiting for a turn of their own beyond which they are delivered in one go. */
const MAX_INBOX = 256

/** A batch is written early once it holds this many bytes. */
const MAX_BATCH_BYTES = 64 * 1024

/** a link's first batch buffer, bytes; grown (doubled) when a batch needs more */
const BATCH_BUFFER_BYTES = 16 * 1024

const noop = (): void => {}

export interface PeerChannelStats {
  framesSent: number
  framesReceived: number
  /**
   * chunks handed to a stream (each one yamux data frame and one Noise message while it fits in
   * one, 64 KB): `framesSent / writes` is how many SIP messages a write carries
   */
  writes: number
  /** chunks read from the streams (a chunk holds whole frames, or parts): `framesReceived / chunksReceived` */
  chunksReceived: number
  /** streams this node opened (a stream the peer opened and this node also sends on is not counted) */
  streamsOpened: number
  /** streams this node began to open ahead of any message, on a connection it dialled (`openOnConnect`) */
  streamsPrepared: number
  streamErrors: number
  /** dials of a stream that failed and were tried again within the open timeout */
  openRetries: number
  /**
   * messages that could not go out in their turn and waited in their peer's queue, by why: no
   * stream open yet (`no_stream`), the stream's write buffer full (`drain`), or others waiting
   * before them (`behind_queue`, kept in order). A node relaying steadily on `behind_queue` has
   * fallen behind its peer.
   */
  queued: Record<QueuedReason, number>
}

export type QueuedReason = 'no_stream' | 'drain' | 'behind_queue'

export class Libp2pPeerChannel implements PeerChannel, Startable {
  private readonly libp2p: PeerChannelComponents['libp2p']
  private readonly log: Logger
  private readonly protocol: string
  private readonly maxFrameSize: number
  private readonly openTimeout: number
  private readonly maxQueuedPerPeer: number
  private readonly maxInboundStreams: number
  private readonly lazyWindowUpdates: boolean
  private readonly directReads: boolean
  private readonly openOnConnect: boolean
  private readonly links = new Map<string, Link>()
  private readonly inbound = new Set<Stream>()
  private readonly handlers = new Set<(node: string, data: Uint8Array) => void>()
  /** peer id → when a message last went to it or came from it (ms epoch): node/idle-connections.ts */
  private readonly active = new Map<string, number>()
  private shutdown?: AbortController
  readonly stats: PeerChannelStats = { framesSent: 0, framesReceived: 0, writes: 0, chunksReceived: 0, streamsOpened: 0, streamsPrepared: 0, streamErrors: 0, openRetries: 0, queued: { no_stream: 0, drain: 0, behind_queue: 0 } }

  constructor (components: PeerChannelComponents, init: PeerChannelInit = {}) {
    this.libp2p = components.libp2p
    this.log = components.logger.child({ component: 'peer-channel' })
    this.protocol = init.protocol ?? SIP_PROTOCOL
    this.maxFrameSize = init.maxFrameSize ?? 256 * 1024
    this.openTimeout = init.openTimeout ?? 5000
    this.maxQueuedPerPeer = init.maxQueuedPerPeer ?? 10_000
    this.maxInboundStreams = init.maxInboundStreams ?? 8
    this.lazyWindowUpdates = init.lazyWindowUpdates ?? true
    this.directReads = init.directReads ?? true
    this.openOnConnect = init.openOnConnect ?? true
  }

  async start (): Promise<void> {
    this.shutdown = new AbortController()
    await this.libp2p.handle(this.protocol, (stream, connection) => { this.accept(stream, connection) }, {
      maxInboundStreams: this.maxInboundStreams
    })
    if (this.openOnConnect) {
      this.libp2p.addEventListener?.('connection:open', this.onConnectionOpen)
      for (const connection of this.libp2p.getConnections?.() ?? []) this.prepare(connection)
    }
  }

  private readonly onConnectionOpen = (evt: CustomEvent<Connection>): void => { this.prepare(evt.detail) }

  /**
   * Open the SIP stream on a connection this node dialled, unless one is open or opening (the
   * dialler opens it, so two nodes do not open one each). On that connection only, once: no dial
   * and no retry (a peer that refuses us, or does not speak our protocol yet, is not dialled again
   * for it), and not counted as work with the peer (node/idle-connections.ts). A failure is only
   * logged: the next message opens a stream on demand, as it would have without this.
   */
  private prepare (connection: Connection): void {
    if (connection.direction !== 'outbound' || connection.status !== 'open' || connection.limits != null) return
    if (this.shutdown == null || this.shutdown.signal.aborted) return
    const node = connection.remotePeer.toString()
    if (node === this.libp2p.peerId.toString()) return
    const link = this.link(node)
    if ((link.stream != null && link.stream.writeStatus === 'writable') || link.opening != null) return
    this.stats.streamsPrepared++
    const signal = AbortSignal.any([AbortSignal.timeout(this.openTimeout), this.shutdown.signal])
    // messages that begin to wait meanwhile wait for this stream (getStream) and leave on it; if
    // it fails they get what a send would have done: a stream dialled, retried within the timeout
    const opening = connection.newStream(this.protocol, { signal }).then(
      stream => this.opened(node, link, stream),
      async (err: Error) => {
        if (link.queue.length === 0 || this.shutdown?.signal.aborted !== false) throw err
        return await this.open(node, link, {})
      })
    link.opening = opening.finally(() => { link.opening = undefined })
    link.opening.catch((err: Error) => {
      this.log.debug('SIP stream not opened ahead of use', { peer: node, error: err.message })
    })
  }

  async stop (): Promise<void> {
    this.shutdown?.abort()
    this.libp2p.removeEventListener?.('connection:open', this.onConnectionOpen)
    await this.libp2p.unhandle(this.protocol).catch(() => {})
    const err = new PeerChannelClosedError('peer channel stopped')
    const closing: Array<Promise<void>> = []
    for (const link of this.links.values()) {
      for (const p of link.queue.splice(0)) p.reject(err)
      if (link.stream != null) closing.push(link.stream.close({ signal: AbortSignal.timeout(1000) }).catch(() => {}))
    }
    this.links.clear()
    this.active.clear()
    for (const s of this.inbound) s.abort(err)
    this.inbound.clear()
    await Promise.all(closing)
  }

  /** When a message last went to or came from `node` (ms epoch), if ever. */
  lastActivity (node: string): number | undefined {
    return this.active.get(node)
  }

  onMessage (handler: (node: string, data: Uint8Array) => void): Unwatch {
    this.handlers.add(handler)
    return () => { this.handlers.delete(handler) }
  }

  /**
   * The fast path of `send`, without a promise: an open stream with room and nobody queued before
   * this message. Frames sent in the same event-loop turn are coalesced into one write (one yamux
   * frame, one Noise encryption). False: nothing done, `send` queues (or fails) the message.
   */
  sendNow (node: string, data: Uint8Array): boolean {
    if (this.shutdown == null || this.shutdown.signal.aborted || data.byteLength > this.maxFrameSize) return false
    const link = this.links.get(node)
    const stream = link?.stream
    if (link === undefined || stream == null || link.queue.length !== 0 || stream.writableNeedsDrain || stream.writeStatus !== 'writable') return false
    this.active.set(node, Date.now())
    // the frame is written into the link's batch buffer at once (the caller keeps its bytes), and
    // the batch leaves as one chunk copied out of it: one allocation per batch, not one per frame
    // and another for the chunk
    const at = link.batchBytes
    const end = at + 4 + data.byteLength
    let batch = link.batch
    if (batch === null || batch.byteLength < end) {
      const grown = Buffer.allocUnsafe(Math.max(BATCH_BUFFER_BYTES, end, (batch?.byteLength ?? 0) * 2))
      if (batch !== null) batch.copy(grown, 0, 0, at)
      batch = link.batch = grown
    }
    batch.writeUInt32BE(data.byteLength, at)
    batch.set(data, at + 4)
    link.batchBytes = end
    if (++link.batchFrames === 1) setImmediate(link.writeSoon)
    else if (end >= MAX_BATCH_BYTES) this.writeBatch(node, link)
    return true
  }

  async send (node: string, data: Uint8Array, options: AbortOptions = {}): Promise<void> {
    if (this.sendNow(node, data)) return
    if (this.shutdown == null || this.shutdown.signal.aborted) throw new PeerChannelClosedError('peer channel is not running')
    if (data.byteLength > this.maxFrameSize) {
      throw new FrameTooLargeError(`message of ${data.byteLength} bytes exceeds the limit of ${this.maxFrameSize}`)
    }
    if (node === this.libp2p.peerId.toString()) {
      // a message to ourselves never touches the network
      const copy = data.slice()
      queueMicrotask(() => { this.deliver(node, copy) })
      return
    }
    const frame = encodeFrame(data)
    const link = this.link(node)
    this.active.set(node, Date.now())
    this.stats.queued[queuedReason(link)]++
    // frames batched earlier in this turn go out before this one
    this.writeBatch(node, link)
    if (link.queue.length >= this.maxQueuedPerPeer) {
      throw new SendQueueFullError(`${link.queue.length} messages already wait for peer ${node}`)
    }
    const done = new Promise<void>((resolve, reject) => { link.queue.push({ frame, resolve, reject }) })
    void this.flush(node, link, options)
    await done
  }

  private link (node: string): Link {
    let link = this.links.get(node)
    if (link == null) {
      const made: Link = { queue: [], flushing: false, batch: null, batchBytes: 0, batchFrames: 0, writeSoon: () => { this.writeBatch(node, made) } }
      link = made
      this.links.set(node, link)
    }
    return link
  }

  /** Write the frames coalesced in this turn; when the stream fails, they go back to the queue. */
  private writeBatch (node: string, link: Link): void {
    const count = link.batchFrames
    if (count === 0 || link.batch === null) return
    // the chunk is a copy: the stream's layers may hold it after send() returns, the batch
    // buffer is reused (Buffer.allocUnsafe: small chunks are slices of Node's pool)
    const chunk = Buffer.allocUnsafe(link.batchBytes)
    link.batch.copy(chunk, 0, 0, link.batchBytes)
    // a buffer grown for a large frame is not kept
    if (link.batch.byteLength > 2 * MAX_BATCH_BYTES) link.batch = null
    link.batchBytes = 0
    link.batchFrames = 0
    const stream = link.stream
    if (stream != null && stream.writeStatus === 'writable') {
      try {
        stream.send(chunk)
        this.stats.framesSent += count
        this.stats.writes++
        return
      } catch (err) {
        this.dropStream(node, link, stream, err as Error)
      }
    }
    if (this.shutdown == null || this.shutdown.signal.aborted) return
    // the stream went away between send() and now: retry these first, on a fresh stream
    const retry: Pending[] = []
    for (let at = 0; at < chunk.byteLength;) {
      const end = at + 4 + chunk.readUInt32BE(at)
      retry.push({ frame: chunk.subarray(at, end), resolve: noop, reject: noop })
      at = end
    }
    link.queue.unshift(...retry)
    void this.flush(node, link, {})
  }

  /**
   * Peers this node has a stream to send on (opened by either side), and streams peers opened to
   * this node (for status).
   */
  streams (): { outbound: number, inbound: number } {
    let outbound = 0
    for (const l of this.links.values()) if (l.stream != null) outbound++
    return { outbound, inbound: this.inbound.size }
  }

  /** The send side toward one peer (for the admin API's `/peers`): a stream open, messages waiting. */
  linkState (node: string): { open: boolean, queued: number } {
    const link = this.links.get(node)
    return { open: link?.stream != null, queued: (link?.queue.length ?? 0) + (link?.batchFrames ?? 0) }
  }

  private async flush (node: string, link: Link, options: AbortOptions): Promise<void> {
    if (link.flushing) return
    link.flushing = true
    let attempts = 0
    try {
      while (link.queue.length > 0) {
        let stream: Stream
        try {
          stream = await this.getStream(node, link, options)
        } catch (err) {
          // the peer opened a stream to us meanwhile: send on that
          if (link.stream != null && link.stream.writeStatus === 'writable') continue
          // cannot reach the peer: fail everything queued for it
          for (const p of link.queue.splice(0)) p.reject(err as Error)
          break
        }
        if (stream.writableNeedsDrain) {
          try {
            await waitForDrain(stream, this.shutdown?.signal)
          } catch (err) {
            this.dropStream(node, link, stream, err as Error)
            if (++attempts > 1) { for (const p of link.queue.splice(0)) p.reject(err as Error); break }
            continue
          }
        }
        // the waiting frames leave in chunks of up to MAX_BATCH_BYTES, as the batches of `sendNow`
        // do: one write (one yamux frame, one Noise encryption) per frame made this path slower
        // than the messages arriving meanwhile, which queue behind it to keep their order, so a
        // queue begun at a cold start at 3,000/s never emptied (issue 11: the node stayed on
        // this path, CPU per message ×4, answers seconds late, thousands failed)
        while (link.queue.length > 0 && !stream.writableNeedsDrain) {
          let n = 1
          let size = link.queue[0].frame.byteLength
          while (n < link.queue.length && size + link.queue[n].frame.byteLength <= MAX_BATCH_BYTES) size += link.queue[n++].frame.byteLength
          const sent = link.queue.slice(0, n)
          try {
            stream.send(joinFrames(sent.map(p => p.frame), size))
          } catch (err) {
            this.dropStream(node, link, stream, err as Error)
            if (++attempts > 1) { for (const q of link.queue.splice(0)) q.reject(err as Error) }
            break
          }
          link.queue.splice(0, n)
          this.stats.framesSent += n
          this.stats.writes++
          for (const p of sent) p.resolve()
        }
      }
    } finally {
      link.flushing = false
    }
  }

  private async getStream (node: string, link: Link, options: AbortOptions): Promise<Stream> {
    if (link.stream != null && link.stream.writeStatus === 'writable') return link.stream
    if (link.opening == null) {
      link.opening = this.open(node, link, options).finally(() => { link.opening = undefined })
    }
    return await link.opening
  }

  private async open (node: string, link: Link, options: AbortOptions): Promise<Stream> {
    const signals = [AbortSignal.timeout(this.openTimeout)]
    if (options.signal != null) signals.push(options.signal)
    if (this.shutdown != null) signals.push(this.shutdown.signal)
    const signal = AbortSignal.any(signals)
    const peer = peerIdFromString(node)
    let pause = 50
    let stream: Stream
    for (;;) {
      try {
        stream = await this.libp2p.dialProtocol(peer, this.protocol, { signal })
        break
      } catch (err) {
        // out of time, stopped, or a peer that does not speak our protocol: give up
        if (signal.aborted || (err as Error).name === 'UnsupportedProtocolError') throw err
        // the peer not listening yet, a connection that closed as it was dialled, a crossing
        // dial: try again while the messages wait
        this.stats.openRetries++
        this.log.debug('SIP stream dial failed, trying again', { peer: node, error: (err as Error).message })
        const failed = err as Error
        // the peer opened a stream to us meanwhile: that one will do
        if (link.stream != null && link.stream.writeStatus === 'writable') return link.stream
        await new Promise<void>((resolve, reject) => {
          const onAbort = (): void => { clearTimeout(timer); reject(failed) }
          const timer = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve() }, pause)
          signal.addEventListener('abort', onAbort, { once: true })
        })
        pause = Math.min(pause * 2, 1000)
      }
    }
    return this.opened(node, link, stream)
  }

  /** A stream this node opened to `node`: sent on unless the peer's is in use already; read. */
  private opened (node: string, link: Link, stream: Stream): Stream {
    this.stats.streamsOpened++
    // a stream the peer opened meanwhile may already be in use: keep it, read this one too
    if (link.stream == null || link.stream.writeStatus !== 'writable') this.adopt(node, link, stream)
    this.read(node, stream)
    stream.addEventListener('close', (evt) => {
      if (evt.error != null) {
        this.stats.streamErrors++
        this.log.debug('outbound SIP stream closed', { peer: node, error: evt.error.message })
      }
    }, { once: true })
    this.log.debug('outbound SIP stream open', { peer: node })
    return link.stream ?? stream
  }

  /** Send to `node` on `stream` from now on (one this node opened, or one the peer opened). */
  private adopt (node: string, link: Link, stream: Stream): void {
    link.stream = stream
    const release = (): void => { if (link.stream === stream) link.stream = undefined }
    stream.addEventListener('close', release, { once: true })
    // the peer closed its end (it is stopping, or dropped the stream): send on a fresh stream
    // from now on, and close ours so the stream ends
    stream.addEventListener('remoteCloseWrite', () => {
      release()
      stream.close({ signal: AbortSignal.timeout(1000) }).catch(() => {})
    }, { once: true })
  }

  private dropStream (node: string, link: Link, stream: Stream, err: Error): void {
    if (link.stream === stream) link.stream = undefined
    this.stats.streamErrors++
    this.log.debug('SIP stream failed', { peer: node, error: err.message })
    stream.abort(err)
  }

  private accept (stream: Stream, connection: Connection): void {
    const node = connection.remotePeer.toString()
    this.inbound.add(stream)
    stream.addEventListener('close', () => { this.inbound.delete(stream) }, { once: true })
    this.read(node, stream)
    // one stream per pair of nodes: answer on the stream the peer opened, unless this node has
    // one of its own to that peer already
    const link = this.link(node)
    if (link.stream == null || link.stream.writeStatus !== 'writable') {
      this.adopt(node, link, stream)
      // messages waiting for a stream of our own go out on this one
      if (link.queue.length > 0) void this.flush(node, link, {})
    } else {
      stream.addEventListener('remoteCloseWrite', () => { stream.close({ signal: AbortSignal.timeout(1000) }).catch(() => {}) }, { once: true })
    }
  }

  private read (node: string, stream: Stream): void {
    if (this.lazyWindowUpdates) lazyWindowUpdates(stream)
    const decoder = new FrameDecoder(this.maxFrameSize)
    /** frames of this stream waiting for their own task, in order */
    let inbox: Uint8Array[] = []
    let head = 0
    // each waiting frame has one setImmediate; all run in this turn's check phase, each followed
    // by a microtask checkpoint. One that finds the inbox empty (a backlog was delivered in one
    // go meanwhile) has nothing left to do
    const next = (): void => {
      if (head >= inbox.length) return
      const frame = inbox[head++]
      if (head === inbox.length) { inbox = []; head = 0 }
      this.deliver(node, frame)
    }
    // the bytes straight from yamux, without the stream's read buffer and event (node/direct-messages.ts)
    if (this.directReads) directMessages(stream)
    stream.addEventListener('message', (evt) => {
      this.active.set(node, Date.now())
      this.stats.chunksReceived++
      let frames: Uint8Array[]
      try {
        frames = decoder.push(toBytes(evt.data))
      } catch (err) {
        this.stats.streamErrors++
        this.log.warn('bad frame from peer, stream aborted', { peer: node, error: (err as Error).message })
        stream.abort(err as Error)
        return
      }
      this.stats.framesReceived += frames.length
      // One task per frame (see the file comment, "Delivery"): the first at once when nothing of
      // this stream waits, the others each in a setImmediate of its own, in order. Past
      // MAX_INBOX waiting, what waits and the rest of the chunk are delivered now, in one go, as
      // they come: the loop is then busy with them and reads no more from the socket, which is
      // what pushes back on the sender (TCP, the yamux window, its send queue), and a chunk of a
      // million empty frames makes no million Immediates.
      let i = 0
      if (head === inbox.length && frames.length > 0) this.deliver(node, frames[i++])
      for (; i < frames.length; i++) {
        if (inbox.length - head >= MAX_INBOX) {
          const waiting = inbox.slice(head)
          inbox = []
          head = 0
          for (const f of waiting) this.deliver(node, f)
          for (; i < frames.length; i++) this.deliver(node, frames[i])
          return
        }
        inbox.push(frames[i])
        setImmediate(next)
      }
    })
  }

  private deliver (node: string, frame: Uint8Array): void {
    for (const h of this.handlers) {
      try {
        h(node, frame)
      } catch (err) {
        this.log.error('peer message handler threw', { peer: node, error: (err as Error).message })
      }
    }
  }
}
