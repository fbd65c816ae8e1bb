/**
 * A resource list as the operator defines it through the admin API (`PUT /lists/<uri>`, issue 12
 * section 4): the list URI (an address of a served domain, RFC 4662 4.1: a SUBSCRIBE to it is a
 * list subscription), its members (presentity AoRs, flattened: RFC 4826's nesting is not kept) and
 * an optional owner (a personal list: only she may subscribe). `parseResourceList` validates the
 * JSON the API receives; failures are `ListError` with the HTTP status and stable code the API
 * answers with (400 bad_list / bad_aor, 413 too_large).
 *
 * Nested lists are refused rather than expanded (`ListStore` checks that no member names a list),
 * so lists pointing at each other cannot form a loop (RFC 4662 4.5 leaves nesting to the server).
 */
import { aorOf, parseUri } from '../../codec/uri.ts'
import type { Aor } from '../../ports.ts'

/** most members of one list @see parseResourceList */
export const MAX_LIST_MEMBERS = 1000
/** longest URI accepted (list, member or owner) */
export const MAX_LIST_URI = 512

export type ListErrorCode = 'bad_list' | 'bad_aor' | 'registered_user' | 'too_large' | 'too_many_lists' | 'nested_list' | 'home_unreachable'

export class ListError extends Error {
  static override name = 'ListError'
  override name = 'ListError'
  readonly status: number
  readonly code: ListErrorCode
  constructor (status: number, code: ListErrorCode, message: string) {
    super(message.length > 200 ? `${message.slice(0, 200)}…` : message)
    this.status = status
    this.code = code
  }
}

export interface ResourceList {
  /** the list URI (normalized AoR) */
  uri: Aor
  /** normalized member AoRs, unique, in the order given */
  members: Aor[]
  /** a personal list's owner (normalized AoR) */
  owner?: Aor
  /**
   * the edit's version, set by the home node at each PUT (ms since the epoch, and above any
   * version that node saw of the list): a copy is replaced only by a higher one (exchange.ts)
   */
  version?: number
}

export interface ListLimits {
  /** @default MAX_LIST_MEMBERS */
  maxMembers?: number
}

/** A SIP AoR (user and host) or a tel URI, normalized; `what` names it in the error. */
export function listAor (value: unknown, what: string): Aor {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_LIST_URI) throw new ListError(400, 'bad_aor', `${what} is not a URI of at most ${MAX_LIST_URI} characters`)
  let aor: Aor
  try {
    const u = parseUri(value)
    if (u.scheme !== 'tel' && u.user === undefined) throw new Error('no user part')
    aor = aorOf(u)
  } catch {
    throw new ListError(400, 'bad_aor', `${what} is not an address of record: ${value.slice(0, 80)}`)
  }
  return aor
}

/**
 * The list at `uri` from the admin API's JSON `{ members: [aor…], owner?: aor }`; the list URI must
 * be a SIP address of one of `domains`, no member may be the list itself.
 */
export function parseResourceList (uri: string, input: unknown, domains: ReadonlySet<string>, limits: ListLimits = {}): ResourceList {
  const max = limits.maxMembers ?? MAX_LIST_MEMBERS
  const listUri = listAor(uri, 'the list URI')
  const host = listUri.startsWith('sip:') ? listUri.slice(listUri.indexOf('@') + 1) : ''
  if (!domains.has(host)) throw new ListError(400, 'bad_aor', `the list URI ${listUri} is not in a domain this mesh serves`)
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw new ListError(400, 'bad_list', 'the list is not a JSON object')
  for (const key of Object.keys(input)) {
    if (key !== 'members' && key !== 'owner') throw new ListError(400, 'bad_list', `unknown field ${key.slice(0, 40)}`)
  }
  const { members, owner } = input as { members?: unknown, owner?: unknown }
  if (!Array.isArray(members)) throw new ListError(400, 'bad_list', 'members must be an array of URIs')
  if (members.length > max) throw new ListError(413, 'too_large', `a list has at most ${max} members (${members.length} given)`)
  const seen = new Set<Aor>()
  for (const [i, m] of members.entries()) {
    const aor = listAor(m, `member ${i}`)
    if (aor === listUri) throw new ListError(400, 'nested_list', 'a list cannot be its own member')
    seen.add(aor)
  }
  const list: ResourceList = { uri: listUri, members: [...seen] }
  if (owner !== undefined) list.owner = listAor(owner, 'the owner')
  return list
}
