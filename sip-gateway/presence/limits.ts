/**
 * The agent's limits on what user agents ask of it: the per-source rate of SUBSCRIBE and PUBLISH
 * (a token bucket per source host, as the transport layer's), and the expiry a subscription is
 * granted (RFC 6665 4.2.1.1: shorter than the minimum but not 0 is 423).
 */
import { SipStatusError } from '../errors.ts'
import { SourceRateLimiter } from '../transport/limits.ts'
import { MESH_TRANSPORT, type Flow } from '../proxy/flow.ts'
import { parseExpiresHeader } from './event.ts'

export class TooBriefError extends Error {
  static override name = 'TooBriefError'
  override name = 'TooBriefError'
  readonly min: number
  constructor (min: number) { super('interval too brief'); this.min = min }
}

export class RateLimitedError extends SipStatusError {
  constructor () { super(503, 'Service Unavailable (rate limited)') }
}

/** the rate-limit key of a source address: lower case, `::ffff:a.b.c.d` as `a.b.c.d` */
export function sourceHost (host: string): string {
  const h = host.toLowerCase()
  return h.startsWith('::ffff:') && h.includes('.') ? h.slice(7) : h
}

export interface AgentLimitsInit {
  /** shortest subscription accepted, s (shorter but not 0: 423). @default 60 */
  minExpires?: number
  /** longest subscription granted, s. @default 3600 */
  maxExpires?: number
  /** granted when the SUBSCRIBE has no Expires, s. @default 3600 */
  defaultExpires?: number
  /** absent: no limit (see PresenceAgentInit) */
  rateLimit?: { burst: number, perSecond: number }
}

export class AgentLimits {
  readonly min: number
  readonly #max: number
  readonly #default: number
  readonly #rate: SourceRateLimiter | undefined
  rateLimited = 0

  constructor (init: AgentLimitsInit) {
    this.min = init.minExpires ?? 60
    this.#max = init.maxExpires ?? 3600
    this.#default = Math.min(init.defaultExpires ?? 3600, this.#max)
    // the transport layer's per-source token bucket, applied here to SUBSCRIBE and PUBLISH only
    this.#rate = init.rateLimit === undefined ? undefined : new SourceRateLimiter({ maxSources: 10_000, ...init.rateLimit })
  }

  /** the expiry granted to a SUBSCRIBE, s; throws TooBriefError (423) or 400 */
  grant (expiresHeader: string | undefined, min = this.min): number {
    const e = parseExpiresHeader(expiresHeader)
    if (e === undefined) return this.#default
    if (e === 0) return 0
    if (e < min) throw new TooBriefError(min)
    return Math.min(e, this.#max)
  }

  /**
   * The per-source limit, keyed by host alone (as the transport layer's SourceRateLimiter is):
   * a key with the port or transport would give a flooder a fresh bucket per source port or TCP
   * connection. An IPv4-mapped IPv6 address counts as its IPv4 address. Mesh peers are not limited.
   */
  take (flow: Flow): void {
    if (this.#rate === undefined || flow.transport === MESH_TRANSPORT) return
    if (this.#rate.take(sourceHost(flow.remote.host))) return
    this.rateLimited++
    throw new RateLimitedError()
  }
}
