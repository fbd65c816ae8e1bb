/**
 * Stored offline messages: the record shape, its validation, its encoding (CBOR) and the keys it
 * lives under in the `DurableStore`.
 *
 * Keys (all ASCII, so the order of `list(prefix)` is the same on the Map store and on LevelDB):
 *
 *   sip-gateway/offline/m/<encodeURIComponent(aor)>/<time:12 hex><counter:8 hex>   a message
 *   sip-gateway/offline/t/<encodeURIComponent(aor)>/<encodeURIComponent(id)>       a tombstone
 *
 * The message key sorts by (time, counter): `time` is the ms of receipt (never less than the
 * user's previous key time, so a clock stepping back cannot reorder), `counter` a per-user
 * monotonic number. A tombstone remembers a message id that was delivered or handed to another
 * node, so that a retransmission or a retried transfer is not stored (and delivered) again.
 */
import { createHash } from 'node:crypto'
import { decode, encode } from 'cborg'
import { InvalidOfflineMessageError, OfflineMessageTooLargeError } from './errors.ts'

/** A MESSAGE request to keep for a user who is offline, as the gateway hands it over. */
export interface OfflineMessage {
  /**
   * Globally unique message id, the same for a retransmission or a re-forwarded copy of the same
   * request: see `messageIdOf` (Call-ID, CSeq number and From tag of the original request).
   */
  id: string
  /** the From header value of the original request (name-addr with tag), delivered as is */
  from: string
  /** the To header value of the original request */
  to: string
  /** the original Date header value; the time of receipt (RFC 1123) when absent */
  date?: string
  contentType: string
  body: Uint8Array
  /** other headers worth keeping (P-Asserted-Identity, Subject, ...), in order */
  headers?: Array<[name: string, value: string]>
}

/** A stored message: serialisable (plain data and a Uint8Array), the unit of a transfer. */
export interface OfflineRecord {
  aor: string
  id: string
  from: string
  to: string
  date: string
  contentType: string
  body: Uint8Array
  headers: Array<[name: string, value: string]>
  /** ms since the epoch when the first node stored it (kept across transfers: retention counts from here) */
  receivedAt: number
}

export const MSG_PREFIX = 'sip-gateway/offline/m/'
export const TOMB_PREFIX = 'sip-gateway/offline/t/'

/** Longest AoR accepted (characters). */
export const MAX_AOR_LENGTH = 256
const MAX_ID_LENGTH = 256
const MAX_HEADER_VALUE = 2048
const MAX_HEADERS = 32
const MAX_TIME = 0xffff_ffff_ffff // 12 hex digits: year 10889
const MAX_COUNTER = 0xffff_ffff

