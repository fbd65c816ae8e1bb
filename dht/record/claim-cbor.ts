/**
 * The claim's CBOR, written out for its one shape (see claim.ts for the format):
 *
 *     envelope = [ payload: bytes, signature: bytes ]
 *     payload  = [ 2, kind: text, aor: text, owner: bytes, sip: text, version: int,
 *                  issuedAt: uint, expiresAt: uint, knownUntil: uint ]
 *
 * Why not cborg's generic `encode`/`decode`: every claim signed, every claim a replica stores,
 * every stored record the guard compares, went through it twice (two nested levels), and a
 * decode was followed by two canonical re-encodes to refuse any other encoding of the same
 * values; a token list and a byte list per call, about 15 µs of a claim's ~100 µs (issue 9).
 * This codec is strict by construction: it accepts only the canonical form cborg's deterministic
 * encoding produces (definite lengths, the shortest head for every length and integer, valid
 * UTF-8, nothing after the envelope), so a decoded claim needs no re-encode; anything else is
 * refused with a reason. The tests keep cborg as the reference: byte-identical output over many
 * random claims, and refusal of every non-canonical or malformed input.
 */

/** The fields of a payload as they are on the wire (checked further by claim.ts). */
export interface RawPayload {
  format: number
  kind: string
  aor: string
  owner: Uint8Array
  sip: string
  version: bigint
  issuedAt: number
  expiresAt: number
  knownUntil: number
}

/** Where the parts of an envelope lie in its bytes. */
export interface EnvelopeParts {
  payloadAt: number
  payloadEnd: number
  signatureAt: number
}

/** Thrown for input that is not the canonical claim shape; claim.ts turns it into InvalidClaimError. */
export class ClaimCborError extends Error {
  static readonly NAME = 'ClaimCborError'
  override readonly name = ClaimCborError.NAME
}

const MAJOR_UINT = 0
const MAJOR_NEGINT = 1
const MAJOR_BYTES = 2
const MAJOR_TEXT = 3
const MAJOR_ARRAY = 4

// ------------------------------------------------------------------ encoding

/** The length of a head for `n` (a length or an unsigned integer). */
function headLength (n: number | bigint): number {
  if (n < 24) return 1
  if (n <= 0xff) return 2
  if (n <= 0xffff) return 3
  if (n <= 0xffffffff) return 5
  return 9
}

function writeHead (out: Uint8Array, at: number, major: number, n: number | bigint): number {
  const m = major << 5
  if (n < 24) {
    out[at] = m | Number(n)
    return at + 1
  }
  if (n <= 0xff) {
    out[at] = m | 24
    out[at + 1] = Number(n)
    return at + 2
  }
  if (n <= 0xffff) {
    const v = Number(n)
    out[at] = m | 25
    out[at + 1] = v >>> 8
    out[at + 2] = v & 0xff
    return at + 3
  }
  if (n <= 0xffffffff) {
    const v = Number(n)
    out[at] = m | 26
    out[at + 1] = v >>> 24
    out[at + 2] = (v >>> 16) & 0xff
    out[at + 3] = (v >>> 8) & 0xff
    out[at + 4] = v & 0xff
    return at + 5
  }
  const v = BigInt(n)
  const hi = Number(v >> 32n)
  const lo = Number(v & 0xffffffffn)
  out[at] = m | 27
  out[at + 1] = hi >>> 24
  out[at + 2] = (hi >>> 16) & 0xff
  out[at + 3] = (hi >>> 8) & 0xff
  out[at + 4] = hi & 0xff
  out[at + 5] = lo >>> 24
  out[at + 6] = (lo >>> 16) & 0xff
  out[at + 7] = (lo >>> 8) & 0xff
  out[at + 8] = lo & 0xff
  return at + 9
}

const utf8 = new TextEncoder()

/** A string's UTF-8 bytes: ASCII (every AoR and address that passes the checks) without a copy. */
function textBytes (s: string): Uint8Array | string {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return utf8.encode(s)
  return s
}

function textLength (t: Uint8Array | string): number {
  return t.length
}

function writeText (out: Uint8Array, at: number, t: Uint8Array | string): number {
  at = writeHead(out, at, MAJOR_TEXT, t.length)
  if (typeof t === 'string') {
    for (let i = 0; i < t.length; i++) out[at + i] = t.charCodeAt(i)
  } else {
    out.set(t, at)
  }
  return at + t.length
}

function checkUint (v: number | bigint, what: string): void {
  if (typeof v === 'bigint' ? v < 0n || v > 0xffffffffffffffffn : !Number.isSafeInteger(v) || v < 0) {
    throw new ClaimCborError(`${what} is not an unsigned integer`)
  }
}

/**
 * The canonical payload bytes of a claim's fields; after `prefix` in the same bytes when given (the
 * signed message is the signing domain then the payload: one allocation for both, the payload a
 * view of its end).
 */
