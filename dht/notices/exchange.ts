/**
 * Claim reads and interest registrations over ONE long-lived stream per peer
 * (`/sipmesh/claim-exchange/1.0.0`), instead of one stream per read (`claim-get`) and one per
 * registration (`claim-interest`, protocol.ts).
 *
 * Why a stream is not opened per request: libp2p 3 merges the remote peer's protocol into its
 * peer store for every negotiated stream, on both sides (libp2p 3.3 `dist/src/connection.js`,
 * `newStream` and `onIncomingStream`: `peerStore.merge(remotePeer, { protocols: [protocol] })`,
 * no option turns it off), and @libp2p/peer-store 12 does that under a per-peer write lock as a
 * LevelDB read, a protobuf decode and re-encode and a LevelDB write, whether anything changed or
 * not. With the stream's own frames (window, multistream-select, data, close) that was about a
 * quarter of both nodes' busy time while the presentities of one node were watched from another
 * for the first time (issue 11: two reads and one registration per presentity).
 *
 * Wire: length-prefixed CBOR messages, either way:
 *
 *     get        [1, id, 0, key]                     →  [1, id, claim envelope | null (none) | false (the read failed)]
 *     interest   [1, id, 1, [aor, ...], ttlMs]       →  [1, id, null]
 *
 * Requests are answered by id, in any order, several in flight. Interests for one peer made in
 * the same event-loop turn go as one request (at most MAX_INTEREST_BATCH AoRs).
 *
 * Hostile input: every message is capped (MAX_EXCHANGE_MESSAGE_BYTES), a malformed one aborts the
 * stream that carried it, a peer may have at most MAX_PENDING_READS reads served at once per
 * stream (more aborts the stream). A peer that does not speak this protocol (an older node) is
 * served with the one-shot protocols and remembered as such for LEGACY_PEER_MS.
 */
import { decode, encode } from 'cborg'
import { LengthPrefixedDecoder } from '@libp2p/utils'
import { MAX_CLAIM_BYTES } from '../record/claim.ts'
import { concat } from 'uint8arrays/concat'
import { frame, toBytes } from '../replication/put-protocol.ts'
import { MAX_INTEREST_BYTES, MAX_KEY_BYTES, NOTICE_TIMEOUT_MS, requestClaim, sendNotice } from './protocol.ts'
import { errorMessage, errorName } from '../errors.ts'
import type { AbortOptions, Connection, Libp2p, Logger, PeerId, Stream } from '@libp2p/interface'

export const CLAIM_EXCHANGE_PROTOCOL = '/sipmesh/claim-exchange/1.0.0'
/** most AoRs in one interest request */
export const MAX_INTEREST_BATCH = 256
/** longest AoR accepted in an interest request, characters */
export const MAX_AOR_CHARS = 256
/** largest message either way */
export const MAX_EXCHANGE_MESSAGE_BYTES = Math.max(MAX_CLAIM_BYTES, MAX_INTEREST_BATCH * (MAX_AOR_CHARS + 3)) + 64
/** reads one stream may have in service at once */
export const MAX_PENDING_READS = 1024
/** how long a peer that does not speak the protocol is served with the one-shot ones */
export const LEGACY_PEER_MS = 600_000

const OP_GET = 0
const OP_INTEREST = 1
const DECODE = { strict: true, allowUndefined: false, allowIndefinite: false } as const

export class ExchangeMessageError extends Error {
  static readonly NAME = 'ExchangeMessageError'
  override readonly name = ExchangeMessageError.NAME
}

export type ExchangeRequest =
  | { id: number, op: typeof OP_GET, key: Uint8Array }
  | { id: number, op: typeof OP_INTEREST, aors: string[], ttlMs: number }

