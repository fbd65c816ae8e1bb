/**
 * Batched claim writes (`/sipmesh/claim-put/1.0.0`): one long-lived stream per peer carries
 * batches of signed claims to a replica and brings back one answer per claim.
 *
 * kad-dht's PUT_VALUE writes one record per stream; at thousands of registrations per second that
 * is thousands of streams per second per replica. Here every message on the stream is
 * length-prefixed CBOR:
 *
 *     request  = [ 1, id (uint), [ claim envelope, ... ] ]            (at most MAX_PUT_BATCH claims)
 *     response = [ 1, id, [ [ status, bytes | null, age | null ], ... ] ]   (same order)
 *
 * with status `stored` (bytes: the other owner's claim it replaced, if any), `stale` (bytes: the
 * newer claim the replica keeps, age: how many ms ago it stored it, by its own clock, so the
 * claimer can tell a claim that stood before it began from a concurrent one) or `invalid`. Each claim stays a signed record that verifies on
 * its own; the replica verifies every one before storing the batch. Requests on one stream are
 * answered in order, and several may be in flight.
 */
import { decode, encode } from 'cborg'
import { LengthPrefixedDecoder } from '@libp2p/utils'
import * as lp from 'it-length-prefixed'
import { MAX_CLAIM_BYTES } from '../record/claim.ts'
import { errorMessage, PutDroppedError } from '../errors.ts'
import type { Connection, Libp2p, Logger, PeerId, Stream } from '@libp2p/interface'

export const CLAIM_PUT_PROTOCOL = '/sipmesh/claim-put/1.0.0'
/** most claims in one request */
export const MAX_PUT_BATCH = 512
/** largest message either way */
export const MAX_PUT_MESSAGE_BYTES = MAX_PUT_BATCH * (MAX_CLAIM_BYTES * 2 + 16) + 64
/** how long a request may wait for its answer */
export const PUT_TIMEOUT_MS = 10_000
/** most claims waiting (not yet sent) for one peer: see `PutClient` */
export const MAX_QUEUED_PUT_CLAIMS = 4 * MAX_PUT_BATCH

export const PutStatus = { stored: 0, stale: 1, invalid: 2 } as const
export type PutStatus = typeof PutStatus[keyof typeof PutStatus]

export interface PutAnswer {
  status: PutStatus
  /** stored: the claim of another owner it replaced; stale: the newer claim kept */
  other?: Uint8Array
  /** stale: how long ago (ms) the replica stored the newer claim */
  age?: number
}

const DECODE = { strict: true, allowUndefined: false, allowIndefinite: false } as const

/** the bytes of a stream message event's data */
export function toBytes (data: Uint8Array | { subarray: () => Uint8Array }): Uint8Array {
  return data instanceof Uint8Array ? data : data.subarray()
}

/** a length-prefixed CBOR message */
export function frame (value: unknown): Uint8Array {
  return lp.encode.single(encode(value)).subarray()
}

export function decodeRequest (bytes: Uint8Array): { id: number, claims: Uint8Array[] } {
  const msg = decode(bytes, DECODE) as unknown
  if (!Array.isArray(msg) || msg.length !== 3 || msg[0] !== 1 || !Number.isSafeInteger(msg[1]) || !Array.isArray(msg[2])) throw new Error('not [1, id, claims]')
  const claims = msg[2] as unknown[]
  if (claims.length > MAX_PUT_BATCH) throw new Error(`batch of ${claims.length} claims over ${MAX_PUT_BATCH}`)
  if (!claims.every(c => c instanceof Uint8Array && c.byteLength <= MAX_CLAIM_BYTES)) throw new Error('a claim is not bytes or too large')
  return { id: msg[1] as number, claims: claims as Uint8Array[] }
}

