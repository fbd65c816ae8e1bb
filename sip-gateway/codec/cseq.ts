/** CSeq (RFC 3261 20.16): a sequence number below 2^32 and the request method. */
import { SipParseError } from '../errors.ts'
import { isToken } from './params.ts'

export interface CSeq {
  seq: number
  method: string
}

export function parseCSeq (value: string): CSeq {
  const s = value.trim()
  let i = 0
  while (i < s.length && s.charCodeAt(i) >= 48 && s.charCodeAt(i) <= 57) i++
  if (i === 0 || i > 10) throw new SipParseError('Malformed CSeq')
  const seq = Number(s.slice(0, i))
  if (seq > 0xffffffff) throw new SipParseError('Malformed CSeq')
  const c = s.charCodeAt(i)
  if (c !== 32 && c !== 9) throw new SipParseError('Malformed CSeq')
  const method = s.slice(i + 1).trim()
  if (!isToken(method)) throw new SipParseError('Malformed CSeq')
  return { seq, method }
}

export function formatCSeq (cseq: CSeq): string {
  return `${cseq.seq} ${cseq.method}`
}
