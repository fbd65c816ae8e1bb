/**
 * SHA-256 and base32 for DHT keys, on the per-claim path.
 *
 * The DHT key of a claim is hashed for every claim written, stored, answered and looked up, two
 * or three times per new registration (the record key, the owner's copy, the replicas' Kademlia
 * ids). multiformats' `sha256.digest` builds a Digest object and a hash object per call, and its
 * generic RFC 4648 codec (what `uint8arrays/to-string 'base32'` uses) allocates per character
 * group: together 11 µs per claim, 4% of a node's busy time under new-REGISTER load (issue 9).
 * Here: node:crypto's one-shot `hash` (one native call), and base32 written out for the one
 * alphabet we need. The bytes and strings are the same as before (the tests compare them).
 */
import { hash } from 'node:crypto'

/** SHA-256 of bytes, or of a string's UTF-8 bytes. */
export function sha256 (data: Uint8Array | string): Uint8Array {
  const b = hash('sha256', data, 'buffer')
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength)
}

/** the `b` alphabet as character codes */
const BASE32 = Buffer.from('abcdefghijklmnopqrstuvwxyz234567', 'latin1')
/** where base32 writes its characters before they become one string */
let scratch = Buffer.allocUnsafe(128)

/**
 * RFC 4648 base32, lower case, no padding: multibase's `b` alphabet, the one kad-dht's datastore
 * keys and our claim keys use. The characters are written into bytes and read out as one string:
 * appending them one by one built a rope of one-character pieces (~30 bytes each), 3 KB of garbage
 * per record key (a 61-byte claim key is 98 characters), the largest allocation of a new claim.
 */
export function base32 (bytes: Uint8Array): string {
  const length = Math.ceil(bytes.length * 8 / 5)
  if (length > scratch.length) scratch = Buffer.allocUnsafe(length)
  let at = 0
  let bits = 0
  let value = 0
  for (let i = 0; i < bytes.length; i++) {
    value = ((value << 8) | bytes[i]) & 0xfff
    bits += 8
    while (bits >= 5) {
      bits -= 5
      scratch[at++] = BASE32[(value >>> bits) & 31]
    }
  }
  if (bits > 0) scratch[at++] = BASE32[(value << (5 - bits)) & 31]
  return scratch.toString('latin1', 0, at)
}
