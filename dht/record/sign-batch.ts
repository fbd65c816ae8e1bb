/**
 * Ed25519 signatures in batches on one thread of the process's own (`sign-worker.ts`).
 *
 * A new registration's claim is signed off the event loop. One libuv threadpool job per claim
 * (node:crypto's callback form) cost the event loop a job, a callback and a Buffer per claim, and
 * woke a pool thread per claim; under new-REGISTER load the signatures were still the largest
 * share of the loop's busy time (issue 9). Here the signatures asked for in one turn of the event
 * loop go to the signing thread as one message (the messages back to back in one transferred
 * buffer) and come back as one: per claim the loop only copies its message in and 64 bytes out.
 * One batch is out at a time: what is asked for meanwhile makes the next, so the batches grow
 * with the load (one message per REGISTER at a few thousand a second was still 12% of the loop).
 * Each claim still carries its own signature (Ed25519 is deterministic: the bytes are those of a
 * one-by-one signature).
 *
 * One thread per process, started on first use and not holding the process open while idle. When
 * it cannot start or fails, the signatures are made on the threadpool as before. The thread signs
 * with libsodium when the optional `sodium-native` package is installed (half the CPU per
 * signature, sign-worker.ts), with Node's crypto otherwise.
 */
import { sign } from 'node:crypto'
import { Worker } from 'node:worker_threads'
import type { KeyObject } from 'node:crypto'

/** most messages in one batch (~7 ms of signing): a large burst is cut in several */
const MAX_BATCH = 256

/** the library that signs with a key on the thread (sign-worker.ts) */
export type Signer = 'libsodium' | 'node:crypto'

/** the thread's messages (sign-worker.ts) */
type ThreadMessage = { key: number, signer: Signer } | { id: number, signatures?: ArrayBuffer, error?: string }

interface Request {
  key: KeyObject
  message: Uint8Array
  resolve: (signature: Uint8Array) => void
  reject: (err: Error) => void
}

/** the threadpool, one job per signature: the fallback */
async function signOnThreadpool (key: KeyObject, message: Uint8Array): Promise<Uint8Array> {
  return await new Promise((resolve, reject) => {
    sign(null, message, key, (err, sig) => {
      if (err != null) reject(err)
      else resolve(new Uint8Array(sig.buffer, sig.byteOffset, sig.byteLength))
    })
  })
}

function settleOnThreadpool (r: Request): void {
  signOnThreadpool(r.key, r.message).then(r.resolve, r.reject)
}

class SigningThread {
  #worker?: Worker
  #failed = false
  readonly #keys = new Map<KeyObject, number>()
  /** what the thread signs with, by key id (it tells once it has the key) */
  readonly #signers = new Map<number, Signer>()
  #queue: Request[] = []
  #scheduled = false
  readonly #inFlight = new Map<number, Request[]>()
  #nextId = 1
  /** counters for tests and benchmarks */
  readonly stats = { batches: 0, signatures: 0, fallbacks: 0 }

