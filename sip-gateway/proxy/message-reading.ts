/**
 * Reading a message the way the proxy's rooms share: whether it is in a dialog (a To tag), and a
 * URI that must parse (400 otherwise).
 */
import type { SipRequest, SipResponse } from '../codec/message.ts'
import { parseUri, type SipUri } from '../codec/uri.ts'
import { parseNameAddrShared } from '../codec/name-addr.ts'
import { SipStatusError } from '../errors.ts'

/** an in-dialog request (RFC 3261 12.2), or a response that creates a dialog: its To carries a tag */
export function hasToTag (message: SipRequest | SipResponse): boolean {
  try {
    const tag = parseNameAddrShared(message.headers.get('To') ?? '').params.tag
    return typeof tag === 'string' && tag !== ''
  } catch {
    return false
  }
}

export function safeUri (s: string): SipUri {
  try {
    return parseUri(s)
  } catch {
    throw new SipStatusError(400, 'Malformed URI')
  }
}

