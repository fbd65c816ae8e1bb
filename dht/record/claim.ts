/**
 * The claim record: format, deterministic encoding, signing, verification, DHT key and order.
 *
 * Wire format (CBOR in cborg's deterministic encoding, both levels are arrays; written and read
 * by `claim-cbor.ts`, which accepts that canonical form only):
 *
 *     envelope = [ payload: bytes, signature: bytes ]
 *     payload  = [ 2 (format), kind ("claim" | "release"), aor, owner (peer id multihash bytes),
 *                  sip ("host:port", "" for a release), version (uint), issuedAt (ms),
 *                  expiresAt (ms), knownUntil (ms) ]
 *
 * `expiresAt` ends the *lease*: the route is valid until then (a claim's lease is renewed by its
 * owner while the user has bindings). `knownUntil` (>= expiresAt) ends the record's *retention*:
 * until then every node keeps the record, so the mesh knows the user registered recently (offline
 * IM stores messages for such a user) even after a release, with no second record per user.
 *
 * The signature is the owner's Ed25519 signature over `CLAIM_SIGNING_DOMAIN || payload`, so a
 * claim signature can never be replayed as some other libp2p signature. The owner's public key is
 * inside its (identity-hashed) peer id, so verification needs nothing but the record.
 */
import { decodeEnvelope, decodePayload, encodePayload, envelopeLength, writeEnvelope } from './claim-cbor.ts'
import type { EnvelopeParts, RawPayload } from './claim-cbor.ts'
import { peerIdFromMultihash, peerIdFromPrivateKey } from '@libp2p/peer-id'
import * as Digest from 'multiformats/hashes/digest'
import { base32, sha256 } from './digest.ts'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { fromString as uint8ArrayFromString } from 'uint8arrays/from-string'
import { concat as uint8ArrayConcat } from 'uint8arrays/concat'
import { equals as uint8ArrayEquals } from 'uint8arrays/equals'
import { compare as uint8ArrayCompare } from 'uint8arrays/compare'
import { ExpiredClaimError, InvalidAorError, InvalidClaimError, errorMessage } from '../errors.ts'
import { Ed25519Signer, OwnerCache, verifyEd25519 } from './keys.ts'
import type { PeerId, PrivateKey } from '@libp2p/interface'

/** the multihash code of SHA-256 */
const sha256Code = 0x12

/** First segment of every claim key: kad-dht picks our validator and selector by it. */
export const CLAIM_NAMESPACE = 'sipmesh'
export const CLAIM_KEY_PREFIX = `/${CLAIM_NAMESPACE}/`
/** Domain separation of the signed bytes. */
export const CLAIM_SIGNING_DOMAIN = uint8ArrayFromString('sipmesh-claim-v1\n')
export const CLAIM_FORMAT = 2
/** Largest encoded claim accepted anywhere (envelope bytes). */
export const MAX_CLAIM_BYTES = 1024
/** Longest AoR accepted. */
export const MAX_AOR_LENGTH = 256
/** Longest claim lifetime accepted (expiresAt - issuedAt). */
export const MAX_CLAIM_LIFETIME_MS = 31 * 24 * 3600 * 1000
/** How far in the future issuedAt may be (clock skew between nodes). */
export const MAX_CLOCK_SKEW_MS = 5 * 60 * 1000

export const ClaimKind = {
  claim: 'claim',
  release: 'release'
} as const
export type ClaimKind = typeof ClaimKind[keyof typeof ClaimKind]

export interface ClaimFields {
  kind: ClaimKind
  /** normalized AoR */
  aor: string
  /** owner peer id */
  owner: PeerId
  /** owner's SIP address `host:port`; empty for a release */
  sip: string
  version: bigint
  issuedAt: number
  /** end of the lease: the route is void afterwards */
  expiresAt: number
  /** end of the record's retention (>= expiresAt): the user counts as known to the mesh until then */
  knownUntil: number
}

/**
 * A decoded or freshly signed claim. It keeps where its envelope lies in a shared slab; `bytes`,
 * `payload` and `signature` are views cut on demand (three typed-array objects, ~100 bytes each,
 * less per claim a node keeps: own claims and its cache of resolved routes, 100,000s of them).
 */
class Claim implements SignedClaim {
  readonly kind: ClaimKind
  readonly aor: string
  readonly owner: PeerId
  readonly sip: string
  readonly version: bigint
  readonly issuedAt: number
  readonly expiresAt: number
  readonly knownUntil: number
  /** the slab holding the envelope (see slabClaim), and where: no view object per claim */
  readonly #slab: Uint8Array
  readonly #at: number
  readonly #end: number
  readonly #payloadAt: number
  readonly #payloadEnd: number
  readonly #signatureAt: number

