/**
 * The SIP gateway of a sipmesh node: transports, transactions, registrar and proxy core in one
 * `Startable`. `node/` constructs it with the mesh ports (registry, peer channel, durable store,
 * logger) and its config slice; tests do the same with the in-memory registry and channel.
 *
 * ```ts
 * const gateway = new Gateway({ registry, peerChannel, store, logger }, {
 *   domains: ['example.com'], sip: { host: '127.0.0.1', port: 5060 }, ws: { host: '127.0.0.1', port: 5066 }
 * })
 * await gateway.start()   // listens, re-claims stored registrations
 * gateway.addresses       // { udp, tcp, ws? } as bound (port 0 gives a free port)
 * gateway.stats           // counters for metrics
 * await gateway.stop()
 * ```
 */
import { parseMessage } from './codec/parser.ts'
import { serializeMessage } from './codec/serializer.ts'
import { SipRequest, type SipResponse } from './codec/message.ts'
import { createResponse } from './codec/response.ts'
import { SipParseError, SipStatusError } from './errors.ts'
import type { DurableStore, Logger, PeerChannel, Registry, Unwatch } from './ports.ts'
import { Registrar, type ConflictPolicy, type OverloadInit, type ReclaimProgress } from './registrar/registrar.ts'
import { TransactionLayer } from './transaction/layer.ts'
import type { TimerSettings } from './transaction/timers.ts'
import { ProxyCore, type ProxyStats, type UnavailableHandler } from './proxy/core.ts'
import { MESH_TRANSPORT, type Connector, type Flow } from './proxy/flow.ts'
import { responseForError } from './proxy/error-response.ts'
import { TransportLayer, type TransportCounters } from './transport/index.ts'
import type { RateLimitInit } from './transport/limits.ts'
import { PresenceAgent, type PresenceAgentInit } from './presence/agent.ts'
import { OfflineIm, type OfflineImInit } from './im/offline-im.ts'
import { UserAgentAuthenticator, type DigestAuthInit } from './auth/index.ts'
import { PeerNetworks, type PeerNetwork } from './proxy/peering.ts'

export interface GatewayComponents {
  registry: Registry
  peerChannel: PeerChannel
  store: DurableStore
  logger: Logger
  /**
   * told the SIP address actually bound (`host:port`, after port 0 is resolved), before any
   * claim is made, so claims carry it
   */
  announceSip?: (hostPort: string) => void
}