  /** Never throws: a failure rejects. (Not async: one promise per signature, not two.) */
  sign (key: KeyObject, message: Uint8Array): Promise<Uint8Array> {
    if (this.#failed) {
      this.stats.fallbacks++
      return signOnThreadpool(key, message)
    }
    return new Promise((resolve, reject) => {
      this.#queue.push({ key, message, resolve, reject })
      if (!this.#scheduled && this.#inFlight.size === 0) {
        this.#scheduled = true
        // the rest of this turn's signatures join the batch
        setImmediate(() => { this.#flush() })
      }
    })
  }

  /**
   * Start the thread now: loading it takes a few hundred ms (its module is compiled on a loaded
   * machine too), which the first claims would otherwise wait for (the first REGISTERs a node
   * answered after start were the slowest of a ladder, issue 9).
   */
  prepare (): void {
    this.#start()
  }

  /**
   * The library the thread signs with `key` (tests, benchmarks): undefined until the thread has
   * had a batch for that key and told.
   */
  signerOf (key: KeyObject): Signer | undefined {
    const id = this.#keys.get(key)
    return id == null ? undefined : this.#signers.get(id)
  }

  /** whether the thread was started (tests) */
  get started (): boolean {
    return this.#worker != null
  }

  #start (): Worker | undefined {
    if (this.#worker != null || this.#failed) return this.#worker
    try {
      const w = new Worker(new URL('./sign-worker.ts', import.meta.url))
      w.on('message', (m: ThreadMessage) => {
        if ('signer' in m) this.#signers.set(m.key, m.signer)
        else this.#answer(m)
      })
      w.on('error', (err) => { this.#fail(err) })
      w.on('exit', (code) => { this.#fail(new Error(`signing thread exited (${code})`)) })
      // after the listeners: a 'message' listener refs the worker again, and an idle thread must
      // not hold the process open (a node or test that never signs would never exit)
      w.unref()
      this.#worker = w
    } catch {
      this.#failed = true
    }
    return this.#worker
  }

  #flush (): void {
    this.#scheduled = false
    const queue = this.#queue
    this.#queue = []
    const w = this.#start()
    if (w == null) {
      for (const r of queue) settleOnThreadpool(r)
      this.stats.fallbacks += queue.length
      return
    }
    // a batch per key (a process holds one key, or a few in tests), at most MAX_BATCH each
    const byKey = new Map<KeyObject, Request[]>()
    for (const r of queue) {
      let list = byKey.get(r.key)
      if (list == null) byKey.set(r.key, list = [])
      list.push(r)
    }
    for (const [key, list] of byKey) {
      let keyId = this.#keys.get(key)
      if (keyId == null) {
        keyId = this.#keys.size + 1
        this.#keys.set(key, keyId)
        w.postMessage({ key: keyId, object: key })
      }
      for (let i = 0; i < list.length; i += MAX_BATCH) {
        const batch = list.slice(i, i + MAX_BATCH)
        try {
          this.#post(w, keyId, batch)
        } catch {
          for (const r of batch) settleOnThreadpool(r)
        }
      }
    }
  }

  #post (w: Worker, keyId: number, batch: Request[]): void {
    let size = 0
    for (const r of batch) size += r.message.byteLength
    const data = new Uint8Array(size)
    const ends = new Uint32Array(batch.length)
    let at = 0
    batch.forEach((r, i) => {
      data.set(r.message, at)
      at += r.message.byteLength
      ends[i] = at
    })
    const id = this.#nextId++
    // held open while a batch is out (a script awaiting a signature must not exit meanwhile)
    if (this.#inFlight.size === 0) w.ref()
    this.#inFlight.set(id, batch)
    try {
      w.postMessage({ id, key: keyId, data: data.buffer, ends }, [data.buffer])
    } catch (err) {
      this.#inFlight.delete(id)
      if (this.#inFlight.size === 0) w.unref()
      throw err
    }
    this.stats.batches++
    this.stats.signatures += batch.length
  }

  #answer (m: { id: number, signatures?: ArrayBuffer, error?: string }): void {
    const batch = this.#inFlight.get(m.id)
    if (batch == null) return
    this.#inFlight.delete(m.id)
    if (this.#inFlight.size === 0) this.#worker?.unref()
    if (m.signatures == null || m.signatures.byteLength !== batch.length * 64) {
      // a batch the thread could not sign: each claim on the threadpool, which reports its own error
      for (const r of batch) settleOnThreadpool(r)
      if (this.#queue.length > 0 && !this.#scheduled) this.#flush()
      return
    }
    const sigs = new Uint8Array(m.signatures)
    batch.forEach((r, i) => { r.resolve(sigs.subarray(i * 64, i * 64 + 64)) })
    // what was asked for meanwhile goes out now, as one batch
    if (this.#queue.length > 0 && !this.#scheduled) this.#flush()
  }

  /** The thread failed or exited: what it held is signed on the threadpool, and so is what follows. */
  #fail (_err: Error): void {
    this.#failed = true
    this.#worker = undefined
    for (const batch of this.#inFlight.values()) for (const r of batch) settleOnThreadpool(r)
    this.#inFlight.clear()
    const queue = this.#queue
    this.#queue = []
    for (const r of queue) settleOnThreadpool(r)
  }
}

/** The process's signing thread. */
export const signingThread = new SigningThread()