function decodeResponse (bytes: Uint8Array): { id: number, answers: PutAnswer[] } {
  const msg = decode(bytes, DECODE) as unknown
  if (!Array.isArray(msg) || msg.length !== 3 || msg[0] !== 1 || !Number.isSafeInteger(msg[1]) || !Array.isArray(msg[2])) throw new Error('not [1, id, answers]')
  const answers: PutAnswer[] = []
  for (const a of msg[2] as unknown[]) {
    if (!Array.isArray(a) || a.length !== 3 || !(a[0] === 0 || a[0] === 1 || a[0] === 2) || !(a[1] === null || a[1] instanceof Uint8Array) ||
      !(a[2] === null || (typeof a[2] === 'number' && Number.isSafeInteger(a[2]) && a[2] >= 0))) throw new Error('bad answer')
    answers.push({ status: a[0] as PutStatus, other: a[1] ?? undefined, age: a[2] ?? undefined })
  }
  return { id: msg[1] as number, answers }
}

/** one caller's claims, waiting for their answers */
interface Waiter {
  claims: Uint8Array[]
  resolve: (answers: PutAnswer[]) => void
  reject: (err: Error) => void
}

/** a request on the wire: the callers whose claims it carries, in order */
interface Pending {
  waiters: Waiter[]
  count: number
  timer: ReturnType<typeof setTimeout>
}

interface Link {
  peer: PeerId
  stream?: Stream
  opening?: Promise<Stream>
  pending: Map<number, Pending>
  /** claims not sent yet: they go out together once a request answers (see `put`) */
  waiting: Waiter[]
  /** how many claims `waiting` holds */
  queued: number
  /**
   * a request to this peer went unanswered for the timeout (or its stream could not be opened),
   * and nothing was answered (or opened) since
   */
  silent: boolean
}

/** why claims were not sent to a peer (the labels of `PutClient.stats.dropped`) */
export interface PutDrops {
  /** the peer's queue held MAX_QUEUED_PUT_CLAIMS */
  queue_full: number
  /** queued behind a request that went unanswered, or put while the peer was silent */
  peer_silent: number
  /** sent, and not answered within the timeout */
  timeout: number
  /** waiting while the peer's stream could not be opened (the dial failed or timed out) */
  no_stream: number
  /** sent on a stream that failed before the answer */
  stream_failed: number
}

/**
 * Requests on the wire per peer: claims put meanwhile wait and go out together in the next one
 * (Nagle's rule). With one request per writer batch, a busy node sent a request of a few claims
 * per event-loop turn to each replica, and the stream writes (each a yamux frame, a Noise
 * encryption and a syscall that wakes the replica) were 15% of the claimer's busy time in a
 * 3-node mesh under new-REGISTER load (issue 9); waiting for the answer lets the batches grow
 * with the load, at the cost of one round trip at most.
 */
export const MAX_PUTS_IN_FLIGHT = 1

/**
 * Told of what a peer did not store and of a silent peer's return (the repair, see
 * `republish/repair.ts`). Called synchronously; must not throw.
 */
export interface PutObserver {
  /** claims (envelopes as put) that `peer` did not store, and why */
  dropped: (peer: PeerId, claims: Uint8Array[], reason: keyof PutDrops) => void
  /** a peer that was silent answered a request again */
  back: (peer: PeerId) => void
}

export interface PutClientInit {
  /** how long a request may wait for its answer, ms @default PUT_TIMEOUT_MS */
  timeoutMs?: number
  /** most claims waiting for one peer @default MAX_QUEUED_PUT_CLAIMS */
  maxQueuedClaims?: number
}

