/**
 * The dialog event package's view of the INVITEs this node proxies (RFC 4235; issue 12): whose
 * dialog a new INVITE is on this node, and how to tell its states to the observer.
 */
import type { SipRequest } from '../codec/message.ts'
import { parseUri, aorOf } from '../codec/uri.ts'
import { parseNameAddr } from '../codec/name-addr.ts'
import type { Logger } from '../ports.ts'
import type { Registrar } from '../registrar/registrar.ts'
import { MESH_TRANSPORT, type Flow } from './flow.ts'
import { hasToTag } from './message-reading.ts'

/**
 * Seam for the dialog event package (RFC 4235; issue 12): told of the INVITE dialogs this node
 * proxies for users of its own, as Kamailio's dialoginfo modules observe them. `invite`: the
 * callee's AoR when this node delivers the INVITE to its devices (`recipient`), the caller's when
 * the INVITE came from one of its devices registered here (`initiator`); `early` on a provisional
 * above 100, `confirmed` on a 2xx, `terminated` on the final failure (a CANCEL ends as 487).
 * `ended`: a BYE of that Call-ID passed this node. The proxy knows nothing of what listens.
 */
export type ProxiedDialogEvent =
  | { kind: 'invite', aor: string, direction: 'initiator' | 'recipient', callId: string, remote: string, state: 'trying' | 'early' | 'confirmed' | 'terminated', code?: number }
  | { kind: 'ended', callId: string }
export type DialogObserver = (event: ProxiedDialogEvent) => void

/**
 * The dialog observer's view of a new INVITE: whose dialog it is on this node (the callee's when
 * delivered to its devices here, the caller's when it came from a device registered here), told
 * `trying` now; returns how to tell its next states (undefined: nobody of ours, or no observer).
 */
export function observeInvite (observer: DialogObserver | undefined, registrar: Registrar<Flow>, log: Logger, request: SipRequest, inbound: Flow, targets: ReadonlyArray<{ aorOffline?: string }>): ((state: 'early' | 'confirmed' | 'terminated', code: number) => void) | undefined {
  if (observer === undefined || request.method !== 'INVITE' || hasToTag(request)) return undefined
  const callId = request.headers.get('Call-ID') ?? ''
  const parties: Array<{ aor: string, direction: 'initiator' | 'recipient', remote: string }> = []
  const from = uriOf(request.headers.get('From'))
  const to = uriOf(request.headers.get('To'))
  const callee = targets.find(t => t.aorOffline !== undefined)?.aorOffline
  if (callee !== undefined) parties.push({ aor: callee, direction: 'recipient', remote: from ?? '' })
  if (inbound.transport !== MESH_TRANSPORT && from !== undefined) {
    try {
      const caller = aorOf(parseUri(from))
      if (registrar.lookup(caller).length > 0) parties.push({ aor: caller, direction: 'initiator', remote: to ?? '' })
    } catch { /* not ours */ }
  }
  if (parties.length === 0) return undefined
  const tell = (state: 'trying' | 'early' | 'confirmed' | 'terminated', code?: number): void => {
    for (const p of parties) {
      // RFC 4235 3.7.1: the initiator is trying once its INVITE is sent; a recipient's dialog starts early
      if (state === 'trying' && p.direction !== 'initiator') continue
      try { observer({ kind: 'invite', ...p, callId, state, code }) } catch (err) { log.debug('dialog observer failed', { err: String(err) }) }
    }
  }
  tell('trying')
  return tell
}

/** the URI of a name-addr header value (From, To), or undefined when malformed */
function uriOf (value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  try { return parseNameAddr(value).uri } catch { return undefined }
}
