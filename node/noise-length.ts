/**
 * Noise's 2-byte message lengths read without an exception per received chunk.
 *
 * `@chainsafe/libp2p-noise` (17.0) reads its length prefixes with `@libp2p/utils`'
 * LengthPrefixedDecoder, whose loop learns that the buffer holds no further length by catching a
 * RangeError: Noise's `uint16BEDecode` throws one, with its stack trace, each time fewer than two
 * bytes are left, i.e. at the end of every chunk read from TCP, and reads each length through a
 * DataView made for the purpose. In a cross-node relay that was ~6% of the busy time of both nodes
 * (`scripts/bench-relay-path.ts --mode cross`, its CPU profile).
 *
 * `readLength` answers the same lengths and, for a buffer too short to hold one, 0: the decoder
 * then needs 2 bytes for a frame (the prefix alone), has fewer, and waits for more, exactly where
 * it used to catch the error. `noiseLengthsWithoutThrow` wraps the encrypter's factory and puts
 * `readLength` on each secured connection's decoder; a decoder that is not the one this was written
 * against (its prefix not 2 bytes) is left as it is.
 *
 * Hand-written because the library takes no length decoder from its caller.
 */
import type { ConnectionEncrypter } from '@libp2p/interface'
import { directMessages } from './direct-messages.ts'

type EncrypterFactory = (components: any) => ConnectionEncrypter // eslint-disable-line @typescript-eslint/no-explicit-any

/** A Uint8Array or a Uint8ArrayList (its bytes by `get`). */
export type LengthSource = Uint8Array | { byteLength: number, get: (index: number) => number }

/** The big-endian 2-byte length at the start of `data`, or 0 when it holds fewer than 2 bytes. */
export function readLength (data: LengthSource): number {
  if (data.byteLength < 2) return 0
  if (data instanceof Uint8Array) return (data[0] << 8) | data[1]
  return (data.get(0) << 8) | data.get(1)
}

interface Decoder { lengthDecoder: unknown, encodingLength: (n: number) => number }

/** Put `readLength` on a secured stream's length decoder; whether it applied. */
export function patchLengthDecoder (stream: unknown): boolean {
  const decoder = (stream as { decoder?: Decoder } | undefined)?.decoder
  if (decoder == null || typeof decoder.lengthDecoder !== 'function' || typeof decoder.encodingLength !== 'function' || decoder.encodingLength(0) !== 2) return false
  decoder.lengthDecoder = readLength
  return true
}

/**
 * Wrap a connection encrypter's factory (`noise()`) so that each connection it secures reads its
 * lengths with `readLength`, and hands what it decrypts to the muxer without a read buffer and
 * event in between (node/direct-messages.ts).
 */
export function noiseLengthsWithoutThrow (factory: EncrypterFactory): EncrypterFactory {
  return (components) => {
    const encrypter = factory(components)
    const secureInbound = encrypter.secureInbound.bind(encrypter)
    const secureOutbound = encrypter.secureOutbound.bind(encrypter)
    encrypter.secureInbound = async (connection, options) => {
      const secured = await secureInbound(connection, options)
      patchLengthDecoder(secured.connection)
      directMessages(secured.connection)
      return secured
    }
    encrypter.secureOutbound = async (connection, options) => {
      const secured = await secureOutbound(connection, options)
      patchLengthDecoder(secured.connection)
      directMessages(secured.connection)
      return secured
    }
    return encrypter
  }
}