/**
 * The sending side: one stream per peer, opened on first use and again after it fails.
 *
 * What waits for a peer is bounded, because a peer that is frozen (SIGSTOP, a hung event loop)
 * keeps its connection open and answers nothing: with one request in flight, every claim put to
 * it meanwhile queued behind the 10 s timeout, and the queue grew at the claim rate (a REGISTER
 * no longer waits for the slowest replica, issue 9), each claim waiting 10 s per 512 ahead of it.
 * Now:
 *
 * - at most `maxQueuedClaims` (MAX_QUEUED_PUT_CLAIMS, 2,048: about 600 KB of claims) wait per
 *   peer; a put beyond that fails at once (`queue_full`);
 * - when a request goes unanswered for the timeout, the claims queued behind it fail at once
 *   (`peer_silent`) instead of taking their own 10 s turns, and the peer counts as silent until it
 *   answers again: while its next request (the probe: the first put after the timeout) is out,
 *   further puts to it fail at once (`peer_silent`);
 * - the same when its stream cannot be opened (a frozen peer does not negotiate the protocol: the
 *   dial times out): what waited fails (`no_stream`), and while the next dial is under way, puts
 *   fail at once (`peer_silent`).
 *
 * So a claim waits at most two timeouts for a peer, and a silent peer holds at most one request.
 * A failed put is a replica that did not store the claim, as if it had been down (the writer counts
 * it as a failure; a REGISTER is answered on another replica's answer). What repairs it: the
 * observer (`republish/repair.ts`) re-puts the dropped claims to the peer once it answers again
 * (or, when too many were dropped to remember, every own claim it is a replica of); behind it, the
 * owner's lease renewal re-puts each claim to all its replicas (within the lease: 30 min by
 * default), and any read that asks the replica and gets an older answer corrects it.
 */
export class PutClient {
  readonly #libp2p: Pick<Libp2p, 'dialProtocol'>
  readonly #protocol: string
  readonly #log: Logger
  readonly #links = new Map<string, Link>()
  readonly #timeoutMs: number
  readonly #maxQueued: number
  #nextId = 1
  #observer?: PutObserver
  #signal: AbortSignal = AbortSignal.abort()
  /** counters for metrics and tests: requests sent, claims they carried, streams opened, claims not stored by reason */
  readonly stats = { batches: 0, claims: 0, streamsOpened: 0, dropped: { queue_full: 0, peer_silent: 0, timeout: 0, no_stream: 0, stream_failed: 0 } satisfies PutDrops as PutDrops }

  constructor (libp2p: Pick<Libp2p, 'dialProtocol'>, log: Logger, protocol = CLAIM_PUT_PROTOCOL, init: PutClientInit = {}) {
    this.#libp2p = libp2p
    this.#log = log
    this.#protocol = protocol
    this.#timeoutMs = init.timeoutMs ?? PUT_TIMEOUT_MS
    this.#maxQueued = init.maxQueuedClaims ?? MAX_QUEUED_PUT_CLAIMS
  }

  /** Be told of drops and returns (one observer). */
  observe (observer: PutObserver | undefined): void {
    this.#observer = observer
  }

  /** Whether a peer counts as silent now: its last request went unanswered (see the class). */
  isSilent (peer: PeerId): boolean {
    return this.#links.get(peer.toString())?.silent === true
  }