// sip:user@host[:port], lower-case scheme and host, no params or headers after the host
const AOR_RE = /^sips?:[A-Za-z0-9\-_.!~*'()&=+$,;?/%]{1,128}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*|\[[0-9a-f:.]{2,45}\])(?::[0-9]{1,5})?$/
const TOKEN_RE = /^[A-Za-z0-9\-.!%*_+`'~]{1,64}$/
// printable, no CR/LF or other controls: values go back into SIP headers on delivery
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u0008\u000a-\u001f\u007f]/

/** The normalized AoR (`sip:user@domain`), or throws InvalidOfflineMessageError. */
export function checkAor (aor: unknown): string {
  if (typeof aor !== 'string' || aor.length > MAX_AOR_LENGTH || !AOR_RE.test(aor)) {
    throw new InvalidOfflineMessageError(`not a normalized AoR: ${describe(aor)}`)
  }
  return aor
}

/** true when `aor` is a well-formed normalized AoR */
export function isAor (aor: unknown): aor is string {
  return typeof aor === 'string' && aor.length <= MAX_AOR_LENGTH && AOR_RE.test(aor)
}

function describe (v: unknown): string {
  const s = typeof v === 'string' ? JSON.stringify(v) : typeof v
  return s.length > 80 ? `${s.slice(0, 77)}...` : s
}

function checkText (field: string, v: unknown, max: number, allowEmpty = false): string {
  if (typeof v !== 'string') throw new InvalidOfflineMessageError(`${field} is not a string`)
  if (!allowEmpty && v.length === 0) throw new InvalidOfflineMessageError(`${field} is empty`)
  if (v.length > max) throw new InvalidOfflineMessageError(`${field} is longer than ${max}`)
  if (CONTROL_RE.test(v)) throw new InvalidOfflineMessageError(`${field} contains control characters`)
  return v
}

/**
 * Check a message handed to `store()` and turn it into a record. Throws
 * InvalidOfflineMessageError (400) or OfflineMessageTooLargeError (513).
 */
export function toRecord (aor: string, msg: OfflineMessage, receivedAt: number, maxBodyBytes: number): OfflineRecord {
  checkAor(aor)
  if (msg == null || typeof msg !== 'object') throw new InvalidOfflineMessageError('message is not an object')
  const id = checkText('id', msg.id, MAX_ID_LENGTH)
  const from = checkText('from', msg.from, MAX_HEADER_VALUE)
  const to = checkText('to', msg.to, MAX_HEADER_VALUE)
  const date = msg.date === undefined ? new Date(receivedAt).toUTCString() : checkText('date', msg.date, 128)
  const contentType = checkText('contentType', msg.contentType, 256)
  if (!(msg.body instanceof Uint8Array)) throw new InvalidOfflineMessageError('body is not bytes')
  if (msg.body.byteLength > maxBodyBytes) {
    throw new OfflineMessageTooLargeError(`body of ${msg.body.byteLength} bytes exceeds ${maxBodyBytes}`)
  }
  const headers: Array<[string, string]> = []
  const given = msg.headers ?? []
  if (!Array.isArray(given)) throw new InvalidOfflineMessageError('headers is not an array')
  if (given.length > MAX_HEADERS) throw new InvalidOfflineMessageError(`more than ${MAX_HEADERS} extra headers`)
  for (const h of given) {
    if (!Array.isArray(h) || h.length !== 2 || typeof h[0] !== 'string' || !TOKEN_RE.test(h[0])) {
      throw new InvalidOfflineMessageError(`bad extra header name ${describe(Array.isArray(h) ? h[0] : h)}`)
    }
    headers.push([h[0], checkText(`header ${h[0]}`, h[1], MAX_HEADER_VALUE, true)])
  }
  if (!Number.isSafeInteger(receivedAt) || receivedAt < 0 || receivedAt > MAX_TIME) {
    throw new InvalidOfflineMessageError('receivedAt out of range')
  }
  return { aor, id, from, to, date, contentType, body: msg.body.slice(), headers, receivedAt }
}

/** Serialize a record (the stored value, and the unit of a transfer). */
export function encodeRecord (rec: OfflineRecord): Uint8Array {
  return encode({ v: 1, aor: rec.aor, id: rec.id, from: rec.from, to: rec.to, date: rec.date, ct: rec.contentType, body: rec.body, h: rec.headers, at: rec.receivedAt })
}

/**
 * Parse and re-validate a stored or transferred record; undefined when it is corrupt (wrong
 * encoding, missing or ill-typed fields, values a fresh `store()` would refuse).
 */
export function decodeRecord (data: Uint8Array, maxBodyBytes = Number.MAX_SAFE_INTEGER): OfflineRecord | undefined {
  try {
    const o = decode(data) as Record<string, unknown>
    if (o == null || typeof o !== 'object' || o.v !== 1) return undefined
    return toRecord(o.aor as string, {
      id: o.id as string,
      from: o.from as string,
      to: o.to as string,
      date: o.date as string,
      contentType: o.ct as string,
      body: o.body as Uint8Array,
      headers: o.h as Array<[string, string]>
    }, o.at as number, maxBodyBytes)
  } catch {
    return undefined
  }
}

/** Serialize a user's backlog for a transfer to another node. */
export function encodeRecords (recs: OfflineRecord[]): Uint8Array {
  return encode(recs.map(r => encodeRecord(r)))
}

/**
 * Parse a transfer; throws InvalidOfflineMessageError when the envelope is not a list of
 * records, and drops (counting them in `corrupt`) the entries that are not valid records.
 */
export function decodeRecords (data: Uint8Array, maxBodyBytes?: number): { records: OfflineRecord[], corrupt: number } {
  let list: unknown
  try {
    list = decode(data)
  } catch (err) {
    throw new InvalidOfflineMessageError(`transfer is not CBOR: ${(err as Error).message}`)
  }
  if (!Array.isArray(list)) throw new InvalidOfflineMessageError('transfer is not a list')
  const records: OfflineRecord[] = []
  let corrupt = 0
  for (const item of list) {
    const rec = item instanceof Uint8Array ? decodeRecord(item, maxBodyBytes) : undefined
    if (rec === undefined) corrupt++
    else records.push(rec)
  }
  return { records, corrupt }
}

/**
 * The message id of a MESSAGE request: a digest of its Call-ID, CSeq number and From tag, which a
 * retransmission and every proxied copy share (RFC 3261 8.1.1, 16.6: a proxy changes none of
 * them). 32 hex characters.
 */
export function messageIdOf (callId: string, cseq: number, fromTag: string): string {
  return createHash('sha256').update(`${callId}\u0000${cseq}\u0000${fromTag}`).digest('hex').slice(0, 32)
}

export function userPrefix (aor: string): string {
  return `${MSG_PREFIX}${encodeURIComponent(aor)}/`
}

export function messageKey (aor: string, time: number, counter: number): string {
  return `${userPrefix(aor)}${time.toString(16).padStart(12, '0')}${counter.toString(16).padStart(8, '0')}`
}

export interface MessageKey { aor: string, time: number, counter: number }

const KEY_TAIL_RE = /^([^/]+)\/([0-9a-f]{12})([0-9a-f]{8})$/

/** Parse a message key; undefined when it is not one of ours. */
export function parseMessageKey (key: string): MessageKey | undefined {
  if (!key.startsWith(MSG_PREFIX)) return undefined
  const m = KEY_TAIL_RE.exec(key.slice(MSG_PREFIX.length))
  if (m == null) return undefined
  let aor: string
  try {
    aor = decodeURIComponent(m[1])
  } catch {
    return undefined
  }
  if (!isAor(aor)) return undefined
  return { aor, time: parseInt(m[2], 16), counter: parseInt(m[3], 16) }
}

export function tombstoneKey (aor: string, id: string): string {
  return `${TOMB_PREFIX}${encodeURIComponent(aor)}/${encodeURIComponent(id)}`
}

/** Parse a tombstone key; undefined when it is not one of ours. */
export function parseTombstoneKey (key: string): { aor: string, id: string } | undefined {
  if (!key.startsWith(TOMB_PREFIX)) return undefined
  const rest = key.slice(TOMB_PREFIX.length)
  const slash = rest.indexOf('/')
  if (slash < 0) return undefined
  try {
    const aor = decodeURIComponent(rest.slice(0, slash))
    const id = decodeURIComponent(rest.slice(slash + 1))
    return isAor(aor) && id.length > 0 ? { aor, id } : undefined
  } catch {
    return undefined
  }
}

export const LIMITS = { MAX_TIME, MAX_COUNTER } as const
