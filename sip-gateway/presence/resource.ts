/**
 * The agent's shared records: a resource (one presentity in one event package, with its mode and
 * subscriptions), a subscription this node is the notifier of, and a back-end subscription this
 * node holds to the owner of a remote resource. The rooms (notifier.ts, backend.ts,
 * resources.ts) work on these; helpers on dialog identifiers live here too.
 */
import { randomBytes } from 'node:crypto'
import { parseNameAddr, parseNameAddrShared } from '../codec/name-addr.ts'
import { parseUri, aorOf } from '../codec/uri.ts'
import type { SipRequest } from '../codec/message.ts'
import { SipStatusError } from '../errors.ts'
import { generateTag } from '../codec/response.ts'
import { parseCSeq } from '../codec/cseq.ts'
import type { Aor, Unwatch } from '../ports.ts'
import type { Flow } from '../proxy/flow.ts'
import type { Decision } from './authorization.ts'
import type { SubscriptionState } from './event.ts'
import type { EventPackage, RenderState } from './package.ts'

/**
 * `local`: this node owns the AoR and serves the composed state; `remote`: another node owns it,
 * this node holds one back-end subscription to it; `held`: nobody owns it.
 */
export type Mode = 'local' | 'remote' | 'held'
/**
 * 'list': the owner answered 421, the URI is a resource list (RFC 4662) and needs `Supported: eventlist`;
 * 'plain': a peer network that is not sipmesh (presence/peering.ts): watchers subscribe one by one
 */
export type BackendState = 'none' | 'pending' | 'accepted' | 'loop' | 'failed' | 'list' | 'plain'

/** The dialog a notifier holds with one subscriber (RFC 6665 4.2.1): what its NOTIFYs are built from. */
export interface NotifierDialog {
  key: string
  callId: string
  localTag: string
  remoteTag: string
  /** our From (the SUBSCRIBE's To without tag) */
  localUri: string
  /** their To (the SUBSCRIBE's From, tag included) */
  remote: string
  remoteTarget: string
  routeSet: string[]
  flow: Flow
  cseq: number
  remoteCseq: number
  expiresAt: number
}

/** A subscription this node is the notifier of: a user agent's, or another node's back-end one. */
export interface Sub extends NotifierDialog {
  kind: 'ua' | 'backend'
  p: Resource
  /** ua: the watcher AoR; backend: the origin node id */
  watcher: string
  /** the notifier's expiry slot it sits in (notifier.ts) */
  slot?: number
  /** backend: watcher identities and this node's decision for each */
  identities?: Map<string, Decision>
  /** backend: the peer network (its domain) that holds it, when not a node of this mesh (peering.ts) */
  peer?: string
  /** backend of a peer, served while another node owns the presentity: identities the owner has not decided yet */
  undecided?: Set<string>
  sending: boolean
  dirty: boolean
  /** a final NOTIFY is queued or sent */
  ending?: SubscriptionState
  done: boolean
  /** decisions to carry on the next NOTIFY (backend, after a rule change) */
  pushDecisions?: Map<string, Decision>
  /** what was sent last (state and canonical body), so that an unchanged state is not sent again */
  told?: { state: string, body: Uint8Array }
  /** the next NOTIFY must be sent even when nothing changed (after a SUBSCRIBE) */
  force?: boolean
  /** ua: what the package's `render` keeps between NOTIFYs (versions) */
  render?: RenderState
  /**
   * A member of a list subscription (lists/server.ts): no dialog of its own; what would be sent
   * in a NOTIFY is handed to the list server instead
   */
  sink?: (state: SubscriptionState, body: Uint8Array) => void
}

/** This node's back-end subscription to the owner of a remote resource. */
export interface Backend {
  /** the owner node, or `peer:<domain>` for a peer network (peering.ts) */
  node: string
  /** to a peer network: the TLS flow the dialog uses */
  flow?: Flow
  callId: string
  localTag: string
  remoteTag?: string
  remoteTarget?: string
  cseq: number
  inflight: boolean
  ended: boolean
  established: boolean
  queued: Set<string>
  /** identities this node no longer serves, to tell the owner */
  gone: Set<string>
  refreshTimer?: ReturnType<typeof setTimeout>
  retryTimer?: ReturnType<typeof setTimeout>
}

