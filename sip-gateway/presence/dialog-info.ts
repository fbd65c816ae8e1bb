/**
 * The dialog event package's body (RFC 4235 4): `application/dialog-info+xml`. Parsed with the
 * hardened XML reader of pidf.ts (no DOCTYPE, so no entity can expand; size, depth and element
 * caps), then checked against the parts of the schema the package uses: the root's `version`
 * (non-negative integer), `state` (`full` | `partial`) and `entity` (a URI); each `dialog` with an
 * `id` and a `state` among RFC 4235's five; at most `MAX_DIALOGS` dialogs. Elements the model
 * does not use (session descriptions, route sets, extensions) are dropped. Every failure is a
 * `DialogInfoError` (400).
 */
import { escapeAttr, escapeText, type XmlElement } from './pidf.ts'
import { attrOf as attr, readRoot, textOf as text, childrenOf, BodyError } from './xml.ts'

export const DIALOG_INFO_NS = 'urn:ietf:params:xml:ns:dialog-info'
export const DIALOG_INFO_CONTENT_TYPE = 'application/dialog-info+xml'
/** most dialogs in one document (a desk phone has a handful; 400 above) */
export const MAX_DIALOGS = 256

export const DIALOG_STATES = ['trying', 'proceeding', 'early', 'confirmed', 'terminated'] as const
export type DialogState = typeof DIALOG_STATES[number]

export class DialogInfoError extends BodyError {
  static override name = 'DialogInfoError'
  override name = 'DialogInfoError'
  constructor (reason: string) { super('dialog-info', reason) }
}

export interface Participant {
  identity?: string
  target?: string
}

export interface DialogEntry {
  id: string
  callId?: string
  localTag?: string
  remoteTag?: string
  direction?: 'initiator' | 'recipient'
  state: DialogState
  /** the state element's `event` attribute (cancelled, rejected, replaced, local-bye, remote-bye, error, timeout) */
  event?: string
  /** the state element's `code` attribute (the response code) */
  code?: number
  duration?: number
  local?: Participant
  remote?: Participant
}

export interface DialogInfo {
  version: number
  state: 'full' | 'partial'
  entity: string
  dialogs: DialogEntry[]
}

