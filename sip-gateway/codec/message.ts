/** SIP messages (RFC 3261 section 7): requests and responses with raw headers and a byte body. */
import type { Buffer } from 'node:buffer'
import { Headers } from './headers.ts'

const EMPTY = new Uint8Array(0)

export class SipRequest {
  method: string
  uri: string
  version: string
  headers: Headers
  /** the body bytes; after `parseMessage` a view into the input, not a copy */
  body: Uint8Array
  /**
   * A proxy's loop-detection hash of the request as it was received (RFC 3261 16.6 item 8), kept
   * with it once computed: a field rather than an entry per relayed request in a WeakMap, whose
   * ephemeron entries every scavenge must trace
   */
  loopHash: string | undefined = undefined

  constructor (method: string, uri: string, headers: Headers = new Headers(), body: Uint8Array = EMPTY, version = 'SIP/2.0') {
    this.method = method
    this.uri = uri
    this.version = version
    this.headers = headers
    this.body = body
  }
}

export class SipResponse {
  status: number
  reason: string
  version: string
  headers: Headers
  /** the body bytes; after `parseMessage` a view into the input, not a copy */
  body: Uint8Array
  /**
   * After `parseMessage`, when the response can be forwarded as its own bytes with its top Via
   * line cut out (see `withoutTopVia` in wire.ts): the bytes as received, and where the top Via
   * line starts times 65,536 plus where the line after it starts
   */
  _received: Buffer | undefined = undefined
  _viaCut = 0

  constructor (status: number, reason: string, headers: Headers = new Headers(), body: Uint8Array = EMPTY, version = 'SIP/2.0') {
    this.status = status
    this.reason = reason
    this.version = version
    this.headers = headers
    this.body = body
  }
}

export type SipMessage = SipRequest | SipResponse

export function isRequest (m: SipMessage): m is SipRequest {
  return m instanceof SipRequest
}

export function isResponse (m: SipMessage): m is SipResponse {
  return m instanceof SipResponse
}