export interface GatewayConfig {
  /** domains this node serves (registrar and routing); requests for others are refused */
  domains: string[]
  /** SIP over UDP and TCP on this address (port 0: a free port) */
  sip: { host: string, port: number }
  /** SIP over WebSocket (RFC 7118, subprotocol `sip`); off when absent */
  ws?: { host: string, port: number }
  /**
   * SIP over TLS (`listen`) and secure WebSocket (`wss`), each optional, with this node's PEM
   * certificate and key and the PEM authorities trusted for peers' certificates; also what the
   * node presents when it dials a peer network
   */
  tls?: { listen?: { host: string, port: number }, wss?: { host: string, port: number }, cert: string, key: string, ca?: string, handshakeTimeoutMs?: number }
  /** peer networks (proxy/peering.ts): reached over mutually authenticated TLS; need `tls` */
  peers?: readonly PeerNetwork[]
  /**
   * the UDP socket on a thread of its own (transport/udp-thread.ts): its system calls use a second
   * core. @default false
   */
  udpThread?: boolean
  /** the host written in Via and Record-Route. @default sip.host */
  advertise?: string
  limits?: {
    /** largest SIP message, bytes (513 above). @default 65536 */
    maxMessageSize?: number
    /**
     * most live server transactions (503 above). A non-INVITE transaction over UDP lingers for
     * timer J (64*T1 = 32 s) after its answer, at ~2-3 KB of heap: 5,000 requests/s sustained
     * keep ~160,000 alive (~0.4-0.5 GB). @default 300000
     */
    maxServerTransactions?: number
    /** most TCP/WebSocket connections. @default 10000 */
    maxConnections?: number
    /** most inbound TCP + WebSocket connections from one source address (more are refused). @default 256 */
    maxConnectionsPerHost?: number
    /** an inbound connection that brings no whole SIP message within this is closed, ms. @default 30000 */
    firstMessageTimeoutMs?: number
    /** close TCP/WebSocket connections idle this long, ms. @default 900000 */
    idleTimeoutMs?: number
    /** a message that started arriving must complete within this, ms (slow peers). @default 10000 */
    messageTimeoutMs?: number
    /** per-source rate limit; off when absent */
    rateLimit?: RateLimitInit
  }
  /** RFC 3261 T1/T2/T4 */
  timers?: Partial<TimerSettings>
  proxy?: {
    /** timer C of forwarded INVITEs, ms (RFC 3261 16.6 step 11). @default 180000 */
    timerCMs?: number
  }
  registrar?: {
    minExpires?: number
    maxExpires?: number
    defaultExpires?: number
    maxContactsPerAor?: number
    /** SPEC conflict policy. @default 'latest-takes-over' */
    conflictPolicy?: ConflictPolicy
    /**
     * overload (RFC 3261 21.5.4): REGISTERs in progress (`maxPending`, default 2000) and event-loop
     * lag (`maxLagMs`, default 500) beyond which a REGISTER is answered 503 with Retry-After
     */
    overload?: OverloadInit
    /** stored registrations claimed again at once after a restart, in the background. @default 256 */
    reclaimConcurrency?: number
    /** seconds a binding may outlive its expiry after a kill -9, so that refreshes skip the disk (durable-horizon.ts). @default 300 */
    refreshWriteSlack?: number
  }
  /** presence agent (issue 4): subscription and publication expiries, limits, default policy */
  presence?: Omit<PresenceAgentInit, 'domains'>
  /**
   * offline IM (issue 5): store limits and retention, known-user window; `known.credentials`
   * lists the AoRs of the credentials file (always known)
   */
  offline?: OfflineImInit
  /**
   * SIP digest authentication of user agents (auth/, RFC 8760): on when `credentials` holds at
   * least one user with a secret; absent or without secrets, nobody is challenged and the From
   * AoR is asserted as today
   */
  auth?: DigestAuthInit
}

export interface GatewayStats extends ProxyStats {
  registrations: number
  bindings: number
  serverTransactions: number
  clientTransactions: number
  retransmissionsAbsorbed: number
  /** requests refused with 503 because `limits.maxServerTransactions` were live */
  overloaded: number
  /** REGISTERs answered 503 + Retry-After by the registrar's overload guard, by reason */
  registerShed: { pending: number, lag: number }
  /** REGISTERs in progress (waiting for their claim and write) */
  registerPending: number
  /** REGISTERs answered 503 because their claim failed */
  registerClaimFailures: number
  /** the restart's re-claim of stored registrations */
  reclaim: Readonly<ReclaimProgress>
  /** messages from the mesh that did not parse (user agents' are in `transport.parseErrors`) */
  parseErrors: number
  meshIn: number
  meshOut: number
  transport?: TransportCounters
}

export class Gateway {
  readonly #components: GatewayComponents
  readonly #config: Readonly<GatewayConfig>
  readonly #log: Logger
  readonly #registrar: Registrar<Flow>
  readonly #presence: PresenceAgent
  readonly #im: OfflineIm
  readonly #auth: UserAgentAuthenticator | undefined
  readonly #meshFlows = new Map<string, Flow>()
  #layer: TransactionLayer<Flow> | undefined
  #core: ProxyCore | undefined
  #transports: TransportLayer | undefined
  #unMesh: Unwatch | undefined
  #unavailable: UnavailableHandler | undefined
  #peers: PeerNetworks | undefined
  #running = false
  readonly #counters = { parseErrors: 0, meshIn: 0, meshOut: 0 }