const URI_RE = /^[A-Za-z][A-Za-z0-9+.-]*:[^\s<>"]{1,1024}$/u
/** ids, Call-IDs and tags: printable, no white space, bounded (a Call-ID may hold most characters) */
const TOKEN_RE = /^[\x21-\x7e]{1,256}$/u
const EVENTS = new Set(['cancelled', 'rejected', 'replaced', 'local-bye', 'remote-bye', 'error', 'timeout'])

function children (el: XmlElement, name: string): XmlElement[] { return childrenOf(el, DIALOG_INFO_NS, name) }

function participant (el: XmlElement | undefined): Participant | undefined {
  if (el === undefined) return undefined
  const out: Participant = {}
  const identity = children(el, 'identity')[0]
  if (identity !== undefined) {
    const v = text(identity)
    if (!URI_RE.test(v)) throw new DialogInfoError('identity is not a URI')
    out.identity = v
  }
  const target = children(el, 'target')[0]
  if (target !== undefined) {
    const v = attr(target, 'uri') ?? ''
    if (!URI_RE.test(v)) throw new DialogInfoError('target uri is not a URI')
    out.target = v
  }
  return out
}

function optionalToken (el: XmlElement, name: string): string | undefined {
  const v = attr(el, name)
  if (v === undefined) return undefined
  if (!TOKEN_RE.test(v)) throw new DialogInfoError(`malformed ${name}`)
  return v
}

function dialogOf (el: XmlElement): DialogEntry {
  const id = optionalToken(el, 'id')
  if (id === undefined) throw new DialogInfoError('dialog without an id')
  const stateEl = children(el, 'state')[0]
  if (stateEl === undefined) throw new DialogInfoError('dialog without a state')
  const state = text(stateEl) as DialogState
  if (!DIALOG_STATES.includes(state)) throw new DialogInfoError('unknown dialog state')
  const d: DialogEntry = { id, state }
  const callId = optionalToken(el, 'call-id')
  if (callId !== undefined) d.callId = callId
  const localTag = optionalToken(el, 'local-tag')
  if (localTag !== undefined) d.localTag = localTag
  const remoteTag = optionalToken(el, 'remote-tag')
  if (remoteTag !== undefined) d.remoteTag = remoteTag
  const direction = attr(el, 'direction')
  if (direction !== undefined) {
    if (direction !== 'initiator' && direction !== 'recipient') throw new DialogInfoError('unknown direction')
    d.direction = direction
  }
  const event = attr(stateEl, 'event')
  if (event !== undefined) {
    if (!EVENTS.has(event)) throw new DialogInfoError('unknown state event')
    d.event = event
  }
  const code = attr(stateEl, 'code')
  if (code !== undefined) {
    if (!/^[1-6]\d\d$/u.test(code)) throw new DialogInfoError('malformed state code')
    d.code = Number(code)
  }
  const duration = children(el, 'duration')[0]
  if (duration !== undefined) {
    const v = text(duration)
    if (!/^\d{1,9}$/u.test(v)) throw new DialogInfoError('malformed duration')
    d.duration = Number(v)
  }
  const local = participant(children(el, 'local')[0])
  if (local !== undefined) d.local = local
  const remote = participant(children(el, 'remote')[0])
  if (remote !== undefined) d.remote = remote
  return d
}

/** Parse a dialog-info document; throws DialogInfoError on anything malformed, oversized or hostile. */
export function parseDialogInfo (body: string | Uint8Array): DialogInfo {
  const root = readRoot(body, { maxBytes: 32 * 1024, maxDepth: 16, maxElements: MAX_DIALOGS * 12 }, reason => new DialogInfoError(reason))
  if (root.ns !== DIALOG_INFO_NS || root.name !== 'dialog-info') throw new DialogInfoError('the root is not dialog-info')
  const version = attr(root, 'version') ?? ''
  if (!/^\d{1,15}$/u.test(version)) throw new DialogInfoError('malformed version')
  const state = attr(root, 'state')
  if (state !== 'full' && state !== 'partial') throw new DialogInfoError('state is neither full nor partial')
  const entity = attr(root, 'entity') ?? ''
  if (!URI_RE.test(entity)) throw new DialogInfoError('entity is not a URI')
  const els = children(root, 'dialog')
  if (els.length > MAX_DIALOGS) throw new DialogInfoError(`more than ${MAX_DIALOGS} dialogs`)
  const dialogs: DialogEntry[] = []
  const ids = new Set<string>()
  for (const el of els) {
    const d = dialogOf(el)
    if (ids.has(d.id)) throw new DialogInfoError('two dialogs with one id')
    ids.add(d.id)
    dialogs.push(d)
  }
  return { version: Number(version), state, entity, dialogs }
}

function participantXml (name: string, p: Participant | undefined): string {
  if (p === undefined || (p.identity === undefined && p.target === undefined)) return ''
  let out = `<${name}>`
  if (p.identity !== undefined) out += `<identity>${escapeText(p.identity)}</identity>`
  if (p.target !== undefined) out += `<target uri="${escapeAttr(p.target)}"/>`
  return out + `</${name}>`
}

/** one dialog element (also the unit partial state is compared in) */
export function dialogXml (d: DialogEntry): string {
  let out = `<dialog id="${escapeAttr(d.id)}"`
  if (d.callId !== undefined) out += ` call-id="${escapeAttr(d.callId)}"`
  if (d.localTag !== undefined) out += ` local-tag="${escapeAttr(d.localTag)}"`
  if (d.remoteTag !== undefined) out += ` remote-tag="${escapeAttr(d.remoteTag)}"`
  if (d.direction !== undefined) out += ` direction="${d.direction}"`
  out += '><state'
  if (d.event !== undefined) out += ` event="${escapeAttr(d.event)}"`
  if (d.code !== undefined) out += ` code="${d.code}"`
  out += `>${d.state}</state>`
  if (d.duration !== undefined) out += `<duration>${d.duration}</duration>`
  out += participantXml('local', d.local) + participantXml('remote', d.remote)
  return out + '</dialog>'
}

/** Build a dialog-info document. */
export function buildDialogInfo (doc: DialogInfo): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<dialog-info xmlns="${DIALOG_INFO_NS}" version="${doc.version}" state="${doc.state}" entity="${escapeAttr(doc.entity)}">` +
    doc.dialogs.map(dialogXml).join('') + '</dialog-info>'
}
