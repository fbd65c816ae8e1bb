/**
 * What every request or response this node sends starts from: a copy of the message (the
 * received one is never changed in place) and a branch of ours for the Via it adds.
 */
import { randomBytes } from 'node:crypto'
import { SipRequest, SipResponse } from '../codec/message.ts'

/** RFC 3261 branches, unique per process run: a random prefix and a counter (no entropy per message) */
const BRANCH_PREFIX = 'z9hG4bK' + randomBytes(6).toString('base64url')
let branchCounter = 0
export function generateBranch (): string {
  branchCounter = (branchCounter + 1) % Number.MAX_SAFE_INTEGER
  return BRANCH_PREFIX + branchCounter.toString(36)
}

/** a copy of a message, headers copied, body shared */
export function cloneMessage (m: SipRequest | SipResponse): SipRequest | SipResponse {
  // by the constructors: objects of the classes' own shape (Object.create + assign made each
  // copy a slower object of a shape of its own)
  return m instanceof SipRequest
    ? new SipRequest(m.method, m.uri, m.headers.clone(), m.body, m.version)
    : new SipResponse(m.status, m.reason, m.headers.clone(), m.body, m.version)
}