/** Decode and check one request; throws ExchangeMessageError. */
export function decodeExchangeRequest (bytes: Uint8Array): ExchangeRequest {
  let msg: unknown
  try { msg = decode(bytes, DECODE) } catch (err) { throw new ExchangeMessageError(`not CBOR: ${errorMessage(err)}`) }
  if (!Array.isArray(msg) || msg[0] !== 1 || !Number.isSafeInteger(msg[1]) || (msg[1] as number) < 0) throw new ExchangeMessageError('not [1, id, op, …]')
  const id = msg[1] as number
  if (msg[2] === OP_GET && msg.length === 4) {
    const key = msg[3] as unknown
    if (!(key instanceof Uint8Array) || key.byteLength > MAX_KEY_BYTES) throw new ExchangeMessageError('get: the key is not bytes or too long')
    return { id, op: OP_GET, key }
  }
  if (msg[2] === OP_INTEREST && msg.length === 5) {
    const aors = msg[3] as unknown
    const ttl = msg[4] as unknown
    if (!Array.isArray(aors) || aors.length > MAX_INTEREST_BATCH) throw new ExchangeMessageError('interest: not a list of at most MAX_INTEREST_BATCH AoRs')
    if (!aors.every(a => typeof a === 'string' && a.length > 0 && a.length <= MAX_AOR_CHARS)) throw new ExchangeMessageError('interest: an AoR is not a string or too long')
    if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl < 0) throw new ExchangeMessageError('interest: bad ttl')
    return { id, op: OP_INTEREST, aors: aors as string[], ttlMs: ttl }
  }
  throw new ExchangeMessageError('unknown request')
}

/** Decode and check one answer (`failed`: the peer could not serve it); throws ExchangeMessageError. */
export function decodeExchangeAnswer (bytes: Uint8Array): { id: number, value?: Uint8Array, failed: boolean } {
  let msg: unknown
  try { msg = decode(bytes, DECODE) } catch (err) { throw new ExchangeMessageError(`not CBOR: ${errorMessage(err)}`) }
  if (!Array.isArray(msg) || msg.length !== 3 || msg[0] !== 1 || !Number.isSafeInteger(msg[1])) throw new ExchangeMessageError('not [1, id, value]')
  const value = msg[2] as unknown
  if (value !== null && value !== false && !(value instanceof Uint8Array && value.byteLength <= MAX_CLAIM_BYTES)) throw new ExchangeMessageError('the value is not bytes or too long')
  return { id: msg[1] as number, value: value === null || value === false ? undefined : value, failed: value === false }
}

/** The peer could not serve a request (its read failed). */
export class ExchangeFailedError extends Error {
  static readonly NAME = 'ExchangeFailedError'
  override readonly name = ExchangeFailedError.NAME
}

interface Pending {
  resolve: (value: Uint8Array | undefined) => void
  reject: (err: Error) => void
  timer: ReturnType<typeof setTimeout>
  signal?: AbortSignal
  onAbort?: () => void
}

interface Link {
  stream?: Stream
  opening?: Promise<Stream>
  pending: Map<number, Pending>
  /** a flush of this turn's requests is scheduled */
  scheduled: boolean
  /** requests of this turn, sent together in one stream write when the turn ends */
  outbox: Uint8Array[]
  /** interests of this turn (AoR → ttl), one request when the turn ends, and its outcome */
  interests?: { aors: Map<string, number>, done: Promise<void>, settle: (err?: Error) => void }
}

export interface ClaimExchangeInit {
  /** @default CLAIM_EXCHANGE_PROTOCOL */
  protocol?: string
  /** the one-shot protocols of older peers */
  getProtocol: string
  interestProtocol: string
}

/**
 * The asking side: one stream per peer, opened on first use and again after it fails. What is
 * asked of one peer in one event-loop turn goes out in one stream write (one yamux frame, one
 * Noise encryption, one socket write) when the turn ends: a resolve's read and the interest its
 * watch registers travel together.
 */