export function encodePayload (p: RawPayload, prefix?: Uint8Array): Uint8Array {
  checkUint(p.version, 'version')
  checkUint(p.issuedAt, 'issuedAt')
  checkUint(p.expiresAt, 'expiresAt')
  checkUint(p.knownUntil, 'knownUntil')
  checkUint(p.format, 'format')
  const kind = textBytes(p.kind)
  const aor = textBytes(p.aor)
  const sip = textBytes(p.sip)
  const size = 1 + headLength(p.format) +
    headLength(textLength(kind)) + textLength(kind) +
    headLength(textLength(aor)) + textLength(aor) +
    headLength(p.owner.length) + p.owner.length +
    headLength(textLength(sip)) + textLength(sip) +
    headLength(p.version) + headLength(p.issuedAt) + headLength(p.expiresAt) + headLength(p.knownUntil)
  const skip = prefix?.length ?? 0
  const out = new Uint8Array(skip + size)
  if (prefix != null) out.set(prefix, 0)
  let at = writeHead(out, skip, MAJOR_ARRAY, 9)
  at = writeHead(out, at, MAJOR_UINT, p.format)
  at = writeText(out, at, kind)
  at = writeText(out, at, aor)
  at = writeHead(out, at, MAJOR_BYTES, p.owner.length)
  out.set(p.owner, at)
  at += p.owner.length
  at = writeText(out, at, sip)
  at = writeHead(out, at, MAJOR_UINT, p.version)
  at = writeHead(out, at, MAJOR_UINT, p.issuedAt)
  at = writeHead(out, at, MAJOR_UINT, p.expiresAt)
  writeHead(out, at, MAJOR_UINT, p.knownUntil)
  return out
}

/** The canonical envelope `[payload, signature]`. */
export function encodeEnvelope (payload: Uint8Array, signature: Uint8Array): Uint8Array {
  const out = new Uint8Array(envelopeLength(payload.length, signature.length))
  writeEnvelope(out, 0, payload, signature)
  return out
}

/** The length of the envelope of a payload and a signature of these lengths. */
export function envelopeLength (payloadLength: number, signatureLength: number): number {
  return 1 + headLength(payloadLength) + payloadLength + headLength(signatureLength) + signatureLength
}

/** Write the envelope `[payload, signature]` into `out` at `at` (room for `envelopeLength`). */
export function writeEnvelope (out: Uint8Array, at: number, payload: Uint8Array, signature: Uint8Array): void {
  at = writeHead(out, at, MAJOR_ARRAY, 2)
  at = writeHead(out, at, MAJOR_BYTES, payload.length)
  out.set(payload, at)
  at += payload.length
  at = writeHead(out, at, MAJOR_BYTES, signature.length)
  out.set(signature, at)
}

// ------------------------------------------------------------------ decoding

/** A cursor over bytes that reads canonical heads only. */
class Reader {
  at: number
  readonly #bytes: Uint8Array
  readonly #end: number

  constructor (bytes: Uint8Array, at: number, end: number) {
    this.#bytes = bytes
    this.at = at
    this.#end = end
  }

  get done (): boolean {
    return this.at >= this.#end
  }

  /** The major type of the next item, without consuming it (-1 at the end). */
  peekMajor (): number {
    return this.at < this.#end ? this.#bytes[this.at] >> 5 : -1
  }

