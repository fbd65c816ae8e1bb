/**
 * Claim notices over `/sipmesh/claim-notice/1.0.0`: the opener writes ONE length-prefixed message,
 * the envelope of a signed claim (at most MAX_CLAIM_BYTES), and closes. The receiver reads that one
 * message with a size cap and a timeout, then closes; it verifies the claim before acting on it
 * (that is the caller's job: `onNotice` gets raw bytes).
 */
import { lpStream } from '@libp2p/utils'
import { MAX_CLAIM_BYTES } from '../record/claim.ts'
import { withSignal } from '../signal.ts'
import type { AbortOptions, Connection, Libp2p, Logger, PeerId, Stream } from '@libp2p/interface'
import { errorMessage } from '../errors.ts'

export const CLAIM_NOTICE_PROTOCOL = '/sipmesh/claim-notice/1.0.0'

/**
 * Interest registrations: a watcher sends ONE message, CBOR `[1, aor, ttlMs]`, to the replicas of
 * the AoR's claim key; a replica that later stores a claim changing the AoR's route tells it.
 */
export const CLAIM_INTEREST_PROTOCOL = '/sipmesh/claim-interest/1.0.0'
export const MAX_INTEREST_BYTES = 512

/** How long a notice exchange may take, either side. */
export const NOTICE_TIMEOUT_MS = 5_000

/** Send one notice (a signed claim envelope) to a peer. Throws on failure. */
export async function sendNotice (libp2p: Pick<Libp2p, 'dialProtocol'>, protocol: string, peer: PeerId, claim: Uint8Array, options: AbortOptions & { maxBytes?: number } = {}): Promise<void> {
  await withSignal(NOTICE_TIMEOUT_MS, [options.signal], async (signal) => { await sendNoticeWith(libp2p, protocol, peer, claim, signal, options.maxBytes) })
}

async function sendNoticeWith (libp2p: Pick<Libp2p, 'dialProtocol'>, protocol: string, peer: PeerId, claim: Uint8Array, signal: AbortSignal, maxBytes?: number): Promise<void> {
  const stream = await libp2p.dialProtocol(peer, protocol, { signal })
  try {
    const lp = lpStream(stream, { maxDataLength: maxBytes ?? MAX_CLAIM_BYTES })
    await lp.write(claim, { signal })
    await stream.close({ signal })
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)))
    throw err
  }
}

/** A stream handler that reads one notice and passes its bytes on. Never throws. */
export function noticeHandler (log: Logger, onNotice: (from: PeerId, claim: Uint8Array) => void | Promise<void>, maxBytes = MAX_CLAIM_BYTES): (stream: Stream, connection: Connection) => Promise<void> {
  return async (stream, connection) => withSignal(NOTICE_TIMEOUT_MS, [], async (signal) => {
    try {
      const lp = lpStream(stream, { maxDataLength: maxBytes })
      const msg = await lp.read({ signal })
      await stream.close({ signal }).catch(() => {})
      await onNotice(connection.remotePeer, msg.subarray())
    } catch (err) {
      log('bad notice from %p: %s', connection.remotePeer, errorMessage(err))
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    }
  })
}

/**
 * Direct claim reads (`/sipmesh/claim-get/1.0.0`), used instead of kad-dht's GET_VALUE when this
 * node's routing table holds the whole replica set: the request is one length-prefixed message,
 * the DHT key; the answer one length-prefixed message, the stored claim envelope (empty: none).
 * Unlike GET_VALUE it computes no closer peers, which is most of GET_VALUE's cost.
 */
export const CLAIM_GET_PROTOCOL = '/sipmesh/claim-get/1.0.0'
export const MAX_KEY_BYTES = 128

/** Ask a peer for the claim it stores under a key; undefined when it has none. Throws on failure. */
export async function requestClaim (libp2p: Pick<Libp2p, 'dialProtocol'>, protocol: string, peer: PeerId, key: Uint8Array, options: AbortOptions = {}): Promise<Uint8Array | undefined> {
  return withSignal(NOTICE_TIMEOUT_MS, [options.signal], async (signal) => requestClaimWith(libp2p, protocol, peer, key, signal))
}

async function requestClaimWith (libp2p: Pick<Libp2p, 'dialProtocol'>, protocol: string, peer: PeerId, key: Uint8Array, signal: AbortSignal): Promise<Uint8Array | undefined> {
  const stream = await libp2p.dialProtocol(peer, protocol, { signal })
  try {
    const lp = lpStream(stream, { maxDataLength: MAX_CLAIM_BYTES })
    await lp.write(key, { signal })
    const answer = await lp.read({ signal })
    await stream.close({ signal }).catch(() => {})
    return answer.byteLength === 0 ? undefined : answer.subarray()
  } catch (err) {
    stream.abort(err instanceof Error ? err : new Error(String(err)))
    throw err
  }
}

/** The responder side of claim reads. Never throws. */
export function claimGetHandler (log: Logger, lookup: (key: Uint8Array) => Promise<Uint8Array | undefined>): (stream: Stream, connection: Connection) => Promise<void> {
  return async (stream, connection) => withSignal(NOTICE_TIMEOUT_MS, [], async (signal) => {
    try {
      const lp = lpStream(stream, { maxDataLength: MAX_KEY_BYTES })
      const key = (await lp.read({ signal })).subarray()
      const value = await lookup(key)
      await lp.write(value ?? new Uint8Array(0), { signal })
      await stream.close({ signal }).catch(() => {})
    } catch (err) {
      log('bad claim read from %p: %s', connection.remotePeer, errorMessage(err))
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    }
  })
}
