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
import { errorMessage } from '../errors.ts'
import type { Connection, Libp2p, Logger, PeerId, Stream } from '@libp2p/interface'

export const CLAIM_PUT_PROTOCOL = '/sipmesh/claim-put/1.0.0'
/** most claims in one request */
export const MAX_PUT_BATCH = 512
/** largest message either way */
export const MAX_PUT_MESSAGE_BYTES = MAX_PUT_BATCH * (MAX_CLAIM_BYTES * 2 + 16) + 64
/** how long a request may wait for its answer */
export const PUT_TIMEOUT_MS = 10_000

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

interface Pending {
  count: number
  resolve: (answers: PutAnswer[]) => void
  reject: (err: Error) => void
  timer: ReturnType<typeof setTimeout>
}

/** The sending side: one stream per peer, opened on first use and again after it fails. */
export class PutClient {
  readonly #libp2p: Pick<Libp2p, 'dialProtocol'>
  readonly #protocol: string
  readonly #log: Logger
  readonly #links = new Map<string, { stream?: Stream, opening?: Promise<Stream>, pending: Map<number, Pending> }>()
  #nextId = 1
  #signal: AbortSignal = AbortSignal.abort()
  /** counters for metrics and tests */
  readonly stats = { batches: 0, claims: 0, streamsOpened: 0 }

  constructor (libp2p: Pick<Libp2p, 'dialProtocol'>, log: Logger, protocol = CLAIM_PUT_PROTOCOL) {
    this.#libp2p = libp2p
    this.#log = log
    this.#protocol = protocol
  }

  /** Streams may be opened until `signal` aborts. */
  start (signal: AbortSignal): void {
    this.#signal = signal
  }

  /** Send one batch (at most MAX_PUT_BATCH claims) to a peer; resolves with one answer per claim. */
  async put (peer: PeerId, claims: Uint8Array[]): Promise<PutAnswer[]> {
    if (claims.length === 0) return []
    if (claims.length > MAX_PUT_BATCH) throw new RangeError('batch too large')
    this.#signal.throwIfAborted()
    const key = peer.toString()
    let link = this.#links.get(key)
    if (link == null) {
      link = { pending: new Map() }
      this.#links.set(key, link)
    }
    const stream = await this.#stream(peer, link)
    const id = this.#nextId++
    const done = new Promise<PutAnswer[]>((resolve, reject) => {
      const timer = setTimeout(() => {
        link.pending.delete(id)
        reject(new Error(`no answer from ${key} within ${PUT_TIMEOUT_MS} ms`))
      }, PUT_TIMEOUT_MS)
      link.pending.set(id, { count: claims.length, resolve, reject, timer })
    })
    this.stats.batches++
    this.stats.claims += claims.length
    try {
      stream.send(frame([1, id, claims]))
    } catch (err) {
      this.#fail(link, stream, err as Error)
    }
    return await done
  }

  async #stream (peer: PeerId, link: { stream?: Stream, opening?: Promise<Stream>, pending: Map<number, Pending> }): Promise<Stream> {
    if (link.stream != null && link.stream.writeStatus === 'writable') return link.stream
    link.opening ??= (async () => {
      try {
        const stream = await this.#libp2p.dialProtocol(peer, this.#protocol, { signal: AbortSignal.any([this.#signal, AbortSignal.timeout(PUT_TIMEOUT_MS)]) })
        this.stats.streamsOpened++
        link.stream = stream
        const decoder = new LengthPrefixedDecoder({ maxDataLength: MAX_PUT_MESSAGE_BYTES, maxBufferSize: MAX_PUT_MESSAGE_BYTES * 2 })
        stream.addEventListener('message', (evt) => {
          try {
            for (const msg of decoder.decode(toBytes(evt.data))) {
              const { id, answers } = decodeResponse(msg.subarray())
              const p = link.pending.get(id)
              if (p == null) continue
              link.pending.delete(id)
              clearTimeout(p.timer)
              if (answers.length !== p.count) p.reject(new Error(`${answers.length} answers for ${p.count} claims`))
              else p.resolve(answers)
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

  #fail (link: { stream?: Stream, pending: Map<number, Pending> }, stream: Stream, err: Error): void {
    if (link.stream === stream) link.stream = undefined
    for (const p of link.pending.values()) {
      clearTimeout(p.timer)
      p.reject(err)
    }
    link.pending.clear()
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
