/**
 * Ed25519 signing and verification for claims, on Node's crypto with the keys kept as KeyObjects.
 *
 * Written here rather than calling `privateKey.sign` / `publicKey.verify` of @libp2p/crypto: on
 * Node that library turns the raw key into a JWK and imports it (`crypto.createPrivateKey` /
 * `createPublicKey`) on every call, which was 5% of a node's CPU under registration load, more
 * than the signature itself. The keys and signatures are the same bytes; only the import is kept.
 */
import { createPrivateKey, createPublicKey, sign, verify } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import type { PrivateKey } from '@libp2p/interface'
import { toString as uint8ArrayToString } from 'uint8arrays/to-string'
import { signingThread } from './sign-batch.ts'

/** Signs with one Ed25519 private key, imported once. */
export class Ed25519Signer {
  readonly #key: KeyObject

  constructor (privateKey: PrivateKey) {
    if (privateKey.type !== 'Ed25519') throw new TypeError('claims are signed with Ed25519 keys')
    const raw = privateKey.raw
    this.#key = createPrivateKey({
      format: 'jwk',
      key: { kty: 'OKP', crv: 'Ed25519', d: uint8ArrayToString(raw.subarray(0, 32), 'base64url'), x: uint8ArrayToString(privateKey.publicKey.raw, 'base64url') }
    })
  }

  sign (message: Uint8Array): Uint8Array {
    const sig = sign(null, message, this.#key)
    return new Uint8Array(sig.buffer, sig.byteOffset, sig.byteLength)
  }

  /**
   * The same signature made off the event loop, batched with the others of this turn on the
   * signing thread (sign-batch.ts): at thousands of new claims per second the signatures were the
   * largest single cost of the main thread (issue 9).
   */
  signAsync (message: Uint8Array): Promise<Uint8Array> {
    // the signing thread's promise as it is (no async frame and promise of our own per claim)
    return signingThread.sign(this.#key, message)
  }
}

/**
 * A small cache keyed by string: what `make` builds for a key is kept, the oldest entry going first
 * past `max` (a mesh has few nodes, so few owners; bounded all the same).
 */
export class OwnerCache<T> {
  readonly #entries = new Map<string, T>()
  readonly #max: number
  readonly #make: (key: string) => T

  constructor (max: number, make: (key: string) => T) {
    this.#max = max
    this.#make = make
  }

  get (key: string): T {
    let v = this.#entries.get(key)
    if (v === undefined) {
      v = this.#make(key)
      if (this.#entries.size >= this.#max) this.#entries.delete(this.#entries.keys().next().value!)
      this.#entries.set(key, v)
    }
    return v
  }
}

/** The public keys of the owners seen lately. */
const publicKeys = new OwnerCache<KeyObject>(4096, (x) => createPublicKey({ format: 'jwk', key: { kty: 'OKP', crv: 'Ed25519', x } }))

function publicKeyObject (raw: Uint8Array): KeyObject {
  return publicKeys.get(uint8ArrayToString(raw, 'base64url'))
}

/** Whether `signature` is the Ed25519 signature of `message` by the 32-byte public key `raw`. */
export function verifyEd25519 (raw: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (raw.byteLength !== 32 || signature.byteLength !== 64) return false
  try {
    return verify(null, message, publicKeyObject(raw), signature)
  } catch {
    return false
  }
}
