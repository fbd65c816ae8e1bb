/**
 * Nonces without server state (RFC 7616 3.3 leaves the construction to the server; its
 * suggestion is "time-stamp H(time-stamp ":" ETag ":" secret-data)"), and the nonce-count
 * record that refuses replays (RFC 7616 3.4, 5.5).
 *
 *     nonce = base64url( issued-at (6 bytes, ms) | random (6 bytes) | HMAC-SHA256(key, those 12 bytes | realm)[0..16] )
 *
 * The key is random per node and per run, so a nonce is good only at the node that issued it, for
 * the realm it was issued for, and for `lifetimeMs`. A node restart or a user agent moving to
 * another node costs one extra round trip: its old nonce fails the HMAC, and if its response was
 * otherwise right it is re-challenged with `stale=true`, which user agents answer without asking
 * the user again.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'

const MAC_BYTES = 16
const NONCE_BYTES = 6 + 6 + MAC_BYTES

export interface NonceInit {
  /** HMAC key. @default 32 random bytes */
  key?: Uint8Array
  /** how long a nonce is accepted after it was issued, ms. @default 300000 (5 minutes) */
  lifetimeMs?: number
  /** the clock (tests). @default Date.now */
  now?: () => number
}

export type NonceCheck =
  /** ours, for this realm, within its lifetime */
  | { valid: true, issuedAt: number }
  /** not one of ours (other node, other run, other realm, forged) or expired: challenge again, stale */
  | { valid: false }

export class NonceFactory {
  readonly #key: Uint8Array
  readonly lifetimeMs: number
  readonly #now: () => number

  constructor (init: NonceInit = {}) {
    this.#key = init.key ?? randomBytes(32)
    this.lifetimeMs = init.lifetimeMs ?? 300_000
    this.#now = init.now ?? Date.now
  }

  now (): number { return this.#now() }

  /** a new nonce for `realm` */
  issue (realm: string): string {
    const b = Buffer.alloc(NONCE_BYTES)
    b.writeUIntBE(Math.max(0, Math.floor(this.#now())), 0, 6)
    randomBytes(6).copy(b, 6)
    this.#mac(b.subarray(0, 12), realm).copy(b, 12)
    return b.toString('base64url')
  }

  check (nonce: string, realm: string): NonceCheck {
    if (nonce.length !== Math.ceil(NONCE_BYTES * 4 / 3) || !/^[A-Za-z0-9_-]+$/.test(nonce)) return { valid: false }
    const b = Buffer.from(nonce, 'base64url')
    if (b.length !== NONCE_BYTES) return { valid: false }
    if (!timingSafeEqual(this.#mac(b.subarray(0, 12), realm), b.subarray(12))) return { valid: false }
    const issuedAt = b.readUIntBE(0, 6)
    const age = this.#now() - issuedAt
    // a nonce from the future means the clock stepped back: allow a minute of it
    if (age > this.lifetimeMs || age < -60_000) return { valid: false }
    return { valid: true, issuedAt }
  }

  #mac (head: Uint8Array, realm: string): Buffer {
    return createHmac('sha256', this.#key).update(head).update(realm, 'utf8').digest().subarray(0, MAC_BYTES)
  }
}

export interface NonceCountInit {
  /** nonces tracked at most (~150 bytes each). @default 100000 */
  maxNonces?: number
  /**
   * how far below the highest nc seen a late nc is still accepted once (requests sent in parallel
   * with one nonce can arrive out of order, over UDP or on different connections); 0 to 32.
   * @default 32
   */
  window?: number
}

interface Seen {
  issuedAt: number
  /** highest nc accepted */
  max: number
  /** bit k set: nc max-1-k was accepted */
  below: number
}

/**
 * Which nonce-counts were used with each nonce (RFC 7616 5.5: "the server [...] can detect the
 * replay by remembering the nc values"). Memory is bounded: entries go when their nonce expires,
 * and when more than `maxNonces` nonces are in use the least recently first-used is forgotten;
 * every nonce issued no later than a forgotten one is then refused (`use` returns false), so a
 * forgotten nonce can never be replayed, only re-challenged.
 */
export class NonceCounts {
  readonly #seen = new Map<string, Seen>()
  readonly #max: number
  readonly #window: number
  /** nonces issued at or before this (ms) that are not tracked were forgotten */
  #floor = -1
  #sweptAt = 0

  constructor (init: NonceCountInit = {}) {
    this.#max = Math.max(1, init.maxNonces ?? 100_000)
    this.#window = Math.min(32, Math.max(0, init.window ?? 32))
  }

  get size (): number { return this.#seen.size }

  /**
   * Record `nc` for `nonce` (a valid nonce issued at `issuedAt`); false when it was already used
   * (a replay), when it is too far below the highest seen, or when the nonce was forgotten.
   * `now` and `lifetimeMs` let expired entries go.
   */
  use (nonce: string, issuedAt: number, nc: number, now: number, lifetimeMs: number): boolean {
    if (!Number.isSafeInteger(nc) || nc < 1) return false
    const s = this.#seen.get(nonce)
    if (s === undefined) {
      if (issuedAt <= this.#floor) return false
      this.#sweep(now, lifetimeMs)
      while (this.#seen.size >= this.#max) {
        const [oldest, entry] = this.#seen.entries().next().value as [string, Seen]
        this.#seen.delete(oldest)
        if (entry.issuedAt > this.#floor) this.#floor = entry.issuedAt
        if (issuedAt <= this.#floor) return false
      }
      this.#seen.set(nonce, { issuedAt, max: nc, below: 0 })
      return true
    }
    if (nc > s.max) {
      const shift = nc - s.max
      // the old max becomes "seen, shift-1 below the new max"
      s.below = shift > 32 ? 0 : shift === 32 ? (1 << 31) >>> 0 : (((s.below << shift) | (1 << (shift - 1))) >>> 0)
      s.max = nc
      return true
    }
    if (nc === s.max) return false
    const k = s.max - 1 - nc
    if (k >= this.#window) return false
    const bit = (1 << k) >>> 0
    if ((s.below & bit) !== 0) return false
    s.below = (s.below | bit) >>> 0
    return true
  }

  /** drop entries whose nonce expired (at most once a second, in insertion order) */
  #sweep (now: number, lifetimeMs: number): void {
    if (now - this.#sweptAt < 1000 && this.#seen.size < this.#max) return
    this.#sweptAt = now
    for (const [nonce, s] of this.#seen) {
      if (now - s.issuedAt > lifetimeMs) this.#seen.delete(nonce)
    }
  }
}