export class ClaimExchangeClient {
  readonly #libp2p: Pick<Libp2p, 'dialProtocol'>
  readonly #log: Logger
  readonly #protocol: string
  readonly #getProtocol: string
  readonly #interestProtocol: string
  readonly #links = new Map<string, Link>()
  /** peers that do not speak the protocol → until when they are served the old way */
  readonly #legacy = new Map<string, number>()
  #nextId = 1
  #signal: AbortSignal = AbortSignal.abort()
  /** counters for metrics and tests */
  readonly stats = { streamsOpened: 0, writes: 0, gets: 0, interestRequests: 0, interests: 0, legacy: 0 }

  constructor (libp2p: Pick<Libp2p, 'dialProtocol'>, log: Logger, init: ClaimExchangeInit) {
    this.#libp2p = libp2p
    this.#log = log
    this.#protocol = init.protocol ?? CLAIM_EXCHANGE_PROTOCOL
    this.#getProtocol = init.getProtocol
    this.#interestProtocol = init.interestProtocol
  }

  /** Streams may be opened until `signal` aborts. */
  start (signal: AbortSignal): void {
    this.#signal = signal
  }

  /** Ask a peer for the claim it stores under a key; undefined when it has none. Throws on failure. */
  async get (peer: PeerId, key: Uint8Array, options: AbortOptions = {}): Promise<Uint8Array | undefined> {
    this.#signal.throwIfAborted()
    options.signal?.throwIfAborted()
    if (this.#isLegacy(peer)) return await requestClaim(this.#libp2p, this.#getProtocol, peer, key, options)
    this.stats.gets++
    try {
      return await this.#request(peer, this.#link(peer), [OP_GET, key], options.signal)
    } catch (err) {
      if (errorName(err) !== 'UnsupportedProtocolError') throw err
      this.#markLegacy(peer)
      return await requestClaim(this.#libp2p, this.#getProtocol, peer, key, options)
    }
  }

  /**
   * Tell a peer this node wants to hear of changes to an AoR's claim for `ttlMs`. Interests for one
   * peer asked for in the same turn go in one request; resolves once the peer acknowledged it.
   */
  async interest (peer: PeerId, aor: string, ttlMs: number): Promise<void> {
    this.#signal.throwIfAborted()
    if (this.#isLegacy(peer)) { await this.#legacyInterest(peer, [aor], ttlMs); return }
    const link = this.#link(peer)
    this.stats.interests++
    if (link.interests == null) {
      let settle: (err?: Error) => void = () => {}
      const done = new Promise<void>((resolve, reject) => { settle = (err) => { if (err == null) resolve(); else reject(err) } })
      link.interests = { aors: new Map(), done, settle }
      this.#schedule(peer, link)
    }
    const batch = link.interests
    batch.aors.set(aor, Math.max(ttlMs, batch.aors.get(aor) ?? 0))
    try {
      await batch.done
    } catch (err) {
      if (errorName(err) !== 'UnsupportedProtocolError') throw err
      this.#markLegacy(peer)
      await this.#legacyInterest(peer, [aor], ttlMs)
    }
  }

  async #legacyInterest (peer: PeerId, aors: string[], ttlMs: number): Promise<void> {
    await Promise.all(aors.map(async aor => {
      await sendNotice(this.#libp2p, this.#interestProtocol, peer, encode([1, aor, ttlMs]), { signal: this.#signal, maxBytes: MAX_INTEREST_BYTES })
    }))
  }

  #isLegacy (peer: PeerId): boolean {
    const until = this.#legacy.get(peer.toString())
    if (until === undefined) return false
    if (until > Date.now()) return true
    this.#legacy.delete(peer.toString())
    return false
  }

  #markLegacy (peer: PeerId): void {
    if (this.#isLegacy(peer)) return
    this.stats.legacy++
    this.#log('%p does not speak %s: one-shot streams for %d s', peer, this.#protocol, LEGACY_PEER_MS / 1000)
    this.#legacy.set(peer.toString(), Date.now() + LEGACY_PEER_MS)
  }

  #link (peer: PeerId): Link {
    const key = peer.toString()
    let link = this.#links.get(key)
    if (link == null) {
      link = { pending: new Map(), scheduled: false, outbox: [] }
      this.#links.set(key, link)
    }
    return link
  }

  /** a request into this turn's outbox; resolves with its answer */
  async #request (peer: PeerId, link: Link, body: unknown[], signal?: AbortSignal): Promise<Uint8Array | undefined> {
    signal?.throwIfAborted()
    const id = this.#nextId++
    const answer = new Promise<Uint8Array | undefined>((resolve, reject) => {
      const p: Pending = {
        resolve,
        reject,
        timer: setTimeout(() => { this.#settle(link, id)?.reject(new Error(`no answer from ${peer.toString()} within ${NOTICE_TIMEOUT_MS} ms`)) }, NOTICE_TIMEOUT_MS)
      }
      if (signal != null) {
        p.signal = signal
        p.onAbort = () => { this.#settle(link, id)?.reject(signal.reason instanceof Error ? signal.reason : new Error('aborted')) }
        signal.addEventListener('abort', p.onAbort, { once: true })
      }
      link.pending.set(id, p)
    })
    link.outbox.push(frame([1, id, ...body]))
    this.#schedule(peer, link)
    return await answer
  }

  /** flush the link's outbox when this turn ends (once per turn) */
  #schedule (peer: PeerId, link: Link): void {
    if (link.scheduled) return
    link.scheduled = true
    setImmediate(() => { void this.#flush(peer, link) })
  }

  async #flush (peer: PeerId, link: Link): Promise<void> {
    // still `scheduled` while the interests become requests: they join this write
    const batch = link.interests
    link.interests = undefined
    if (batch != null) {
      const aors = [...batch.aors.keys()]
      const ttl = Math.max(...batch.aors.values())
      const acks: Array<Promise<Uint8Array | undefined>> = []
      for (let i = 0; i < aors.length; i += MAX_INTEREST_BATCH) {
        this.stats.interestRequests++
        acks.push(this.#request(peer, link, [OP_INTEREST, aors.slice(i, i + MAX_INTEREST_BATCH), ttl]))
      }
      Promise.all(acks).then(() => { batch.settle() }, (err: Error) => { batch.settle(err) })
    }
    link.scheduled = false
    const frames = link.outbox
    link.outbox = []
    if (frames.length === 0) return
    let stream: Stream
    try {
      stream = await this.#stream(peer, link)
    } catch (err) {
      // every request of the batch fails with it (UnsupportedProtocolError: an older peer)
      for (const id of [...link.pending.keys()]) this.#settle(link, id)?.reject(err as Error)
      return
    }
    try {
      this.stats.writes++
      stream.send(frames.length === 1 ? frames[0] : concat(frames))
    } catch (err) {
      this.#fail(link, stream, err as Error)
    }
  }

  /** take a request out of the pending table (its timer and abort listener gone) */
  #settle (link: Link, id: number): Pending | undefined {
    const p = link.pending.get(id)
    if (p == null) return undefined
    link.pending.delete(id)
    clearTimeout(p.timer)
    if (p.onAbort != null) p.signal?.removeEventListener('abort', p.onAbort)
    return p
  }

  async #stream (peer: PeerId, link: Link): Promise<Stream> {
    if (link.stream != null && link.stream.writeStatus === 'writable') return link.stream
    link.opening ??= (async () => {
      try {
        const stream = await this.#libp2p.dialProtocol(peer, this.#protocol, { signal: AbortSignal.any([this.#signal, AbortSignal.timeout(NOTICE_TIMEOUT_MS)]) })
        this.stats.streamsOpened++
        link.stream = stream
        const decoder = new LengthPrefixedDecoder({ maxDataLength: MAX_EXCHANGE_MESSAGE_BYTES, maxBufferSize: MAX_EXCHANGE_MESSAGE_BYTES * 2 })
        stream.addEventListener('message', (evt) => {
          try {
            for (const msg of decoder.decode(toBytes(evt.data))) {
              const { id, value, failed } = decodeExchangeAnswer(msg.subarray())
              const p = this.#settle(link, id)
              if (failed) p?.reject(new ExchangeFailedError(`${peer.toString()} could not serve the request`))
              else p?.resolve(value)
            }
          } catch (err) {
            this.#log('bad claim-exchange answer from %p: %s', peer, errorMessage(err))
            this.#fail(link, stream, err as Error)
          }
        })
        stream.addEventListener('close', (evt) => { this.#fail(link, stream, evt.error ?? new Error('claim-exchange stream closed')) }, { once: true })
        return stream
      } finally {
        link.opening = undefined
      }
    })()
    return await link.opening
  }

  #fail (link: Link, stream: Stream, err: Error): void {
    if (link.stream === stream) link.stream = undefined
    for (const id of [...link.pending.keys()]) this.#settle(link, id)?.reject(err)
    if (stream.status === 'open') stream.abort(err)
  }

  /** Close every stream (the registry stopped). */
  close (): void {
    for (const link of this.#links.values()) {
      if (link.stream != null) this.#fail(link, link.stream, new Error('stopped'))
    }
    this.#links.clear()
  }
}

export interface ClaimExchangeServe {
  /** the claim envelope this node stores under a key, if any */
  get: (key: Uint8Array) => Promise<Uint8Array | undefined>
  /** a peer registered interest in these AoRs (not yet normalized) */
  interest: (from: PeerId, aors: string[], ttlMs: number) => void
}

/**
 * The answering side: every request of a stream answered by id; the answers ready in one turn go
 * out in one stream write when it ends. Never throws.
 */
export function claimExchangeHandler (log: Logger, serve: ClaimExchangeServe): (stream: Stream, connection: Connection) => void {
  return (stream, connection) => {
    const from = connection.remotePeer
    const decoder = new LengthPrefixedDecoder({ maxDataLength: MAX_EXCHANGE_MESSAGE_BYTES, maxBufferSize: MAX_EXCHANGE_MESSAGE_BYTES * 2 })
    let reading = 0
    let outbox: Uint8Array[] = []
    const flush = (): void => {
      const frames = outbox
      outbox = []
      if (stream.writeStatus !== 'writable') return
      try {
        stream.send(frames.length === 1 ? frames[0] : concat(frames))
      } catch (err) {
        // a full write buffer (a peer that asks and does not read) or a closing stream: it ends here
        log('claim-exchange answer to %p failed: %s', from, errorMessage(err))
        stream.abort(err as Error)
      }
    }
    const answer = (id: number, value: Uint8Array | null | false): void => {
      if (outbox.length === 0) setImmediate(flush)
      outbox.push(frame([1, id, value]))
    }
    stream.addEventListener('message', (evt) => {
      let requests: ExchangeRequest[]
      try {
        requests = [...decoder.decode(toBytes(evt.data))].map(m => decodeExchangeRequest(m.subarray()))
        if (reading + requests.filter(r => r.op === OP_GET).length > MAX_PENDING_READS) throw new ExchangeMessageError(`more than ${MAX_PENDING_READS} reads in service`)
      } catch (err) {
        log.error('bad claim-exchange request from %p: %s', from, errorMessage(err))
        stream.abort(err as Error)
        return
      }
      for (const req of requests) {
        if (req.op === OP_INTEREST) {
          serve.interest(from, req.aors, req.ttlMs)
          answer(req.id, null)
          continue
        }
        reading++
        serve.get(req.key).then(
          (value) => { reading--; answer(req.id, value ?? null) },
          (err: unknown) => {
            reading--
            log('claim-exchange read for %p failed: %s', from, errorMessage(err))
            answer(req.id, false)
          })
      }
    })
  }
}
