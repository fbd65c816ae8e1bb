// Shared pieces of the registrar tests: REGISTER requests and a registry whose claims can be held.
import { SipRequest, Headers } from '../../../sip-gateway/codec/index.ts'
import { MemoryRegistry } from '../../../dht/memory-registry.ts'
import type { AbortOptions, Aor, ClaimResult, LocalBinding } from '../../../sip-gateway/ports.ts'

export function registerFor (user: string, o: { contact?: string, expires?: number, callId?: string, cseq?: number } = {}): SipRequest {
  const aor = `sip:${user}@example.com`
  const h = new Headers()
  h.append('Via', 'SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK' + Math.random().toString(36).slice(2))
  h.append('From', `<${aor}>;tag=1`)
  h.append('To', `<${aor}>`)
  h.append('Call-ID', o.callId ?? `call-${user}`)
  h.append('CSeq', `${o.cseq ?? 1} REGISTER`)
  h.append('Contact', o.contact ?? `<sip:${user}@127.0.0.1:5070>`)
  if (o.expires !== undefined) h.append('Expires', String(o.expires))
  return new SipRequest('REGISTER', 'sip:example.com', h)
}

/**
 * A memory registry whose claims wait while `held` (then go through, in order), or fail while
 * `failing`; counts claims in progress and the most seen at once.
 */
export class HeldRegistry extends MemoryRegistry {
  held = false
  failing = false
  inProgress = 0
  maxInProgress = 0
  claims = 0
  #waiters: Array<() => void> = []

  override async claim (aor: Aor, binding: LocalBinding, options?: AbortOptions): Promise<ClaimResult> {
    this.inProgress++
    this.maxInProgress = Math.max(this.maxInProgress, this.inProgress)
    try {
      if (this.held) await new Promise<void>(resolve => { this.#waiters.push(resolve) })
      if (this.failing) throw new Error('no replica answered')
      const r = await super.claim(aor, binding, options)
      this.claims++
      return r
    } finally {
      this.inProgress--
    }
  }

  /** claims waiting now */
  get waiting (): number { return this.#waiters.length }

  letGo (): void {
    this.held = false
    for (const w of this.#waiters.splice(0)) w()
  }
}

export const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

export async function until (check: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}
