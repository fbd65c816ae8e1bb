/**
 * @packageDocumentation
 *
 * The SIP gateway of a sipmesh node: user agents talk SIP (UDP, TCP, WebSocket) to any node, and
 * every request for a user of the domain reaches the node that holds the user's claim.
 *
 * Layers, lowest first: `codec/` (messages) ← `transport/` (sockets) ← `transaction/` (RFC 3261
 * section 17) ← `registrar/` (section 10, tied to the claim registry) and `proxy/` (section 16:
 * routing to the owner node over the mesh or to local contacts, forking, pager IM) ← `gateway.ts`
 * (assembly). The mesh is reached only through `ports.ts`.
 *
 * `node/` plugs it in with {@link sipGateway}, a factory of the node's `GatewayFactory` shape:
 *
 * ```ts
 * import { sipGateway } from '../sip-gateway/index.ts'
 * export const defaultGateway: GatewayFactory = sipGateway
 * ```
 */
import { Gateway } from './gateway.ts'
import type { GatewayConfig, GatewayStats } from './gateway.ts'
import type { DurableStore, Logger, PeerChannel, Registry } from './ports.ts'
import type { PresenceStats } from './presence/agent.ts'
import type { OfflineStats } from './offline/store.ts'
import type { AuthStats } from './auth/index.ts'
import { bindingView, type GatewayInspection } from './inspect.ts'

export { Gateway } from './gateway.ts'
export type { GatewayComponents, GatewayConfig, GatewayStats } from './gateway.ts'
export { Registrar, ConflictPolicy, STORE_PREFIX } from './registrar/registrar.ts'
export type { RegistrarInit, Binding, Reply } from './registrar/registrar.ts'
export { ProxyCore, KNOWN_METHODS, NOT_OWNER_HEADER } from './proxy/core.ts'
export type { UnavailableHandler, RequestAuthenticator } from './proxy/core.ts'
export { UserAgentAuthenticator, DigestAlgorithm, computeHa1 } from './auth/index.ts'
export type { DigestAuthInit, UserSecret } from './auth/index.ts'
export { TransactionLayer } from './transaction/layer.ts'
export { TransactionState } from './transaction/transaction.ts'
export { defaultTimers, type TimerSettings } from './transaction/timers.ts'
export { MemoryStore } from './memory-store.ts'
export { MemoryChannel, MemoryChannelHub } from './memory-channel.ts'
export type * from './ports.ts'
export type * from './inspect.ts'

/** What `node/` hands the gateway (structurally the node's `GatewayContext`). */
export interface SipGatewayContext {
  registry: Registry
  peerChannel: PeerChannel
  store: DurableStore
  logger: Logger
  config: Readonly<{ domains: readonly string[], sip: { host: string, port: number }, ws?: { host: string, port: number } } & Partial<Omit<GatewayConfig, 'domains' | 'sip' | 'ws'>>>
  announceSip? (hostPort: string): void
}

/**
 * Everything the gateway counts, in one snapshot for metrics (structurally the node's
 * `GatewayStatsSnapshot`): the proxy, transaction and transport counters of `Gateway.stats`,
 * plus presence, offline IM and digest authentication (`auth` absent when authentication is off).
 * Built when asked (a scrape), from counters the gateway keeps anyway.
 */
export interface SipGatewayStats extends GatewayStats {
  presence: PresenceStats
  offline: OfflineStats
  auth?: AuthStats
  /** requests from peer networks refused (From not in the peer's domain); absent without peers */
  peerRefused?: number
}

/** Build the gateway from the node's context (the node's `GatewayFactory`). */
export function sipGateway (context: SipGatewayContext): {
  start (): Promise<void>
  stop (): Promise<void>
  registrations (): number
  stats (): SipGatewayStats
  /** the SIP UDP socket's address as bound; undefined before start */
  udpAddress (): { host: string, port: number } | undefined
  gateway: Gateway
  presenceRules: { get (aor: string): unknown, set (aor: string, rules: unknown): Promise<unknown> }
  lists: { get (uri: string): Promise<unknown>, put (uri: string, body: unknown): Promise<unknown>, delete (uri: string): Promise<boolean> }
  inspect: GatewayInspection
} {
  const { config } = context
  const gateway = new Gateway({
    registry: context.registry,
    peerChannel: context.peerChannel,
    store: context.store,
    logger: context.logger,
    announceSip: context.announceSip === undefined ? undefined : (hp) => context.announceSip?.(hp)
  }, {
    domains: [...config.domains],
    sip: { host: config.sip.host, port: config.sip.port },
    ws: config.ws === undefined ? undefined : { host: config.ws.host, port: config.ws.port },
    advertise: config.advertise,
    tls: config.tls,
    peers: config.peers,
    limits: config.limits,
    timers: config.timers,
    proxy: config.proxy,
    registrar: config.registrar,
    presence: config.presence,
    offline: config.offline,
    auth: config.auth
  })
  return {
    gateway,
    start: async () => { await gateway.start() },
    stop: async () => { await gateway.stop() },
    registrations: () => gateway.registrations,
    udpAddress: () => {
      try {
        return gateway.addresses.udp
      } catch {
        return undefined
      }
    },
    stats: () => {
      const auth = gateway.auth?.stats
      return { ...gateway.stats, peerRefused: gateway.peers?.refused, presence: gateway.presence.stats, offline: gateway.im.offline.stats(), auth: auth === undefined ? undefined : { ...auth } }
    },
    presenceRules: {
      get: (aor) => gateway.presence.getRulesDocument(aor),
      set: async (aor, rules) => await gateway.presence.setRules(aor, rules)
    },
    lists: {
      get: async (uri) => await gateway.presence.getList(uri),
      put: async (uri, body) => await gateway.presence.putList(uri, body),
      delete: async (uri) => await gateway.presence.deleteList(uri)
    },
    inspect: inspection(gateway)
  }
}

/** The gateway's state as the admin API lists it (see inspect.ts). */
function inspection (gateway: Gateway): GatewayInspection {
  return {
    registrations: (query) => {
      const { aors, total, more } = gateway.registrar.page(query)
      const items = aors.map(aor => ({ aor, bindings: gateway.registrar.lookup(aor).map(bindingView) }))
      const last = aors.at(-1)
      return { items, total, ...(more && last !== undefined ? { next: last } : {}) }
    },
    bindings: (aor) => gateway.registrar.lookup(aor).map(bindingView),
    subscriptions: (limit) => gateway.presence.snapshot(limit),
    offline: (limit) => {
      const store = gateway.im.offline
      const all = store.users()
      all.sort()
      return { users: all.slice(0, limit).map(aor => ({ aor, messages: store.count(aor) })), total: all.length, messages: store.stats().messages }
    },
    ws: () => {
      const ws = gateway.addresses.ws
      return ws === undefined ? undefined : (ws.host.includes(':') ? `[${ws.host}]:${ws.port}` : `${ws.host}:${ws.port}`)
    }
  }
}
