/**
 * The signing thread (see sign-batch.ts): signs batches of messages with the Ed25519 keys the main
 * thread hands it, one message in and one out per batch.
 *
 *   in:  { key: id, object: KeyObject }                          a key, once, before its first batch
 *        { id, key: id, data: ArrayBuffer, ends: Uint32Array }  the messages, back to back
 *   out: { key: id, signer: 'libsodium' | 'node:crypto' }        what signs with that key
 *        { id, signatures: ArrayBuffer }                         64 bytes per message, in order
 *        { id, error: string }
 *
 * The signatures are libsodium's when the optional `sodium-native` package loads: its Ed25519 is
 * 18 µs a signature here against 35 µs for Node's (OpenSSL's Ed25519 computes on 32-bit limbs:
 * three quarters of a signature in its field multiplication and squaring, by `perf`), and the
 * signing thread's CPU counts against the REGISTERs a 2-core node can take (issue 9). Ed25519 is
 * deterministic, so the bytes are the same; a key whose libsodium signature of a probe message
 * differs from Node's (or that cannot be exported) is signed by Node's crypto, as is every key
 * when the package is absent.
 */
import { sign } from 'node:crypto'
import { createRequire } from 'node:module'
import { parentPort } from 'node:worker_threads'
import type { KeyObject } from 'node:crypto'

interface KeyMessage { key: number, object: KeyObject }
interface BatchMessage { id: number, key: number, data: ArrayBuffer, ends: Uint32Array }

/** the part of sodium-native used here */
interface Sodium {
  crypto_sign_seed_keypair(publicKey: Uint8Array, secretKey: Uint8Array, seed: Uint8Array): void
  crypto_sign_detached(signature: Uint8Array, message: Uint8Array, secretKey: Uint8Array): void
}

function loadSodium (): Sodium | undefined {
  try {
    const s = createRequire(import.meta.url)('sodium-native') as Partial<Sodium>
    if (typeof s.crypto_sign_detached === 'function' && typeof s.crypto_sign_seed_keypair === 'function') return s as Sodium
  } catch {
    // not installed (an optional dependency) or no build for this platform: Node's crypto signs
  }
  return undefined
}

/** signs `message` into `out` (64 bytes) */
type Signer = (message: Uint8Array, out: Uint8Array) => void

const PROBE = new TextEncoder().encode('sipmesh: the same Ed25519 signature from libsodium and node:crypto')

function nodeSigner (key: KeyObject): Signer {
  return (message, out) => {
    const sig = sign(null, message, key)
    if (sig.byteLength !== 64) throw new Error('not an Ed25519 signature')
    out.set(sig)
  }
}

/** libsodium's signer for `key` when it makes Node's signature of the probe, else undefined */
function sodiumSigner (sodium: Sodium, key: KeyObject): Signer | undefined {
  try {
    const d = key.export({ format: 'jwk' }).d
    if (key.asymmetricKeyType !== 'ed25519' || d == null) return undefined
    const seed = Buffer.from(d, 'base64url')
    if (seed.byteLength !== 32) return undefined
    const secretKey = new Uint8Array(64)
    sodium.crypto_sign_seed_keypair(new Uint8Array(32), secretKey, seed)
    seed.fill(0)
    const probe = new Uint8Array(64)
    sodium.crypto_sign_detached(probe, PROBE, secretKey)
    if (!Buffer.from(probe).equals(sign(null, PROBE, key))) return undefined
    return (message, out) => { sodium.crypto_sign_detached(out, message, secretKey) }
  } catch {
    return undefined
  }
}

const sodium = loadSodium()
const signers = new Map<number, Signer>()
const port = parentPort!

port.on('message', (m: KeyMessage | BatchMessage) => {
  if ('object' in m) {
    const fast = sodium == null ? undefined : sodiumSigner(sodium, m.object)
    signers.set(m.key, fast ?? nodeSigner(m.object))
    port.postMessage({ key: m.key, signer: fast != null ? 'libsodium' : 'node:crypto' })
    return
  }
  try {
    const signer = signers.get(m.key)
    if (signer == null) throw new Error(`unknown key ${m.key}`)
    const data = new Uint8Array(m.data)
    const out = new Uint8Array(m.ends.length * 64)
    let at = 0
    for (let i = 0; i < m.ends.length; i++) {
      signer(data.subarray(at, m.ends[i]), out.subarray(i * 64, i * 64 + 64))
      at = m.ends[i]
    }
    port.postMessage({ id: m.id, signatures: out.buffer }, [out.buffer])
  } catch (err) {
    port.postMessage({ id: m.id, error: (err as Error).message })
  }
})
