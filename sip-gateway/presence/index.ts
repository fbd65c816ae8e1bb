/**
 * Presence. `agent.ts` is the presence agent (issues 4 and 12) the gateway runs: RFC 6665 notifier
 * and subscriber for the event packages of `packages/` (presence, dialog, presence.winfo; the
 * interface is `package.ts`), RFC 3903 PUBLISH, held subscriptions, moves, one back-end
 * subscription per presentity and package between nodes (see its header for the rooms:
 * notifier.ts, backend.ts, resources.ts, rules-exchange.ts, limits.ts, requests.ts); `event.ts`
 * has its header helpers. The gateway imports the agent directly (it imports `sipStatusFor` from
 * here).
 *
 * The building blocks below are pure modules the agent is built from. None of them touches the
 * network, the transaction layer or the mesh.
 *
 * - `pidf.ts`: PIDF (RFC 3863) parsing and building; unknown elements kept; hostile input refused
 *   with `PidfError` (400).
 * - `compose.ts`: several publications of one presentity composed into one document; the document
 *   derived from registration state when nobody has published.
 * - `publications.ts`: the RFC 3903 publication store (entity tags, refresh, modify, remove,
 *   expiry; 412 / 423 / 400 / 403 as typed errors).
 * - `authorization.ts`: allow / block / polite-block rules with a documented precedence, persisted
 *   through `DurableStore`; the neutral document for polite-block; the draft's privacy rule.
 * - `loop.ts`: loop detection for back-end subscriptions (draft 7.2.1).
 * - `dialog-info.ts`, `watcherinfo.ts`: the RFC 4235 and RFC 3858 bodies, read with pidf.ts's
 *   hardened XML reader (`xml.ts`); hostile input refused with a `BodyError` (400).
 * - `lists/`: resource lists (RFC 4662, RFC 4826, RFC 5367): `list.ts` (the admin API's JSON),
 *   `resource-lists.ts` (RFC 4826 documents; `ResourceListsError` 400 / 413), `rlmi.ts` (the
 *   multipart/related RLMI NOTIFY body), `store.ts` (persisted lists), `server.ts` (the list
 *   server room of the agent), `exchange.ts` (lists across the mesh).
 *
 * `sipStatusFor(err)` turns the errors of these modules into the SIP response the gateway sends.
 */

import { AuthorizationRuleError } from './authorization.ts'
import { PathHeaderError } from './loop.ts'
import { PidfError } from './pidf.ts'
import { DialogInfoError } from './dialog-info.ts'
import { WatcherInfoError } from './watcherinfo.ts'
import { ResourceListsError } from './lists/resource-lists.ts'
import { BadPublicationError, ConditionalRequestFailedError, IntervalTooBriefError, TooManyPublicationsError } from './publications.ts'

export * from './pidf.ts'
export * from './compose.ts'
export * from './publications.ts'
export * from './authorization.ts'
export * from './loop.ts'
export * from './dialog-info.ts'
export * from './watcherinfo.ts'

export interface SipStatus {
  status: number
  reason: string
  /** extra response headers (e.g. Min-Expires on 423) */
  headers?: Record<string, string>
}

/** Reason-phrase safe: no control characters (CR/LF would split the status line), bounded length. */
function phrase (text: string): string {
  // eslint-disable-next-line no-control-regex -- stripping control characters is the point
  return text.replace(/[\u0000-\u001f\u007f]+/gu, ' ').slice(0, 120)
}

/** The SIP response for an error of the presence modules, or undefined for any other error. */
export function sipStatusFor (err: unknown): SipStatus | undefined {
  if (err instanceof PidfError) return { status: 400, reason: `Bad Request (${phrase(err.reason)})` }
  if (err instanceof DialogInfoError || err instanceof WatcherInfoError) return { status: 400, reason: `Bad Request (${phrase(err.reason)})` }
  if (err instanceof ResourceListsError) return err.status === 413 ? { status: 413, reason: 'Request Entity Too Large (too many list entries)' } : { status: 400, reason: `Bad Request (${phrase(err.reason)})` }
  if (err instanceof BadPublicationError) return { status: 400, reason: `Bad Request (${phrase(err.reason)})` }
  if (err instanceof PathHeaderError) return { status: 400, reason: 'Bad Request (malformed hop list)' }
  if (err instanceof ConditionalRequestFailedError) return { status: 412, reason: 'Conditional Request Failed' }
  if (err instanceof IntervalTooBriefError) return { status: 423, reason: 'Interval Too Brief', headers: { 'Min-Expires': String(err.minExpires) } }
  if (err instanceof TooManyPublicationsError) return { status: 403, reason: 'Forbidden (too many publications)' }
  if (err instanceof AuthorizationRuleError) return { status: 400, reason: `Bad Request (${phrase(err.message)})` }
  return undefined
}