  /**
   * A head of the given major type; its argument as a number (lengths, and integers up to 2^53)
   * or a bigint above that. Non-shortest forms, indefinite lengths and the reserved values are refused.
   */
  head (major: number, what: string): number | bigint {
    const b = this.#bytes
    if (this.at >= this.#end) throw new ClaimCborError(`${what}: unexpected end of input`)
    const first = b[this.at]
    if (first >> 5 !== major) throw new ClaimCborError(`${what}: not ${MAJOR_NAMES[major]}`)
    const info = first & 31
    this.at++
    if (info < 24) return info
    const size = info === 24 ? 1 : info === 25 ? 2 : info === 26 ? 4 : info === 27 ? 8 : 0
    if (size === 0) throw new ClaimCborError(`${what}: ${info === 31 ? 'indefinite length' : 'reserved head'}`)
    if (this.at + size > this.#end) throw new ClaimCborError(`${what}: unexpected end of input`)
    let v: number | bigint
    if (size === 8) {
      const hi = (b[this.at] * 2 ** 24) + (b[this.at + 1] << 16 | b[this.at + 2] << 8 | b[this.at + 3])
      const lo = (b[this.at + 4] * 2 ** 24) + (b[this.at + 5] << 16 | b[this.at + 6] << 8 | b[this.at + 7])
      v = hi < 0x200000 ? hi * 2 ** 32 + lo : (BigInt(hi) << 32n) | BigInt(lo)
      if (hi === 0) throw new ClaimCborError(`${what}: not in its shortest form`)
    } else {
      let n = 0
      for (let i = 0; i < size; i++) n = n * 256 + b[this.at + i]
      v = n
      if (n < (size === 1 ? 24 : size === 2 ? 0x100 : 0x10000)) throw new ClaimCborError(`${what}: not in its shortest form`)
    }
    this.at += size
    return v
  }

  length (major: number, what: string, max: number): number {
    const n = this.head(major, what)
    if (typeof n !== 'number' || n > max || this.at + n > this.#end) throw new ClaimCborError(`${what}: length out of bounds`)
    return n
  }

  bytes (what: string, max: number): Uint8Array {
    const n = this.length(MAJOR_BYTES, what, max)
    const v = this.#bytes.subarray(this.at, this.at + n)
    this.at += n
    return v
  }

  text (what: string, max: number): string {
    const n = this.length(MAJOR_TEXT, what, max)
    const b = this.#bytes
    const start = this.at
    this.at += n
    let ascii = true
    for (let i = start; i < start + n; i++) {
      if (b[i] > 0x7f) {
        ascii = false
        break
      }
    }
    if (ascii) return String.fromCharCode.apply(null, b.subarray(start, start + n) as unknown as number[])
    try {
      return strictUtf8.decode(b.subarray(start, start + n))
    } catch {
      throw new ClaimCborError(`${what}: not valid UTF-8`)
    }
  }

  uint (what: string): number | bigint {
    return this.head(MAJOR_UINT, what)
  }
}

const MAJOR_NAMES = ['an unsigned integer', 'a negative integer', 'bytes', 'text', 'an array', 'a map', 'a tag', 'a simple value or float']
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/**
 * Split an envelope into payload and signature (offsets into `bytes`). Throws ClaimCborError when
 * the bytes are not exactly one canonical `[bytes, bytes]`.
 */
export function decodeEnvelope (bytes: Uint8Array, maxSignature: number): EnvelopeParts {
  const r = new Reader(bytes, 0, bytes.length)
  if (r.peekMajor() !== MAJOR_ARRAY) throw new ClaimCborError('envelope: not an array')
  if (r.head(MAJOR_ARRAY, 'envelope') !== 2) throw new ClaimCborError('envelope: not two items')
  if (r.peekMajor() !== MAJOR_BYTES) throw new ClaimCborError('envelope: payload is not bytes')
  const payloadLength = r.length(MAJOR_BYTES, 'payload', bytes.length)
  const payloadAt = r.at
  r.at += payloadLength
  if (r.peekMajor() !== MAJOR_BYTES) throw new ClaimCborError('envelope: signature is not bytes')
  const signatureLength = r.length(MAJOR_BYTES, 'signature', maxSignature)
  const signatureAt = r.at
  r.at += signatureLength
  if (!r.done) throw new ClaimCborError('envelope: bytes after its end')
  return { payloadAt, payloadEnd: payloadAt + payloadLength, signatureAt }
}

/**
 * Read a payload (`bytes[at, end)`). Throws ClaimCborError, whose message names the field, when it
 * is not one canonical 9-item array of the claim's types.
 */
export function decodePayload (bytes: Uint8Array, at: number, end: number): RawPayload {
  const r = new Reader(bytes, at, end)
  if (r.peekMajor() !== MAJOR_ARRAY) throw new ClaimCborError('payload: not an array')
  const items = r.head(MAJOR_ARRAY, 'payload')
  if (items !== 9) throw new ClaimCborError('payload: not a 9-field array')
  const format = r.uint('format')
  const kind = r.text('kind', end - at)
  const aor = r.text('aor', end - at)
  const owner = r.bytes('owner', end - at)
  const sip = r.text('sip', end - at)
  // a negative version is read (the canonical form of a negative integer) and refused by the
  // field checks, as the cborg decoder before this one did
  const version = r.peekMajor() === MAJOR_NEGINT ? -1n - BigInt(r.head(MAJOR_NEGINT, 'version')) : BigInt(r.uint('version'))
  const issuedAt = r.uint('issuedAt')
  const expiresAt = r.uint('expiresAt')
  const knownUntil = r.uint('knownUntil')
  if (!r.done) throw new ClaimCborError('payload: bytes after its end')
  return {
    format: typeof format === 'number' ? format : -1,
    kind,
    aor,
    owner,
    sip,
    version,
    issuedAt: timestamp(issuedAt, 'issuedAt'),
    expiresAt: timestamp(expiresAt, 'expiresAt'),
    knownUntil: timestamp(knownUntil, 'knownUntil')
  }
}

function timestamp (v: number | bigint, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw new ClaimCborError(`${what} is not a timestamp`)
  return v
}