  /** Count claims not stored on `peer`, and tell the observer. */
  #drop (peer: PeerId, reason: keyof PutDrops, count: number, claims: () => Uint8Array[]): void {
    if (count === 0) return
    this.stats.dropped[reason] += count
    const o = this.#observer
    if (o == null) return
    try {
      o.dropped(peer, claims(), reason)
    } catch (err) {
      this.#log.error('put observer threw: %s', errorMessage(err))
    }
  }

  /** Streams may be opened until `signal` aborts. */
  start (signal: AbortSignal): void {
    this.#signal = signal
  }

  /**
   * Send claims (at most MAX_PUT_BATCH) to a peer; resolves with one answer per claim. Claims put
   * to a peer while MAX_PUTS_IN_FLIGHT requests await their answers share the next request.
   * Rejects with PutDroppedError at once when the peer's queue is full or the peer is silent (see
   * the class).
   */
  async put (peer: PeerId, claims: Uint8Array[]): Promise<PutAnswer[]> {
    if (claims.length === 0) return []
    if (claims.length > MAX_PUT_BATCH) throw new RangeError('batch too large')
    this.#signal.throwIfAborted()
    const key = peer.toString()
    let link = this.#links.get(key)
    if (link == null) {
      link = { peer, pending: new Map(), waiting: [], queued: 0, silent: false }
      this.#links.set(key, link)
    }
    if (link.silent && (link.pending.size >= MAX_PUTS_IN_FLIGHT || link.opening != null)) {
      this.#drop(peer, 'peer_silent', claims.length, () => claims)
      throw new PutDroppedError(`${peer.toString()} is silent: no answer within ${this.#timeoutMs} ms`)
    }
    if (link.queued + claims.length > this.#maxQueued) {
      this.#drop(peer, 'queue_full', claims.length, () => claims)
      throw new PutDroppedError(`${link.queued} claims already wait for ${peer.toString()}`)
    }
    const l = link
    return await new Promise<PutAnswer[]>((resolve, reject) => {
      l.waiting.push({ claims, resolve, reject })
      l.queued += claims.length
      this.#pump(peer, l)
    })
  }

  /** Send what waits, while fewer than MAX_PUTS_IN_FLIGHT requests are out. */
  #pump (peer: PeerId, link: Link): void {
    if (link.waiting.length === 0 || link.pending.size >= MAX_PUTS_IN_FLIGHT) return
    if (link.stream == null || link.stream.writeStatus !== 'writable') {
      if (link.opening != null) return
      // (opened is not answered: a silent peer stays silent until it answers a request)
      this.#stream(peer, link).then(() => { this.#pump(peer, link) }, (err: Error) => {
        const waiting = link.waiting
        link.waiting = []
        this.#drop(peer, 'no_stream', link.queued, () => waiting.flatMap(w => w.claims))
        link.queued = 0
        link.silent = true
        for (const w of waiting) w.reject(err)
      })
      return
    }
    const stream = link.stream
    while (link.waiting.length > 0 && link.pending.size < MAX_PUTS_IN_FLIGHT) {
      // whole callers, up to MAX_PUT_BATCH claims (each caller has at most that many)
      const waiters: Waiter[] = []
      let count = 0
      while (link.waiting.length > 0 && count + link.waiting[0].claims.length <= MAX_PUT_BATCH) {
        const w = link.waiting.shift()!
        waiters.push(w)
        count += w.claims.length
      }
      link.queued -= count
      const id = this.#nextId++
      const timer = setTimeout(() => {
        link.pending.delete(id)
        const err = new Error(`no answer from ${peer.toString()} within ${this.#timeoutMs} ms`)
        this.#drop(peer, 'timeout', count, () => waiters.flatMap(w => w.claims))
        for (const w of waiters) w.reject(err)
        // what queued behind it fails now, not in 10 s turns of its own; the next put probes
        link.silent = true
        const behind = link.waiting
        link.waiting = []
        this.#drop(peer, 'peer_silent', link.queued, () => behind.flatMap(w => w.claims))
        link.queued = 0
        if (behind.length > 0) {
          const dropped = new PutDroppedError(`${peer.toString()} is silent: no answer within ${this.#timeoutMs} ms`)
          for (const w of behind) w.reject(dropped)
        }
      }, this.#timeoutMs)
      link.pending.set(id, { waiters, count, timer })
      this.stats.batches++
      this.stats.claims += count
      try {
        stream.send(frame([1, id, count === waiters[0].claims.length ? waiters[0].claims : waiters.flatMap(w => w.claims)]))
      } catch (err) {
        this.#fail(link, stream, err as Error)
        return
      }
    }
  }

  /** An answer came: each caller gets its share, and what waited goes out. */
  #answered (peer: PeerId, link: Link, id: number, answers: PutAnswer[]): void {
    // any answer, even to a request that timed out, says the peer is back
    if (link.silent) {
      link.silent = false
      try {
        this.#observer?.back(peer)
      } catch (err) {
        this.#log.error('put observer threw: %s', errorMessage(err))
      }
    }
    const p = link.pending.get(id)
    if (p == null) return
    link.pending.delete(id)
    clearTimeout(p.timer)
    if (answers.length !== p.count) {
      const err = new Error(`${answers.length} answers for ${p.count} claims`)
      for (const w of p.waiters) w.reject(err)
    } else {
      let at = 0
      for (const w of p.waiters) {
        w.resolve(p.waiters.length === 1 ? answers : answers.slice(at, at + w.claims.length))
        at += w.claims.length
      }
    }
    this.#pump(peer, link)
  }

  async #stream (peer: PeerId, link: Link): Promise<Stream> {
    if (link.stream != null && link.stream.writeStatus === 'writable') return link.stream
    link.opening ??= (async () => {
      try {
        const stream = await this.#libp2p.dialProtocol(peer, this.#protocol, { signal: AbortSignal.any([this.#signal, AbortSignal.timeout(this.#timeoutMs)]) })
        this.stats.streamsOpened++
        link.stream = stream
        const decoder = new LengthPrefixedDecoder({ maxDataLength: MAX_PUT_MESSAGE_BYTES, maxBufferSize: MAX_PUT_MESSAGE_BYTES * 2 })
        stream.addEventListener('message', (evt) => {
          try {
            for (const msg of decoder.decode(toBytes(evt.data))) {
              const { id, answers } = decodeResponse(msg.subarray())
              this.#answered(peer, link, id, answers)
            }
          } catch (err) {
            this.#log('bad claim-put answer from %p: %s', peer, errorMessage(err))
            this.#fail(link, stream, err as Error)
          }
        })
        stream.addEventListener('close', (evt) => { this.#fail(link, stream, evt.error ?? new Error('claim-put stream closed')) }, { once: true })
        return stream
      } finally {
        link.opening = undefined
      }
    })()
    return await link.opening
  }

  /** The stream failed: the requests on it fail; what waits goes out on a new one. */
  #fail (link: Link, stream: Stream, err: Error): void {
    if (link.stream === stream) link.stream = undefined
    for (const p of link.pending.values()) {
      clearTimeout(p.timer)
      this.#drop(link.peer, 'stream_failed', p.count, () => p.waiters.flatMap(w => w.claims))
      for (const w of p.waiters) w.reject(err)
    }
    link.pending.clear()
    if (stream.status === 'open') stream.abort(err)
    if (link.waiting.length > 0) queueMicrotask(() => { this.#pump(link.peer, link) })
  }

  /** Close every stream (the registry stopped). */
  close (): void {
    const err = new Error('stopped')
    for (const link of this.#links.values()) {
      if (link.stream != null) this.#fail(link, link.stream, err)
      for (const w of link.waiting) w.reject(err)
      link.waiting = []
      link.queued = 0
    }
    this.#links.clear()
  }
}

/**
 * The replica side: answers every request of a stream in order. `store` verifies and stores one
 * batch; a batch it cannot handle at all is answered `invalid` claim by claim. Never throws.
 */
export function putHandler (log: Logger, store: (from: PeerId, claims: Uint8Array[]) => Promise<PutAnswer[]>): (stream: Stream, connection: Connection) => void {
  return (stream, connection) => {
    const from = connection.remotePeer
    const decoder = new LengthPrefixedDecoder({ maxDataLength: MAX_PUT_MESSAGE_BYTES, maxBufferSize: MAX_PUT_MESSAGE_BYTES * 2 })
    let chain: Promise<void> = Promise.resolve()
    stream.addEventListener('message', (evt) => {
      let requests: Array<{ id: number, claims: Uint8Array[] }>
      try {
        requests = [...decoder.decode(toBytes(evt.data))].map(m => decodeRequest(m.subarray()))
      } catch (err) {
        log.error('bad claim-put request from %p: %s', from, errorMessage(err))
        stream.abort(err as Error)
        return
      }
      for (const req of requests) {
        chain = chain.then(async () => {
          let answers: PutAnswer[]
          try {
            answers = await store(from, req.claims)
          } catch (err) {
            log('claim-put batch from %p failed: %s', from, errorMessage(err))
            answers = req.claims.map(() => ({ status: PutStatus.invalid }))
          }
          if (stream.writeStatus !== 'writable') return
          try {
            stream.send(frame([1, req.id, answers.map(a => [a.status, a.other ?? null, a.age ?? null])]))
          } catch (err) {
            log('claim-put answer to %p failed: %s', from, errorMessage(err))
          }
        })
      }
    })
  }
}
