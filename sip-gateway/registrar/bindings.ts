/**
 * The location service's data (RFC 3261 10.2 / 10.3): the contacts bound to each AoR, with the
 * Call-ID and CSeq of the REGISTER that last touched them.
 */
import { parseUri } from '../codec/uri.ts'

export interface Binding<Flow = unknown> {
  aor: string
  /** the Contact URI as registered */
  uri: string
  /** the Contact header parameters other than `expires` (`q`, `+sip.instance`, `reg-id`...), as written */
  params: Record<string, string | null>
  /** ms since the epoch */
  expiresAt: number
  callId: string
  cseq: number
  /** the flow the REGISTER came over (a TCP or WebSocket connection): how to reach a UA behind NAT or on a WebSocket. Never persisted. */
  flow?: Flow
}

/** Durable store key prefix of registrations. */
export const STORE_PREFIX = 'sip-gateway/registrar/'

/** A binding as the registrar keeps it: the Binding fields plus its contact key (for the index). */
export interface StoredBinding<Flow = unknown> extends Binding<Flow> {
  readonly key: string
  /**
   * the expiry its AoR's stored record holds for it (durable-horizon.ts), ms since the epoch; 0
   * when the record does not hold this binding as it is (never written, or changed since)
   */
  durableUntil: number
}

/**
 * Key under which two Contact URIs are "the same binding" (RFC 3261 19.1.4, simplified): scheme,
 * user (case-sensitive), host (case-insensitive), port and transport.
 */
export function contactKey (uri: string): string {
  const u = parseUri(uri)
  const transport = u.params.transport
  return `${u.scheme}:${u.user ?? ''}@${u.host.toLowerCase()}:${u.port ?? ''};${typeof transport === 'string' ? transport.toLowerCase() : ''}`
}

/** What the durable store keeps per AoR (flows are not kept: they do not survive a restart). */
export interface StoredRegistration {
  aor: string
  bindings: Array<Omit<Binding, 'flow' | 'aor'>>
}

/** the params of a binding that has none: one shared frozen object, not one per binding */
export const EMPTY_PARAMS: Record<string, string | null> = Object.freeze({}) as Record<string, string | null>

/**
 * A copy of `s` that holds nothing else alive. Header values are slices of the whole message's
 * text, and a string built from them may point into it too: a binding that kept them would keep
 * every REGISTER it ever saw (~350 bytes each). Short strings are copied by V8 anyway.
 */
export function ownString (s: string): string {
  return s.length < 13 ? s : Buffer.from(s, 'utf8').toString('utf8')
}

const enc = new TextEncoder()
const dec = new TextDecoder()

/** the record of an AoR's bindings, each stored with its durable horizon as its expiry */
export function encodeRegistration (aor: string, bindings: Iterable<StoredBinding>): Uint8Array {
  const rec: StoredRegistration = { aor, bindings: [] }
  for (const b of bindings) rec.bindings.push({ uri: b.uri, params: b.params, expiresAt: b.durableUntil, callId: b.callId, cseq: b.cseq })
  return enc.encode(JSON.stringify(rec))
}

/** Parse a stored record; anything malformed yields undefined (a corrupt entry is skipped, not fatal). */
export function decodeRegistration (data: Uint8Array): StoredRegistration | undefined {
  try {
    const rec = JSON.parse(dec.decode(data)) as StoredRegistration
    if (typeof rec?.aor !== 'string' || !Array.isArray(rec.bindings)) return undefined
    const bindings = rec.bindings.filter(b => typeof b?.uri === 'string' && typeof b.expiresAt === 'number' &&
      typeof b.callId === 'string' && typeof b.cseq === 'number' && typeof b.params === 'object' && b.params !== null)
    return { aor: rec.aor, bindings }
  } catch {
    return undefined
  }
}
