/**
 * Timer J's table (RFC 3261 17.2.2): the final responses of completed non-INVITE server
 * transactions over UDP, as sent, so that a retransmitted request gets the same bytes again for
 * 64*T1 (32 s). At 20,000 REGISTER refreshes a second that is 640,000 responses alive at once.
 *
 * Kept out of V8's heap: each entry's key and response bytes are written to an arena of memory
 * outside the heap (32 MiB, the size at which glibc's malloc always maps memory of its own, so
 * that an arena given back is given back to the system: smaller blocks would sit in malloc's heap
 * among live chunks, resident after a burst), used as a ring that starts again from its beginning
 * as soon as the oldest live entry leaves room there (the pages in use stay about twice the live
 * bytes, at any rate); when the ring is full a new arena takes the writes, and an arena whose
 * entries all expired is dropped (one kept for reuse; all given back once the table is empty).
 * What the table knows of an entry (where its bytes are, its expiry, its key's hash, its flow) sits
 * in a ring of typed arrays indexed by the entry's number. The key's 30-bit hash finds the newest
 * entry with that hash in a Map of small integers (no string, no object per entry); entries whose
 * hashes collide are chained newest first and told apart by their key bytes. Before, each entry
 * was a key string, the response as a one-byte string and an object holding them: ~500 bytes of
 * heap per REGISTER promoted to the old generation by two scavenges and traced by every full GC.
 *
 * Every entry lingers equally long, so the order of the sets is the order of expiry: one interval
 * drops expired entries from the ring's front. A key set again while it lingers is found with its
 * last bytes (the transaction layer never does that: its keys are unique while they linger); its
 * earlier entry stays counted in `size` until it expires.
 */
import { Buffer } from 'node:buffer'

/** entry numbers and hashes are 30-bit (small integers in V8: no heap number per Map entry) */
const MASK = 0x3fff_ffff
/** the size of an arena of response bytes: glibc maps blocks of 32 MiB or more (its largest mmap threshold) */
const ARENA = 32 << 20
const EMPTY = -1
/** most emptied arenas kept for reuse */
const SPARES = 1

/** FNV-1a over the key's UTF-16 code units, 30 bits */
function hashOf (key: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193)
  return (h >>> 0) & MASK
}

/** an arena: `used` is where the next entry goes, `firstN` the number of the first entry written to it */
interface Segment { readonly id: number, readonly buf: Buffer, used: number, readonly firstN: number }

export class LingeringResponses<F> {
  readonly #ms: number
  readonly #now: () => number
  /** hash → number of the newest entry with that hash */
  readonly #index = new Map<number, number>()
  // the ring: entry n's fields at n & (capacity - 1)
  #cap = 64
  #segOf = new Float64Array(64)
  #offset = new Int32Array(64)
  #keyLength = new Int32Array(64)
  #length = new Int32Array(64)
  #until = new Float64Array(64)
  #hash = new Int32Array(64)
  /** the entry before this one with the same hash (EMPTY: none) */
  #prev = new Int32Array(64)
  #flows: Array<F | undefined> = new Array<F | undefined>(64)
  /** number of the oldest entry, and how many are live from it */
  #first = 0
  #count = 0
  /** the segments that hold live entries, oldest first; the last one is written to */
  #segments: Segment[] = []
  #nextSegment = 0
  /**
   * an arena whose entries all expired, written again: a steady load then allocates no memory
   * outside the heap, which V8 counts (external memory grown by 64 MB starts a GC; a dropped arena
   * is only freed by one)
   */
  #spares: Buffer[] = []
  readonly #arena: number
  /** a key's UTF-8 bytes, to compare with an entry's */
  #scratch = Buffer.allocUnsafe(1024)
  #timer: ReturnType<typeof setInterval> | undefined