  constructor (components: GatewayComponents, config: GatewayConfig) {
    if (config.domains.length === 0) throw new RangeError('a gateway serves at least one domain')
    this.#components = components
    this.#config = Object.freeze({ ...config, domains: config.domains.map(d => d.toLowerCase()) })
    this.#log = components.logger.child({ component: 'sip-gateway' })
    this.#registrar = new Registrar<Flow>({ registry: components.registry, store: components.store, logger: this.#log.child({ sub: 'registrar' }) }, {
      domains: this.#config.domains, ...config.registrar
    })
    this.#presence = new PresenceAgent({ registry: components.registry, registrar: this.#registrar, store: components.store, logger: this.#log.child({ sub: 'presence' }) }, {
      domains: this.#config.domains, ...config.presence
    })
    this.#im = new OfflineIm({
      registry: components.registry,
      store: components.store,
      logger: this.#log.child({ sub: 'im' }),
      deliverLocal: async (aor, request, pick) => await this.deliver(aor, request, pick),
      deliverToNode: async (node, request) => {
        if (this.#core === undefined) throw new Error('gateway not started')
        return await this.#core.deliverToNode(node, request)
      },
      hasLocalBindings: (aor) => this.#registrar.lookup(aor).length > 0
    }, config.offline)
    this.#registrar.onChange((aor, bindings) => { this.#im.onBindings(aor, bindings.length) })
    const auth = config.auth
    if (auth !== undefined && [...auth.credentials.values()].some(s => Object.keys(s).length > 0)) {
      this.#auth = new UserAgentAuthenticator({ logger: this.#log.child({ sub: 'auth' }) }, {
        ...auth,
        domains: this.#config.domains,
        nodeAddresses: () => {
          const host = (this.#config.advertise ?? this.#config.sip.host).toLowerCase()
          const bound = Object.values(this.#transports?.addresses() ?? {}).filter(a => a !== undefined)
          return bound.flatMap(a => [`${a.host.toLowerCase()}:${a.port}`, `${host}:${a.port}`, `localhost:${a.port}`])
        }
      })
    }
  }

  /** digest authentication of user agents (challenges, failures), when it is on */
  get auth (): UserAgentAuthenticator | undefined { return this.#auth }

  /** offline IM (issue 5): the store of messages for users who are away, and who is known */
  get im (): OfflineIm { return this.#im }

  /** issue 5's seam: what to do with a request for a served AoR that has no live binding */
  setUnavailableHandler (handler: UnavailableHandler): void {
    if (this.#running) throw new Error('set the unavailable handler before start()')
    this.#unavailable = handler
  }

  get registrar (): Registrar<Flow> { return this.#registrar }

  /** the presence agent: rules (`getRules`, `setRules`) for the admin API, stats */
  get presence (): PresenceAgent { return this.#presence }

  /**
   * Send a request this node originates (a stored MESSAGE being delivered, issue 5) to every
   * live contact of a locally registered AoR. The request carries From, To, Call-ID, CSeq and
   * body; the gateway adds its Via and sets the Request-URI per contact. Resolves with the first
   * 2xx (or the final response `pick` chooses, by default the best one), or undefined when the
   * AoR has no reachable contact here.
   */
  async deliver (aor: string, request: SipRequest, pick?: (finals: SipResponse[]) => SipResponse | undefined): Promise<SipResponse | undefined> {
    if (this.#core === undefined) throw new Error('gateway not started')
    return await this.#core.deliver(aor, request, pick)
  }

  /** number of AoRs registered on this node */
  get registrations (): number { return this.#registrar.registrations }

  /** where the transports listen, once started */
  get addresses (): { udp: { host: string, port: number }, tcp: { host: string, port: number }, ws?: { host: string, port: number }, tls?: { host: string, port: number }, wss?: { host: string, port: number } } {
    const a = this.#transports?.addresses()
    if (a?.udp === undefined || a.tcp === undefined) throw new Error('gateway not started')
    return { udp: a.udp, tcp: a.tcp, ws: a.ws, tls: a.tls, wss: a.wss }
  }

  /** the peer networks (requests refused for their From, failovers) */
  get peers (): PeerNetworks | undefined { return this.#peers }

  get stats (): GatewayStats {
    const core = this.#core?.stats ?? { requests: 0, forwardedMesh: 0, forwardedPeer: 0, deliveredLocal: 0, answeredLocally: 0, loops: 0, notOwnerRetries: 0, responses: {} }
    // the presence agent answers the requests it intercepts itself: its finals count here too
    const responses = { ...core.responses }
    for (const [k, n] of Object.entries(this.#presence.responseCounts)) responses[k] = (responses[k] ?? 0) + n
    return {
      ...core,
      responses,
      registrations: this.#registrar.registrations,
      bindings: this.#registrar.bindingCount,
      serverTransactions: this.#layer?.serverCount ?? 0,
      clientTransactions: this.#layer?.clientCount ?? 0,
      retransmissionsAbsorbed: this.#layer?.stats.retransmissionsAbsorbed ?? 0,
      overloaded: this.#layer?.stats.overload ?? 0,
      registerShed: { ...this.#registrar.shed },
      registerPending: this.#registrar.pending,
      registerClaimFailures: this.#registrar.claimFailures,
      reclaim: { ...this.#registrar.reclaim },
      ...this.#counters,
      transport: this.#transports?.counters()
    }
  }

  async start (): Promise<void> {
    if (this.#running) return
    const config = this.#config
    const tls = config.tls
    if ((config.peers?.length ?? 0) > 0 && tls === undefined) throw new RangeError('peer networks need tls (certificate and key)')
    const transports = new TransportLayer({ logger: this.#log.child({ sub: 'transport' }) }, {
      sip: config.sip,
      ws: config.ws,
      tls: tls?.listen,
      wss: tls?.wss,
      tlsCredentials: tls === undefined ? undefined : { cert: tls.cert, key: tls.key, ca: tls.ca, peers: config.peers?.map(p => p.domain), handshakeTimeoutMs: tls.handshakeTimeoutMs },
      maxMessageSize: config.limits?.maxMessageSize,
      maxConnections: config.limits?.maxConnections,
      maxConnectionsPerHost: config.limits?.maxConnectionsPerHost,
      firstMessageTimeoutMs: config.limits?.firstMessageTimeoutMs,
      idleTimeoutMs: config.limits?.idleTimeoutMs,
      messageTimeoutMs: config.limits?.messageTimeoutMs,
      rateLimit: config.limits?.rateLimit,
      udpThread: config.udpThread
    })
    // the transport layer parses, answers malformed requests and stamps received/rport
    transports.onMessage((message, source) => { this.dispatch(message, transports.flowOf(source)) })
    await transports.start()
    this.#transports = transports
    const { udp, tcp, tls: tlsAddress, wss } = this.addresses
    const host = config.advertise ?? config.sip.host
    // UDP flows without a promise (the relay's hot path); TCP may dial
    const connector: Connector = { connect: (target) => target.transport.toUpperCase() === 'UDP' ? transports.connectUdp(target) : transports.connect(target) }
    this.#peers = config.peers === undefined || config.peers.length === 0 ? undefined : new PeerNetworks(this.#log.child({ sub: 'peering' }), config.peers)
    const tlsAliases = tlsAddress === undefined ? [] : [`${tlsAddress.host}:${tlsAddress.port}`, `${host}:${tlsAddress.port}`, `localhost:${tlsAddress.port}`]
    this.#core = new ProxyCore({
      registry: this.#components.registry,
      registrar: this.#registrar,
      logger: this.#log.child({ sub: 'proxy' }),
      mesh: (node) => this.#meshFlow(node),
      connector
    }, {
      domains: config.domains,
      host,
      port: udp.port,
      aliases: [`${udp.host}:${udp.port}`, `${tcp.host}:${tcp.port}`, `localhost:${udp.port}`, ...tlsAliases],
      wsPort: this.addresses.ws?.port,
      tlsPort: tlsAddress?.port,
      wssPort: wss?.port,
      peers: this.#peers,
      onUnavailable: async (request, aor) => await this.#unavailable?.(request, aor) ?? await this.#im.onUnavailable(request, aor),
      onTimeout: async (request, aor) => await this.#im.onTimeout(request, aor),
      backlog: this.#im,
      intercept: (request, tx, flow, fromMesh, uri) => this.#presence.intercept(request, tx, flow, fromMesh, uri),
      atOwner: async (request, tx, flow, aor, owned) => await this.#presence.atOwner(request, tx, flow, aor, owned),
      dialogs: (event) => { this.#presence.observeDialog(event) },
      authenticate: this.#auth?.authenticate.bind(this.#auth),
      timerCMs: config.proxy?.timerCMs
    })
    this.#layer = new TransactionLayer<Flow>(this.#core, { timers: config.timers, maxServerTransactions: config.limits?.maxServerTransactions })
    this.#core.attach(this.#layer)
    this.#components.announceSip?.(`${host}:${udp.port}`)
    this.#unMesh = this.#components.peerChannel.onMessage((node, data) => {
      this.#counters.meshIn++
      this.#receive(data, this.#meshFlow(node))
    })
    await this.#im.start()
    await this.#registrar.start()
    await this.#presence.load()
    const peers = this.#peers
    const core = this.#core
    this.#presence.start({
      layer: this.#layer,
      mesh: (node) => this.#meshFlow(node),
      connector,
      peers: peers === undefined ? undefined : { has: d => peers.has(d), connect: async d => await peers.connect(d, connector), relay: (request, tx, flow) => { core.relayToPeer(request, tx, flow) } },
      host,
      ports: { udp: udp.port, tcp: tcp.port, ws: this.addresses.ws?.port, tls: tlsAddress?.port } })
    this.#running = true
    this.#log.info('sip gateway started', { udp, tcp, ws: this.addresses.ws, tls: tlsAddress, wss, domains: config.domains, peers: config.peers?.map(p => p.domain) })
  }

  async stop (): Promise<void> {
    if (!this.#running) return
    this.#running = false
    this.#unMesh?.()
    this.#presence.stop()
    this.#registrar.stop()
    await this.#im.stop()
    this.#layer?.close()
    await this.#transports?.stop()
    this.#meshFlows.clear()
    this.#log.info('sip gateway stopped')
  }

  #meshFlow (node: string): Flow {
    let f = this.#meshFlows.get(node)
    if (f === undefined) {
      const channel = this.#components.peerChannel
      const counters = this.#counters
      f = {
        transport: MESH_TRANSPORT,
        reliable: true,
        remote: { host: node, port: 0 },
        node,
        open: true,
        // a message the channel takes at once costs no promise (the relay path); never a
        // synchronous throw
        send (m) {
          counters.meshOut++
          try {
            const bytes = serializeMessage(m)
            if (channel.sendNow?.(node, bytes) === true) return
            return channel.send(node, bytes)
          } catch (err) {
            return Promise.reject(err as Error)
          }
        }
      }
      if (this.#meshFlows.size < 10_000) this.#meshFlows.set(node, f)
    }
    return f
  }

  /** one message from a transport or the mesh: parse, hand to the transaction layer */
  #receive (data: Uint8Array, flow: Flow): void {
    if (!this.#running || this.#layer === undefined) return
    let message
    try {
      message = parseMessage(data, { maxSize: this.#config.limits?.maxMessageSize })
    } catch (err) {
      this.#counters.parseErrors++
      if (err instanceof SipParseError && err.answerable && err.request !== undefined && err.request.method !== 'ACK') {
        this.#log.info('malformed request answered', { status: err.status, reason: err.reason, from: flow.remote })
        void Promise.resolve(flow.send(createResponse(err.request, err.status, err.reason, undefined, { toTag: true }))).catch(() => {})
      } else {
        this.#log.debug('malformed message dropped', { err: String(err), from: flow.remote })
      }
      return
    }
    this.dispatch(message, flow)
  }

  /** hand a parsed message to the transaction layer (exposed for tests and in-process UAs) */
  dispatch (message: SipRequest | SipResponse, flow: Flow): void {
    const layer = this.#layer
    if (layer === undefined) return
    if (message instanceof SipRequest) {
      try {
        layer.receiveRequest(message, flow)
      } catch (err) {
        if (message.method === 'ACK') return
        const status = err instanceof SipStatusError ? err.status : 500
        if (status === 500) this.#log.error('transaction layer failed', { err: String(err) })
        void Promise.resolve(flow.send(responseForError(message, err, this.#log))).catch(() => {})
      }
    } else {
      try {
        layer.receiveResponse(message, flow)
      } catch (err) {
        this.#log.debug('response dropped', { err: String(err) })
      }
    }
  }
}