  constructor (f: ClaimFields, slab: Uint8Array, at: number, length: number, payloadLength: number, signatureLength: number) {
    this.kind = f.kind
    this.aor = f.aor
    this.owner = f.owner
    this.sip = f.sip
    this.version = f.version
    this.issuedAt = f.issuedAt
    this.expiresAt = f.expiresAt
    this.knownUntil = f.knownUntil
    this.#slab = slab
    this.#at = at
    this.#end = at + length
    // canonical CBOR: [payload, signature] = 0x82, bstr header + payload, bstr header + signature
    this.#signatureAt = this.#end - signatureLength
    this.#payloadEnd = this.#signatureAt - (signatureLength < 24 ? 1 : 2)
    this.#payloadAt = this.#payloadEnd - payloadLength
  }

  get bytes (): Uint8Array { return this.#slab.subarray(this.#at, this.#end) }
  get payload (): Uint8Array { return this.#slab.subarray(this.#payloadAt, this.#payloadEnd) }
  get signature (): Uint8Array { return this.#slab.subarray(this.#signatureAt, this.#end) }
}

/**
 * Claim bytes a node keeps are copied into shared 64 KiB slabs: one ArrayBuffer per claim costs
 * its backing store and bookkeeping (~400 bytes of RSS beside the ~190 bytes of the claim), and a
 * view of a network buffer would keep the whole buffer alive. A slab is freed once no claim in it
 * is referenced (renewals replace own claims every lease period).
 */
// 256 KB: above glibc's mmap threshold (128 KB), so a slab is a mapping of its own and not a live
// chunk of the main malloc heap among a burst's freed buffers, which kept those freed pages resident
// (issue 9: 8 MB less free memory kept by malloc at 100,000 claims)
const SLAB_BYTES = 256 * 1024
let slab = new Uint8Array(SLAB_BYTES)
let slabUsed = 0

/** A claim for `fields` whose envelope `bytes` is copied into the current slab. */
function slabClaim (fields: ClaimFields, bytes: Uint8Array, payloadLength: number, signatureLength: number): Claim {
  const n = bytes.byteLength
  if (n > 4096) return new Claim(fields, bytes.slice(), 0, n, payloadLength, signatureLength)
  const at = slabRoom(n)
  slab.set(bytes, at)
  return new Claim(fields, slab, at, n, payloadLength, signatureLength)
}

/** Room for `n` bytes (at most 4096) in the current slab: where they go in `slab`. */
function slabRoom (n: number): number {
  if (slabUsed + n > SLAB_BYTES) {
    slab = new Uint8Array(SLAB_BYTES)
    slabUsed = 0
  }
  const at = slabUsed
  slabUsed += (n + 7) & ~7
  return at
}

/**
 * Owner ids seen in decoded claims, shared (a PeerId holds its public key: hundreds of bytes),
 * keyed by the id's bytes as a latin1 string (one char per byte: no base64 round trip per claim).
 */
const owners = new OwnerCache<PeerId>(4096, (k) => peerIdFromMultihash(Digest.decode(latin1Bytes(k))))

function latin1Bytes (s: string): Uint8Array {
  const out = new Uint8Array(s.length)
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i)
  return out
}

function ownerOf (bytes: Uint8Array): PeerId {
  return owners.get(String.fromCharCode.apply(null, bytes as unknown as number[]))
}

/** What signing takes: `knownUntil` defaults to `expiresAt`. */
export type ClaimInput = Omit<ClaimFields, 'knownUntil'> & { knownUntil?: number }

export interface SignedClaim extends ClaimFields {
  /** the signed payload bytes */
  payload: Uint8Array
  signature: Uint8Array
  /** the whole envelope, as stored in the DHT */
  bytes: Uint8Array
}

const AOR_RE = /^sips?:([^@;?>\s]+)@([^;?>\s]+)$/i
const USER_RE = /^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+$/
const HOST_RE = /^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*)$/
const SIP_ADDR_RE = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$/

/**
 * Normalize an AoR to `sip:user@domain`: scheme and domain lower-cased, user kept as is, URI
 * parameters, headers, port and angle brackets dropped. Throws InvalidAorError otherwise.
 */
export function normalizeAor (input: string): string {
  if (typeof input !== 'string') throw new InvalidAorError('AoR must be a string')
  // (the caller's own string when it is normal: never an equal string of an earlier caller's)
  if (input === lastNormalIn) return lastNormalOut ?? input
  let s = input.trim()
  if (s.length > MAX_AOR_LENGTH * 2) throw new InvalidAorError('AoR too long')
  if (s.startsWith('<') && s.endsWith('>')) s = s.slice(1, -1)
  const cut = s.search(/[;?]/)
  if (cut >= 0) s = s.slice(0, cut)
  const m = AOR_RE.exec(s)
  if (m == null) throw new InvalidAorError(`not a sip:user@domain AoR: ${JSON.stringify(input.slice(0, 80))}`)
  const user = m[1]
  let host = m[2].toLowerCase()
  if (!host.startsWith('[')) host = host.replace(/:\d+$/, '')
  if (!USER_RE.test(user) || !HOST_RE.test(host)) throw new InvalidAorError(`not a sip:user@domain AoR: ${JSON.stringify(input.slice(0, 80))}`)
  const aor = `sip:${user}@${host}`
  if (aor.length > MAX_AOR_LENGTH) throw new InvalidAorError('AoR too long')
  // an AoR given normalized comes back as the same string, not an equal copy: the registrar's
  // and the registry's maps and claims then share one string per user (issue 9, memory)
  lastNormalIn = input
  lastNormalOut = aor === input ? undefined : aor
  return aor === input ? input : aor
}

/**
 * the last AoR normalized and its normal form: a new registration's AoR is normalized four times
 * in one synchronous run (the registrar's claimNow, the claim's claimNow and its own, the signed
 * fields' check), each a few regular expressions, a match array and substrings (issue 9)
 */
let lastNormalIn: string | undefined
/** undefined: the input was normal */
let lastNormalOut: string | undefined

/**
 * the last AoR hashed: a new claim asks for its key twice in one synchronous run (the owner's own
 * copy, then the record), and each hash is a native call and a Buffer
 */
let lastAor = ''
let lastKeyId = ''

/** The `<base32 sha256(aor)>` part of an AoR's DHT key. */
export function claimKeyId (aor: string): string {
  if (aor !== lastAor) {
    lastKeyId = base32(sha256(aor))
    lastAor = aor
  }
  return lastKeyId
}

/** The DHT key of an AoR: `/sipmesh/<base32 sha256(aor)>`, as bytes. */
export function claimKey (aor: string): Uint8Array {
  return latin1Bytes(CLAIM_KEY_PREFIX + claimKeyId(aor))
}

/** The CID under which nodes interested in an AoR announce themselves as providers. */
export function interestCid (aor: string): CID {
  return CID.createV1(raw.code, Digest.create(sha256Code, sha256('sipmesh-interest-v1\n' + aor)))
}

/** the payload of `f` (after `prefix` in the same bytes when given: see `encodePayload`) */
function payloadOf (f: ClaimFields, ownerBytes: Uint8Array = f.owner.toMultihash().bytes, prefix?: Uint8Array): Uint8Array {
  try {
    return encodePayload({ format: CLAIM_FORMAT, kind: f.kind, aor: f.aor, owner: ownerBytes, sip: f.sip, version: f.version, issuedAt: f.issuedAt, expiresAt: f.expiresAt, knownUntil: f.knownUntil }, prefix)
  } catch (err) {
    throw new InvalidClaimError(`claim ${errorMessage(err)}`)
  }
}

/**
 * Signs this node's claims. Built once per node: it keeps the owner id and the Ed25519 key as a
 * Node KeyObject (see `keys.ts` for why not `privateKey.sign`). Signing is synchronous.
 */
export class ClaimSigner {
  readonly owner: PeerId
  readonly #ownerBytes: Uint8Array
  readonly #key: Ed25519Signer