  /** `ms`: how long each entry lingers; `now`: the clock and `arenaBytes` the arenas' size (tests give their own) */
  constructor (ms: number, now: () => number = () => performance.now(), arenaBytes = ARENA) {
    this.#ms = ms
    this.#now = now
    this.#arena = arenaBytes
  }

  /** entries lingering */
  get size (): number { return this.#count }

  /** bytes of keys and responses held (outside V8's heap), the size of their segments, and of the spare ones */
  get bytes (): { used: number, reserved: number, spare: number } {
    let used = 0
    let reserved = 0
    for (const s of this.#segments) { used += s.used; reserved += s.buf.length }
    return { used, reserved, spare: this.#spares.reduce((a, b) => a + b.length, 0) }
  }

  /** keep `bytes` (copied) and `flow` under `key` for the table's time */
  set (key: string, bytes: Uint8Array, flow: F): void {
    if (this.#count === this.#cap) this.#grow()
    const h = hashOf(key)
    const room = key.length * 3 + bytes.length
    const n = (this.#first + this.#count) & MASK
    let seg = this.#segments.length === 0 ? undefined : this.#segments[this.#segments.length - 1]
    let at = seg === undefined ? -1 : this.#placeIn(seg, room)
    if (seg === undefined || at === -1) {
      const spare = room <= this.#arena ? this.#spares.pop() : undefined
      seg = { id: this.#nextSegment++, buf: spare ?? Buffer.allocUnsafeSlow(Math.max(this.#arena, room)), used: 0, firstN: n }
      this.#segments.push(seg)
      at = 0
    }
    const keyLength = seg.buf.write(key, at, 'utf8')
    seg.buf.set(bytes, at + keyLength)
    seg.used = at + keyLength + bytes.length
    const i = n & (this.#cap - 1)
    this.#segOf[i] = seg.id
    this.#offset[i] = at
    this.#keyLength[i] = keyLength
    this.#length[i] = bytes.length
    this.#until[i] = this.#now() + this.#ms
    this.#hash[i] = h
    const before = this.#index.get(h)
    this.#prev[i] = before ?? EMPTY
    this.#flows[i] = flow
    this.#index.set(h, n)
    this.#count++
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => { this.#drop() }, Math.max(10, Math.min(250, this.#ms / 8)))
      this.#timer.unref?.()
    }
  }

  /** the response kept under `key` (a copy of its bytes: the segment outlives no send) and its flow */
  get (key: string): { bytes: Buffer, flow: F } | undefined {
    if (this.#count === 0) return undefined
    const found = this.#find(key)
    if (found === EMPTY) return undefined
    const i = found & (this.#cap - 1)
    const seg = this.#segment(this.#segOf[i])
    const start = this.#offset[i] + this.#keyLength[i]
    return { bytes: Buffer.from(seg.buf.subarray(start, start + this.#length[i])), flow: this.#flows[i] as F }
  }

  has (key: string): boolean {
    return this.#count > 0 && this.#find(key) !== EMPTY
  }

  clear (): void {
    this.#index.clear()
    this.#segments = []
    this.#spares = []
    this.#first = 0
    this.#count = 0
    this.#layout(64)
    clearInterval(this.#timer)
    this.#timer = undefined
  }

  /**
   * where `room` bytes go in the arena written to (the last one), a ring: from its start again as
   * soon as its oldest live entry leaves room there, else after its last entry; -1 when full
   */
  #placeIn (seg: Segment, room: number): number {
    // the arena's oldest live entry: its first one, or the table's oldest when that one expired
    const oldest = this.#count === 0 ? EMPTY : this.#live(seg.firstN) ? seg.firstN : this.#first
    if (oldest === EMPTY) return 0
    if (this.#segOf[oldest & (this.#cap - 1)] !== seg.id) return -1
    const r = this.#offset[oldest & (this.#cap - 1)]
    const w = seg.used
    if (w > r) {
      // live from r to w: the start again once the room before r is as large as what is live (so
      // that the writes from the start have as much room ahead of them as the expiries free
      // behind them), else on after w
      if (r >= room && r >= w - r) return 0
      return seg.buf.length - w >= room ? w : -1
    }
    // wrapped: live from r to where the writes wrapped, and from the start to w
    return r - w >= room ? w : -1
  }

  /** the number of the newest live entry under `key`, or EMPTY */
  #find (key: string): number {
    let n = this.#index.get(hashOf(key))
    if (n === undefined) return EMPTY
    let keyLength = -1
    while (n !== EMPTY && this.#live(n)) {
      const i: number = n & (this.#cap - 1)
      if (keyLength === -1) {
        if (key.length * 3 > this.#scratch.length) this.#scratch = Buffer.allocUnsafe(key.length * 3)
        keyLength = this.#scratch.write(key, 0, 'utf8')
      }
      if (this.#keyLength[i] === keyLength) {
        const seg = this.#segment(this.#segOf[i])
        const at = this.#offset[i]
        if (seg.buf.compare(this.#scratch, 0, keyLength, at, at + keyLength) === 0) return n
      }
      n = this.#prev[i]
    }
    return EMPTY
  }

  /** entry `n` has not been dropped (numbers wrap at 2^30; live ones are the `count` from `first`) */
  #live (n: number): boolean {
    return ((n - this.#first) & MASK) < this.#count
  }

  #segment (id: number): Segment {
    return this.#segments[id - this.#segments[0].id]
  }

  /** twice the room: every live entry moved to its place in the larger ring */
  #grow (): void {
    this.#layout(this.#cap * 2)
  }

  #layout (cap: number): void {
    const old = { cap: this.#cap, segOf: this.#segOf, offset: this.#offset, keyLength: this.#keyLength, length: this.#length, until: this.#until, hash: this.#hash, prev: this.#prev, flows: this.#flows }
    this.#cap = cap
    this.#segOf = new Float64Array(cap)
    this.#offset = new Int32Array(cap)
    this.#keyLength = new Int32Array(cap)
    this.#length = new Int32Array(cap)
    this.#until = new Float64Array(cap)
    this.#hash = new Int32Array(cap)
    this.#prev = new Int32Array(cap)
    this.#flows = new Array<F | undefined>(cap)
    for (let k = 0; k < this.#count; k++) {
      const n = (this.#first + k) & MASK
      const from = n & (old.cap - 1)
      const to = n & (cap - 1)
      this.#segOf[to] = old.segOf[from]
      this.#offset[to] = old.offset[from]
      this.#keyLength[to] = old.keyLength[from]
      this.#length[to] = old.length[from]
      this.#until[to] = old.until[from]
      this.#hash[to] = old.hash[from]
      this.#prev[to] = old.prev[from]
      this.#flows[to] = old.flows[from]
    }
  }

  #drop (): void {
    const now = this.#now()
    while (this.#count > 0) {
      const n = this.#first
      const i = n & (this.#cap - 1)
      if (this.#until[i] > now) break
      if (this.#index.get(this.#hash[i]) === n) this.#index.delete(this.#hash[i])
      this.#flows[i] = undefined
      this.#first = (n + 1) & MASK
      this.#count--
    }
    if (this.#count > 0) {
      // the segments before the oldest live entry's hold nothing live
      const oldest = this.#segOf[this.#first & (this.#cap - 1)]
      let k = 0
      while (k < this.#segments.length && this.#segments[k].id < oldest) k++
      if (k > 0) {
        for (const dropped of this.#segments.splice(0, k)) {
          if (this.#spares.length < SPARES && dropped.buf.length === this.#arena) this.#spares.push(dropped.buf)
        }
      }
      return
    }
    // all gone: the memory of the burst given back
    clearInterval(this.#timer)
    this.#timer = undefined
    this.#segments = []
    this.#spares = []
    if (this.#cap > 1024) this.#layout(64)
  }
}
