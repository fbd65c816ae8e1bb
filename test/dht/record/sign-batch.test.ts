/**
 * The signing thread's signatures (sign-batch.ts, sign-worker.ts): whichever library signs on the
 * thread (libsodium when the optional sodium-native package loads, Node's crypto otherwise), each
 * signature is the one Node's crypto makes for that message and key, and verifies.
 */
import { describe, test } from 'node:test'
import { createRequire } from 'node:module'
import { generateKeyPairSync, sign, verify } from 'node:crypto'
import assert from 'node:assert/strict'
import { signingThread } from '../../../dht/record/sign-batch.ts'

function sodiumInstalled (): boolean {
  try {
    createRequire(import.meta.url)('sodium-native')
    return true
  } catch {
    return false
  }
}

describe('signing thread', () => {
  test('signs with libsodium when sodium-native is installed, with the bytes of Node\'s crypto', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519')
    // messages of every length around a claim's, an empty one, and some sharing one buffer
    const shared = new Uint8Array(5000).map((_, i) => (i * 31) & 0xff)
    const messages = [new Uint8Array(0), new Uint8Array([1]), ...Array.from({ length: 300 }, (_, i) => shared.subarray(i, i + 1 + i * 13))]
    const before = { ...signingThread.stats }
    const sigs = await Promise.all(messages.map(async m => await signingThread.sign(privateKey, m)))
    assert.equal(signingThread.stats.fallbacks, before.fallbacks, 'none fell back to the threadpool')
    assert.equal(signingThread.signerOf(privateKey), sodiumInstalled() ? 'libsodium' : 'node:crypto')
    for (const [i, m] of messages.entries()) {
      assert.equal(sigs[i].byteLength, 64)
      assert.deepEqual(Buffer.from(sigs[i]), sign(null, m, privateKey), `message ${i}`)
      assert.ok(verify(null, m, publicKey, sigs[i]))
    }
  })

  test('a key libsodium cannot take (not Ed25519) is signed by Node\'s crypto, not by libsodium', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed448')
    const m = new TextEncoder().encode('not an Ed25519 key')
    // Ed448 signatures are 114 bytes: the thread reports an error for the batch and the
    // threadpool signs it, with the same key
    const sig = await signingThread.sign(privateKey, m)
    assert.equal(signingThread.signerOf(privateKey), 'node:crypto')
    assert.ok(verify(null, m, publicKey, sig))
  })
})
