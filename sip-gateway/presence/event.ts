/**
 * RFC 6665 header helpers for the presence agent: Event, Expires, Subscription-State, and the
 * two sipmesh headers that carry watcher identities and per-watcher decisions on back-end
 * subscriptions between nodes.
 */
import { SipStatusError } from '../errors.ts'
import type { Decision } from './authorization.ts'

/** Event packages this node serves (Allow-Events): packages/ */
export const EVENT_PACKAGES = ['presence', 'dialog', 'presence.winfo'] as const

export interface EventHeader {
  /** the package, lower-cased (`presence`) */
  pkg: string
  /** the `id` parameter, when present (RFC 6665 8.2.1) */
  id?: string
}

const TOKEN_RE = /^[A-Za-z0-9\-.!%*_+`'~]{1,64}$/u
/** delta-seconds (a module constant: a regular expression literal in a function is a new RegExp per call) */
const SECONDS_RE = /^\d{1,10}$/u

/** Parse an Event header (absent or malformed: undefined). */
export function parseEvent (value: string | undefined): EventHeader | undefined {
  if (value === undefined || value.length > 256) return undefined
  if (!value.includes(';')) {
    // no parameters (`Event: presence`): no split
    const pkg = value.trim().toLowerCase()
    return TOKEN_RE.test(pkg) ? { pkg } : undefined
  }
  const [pkgRaw, ...params] = value.split(';')
  const pkg = pkgRaw.trim().toLowerCase()
  if (!TOKEN_RE.test(pkg)) return undefined
  const out: EventHeader = { pkg }
  for (const p of params) {
    const [k, v] = p.split('=')
    if (k.trim().toLowerCase() === 'id' && v !== undefined) out.id = v.trim()
  }
  return out
}

/** Expires as seconds; absent: undefined; malformed: 400. */
export function parseExpiresHeader (value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const t = value.trim()
  if (!SECONDS_RE.test(t)) throw new SipStatusError(400, 'Malformed Expires')
  return Number(t)
}

export type SubscriptionStateValue = 'active' | 'pending' | 'terminated'

export interface SubscriptionState {
  state: SubscriptionStateValue
  expires?: number
  reason?: string
  retryAfter?: number
}

export function formatSubscriptionState (s: SubscriptionState): string {
  let v: string = s.state
  if (s.reason !== undefined) v += `;reason=${s.reason}`
  if (s.expires !== undefined) v += `;expires=${Math.max(0, Math.floor(s.expires))}`
  if (s.retryAfter !== undefined) v += `;retry-after=${Math.max(0, Math.floor(s.retryAfter))}`
  return v
}

/** Parse Subscription-State (absent or malformed: undefined). */
export function parseSubscriptionState (value: string | undefined): SubscriptionState | undefined {
  if (value === undefined || value.length > 256) return undefined
  const [stateRaw, ...params] = value.split(';')
  const state = stateRaw.trim().toLowerCase()
  if (state !== 'active' && state !== 'pending' && state !== 'terminated') return undefined
  const out: SubscriptionState = { state }
  for (const p of params) {
    const [k, v] = p.split('=').map(x => x.trim())
    const key = k.toLowerCase()
    if (v === undefined) continue
    if (key === 'reason' && TOKEN_RE.test(v)) out.reason = v.toLowerCase()
    else if (key === 'expires' && SECONDS_RE.test(v)) out.expires = Number(v)
    else if (key === 'retry-after' && SECONDS_RE.test(v)) out.retryAfter = Number(v)
  }
  return out
}

/**
 * Back-end subscriptions carry the identities of the watchers they serve (the watcher node adds
 * them in batches on the initial SUBSCRIBE and on in-dialog refreshes) ...
 */
export const WATCHERS_HEADER = 'Sipmesh-Watchers'
/** ... and the owner answers (2xx to the SUBSCRIBE, or a NOTIFY after a rule change) with a decision per watcher. */
export const AUTHORIZATION_HEADER = 'Sipmesh-Authorization'
/** ... and the identities it no longer serves (their last user agent's subscription ended: winfo) */
export const WATCHERS_GONE_HEADER = 'Sipmesh-Watchers-Gone'
/** Most watcher identities carried by one back-end request. */
export const MAX_WATCHERS_PER_REQUEST = 200

const ENCODED_RE = /^[A-Za-z0-9%\-_.!~*'()]{1,768}$/u

export function formatWatchers (aors: readonly string[]): string {
  return aors.map(a => encodeURIComponent(a)).join(' ')
}

/** Parse a watcher list; malformed entries are dropped; more than the batch limit: 400. */
export function parseWatchers (value: string | undefined): string[] {
  if (value === undefined) return []
  const parts = value.trim().split(/\s+/u).filter(p => p !== '')
  if (parts.length > MAX_WATCHERS_PER_REQUEST) throw new SipStatusError(400, `Too Many ${WATCHERS_HEADER}`)
  const out: string[] = []
  for (const p of parts) {
    if (!ENCODED_RE.test(p)) continue
    try { out.push(decodeURIComponent(p)) } catch { /* dropped */ }
  }
  return out
}

export function formatDecisions (decisions: Iterable<readonly [string, Decision]>): string {
  const parts: string[] = []
  for (const [aor, d] of decisions) parts.push(`${d}=${encodeURIComponent(aor)}`)
  return parts.join(' ')
}

export function parseDecisions (value: string | undefined): Map<string, Decision> {
  const out = new Map<string, Decision>()
  if (value === undefined) return out
  for (const p of value.trim().split(/\s+/u)) {
    const eq = p.indexOf('=')
    if (eq < 0) continue
    const d = p.slice(0, eq)
    const enc = p.slice(eq + 1)
    if ((d !== 'allow' && d !== 'block' && d !== 'polite-block') || !ENCODED_RE.test(enc)) continue
    try { out.set(decodeURIComponent(enc), d) } catch { /* dropped */ }
    if (out.size >= 10_000) break
  }
  return out
}
