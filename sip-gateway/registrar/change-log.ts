/**
 * The registrar's info lines for a person reading the log (issue 14): one line per change of an
 * AoR on this node, never one per refresh:
 *
 *   registration added        a new AoR here, its claim won (`from`: the node it was on before)
 *   registration removed      its last binding ended: `why` unregistered or expired
 *   registration moved away   a newer registration on another node took it (`owner`)
 *   claim lost                a concurrent newer claim of another node won; the REGISTER is redirected
 *
 * Sampled (at most `perSecond` lines a second, the count left out given on the next line), so a
 * registration storm of thousands a second costs a counter, not a write per REGISTER.
 */
import { LogSampler } from '../transport/limits.ts'
import type { ClaimResult, Logger, Route } from '../ports.ts'

export class RegistrationLog {
  readonly #log: Logger
  readonly #sampler: LogSampler

  constructor (log: Logger, perSecond = 50) {
    this.#log = log
    this.#sampler = new LogSampler(perSecond)
  }

  #line (msg: string, fields: Record<string, unknown>): void {
    const { log, suppressed } = this.#sampler.allow()
    if (!log) return
    this.#log.info(msg, suppressed > 0 ? { ...fields, suppressed } : fields)
  }

  added (aor: string, contacts: number, claim: ClaimResult, self: string): void {
    const from = claim.previous !== undefined && claim.previous.node !== self ? claim.previous.node : undefined
    this.#line('registration added', { aor, contacts, claim: 'won', version: claim.route.version.toString(), replicas: claim.replicas, ...(from !== undefined ? { from } : {}) })
  }

  removed (aor: string, why: 'unregistered' | 'expired'): void {
    this.#line('registration removed', { aor, why })
  }

  movedAway (aor: string, by: Route): void {
    this.#line('registration moved away', { aor, owner: by.node, sip: by.sip, why: 'a newer registration on another node' })
  }

  lost (aor: string, winner: Route): void {
    this.#line('claim lost', { aor, owner: winner.node, why: 'a concurrent newer registration on another node won; REGISTER redirected' })
  }
}
