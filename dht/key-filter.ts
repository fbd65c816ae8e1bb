/**
 * A Bloom filter of the claim records a store holds, so that the claim guard can tell that a key
 * is surely absent without asking LevelDB (`ClaimGuardDatastore.putClaims`).
 *
 * Every new claim was a LevelDB read of its record's key before the write (the stale check: an
 * older claim must not replace a newer one, js-libp2p#3377). For a new AoR the read finds
 * nothing, but costs the event loop a native call per batch and the threadpool a probe of every
 * LevelDB level (no filter policy in classic-level); 5-9 µs of the event loop per new REGISTER at
 * 2,000/s (issue 9). A key the filter has never seen was never written to this store through the
 * guard, so it has no record to check against; a key it may have seen is read as before. A filter
 * answers "maybe" wrongly for about 1% of absent keys (then read: correct, only slower) and never
 * "no" for a key added, so no stale claim passes.
 *
 * Scalable (Almeida et al., "Scalable Bloom Filters", 2007, in its simplest form): layers of
 * growing capacity, a new one when the newest is full, so the false-positive rate stays near 1%
 * whatever the store holds. About 10 bits (1.25 bytes) per key. Deleted keys stay in (a "maybe").
 */

/** bits per key and hash functions for ~1% false positives (m/n = 9.6, k = 7) */
const BITS_PER_KEY = 10
const HASHES = 7
const FIRST_CAPACITY = 65_536

class Layer {
  readonly bits: Uint32Array
  readonly mask: number
  readonly capacity: number
  count = 0

  constructor (capacity: number) {
    // a power of two of bits, so that an index is a mask
    let size = 32
    while (size < capacity * BITS_PER_KEY) size *= 2
    this.bits = new Uint32Array(size / 32)
    this.mask = size - 1
    this.capacity = capacity
  }

  add (h1: number, h2: number): void {
    for (let i = 0; i < HASHES; i++) {
      const b = (h1 + Math.imul(i, h2)) & this.mask
      this.bits[b >>> 5] |= 1 << (b & 31)
    }
    this.count++
  }

  has (h1: number, h2: number): boolean {
    for (let i = 0; i < HASHES; i++) {
      const b = (h1 + Math.imul(i, h2)) & this.mask
      if ((this.bits[b >>> 5] & (1 << (b & 31))) === 0) return false
    }
    return true
  }
}

/** the two hashes of the last `hash` call (no array per key) */
let h1 = 0
let h2 = 0

/** two 32-bit hashes of a string's UTF-16 code units (FNV-1a and a multiplicative one), from `from`, into h1 and h2 */
function hash (s: string, from: number): void {
  let a = 0x811c9dc5
  let b = 0x9747b28c
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i)
    a = Math.imul(a ^ c, 0x01000193)
    b = Math.imul(b ^ c, 0x5bd1e995)
    b ^= b >>> 15
  }
  h1 = a >>> 0
  // the second hash odd: the probes of a key never collapse onto one bit
  h2 = (b | 1) >>> 0
}

export class KeyFilter {
  readonly #layers: Layer[] = []
  /** where the hashed part of a key starts (the common prefix adds nothing) */
  readonly #skip: number

  constructor (init: { skipPrefix?: number, capacity?: number } = {}) {
    this.#skip = init.skipPrefix ?? 0
    this.#layers.push(new Layer(init.capacity ?? FIRST_CAPACITY))
  }

  /** keys added (one the filter already answered "maybe" for is not added again, nor counted) */
  get size (): number {
    let n = 0
    for (const l of this.#layers) n += l.count
    return n
  }

  /** bytes of bit arrays held */
  get bytes (): number {
    let n = 0
    for (const l of this.#layers) n += l.bits.byteLength
    return n
  }

  add (key: string): void {
    hash(key, this.#skip)
    if (this.#has(h1, h2)) return
    let last = this.#layers[this.#layers.length - 1]
    if (last.count >= last.capacity) {
      last = new Layer(last.capacity * 2)
      this.#layers.push(last)
    }
    last.add(h1, h2)
  }

  /** false: the key was surely never added; true: it may have been */
  mightHold (key: string): boolean {
    hash(key, this.#skip)
    return this.#has(h1, h2)
  }

  #has (a: number, b: number): boolean {
    for (let i = this.#layers.length - 1; i >= 0; i--) if (this.#layers[i].has(a, b)) return true
    return false
  }
}