/** One presentity in one event package, while anybody subscribes to it here. */
export interface Resource {
  /** `resourceKey(pkg.name, aor)` */
  key: string
  pkg: EventPackage
  aor: Aor
  mode: Mode
  /** remote: the owner node, or `peer:<domain>` for a presentity of a peer network (peering.ts) */
  owner?: string
  subs: Set<Sub>
  unwatch?: Unwatch
  backend?: Backend
  backendState: BackendState
  ownerDecisions: Map<string, Decision>
  remoteDoc?: Uint8Array
  waiters: Map<string, Array<() => void>>
  ready: Promise<void>
  doc?: Uint8Array
  neutral?: Uint8Array
  /** identities of SUBSCRIBEs being processed (not yet subscriptions): the back-end asks for them too */
  wanted: Map<string, number>
  closedTimer?: ReturnType<typeof setTimeout>
  retryTimer?: ReturnType<typeof setTimeout>
  /** when the last back-end subscription was started (ms) */
  lastStart: number
}

export function resourceKey (pkg: string, aor: Aor): string {
  return pkg === 'presence' ? aor : `${pkg}\n${aor}`
}

/**
 * A copy of a string that does not keep its source alive: header values are slices of the whole
 * received message, which a long-lived subscription would otherwise retain (~0.5-1 KB each).
 */
export function own (s: string): string {
  return s.length < 13 ? s : (' ' + s).slice(1)
}

export function dialogKey (callId: string, localTag: string, remoteTag: string): string {
  return `${callId}\n${localTag}\n${remoteTag}`
}

/** the tag of a From or To value (read through the codec's shared parse: the proxy read the same request's From and To) */
export function tagOf (value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  try {
    const t = parseNameAddrShared(value).params.tag
    return typeof t === 'string' && t !== '' ? t : undefined
  } catch { return undefined }
}

export function stripTag (value: string): string {
  try {
    const n = parseNameAddr(value)
    return `<${n.uri}>`
  } catch { return value }
}

const BRANCH_PREFIX = 'z9hG4bKpa' + randomBytes(5).toString('base64url')
let branchCounter = 0
export function newBranch (): string {
  branchCounter = (branchCounter + 1) % Number.MAX_SAFE_INTEGER
  return BRANCH_PREFIX + branchCounter.toString(36)
}

/** What a SUBSCRIBE that creates a dialog must carry (RFC 6665 4.1, RFC 3261 12.1.1), checked. */
export interface SubscribeDialog {
  from: string
  to: string
  callId: string
  cseq: string
  /** the subscriber's AoR, from From */
  fromAor: string
  remoteTag: string
  remoteTarget: string
}

/**
 * The notifier's side of the dialog a SUBSCRIBE (checked by `subscribeDialogOf`) creates: a new
 * local tag, and the strings copied off the received message (`own`).
 */
export function notifierDialog (d: Omit<SubscribeDialog, 'fromAor'>, routeSet: readonly string[], flow: Flow, expires: number): NotifierDialog {
  const localTag = generateTag()
  return {
    key: own(dialogKey(d.callId, localTag, d.remoteTag)),
    callId: own(d.callId),
    localTag,
    remoteTag: own(d.remoteTag),
    localUri: own(stripTag(d.to)),
    remote: own(d.from),
    remoteTarget: own(d.remoteTarget),
    routeSet: routeSet.map(own),
    flow,
    cseq: 0,
    remoteCseq: parseCSeq(d.cseq).seq,
    expiresAt: Date.now() + expires * 1000
  }
}

/** The dialog fields of a SUBSCRIBE; throws 400 when one is missing or malformed. */
export function subscribeDialogOf (request: SipRequest): SubscribeDialog {
  const h = request.headers
  const contact = h.get('Contact')
  const from = h.get('From')
  const to = h.get('To')
  const callId = h.get('Call-ID')
  const cseq = h.get('CSeq')
  if (contact === undefined || from === undefined || to === undefined || callId === undefined || cseq === undefined) throw new SipStatusError(400, 'Missing Header')
  let fromAor: string
  let remoteTarget: string
  let remoteTag: string | undefined
  try {
    const f = parseNameAddr(from)
    fromAor = aorOf(parseUri(f.uri))
    remoteTag = typeof f.params.tag === 'string' ? f.params.tag : undefined
    remoteTarget = parseNameAddr(contact).uri
    parseUri(remoteTarget)
  } catch {
    throw new SipStatusError(400, 'Malformed From or Contact')
  }
  if (remoteTag === undefined) throw new SipStatusError(400, 'Missing From Tag')
  return { from, to, callId, cseq, fromAor, remoteTag, remoteTarget }
}