  constructor (privateKey: PrivateKey) {
    this.owner = peerIdFromPrivateKey(privateKey)
    this.#ownerBytes = this.owner.toMultihash().bytes
    this.#key = new Ed25519Signer(privateKey)
  }

  sign (input: Omit<ClaimInput, 'owner'>): SignedClaim {
    const { fields, message } = this.#prepare(input)
    return this.#seal(fields, message, this.#key.sign(message))
  }

  /**
   * `sign`, with the signature made off the event loop (keys.ts `signAsync`). Not async: one
   * reaction on the signature, no async function's frame saved per new claim (issue 9).
   */
  signAsync (input: Omit<ClaimInput, 'owner'>): Promise<SignedClaim> {
    let prepared: { fields: ClaimFields, message: Uint8Array }
    try {
      prepared = this.#prepare(input)
    } catch (err) {
      return Promise.reject(err)
    }
    const { fields, message } = prepared
    return this.#key.signAsync(message).then(signature => this.#seal(fields, message, signature))
  }

  /** the fields and the signed message: the signing domain and the payload, made as one */
  #prepare (input: Omit<ClaimInput, 'owner'>): { fields: ClaimFields, message: Uint8Array } {
    const fields: ClaimFields = { ...input, owner: this.owner, knownUntil: Math.max(input.knownUntil ?? input.expiresAt, input.expiresAt) }
    checkFields(fields, Date.now(), { skipExpiry: true })
    return { fields, message: payloadOf(fields, this.#ownerBytes, CLAIM_SIGNING_DOMAIN) }
  }

  /** the signed claim, its envelope written straight into the slab (no envelope of its own to copy) */
  #seal (fields: ClaimFields, message: Uint8Array, signature: Uint8Array): SignedClaim {
    const payload = message.subarray(CLAIM_SIGNING_DOMAIN.length)
    const n = envelopeLength(payload.byteLength, signature.byteLength)
    if (n > MAX_CLAIM_BYTES) throw new InvalidClaimError(`claim too large (${n} > ${MAX_CLAIM_BYTES} bytes)`)
    const at = slabRoom(n)
    writeEnvelope(slab, at, payload, signature)
    return new Claim(fields, slab, at, n, payload.byteLength, signature.byteLength)
  }
}

/** Sign a claim with the owner's private key (which must match `fields.owner`). */
export async function signClaim (fields: ClaimInput, privateKey: PrivateKey): Promise<SignedClaim> {
  if (!fields.owner.equals(peerIdFromPrivateKey(privateKey))) {
    throw new InvalidClaimError('the signing key is not the owner\'s')
  }
  return new ClaimSigner(privateKey).sign(fields)
}

/** the longest signature accepted (Ed25519's is 64 bytes) */
const MAX_SIGNATURE_BYTES = 128

/**
 * Decode a claim envelope and check its form (but NOT its signature or expiry: see verifyClaim).
 * Only the canonical encoding is accepted (claim-cbor.ts). Throws InvalidClaimError with the reason.
 */
export function decodeClaim (bytes: Uint8Array): SignedClaim {
  if (!(bytes instanceof Uint8Array)) throw new InvalidClaimError('claim is not bytes')
  if (bytes.byteLength > MAX_CLAIM_BYTES) throw new InvalidClaimError(`claim too large (${bytes.byteLength} > ${MAX_CLAIM_BYTES} bytes)`)
  let env: EnvelopeParts
  try {
    env = decodeEnvelope(bytes, MAX_SIGNATURE_BYTES)
  } catch (err) {
    throw new InvalidClaimError(`claim envelope is not [payload, signature]: ${errorMessage(err)}`)
  }
  const signatureLength = bytes.byteLength - env.signatureAt
  if (signatureLength === 0) throw new InvalidClaimError('claim is unsigned')
  let p: RawPayload
  try {
    p = decodePayload(bytes, env.payloadAt, env.payloadEnd)
  } catch (err) {
    throw new InvalidClaimError(`claim ${errorMessage(err)}`)
  }
  if (p.format !== CLAIM_FORMAT) throw new InvalidClaimError(`unknown claim format ${p.format}`)
  if (p.kind !== ClaimKind.claim && p.kind !== ClaimKind.release) throw new InvalidClaimError('unknown claim kind')
  let owner: PeerId
  try {
    owner = ownerOf(p.owner)
  } catch (err) {
    throw new InvalidClaimError(`claim owner is not a peer id: ${errorMessage(err)}`)
  }
  const fields: ClaimFields = {
    kind: p.kind,
    aor: p.aor,
    owner,
    sip: p.sip,
    version: p.version,
    issuedAt: p.issuedAt,
    expiresAt: p.expiresAt,
    knownUntil: p.knownUntil
  }
  return slabClaim(fields, bytes, env.payloadEnd - env.payloadAt, signatureLength)
}

function checkFields (f: ClaimFields, now: number, opts: { skipExpiry?: boolean } = {}): void {
  let norm: string
  try {
    norm = normalizeAor(f.aor)
  } catch (err) {
    throw new InvalidClaimError(`claim aor invalid: ${errorMessage(err)}`)
  }
  if (norm !== f.aor) throw new InvalidClaimError('claim aor is not normalized')
  if (f.kind === ClaimKind.claim && !SIP_ADDR_RE.test(f.sip)) throw new InvalidClaimError('claim sip is not host:port')
  if (f.kind === ClaimKind.release && f.sip !== '') throw new InvalidClaimError('release carries a sip address')
  if (f.sip.length > 300) throw new InvalidClaimError('claim sip too long')
  if (f.version < 0n || f.version >= 2n ** 63n) throw new InvalidClaimError('claim version out of range')
  if (f.expiresAt < f.issuedAt) throw new InvalidClaimError('claim expires before it was issued')
  if (f.knownUntil < f.expiresAt) throw new InvalidClaimError('claim retention ends before its lease')
  if (f.knownUntil - f.issuedAt > MAX_CLAIM_LIFETIME_MS) throw new InvalidClaimError('claim lifetime too long')
  if (f.issuedAt > now + MAX_CLOCK_SKEW_MS) throw new InvalidClaimError('claim issued in the future')
  if (opts.skipExpiry !== true && f.knownUntil <= now) throw new ExpiredClaimError()
  if (f.owner.type !== 'Ed25519' || f.owner.publicKey == null) throw new InvalidClaimError('claim owner is not an Ed25519 peer id')
}

export interface VerifyOptions {
  /** ms since the epoch to check expiry against; @default Date.now() */
  now?: number
  /** accept an expired claim (used to compare stored records) @default false */
  allowExpired?: boolean
  /** the DHT key the record was stored under; checked against the AoR when given */
  key?: Uint8Array
  /**
   * Skip the signature: only for a claim pushed by its owner itself over the mesh's authenticated
   * channel (Noise proved the sender holds the owner's key). Everyone who reads it later checks it.
   */
  skipSignature?: boolean
}

/** Decode and fully verify a claim: form, fields, key, retention, signature. Throws InvalidClaimError. */
export async function verifyClaim (bytes: Uint8Array, opts: VerifyOptions = {}): Promise<SignedClaim> {
  return verifyClaimSync(bytes, opts)
}

/** `verifyClaim` without the promise, for batches. */
export function verifyClaimSync (bytes: Uint8Array, opts: VerifyOptions = {}): SignedClaim {
  return checkClaimSync(decodeClaim(bytes), opts)
}

/** `verifyClaimSync` of a claim decoded already (`decodeClaim`): the checks, not the decoding again. */
export function checkClaimSync (c: SignedClaim, opts: VerifyOptions = {}): SignedClaim {
  checkFields(c, opts.now ?? Date.now(), { skipExpiry: opts.allowExpired === true })
  if (opts.key != null && !uint8ArrayEquals(opts.key, claimKey(c.aor))) {
    throw new InvalidClaimError('DHT key does not match the claim\'s AoR')
  }
  if (opts.skipSignature === true) return c
  if (!verifyEd25519(c.owner.publicKey!.raw, uint8ArrayConcat([CLAIM_SIGNING_DOMAIN, c.payload]), c.signature)) throw new InvalidClaimError('claim signature does not verify with the owner\'s key')
  return c
}

/**
 * The selector's total order, computed identically on every node: higher version, then later
 * issuedAt, then larger owner id bytes, then larger signature bytes. Returns >0 when a is newer.
 */
export function compareClaims (a: Pick<SignedClaim, 'version' | 'issuedAt' | 'owner' | 'signature'>, b: Pick<SignedClaim, 'version' | 'issuedAt' | 'owner' | 'signature'>): number {
  if (a.version !== b.version) return a.version > b.version ? 1 : -1
  if (a.issuedAt !== b.issuedAt) return a.issuedAt > b.issuedAt ? 1 : -1
  const o = uint8ArrayCompare(a.owner.toMultihash().bytes, b.owner.toMultihash().bytes)
  if (o !== 0) return o
  return uint8ArrayCompare(a.signature, b.signature)
}

/** Whether the record is still retained (its lease may have ended: see `isLive`). */
export function isRetained (c: Pick<ClaimFields, 'knownUntil'>, now = Date.now()): boolean {
  return c.knownUntil > now
}

/** Whether a claim is a live ownership (not a release, lease not ended). */
export function isLive (c: Pick<ClaimFields, 'kind' | 'expiresAt'>, now = Date.now()): boolean {
  return c.kind === ClaimKind.claim && c.expiresAt > now
}
