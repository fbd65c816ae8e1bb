/**
 * What the gateway shows of its state to the node's admin API (`GET /registrations`,
 * `/subscriptions`, the dashboard): plain, bounded, JSON-ready views built when asked. Nothing on
 * the SIP path keeps anything for them.
 */

/** One contact bound to an AoR (RFC 3261 10.3), as listed. */
export interface BindingView {
  contact: string
  /** ISO 8601 UTC */
  expires: string
  /** the Contact parameters other than expires (`q`, `+sip.instance`, `reg-id`...) */
  params: Record<string, string | null>
  /** the transport the REGISTER came over (`UDP`, `TCP`, `WS`...) and its source address: requests to the contact go back that way */
  transport?: string
  source?: string
}

export interface RegistrationView {
  aor: string
  bindings: BindingView[]
}

export interface RegistrationPage {
  items: RegistrationView[]
  /** AoRs registered here that match the prefix (all pages) */
  total: number
  /** the cursor of the next page (the last AoR of this one); absent on the last page */
  next?: string
}

/** One presentity the presence agent tracks (RFC 3856 / RFC 6665 subscriptions). */
export interface PresentityView {
  aor: string
  /** local: served here (the owner); remote: served by `owner` through a back-end subscription; held: nobody holds a claim */
  mode: 'local' | 'remote' | 'held'
  owner?: string
  /** watcher AoRs of the user agents' subscriptions this node serves */
  watchers: string[]
  /** nodes holding a back-end subscription to this presentity here (we are the owner) */
  watcherNodes: string[]
  /** this node's back-end subscription to the owner: its state */
  backend?: string
  publications: number
}

export interface SubscriptionsView {
  presentities: PresentityView[]
  /** presentities tracked (all of them, not only those listed) */
  total: number
  subscriptions: number
}

export interface OfflineView {
  users: Array<{ aor: string, messages: number }>
  /** users with stored messages (all of them) */
  total: number
  messages: number
}

/** The gateway's views, as `node/` reads them. */
export interface GatewayInspection {
  registrations (query: { prefix?: string, after?: string, limit: number }): RegistrationPage
  /** the live bindings of one AoR here (none: not registered here) */
  bindings (aor: string): BindingView[]
  subscriptions (limit: number): SubscriptionsView
  offline (limit: number): OfflineView
  /** `host:port` of the SIP WebSocket transport (RFC 7118), when it runs */
  ws (): string | undefined
}

export function bindingView (b: { uri: string, expiresAt: number, params: Record<string, string | null>, flow?: { transport: string, remote: { host: string, port: number } } }): BindingView {
  const view: BindingView = { contact: b.uri, expires: new Date(b.expiresAt).toISOString(), params: { ...b.params } }
  if (b.flow !== undefined) {
    view.transport = b.flow.transport
    view.source = b.flow.remote.host.includes(':') ? `[${b.flow.remote.host}]:${b.flow.remote.port}` : `${b.flow.remote.host}:${b.flow.remote.port}`
  }
  return view
}
