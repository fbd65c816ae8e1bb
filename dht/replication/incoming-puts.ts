/**
 * The replica side of a put: claims another node sent this node to store (it is a replica of
 * their keys), answered one status per claim (`put-protocol.ts`).
 */
import { claimKey, verifyClaimSync } from '../record/claim.ts'
import { PutStatus } from './put-protocol.ts'
import { errorMessage } from '../errors.ts'
import { recordTime, storedRecord } from '../record/stored-record.ts'
import type { PutAnswer } from './put-protocol.ts'
import type { ClaimWriter } from './writer.ts'
import type { ClaimWrite } from '../datastore-guard.ts'
import type { DhtRegistryComponents } from '../index.ts'
import type { Logger, PeerId } from '@libp2p/interface'

export interface IncomingPutsComponents {
  datastore: DhtRegistryComponents['datastore']
  writer: Pick<ClaimWriter, 'recordKey'>
  log: Logger
}

/**
 * Store the claims a peer sent. A claim of the sender's own is not signature-checked here: the
 * Noise channel already proved the sender holds the owner's key, and Ed25519 verification is 2-3x
 * the cost of signing (two replicas verifying every new claim was most of a 3-node mesh's CPU).
 * Every reader verifies what it reads, and claims relayed by anyone else (corrections, notices)
 * are verified on receipt.
 */
export async function acceptPuts (c: IncomingPutsComponents, stats: { putsReceived: number }, from: PeerId, claims: Uint8Array[]): Promise<PutAnswer[]> {
  const answers: PutAnswer[] = new Array(claims.length)
  const writes: ClaimWrite[] = []
  const at: number[] = []
  const time = recordTime(Date.now())
  let invalid = 0
  let reason = ''
  claims.forEach((bytes, i) => {
    try {
      const claim = verifyClaimSync(bytes, { skipSignature: true })
      if (!claim.owner.equals(from)) verifyClaimSync(bytes)
      const key = claimKey(claim.aor)
      writes.push({ key: c.writer.recordKey(key), record: storedRecord(key, bytes, time), claim })
      at.push(i)
    } catch (err) {
      invalid++
      reason = errorMessage(err)
      answers[i] = { status: PutStatus.invalid }
    }
  })
  stats.putsReceived += claims.length
  if (invalid > 0) {
    if (/expired/.test(reason)) c.log('refused %d claims from %p: %s', invalid, from, reason)
    else c.log.error('refused %d claims from %p: %s', invalid, from, reason)
  }
  const results = writes.length > 0 ? await c.datastore.putClaims(writes) : []
  results.forEach((r, j) => {
    const claim = writes[j].claim
    const other = r.other != null && !r.other.owner.equals(claim.owner) ? r.other.bytes : undefined
    answers[at[j]] = r.stored ? { status: PutStatus.stored, other } : { status: PutStatus.stale, other: r.other?.bytes, age: r.otherAge }
  })
  return answers
}
