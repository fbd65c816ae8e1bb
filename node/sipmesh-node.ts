/**
 * A sipmesh node: the composition root. From a validated config it assembles, in order:
 *
 *   identity (data dir) → LevelDB datastore → libp2p + claim registry (`createMeshNode`)
 *   → SIP peer channel → gateway (optional, see `GatewayFactory`) → admin HTTP API
 *
 * and stops them in the reverse order. Everything it starts it also stops when a later step fails.
 *
 * The SIP gateway plugs in through `GatewayFactory`: it gets the registry, the peer channel, the
 * durable store, a logger and its config slice, and reports its registrations count (for
 * `/status`) and the SIP address it bound (written into claims).
 */
import { readFile } from 'node:fs/promises'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { prometheusMetrics } from '@libp2p/prometheus-metrics'
import { createMeshNode } from './libp2p.ts'
import { loadOrCreateIdentity, openDatastore, datastoreMemory, DatastoreDurableStore } from './persistence.ts'
import { Libp2pPeerChannel } from './peer-channel.ts'
import { IdleConnections } from './idle-connections.ts'
import { ConnectionFailures, wasReported } from './connection-failures.ts'
import { AdminServer } from './admin/server.ts'
import { loadOrCreateAdminToken } from './admin/auth.ts'
import { listingsBackend, nodeSummary, pagesBackend } from './admin/listings-backend.ts'
import { MeshInfo } from './mesh-info.ts'
import type { ListingsParts } from './admin/listings-backend.ts'
import type { GatewayInspection } from '../sip-gateway/inspect.ts'
import { udpSocketStats } from './udp-socket-stats.ts'
import { createNodeMetrics, addCollectedCounter, addCollectedGauge, addCollectedLabeledCounter, oncePerScrape } from './metrics.ts'
import { createPinoLogger, libp2pComponentLogger, toPortLogger } from './logger.ts'
import { normalizeAor } from '../dht/record/claim.ts'
import type { Config, GatewayConfig } from './config.ts'
import type { MeshNode, MeshNodeInit } from './libp2p.ts'
import type { PinoLogger } from './logger.ts'
import { stopPretenuring } from './pretenuring.ts'
import { serialScavenge } from './serial-scavenge.ts'
import type { NodeMetrics } from './metrics.ts'
import type { AdminStatus } from './admin/server.ts'
import type { DurableStore, Logger, PeerChannel, Registry } from '../sip-gateway/ports.ts'
import type { LevelDatastore } from 'datastore-level'

/** What the gateway gets from the node. */
export interface GatewayContext {
  registry: Registry
  peerChannel: PeerChannel
  store: DurableStore
  logger: Logger
  config: Readonly<GatewayConfig>
  /** tell the mesh the SIP address actually bound (`host:port`), e.g. after binding port 0 */
  announceSip (hostPort: string): void
}

/** Counts by transport (`udp`, `tcp`, `ws`, `tls`, `wss`). */
export type TransportCounts = Readonly<Partial<Record<string, number>>>

/**
 * What the gateway counts, as `/metrics` reads it at scrape time. Totals are running counts since
 * the gateway started (counters); the rest are current values (gauges).
 */
export interface GatewayStatsSnapshot {
  /** requests the proxy core received (one per server transaction: retransmissions excluded) */
  requests: number
  /** final responses sent to requests the node handled (its own and relayed), by class: `2xx` ... `6xx` */
  responses: Readonly<Partial<Record<string, number>>>
  forwardedMesh: number
  /** requests sent to a peer network over TLS */
  forwardedPeer?: number
  /** requests from peer networks refused (From not in the peer's domain) */
  peerRefused?: number
  deliveredLocal: number
  answeredLocally: number
  loops: number
  notOwnerRetries: number
  /** live server and client transactions */
  serverTransactions: number
  clientTransactions: number
  retransmissionsAbsorbed: number
  /** requests refused with 503 at the server transaction limit */
  overloaded: number
  /** REGISTERs refused with 503 + Retry-After by the registrar's overload guard, by reason */
  registerShed?: Readonly<Partial<Record<string, number>>>
  /** REGISTERs in progress */
  registerPending?: number
  /** REGISTERs answered 503 because their claim failed */
  registerClaimFailures?: number
  /** the restart's re-claim of stored registrations */
  reclaim?: { total: number, claimed: number, lost: number, failed: number, superseded?: number, done: boolean }
  /** messages from the mesh that did not parse */
  parseErrors: number
  /** SIP messages received from and sent to other nodes */
  meshIn: number
  meshOut: number
  /** contacts registered on this node */
  bindings: number
  transport?: {
    messagesIn: TransportCounts
    messagesOut: TransportCounts
    parseErrors: TransportCounts
    slowPeers: number
    idleClosed: number
    oversize: number
    rateLimited: number
    connections: number
    connectionsRefused?: { host: number, total: number }
    silentClosed?: number
    tlsHandshakeFailures?: number
    tlsRefused?: number
  }
  presence?: { presentities: number, subscriptions: number, backendSubscriptions: number, peerBackendSubscriptions?: number, peerBackendsServed?: number, publications: number, notifiesSent: number, rateLimited: number }
  offline?: { users: number, messages: number, stored: number, delivered: number, refused: number }
  /** absent when digest authentication is off */
  auth?: { challenged: number, authenticated: number, failed: number, forbidden: number, malformed: number }
}

/** The SIP gateway as the node runs it. */
export interface Gateway {
  start (): Promise<void>
  stop (): Promise<void>
  /** live registrations (AoRs with at least one binding), for `/status` */
  registrations? (): number
  /** a snapshot of the gateway's counters for `/metrics`, taken when scraped */
  stats? (): GatewayStatsSnapshot
  /** the SIP UDP socket's address as bound (for the kernel's counters of it on `/metrics`) */
  udpAddress? (): { host: string, port: number } | undefined
  /** presence authorization rules, for the admin API's `/presence/<aor>/rules` */
  presenceRules?: { get (aor: string): unknown, set (aor: string, rules: unknown): Promise<unknown> }
  /** resource lists, for the admin API's `/lists/<uri>` */
  lists?: { get (uri: string): Promise<unknown>, put (uri: string, body: unknown): Promise<unknown>, delete (uri: string): Promise<boolean> }
  /** read-only views for the admin API's listings and the dashboard */
  inspect?: GatewayInspection
}

export type GatewayFactory = (context: GatewayContext) => Gateway | Promise<Gateway>

export interface SipmeshNodeInit {
  config: Readonly<Config>
  /** JSON logger; default: one on stdout at the config's level */
  logger?: PinoLogger
  /** the SIP gateway; none: the node runs the mesh and the admin API only */
  gateway?: GatewayFactory
  /**
   * Collect libp2p's metrics with @libp2p/prometheus-metrics. Its metric objects are module-global,
   * so keep it to one node per process.
   *
   * @default true
   */
  libp2pMetrics?: boolean
  /** extra settings for the libp2p assembly (tests: registry timings) */
  mesh?: Partial<MeshNodeInit>
  /** when to look up our own key after start, to meet nodes that joined at the same time, ms @default [1500, 4000, 10000] */
  joinLookupDelays?: number[]
  /** retry dialling bootstrap peers this often until connected, ms @default 1000 */
  bootstrapRetryMs?: number
  /**
   * Leave V8's allocation-site pretenuring on (process-wide; node/pretenuring.ts says why it is
   * turned off at start).
   *
   * @default false
   */
  pretenuring?: boolean
  /**
   * Leave V8's scavenges parallel (process-wide; node/serial-scavenge.ts says why a node makes them
   * serial at start). A `--parallel-scavenge` or `--single-threaded-gc` on the process's command
   * line is kept either way.
   *
   * @default false
   */
  parallelScavenge?: boolean
}

const STOP_STEP_TIMEOUT = 10_000
/** neighbours (closest in the routing table) whose connections stay open however idle */
const IDLE_KEPT_NEIGHBOURS = 4

export class NodeStartError extends Error {
  static readonly NAME = 'NodeStartError'
  override readonly name = NodeStartError.NAME
}

function formatHostPort (hp: { host: string, port: number }): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`
}

export class SipmeshNode {
  readonly config: Readonly<Config>
  readonly pino: PinoLogger
  readonly log: Logger
  /** this run's metrics (a fresh registry at every start, so a node object can be restarted) */
  metrics: NodeMetrics
  private readonly init: SipmeshNodeInit
  private datastore?: LevelDatastore
  private meshNode?: MeshNode
  private channel?: Libp2pPeerChannel
  private gatewayInstance?: Gateway
  private adminServer?: AdminServer
  private sipAddress: string
  private shutdown?: AbortController
  private readonly stopSteps: Array<() => Promise<void>> = []
  private started = false
  /** peer connections that failed or were refused (for logs, `/status` and `/metrics`) */
  private connectionFailures: ConnectionFailures
  /** each bootstrap address: connected yet, and the last error */
  private readonly bootstrapState = new Map<string, { connected: boolean, attempts: number, error?: string }>()

  constructor (init: SipmeshNodeInit) {
    this.init = init
    this.config = init.config
    this.pino = init.logger ?? createPinoLogger({ level: init.config.log.level, format: init.config.log.format })
    this.log = toPortLogger(this.pino)
    this.metrics = createNodeMetrics()
    this.sipAddress = formatHostPort(init.config.gateway.sip)
    this.connectionFailures = new ConnectionFailures({ logger: this.log.child({ component: 'mesh' }) })
  }

  get mesh (): MeshNode {
    if (this.meshNode == null) throw new NodeStartError('the node is not started')
    return this.meshNode
  }

  get peerId (): string {
    return this.mesh.peerId.toString()
  }

  get peerChannel (): Libp2pPeerChannel {
    if (this.channel == null) throw new NodeStartError('the node is not started')
    return this.channel
  }

  get gateway (): Gateway | undefined {
    return this.gatewayInstance
  }

  /** `host:port` of the admin API as bound */
  get adminAddress (): string {
    return this.adminServer?.address ?? formatHostPort(this.config.admin)
  }

  get sip (): string {
    return this.sipAddress
  }

  async start (): Promise<void> {
    if (this.started) return
    if (this.init.pretenuring !== true) stopPretenuring()
    if (this.init.parallelScavenge !== true) serialScavenge()
    this.shutdown = new AbortController()
    this.metrics = createNodeMetrics()
    this.connectionFailures = new ConnectionFailures({ logger: this.log.child({ component: 'mesh' }) })
    this.bootstrapState.clear()
    try {
      await this.startSteps()
      this.started = true
    } catch (err) {
      await this.runStopSteps()
      throw err
    }
    this.log.info('sipmesh node started', {
      peerId: this.peerId,
      multiaddrs: this.mesh.libp2p.getMultiaddrs().map(String),
      sip: this.sipAddress,
      admin: this.adminAddress,
      domains: this.config.gateway.domains,
      dataDir: this.config.dataDir
    })
  }

  async stop (): Promise<void> {
    this.shutdown?.abort()
    await this.runStopSteps()
    if (this.started) this.log.info('sipmesh node stopped')
    this.started = false
  }

  private async runStopSteps (): Promise<void> {
    while (this.stopSteps.length > 0) {
      const step = this.stopSteps.pop()
      let timer: ReturnType<typeof setTimeout> | undefined
      try {
        // one part that hangs must not keep the others from stopping
        await Promise.race([
          step?.(),
          new Promise<void>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`a part took more than ${STOP_STEP_TIMEOUT} ms to stop`)) }, STOP_STEP_TIMEOUT) })
        ])
      } catch (err) {
        this.log.warn('error while stopping', { error: (err as Error).message })
      } finally {
        clearTimeout(timer)
      }
    }
  }

  private async startSteps (): Promise<void> {
    const { config } = this
    const { privateKey, created } = await loadOrCreateIdentity(config.dataDir)
    this.log.info(created ? 'created a new node identity' : 'loaded the node identity', { dataDir: config.dataDir })

    const datastore = await openDatastore(config.dataDir)
    this.datastore = datastore
    this.stopSteps.push(async () => { await datastore.close() })

    let psk: Uint8Array | undefined
    if (config.mesh.psk != null) {
      try {
        psk = await readFile(config.mesh.psk)
      } catch (err) {
        throw new NodeStartError(`cannot read the pre-shared key file ${config.mesh.psk}: ${(err as Error).message}`)
      }
    }

    let meshNode: MeshNode
    try {
      meshNode = await createMeshNode({
        listen: [...config.mesh.listen],
        bootstrap: [...config.mesh.bootstrap],
        mdns: config.mesh.mdns,
        psk,
        allowPeers: [...config.mesh.allowPeers],
        privateKey,
        datastore,
        logger: libp2pComponentLogger(this.pino),
        sip: this.sipAddress,
        metrics: this.init.libp2pMetrics === false ? undefined : prometheusMetrics({ registry: this.metrics.registry, collectDefaultMetrics: true, preserveExistingMetrics: false }),
        onConnectionFailure: (failure) => { this.connectionFailures.record(failure) },
        ...this.init.mesh
      })
    } catch (err) {
      const e = err as Error
      throw new NodeStartError(psk != null && /psk|key/i.test(e.message) ? `bad pre-shared key file ${config.mesh.psk}: ${e.message}` : `cannot assemble libp2p: ${e.message}`)
    }
    this.meshNode = meshNode
    // a peer that closes a connection right after it opened refuses us (an allow-list that does
    // not list this node: it checks the peer id once Noise is done, after our side is upgraded)
    meshNode.libp2p.addEventListener('connection:close', (evt) => {
      const conn = evt.detail
      const lived = Date.now() - conn.timeline.open
      if (lived > 2000 || this.shutdown?.signal.aborted === true || conn.direction !== 'outbound') return
      // a duplicate connection libp2p closed while another one to the peer stays is no refusal
      if (meshNode.libp2p.getConnections(conn.remotePeer).some(c => c !== conn && c.status === 'open')) return
      this.connectionFailures.record({ direction: 'outbound', address: conn.remoteAddr.toString(), peer: conn.remotePeer.toString(), reason: `the peer closed the connection ${lived} ms after it opened; it may not allow this peer id (--allow-peer)` })
    })
    // a person reading the log sees the mesh form and break (refusals are logged by connectionFailures)
    meshNode.libp2p.addEventListener('peer:connect', (evt) => {
      const conn = meshNode.libp2p.getConnections(evt.detail)[0]
      this.log.info('peer connected', { peer: evt.detail.toString(), ...(conn !== undefined ? { address: conn.remoteAddr.toString(), direction: conn.direction } : {}), peers: meshNode.libp2p.getPeers().length })
    })
    meshNode.libp2p.addEventListener('peer:disconnect', (evt) => {
      if (this.shutdown?.signal.aborted === true) return
      this.log.info('peer disconnected', { peer: evt.detail.toString(), peers: meshNode.libp2p.getPeers().length })
    })
    try {
      await meshNode.start()
    } catch (err) {
      await meshNode.stop().catch(() => {})
      // libp2p lists each address that failed with its error and stack: name the first one
      const message = (err as Error).message
      const failed = message.split('\n').map(l => l.trim()).find(l => /^\/\S+: /.test(l))
      throw new NodeStartError(failed != null
        ? `cannot listen on ${failed.replace(': Error: ', ': ')} (libp2p)`
        : `cannot start libp2p (is ${config.mesh.listen.join(', ')} free?): ${message.split('\n')[0]}`)
    }
    this.stopSteps.push(async () => { await meshNode.stop() })
    this.dialBootstrap(meshNode)
    this.joinLookups(meshNode)

    const channel = new Libp2pPeerChannel({ libp2p: meshNode.activity.track(meshNode.libp2p), logger: this.log })
    await channel.start()
    this.channel = channel
    this.stopSteps.push(async () => { await channel.stop() })

    this.registerMetrics(meshNode, channel)

    if (this.init.gateway != null) {
      const store = new DatastoreDurableStore(datastore)
      addCollectedCounter(this.metrics.registry, 'sipmesh_store_batches_total', 'LevelDB batches the gateway\'s durable store committed (registrations, offline messages)', () => store.stats.batches)
      addCollectedCounter(this.metrics.registry, 'sipmesh_store_writes_total', 'writes (puts and deletes) in the LevelDB batches of the gateway\'s durable store', () => store.stats.writes)
      const gateway = await this.init.gateway({
        registry: meshNode.registry,
        peerChannel: channel,
        store,
        logger: this.log,
        config: config.gateway,
        announceSip: (hostPort) => {
          this.sipAddress = hostPort
          meshNode.registry.sip = hostPort
        }
      })
      await gateway.start()
      this.gatewayInstance = gateway
      this.stopSteps.push(async () => { await gateway.stop() })
      if (gateway.stats !== undefined) this.registerGatewayMetrics(gateway.stats.bind(gateway))
    }

    let token = config.admin.token
    if (token === undefined) {
      try {
        const file = await loadOrCreateAdminToken(config.dataDir)
        token = file.token
        this.log.info(file.created ? 'admin API token generated' : 'admin API token read', { tokenFile: file.path })
        if (file.tightened) this.log.warn('admin token file was readable by others; made it 0600', { tokenFile: file.path })
      } catch (err) {
        throw new NodeStartError((err as Error).message)
      }
    }
    const parts: ListingsParts = {
      mesh: meshNode,
      channel,
      meshInfo: new MeshInfo({ libp2p: meshNode.activity.track(meshNode.libp2p), logger: this.log }, {
        summary: () => nodeSummary(parts),
        bindings: (aor) => this.gatewayInstance?.inspect?.bindings(aor)
      }),
      domains: config.gateway.domains,
      gateway: () => this.gatewayInstance?.inspect,
      stats: () => this.gatewayInstance?.stats?.(),
      registrations: () => this.gatewayInstance?.registrations?.() ?? 0,
      sip: () => this.sipAddress,
      admin: () => this.adminAddress
    }
    await parts.meshInfo.start()
    this.stopSteps.push(async () => { await parts.meshInfo.stop() })
    const admin = new AdminServer({
      backend: {
        listings: listingsBackend(parts),
        pages: pagesBackend(parts),
        status: () => this.status(),
        normalizeAor,
        resolve: async (aor, options) => await meshNode.registry.resolve(aor, options),
        metrics: async () => ({ contentType: this.metrics.registry.contentType, body: await this.metrics.registry.metrics() }),
        presenceRules: this.gatewayInstance?.presenceRules,
        lists: this.gatewayInstance?.lists
      },
      logger: this.log,
      metrics: this.metrics
    }, { host: config.admin.host, port: config.admin.port, token, domains: config.gateway.domains })
    try {
      await admin.start()
    } catch (err) {
      throw new NodeStartError(`cannot start the admin API on ${formatHostPort(config.admin)}: ${(err as Error).message}`)
    }
    this.adminServer = admin
    this.stopSteps.push(async () => { await admin.stop() })

    const idle = new IdleConnections({
      libp2p: meshNode.libp2p,
      logger: this.log,
      kept: () => meshNode.registry.keptPeers(IDLE_KEPT_NEIGHBOURS),
      activity: [(peer) => meshNode.activity.last(peer), (peer) => channel.lastActivity(peer)]
    }, { idleMs: config.mesh.idleConnectionMs })
    idle.start()
    this.stopSteps.push(async () => { idle.stop() })
    addCollectedCounter(this.metrics.registry, 'sipmesh_idle_connections_closed_total', 'mesh connections this node dialled and closed after they idled past --mesh-idle', () => idle.closed)
  }

  /** `GET /status` */
  status (): AdminStatus {
    const libp2p = this.mesh.libp2p
    const connectedTo = (address: string): boolean => {
      const peer = address.slice(address.lastIndexOf('/p2p/') + 5)
      try { return libp2p.getConnections(peerIdFromString(peer)).some(c => c.status === 'open') } catch { return false }
    }
    return {
      peerId: this.peerId,
      multiaddrs: libp2p.getMultiaddrs().map(String),
      sip: this.sipAddress,
      domains: [...this.config.gateway.domains],
      peers: [...new Set(libp2p.getPeers().map(String))].sort(),
      registrations: this.gatewayInstance?.registrations?.() ?? 0,
      bootstrap: [...this.bootstrapState].map(([address, b]) => ({ address, connected: connectedTo(address), attempts: b.attempts, ...(b.error != null ? { error: b.error } : {}) })),
      // failures of peers this node is connected to now are over
      joinErrors: this.connectionFailures.recent().filter(f => f.peer == null || !connectedTo(`/p2p/${f.peer}`))
    }
  }

  /**
   * Keep dialling bootstrap peers that are not connected yet (a peer may start after us, or
   * restart), with a growing delay, until each is connected once or the node stops.
   */
  private dialBootstrap (meshNode: MeshNode): void {
    const self = meshNode.peerId.toString()
    const pending = new Set(this.config.mesh.bootstrap.filter(a => !a.endsWith(`/p2p/${self}`)))
    for (const addr of pending) this.bootstrapState.set(addr, { connected: false, attempts: 0 })
    if (pending.size === 0) return
    const signal = this.shutdown?.signal
    let delay = this.init.bootstrapRetryMs ?? 1000
    const round = async (): Promise<void> => {
      await Promise.all([...pending].map(async (addr) => {
        const state = this.bootstrapState.get(addr) ?? { connected: false, attempts: 0 }
        state.attempts++
        try {
          await meshNode.libp2p.dial(multiaddr(addr), { signal: AbortSignal.any([AbortSignal.timeout(5000), ...(signal != null ? [signal] : [])]) })
          pending.delete(addr)
          state.connected = true
          state.error = undefined
          if (state.attempts > 1) this.log.info('connected to bootstrap peer', { bootstrap: addr, attempts: state.attempts })
        } catch (err) {
          if (signal?.aborted === true) return
          const e = err as Error & { code?: string }
          const psk = this.config.mesh.psk != null
          state.error = e.name === 'AbortError' || e.name === 'TimeoutError'
            ? `no answer within 5 s; the address may be unreachable, or the peer may use ${psk ? 'a different' : 'a'} pre-shared key (--psk)`
            : e.name === 'ConnectionClosedError'
              ? `${e.name}: ${e.message}; the peer may not allow this peer id (--allow-peer) or use ${psk ? 'a different' : 'a'} pre-shared key (--psk)`
              : `${e.code ?? e.name}: ${e.message}`
          // the transport reported (and logged) connect and upgrade failures already; the rest
          // (timeouts, a peer id the allow-list refuses to dial, no address) are told here
          if (!wasReported(err)) {
            const peer = addr.slice(addr.lastIndexOf('/p2p/') + 5)
            this.connectionFailures.record({ direction: 'outbound', address: addr, peer, reason: `bootstrap dial failed: ${state.error}` })
          }
        }
      }))
      if (pending.size > 0 && signal?.aborted !== true) {
        const t = setTimeout(() => { void round() }, delay)
        t.unref()
        delay = Math.min(delay * 2, 30_000)
      }
    }
    void round()
  }

  /**
   * Look up our own key a few times in the first seconds: kad-dht runs its self-query once, 1 s
   * after start, and then every 5 minutes, so nodes that join at the same moment through the same
   * bootstrap node may not learn of each other until then. Each lookup connects us to the nodes
   * closest to us that joined meanwhile.
   */
  private joinLookups (meshNode: MeshNode): void {
    if (this.config.mesh.bootstrap.length === 0 && !this.config.mesh.mdns) return
    const signal = this.shutdown?.signal
    const key = meshNode.peerId.toMultihash().bytes
    for (const delay of this.init.joinLookupDelays ?? [1500, 4000, 10_000]) {
      const timer = setTimeout(() => {
        if (signal?.aborted === true) return
        void (async () => {
          try {
            const opSignal = AbortSignal.any([AbortSignal.timeout(5000), ...(signal != null ? [signal] : [])])
            for await (const _ of meshNode.libp2p.services.dht.getClosestPeers(key, { signal: opSignal })) { /* drain */ }
          } catch (err) {
            if (signal?.aborted !== true) this.log.debug('join lookup failed', { error: (err as Error).message })
          }
        })()
      }, delay)
      timer.unref()
      signal?.addEventListener('abort', () => { clearTimeout(timer) }, { once: true })
    }
  }

  private registerMetrics (meshNode: MeshNode, channel: Libp2pPeerChannel): void {
    const r = this.metrics.registry
    addCollectedGauge(r, 'sipmesh_connected_peers', 'mesh peers this node is connected to', () => meshNode.libp2p.getPeers().length)
    addCollectedLabeledCounter(r, 'sipmesh_peer_connection_failures_total', 'peer connections that failed or were refused (connect, pre-shared key, Noise, allow-list, bootstrap timeouts), by direction', 'direction', ['inbound', 'outbound'], () => this.connectionFailures.counts)
    addCollectedGauge(r, 'sipmesh_bootstrap_peers_unreached', 'bootstrap addresses this node has not connected to yet', () => [...this.bootstrapState.values()].filter(b => !b.connected).length)
    addCollectedGauge(r, 'sipmesh_registrations', 'live registrations served by this node', () => this.gatewayInstance?.registrations?.() ?? 0)
    addCollectedGauge(r, 'sipmesh_datastore_memory_bytes', 'memory LevelDB holds (memtables and block cache: its leveldb.approximate-memory-usage)', () => datastoreMemory(this.datastore))
    addCollectedCounter(r, 'sipmesh_peer_channel_frames_sent_total', 'SIP messages sent to other nodes', () => channel.stats.framesSent)
    addCollectedCounter(r, 'sipmesh_peer_channel_frames_received_total', 'SIP messages received from other nodes', () => channel.stats.framesReceived)
    addCollectedCounter(r, 'sipmesh_peer_channel_writes_total', 'writes of SIP messages to other nodes (a write carries the messages of one event-loop turn to one peer in one yamux frame and Noise message)', () => channel.stats.writes)
    addCollectedCounter(r, 'sipmesh_peer_channel_chunks_received_total', 'chunks of SIP messages read from other nodes', () => channel.stats.chunksReceived)
    addCollectedCounter(r, 'sipmesh_peer_channel_streams_opened_total', 'SIP streams opened to other nodes', () => channel.stats.streamsOpened)
    addCollectedCounter(r, 'sipmesh_peer_channel_stream_errors_total', 'SIP streams that failed', () => channel.stats.streamErrors)
    addCollectedCounter(r, 'sipmesh_peer_channel_open_retries_total', 'dials of a SIP stream that failed and were tried again (messages waiting meanwhile)', () => channel.stats.openRetries)
    addCollectedLabeledCounter(r, 'sipmesh_peer_channel_messages_queued_total', 'SIP messages to other nodes that waited in their peer\'s queue instead of leaving in their turn, by reason: no stream open yet, the stream\'s write buffer full (drain), others waiting before them (behind_queue: the node has fallen behind its peer)', 'reason', ['no_stream', 'drain', 'behind_queue'], () => channel.stats.queued)
    const stats = meshNode.registry.stats
    addCollectedCounter(r, 'sipmesh_registry_claims_total', 'claims made by this node', () => stats.claims)
    addCollectedCounter(r, 'sipmesh_registry_lookups_total', 'DHT lookups of claims', () => stats.lookups)
    addCollectedCounter(r, 'sipmesh_registry_notices_sent_total', 'move/interest notices sent', () => stats.noticesSent)
    addCollectedCounter(r, 'sipmesh_registry_notices_received_total', 'move/interest notices received', () => stats.noticesReceived)
    addCollectedCounter(r, 'sipmesh_registry_notices_rejected_total', 'notices refused after verification', () => stats.noticesRejected)
    addCollectedCounter(r, 'sipmesh_registry_refreshes_total', 'claims of an AoR this node holds, answered without a write', () => stats.refreshes)
    addCollectedCounter(r, 'sipmesh_registry_renewals_total', 'lease renewals by the sweep (same version, new lease)', () => stats.renewals)
    addCollectedCounter(r, 'sipmesh_registry_republished_total', 'own records re-put as they are (restart, releases)', () => stats.republished)
    addCollectedCounter(r, 'sipmesh_registry_claims_received_total', 'claims other nodes sent this node to store', () => stats.putsReceived)
    addCollectedCounter(r, 'sipmesh_registry_late_losses_total', 'REGISTER claims answered at the first replica that a later replica\'s answer overturned (lost race: displaced; an earlier record ahead by clock: claimed above)', () => stats.lateLosses)
    addCollectedCounter(r, 'sipmesh_registry_early_reads_total', 'resolves answered without one replica that was silent past the grace (its late answer still taken in)', () => stats.earlyReads)
    addCollectedCounter(r, 'sipmesh_registry_late_read_corrections_total', 'resolves answered early whose silent replica later brought a newer claim (the cached route corrected)', () => stats.lateCorrections)
    addCollectedLabeledCounter(r, 'sipmesh_registry_put_claims_dropped_total', 'claims not stored on a replica by its claim-put stream, by reason: its queue full (queue_full), queued behind or put during an unanswered request or a dial under way to a silent peer (peer_silent), sent and not answered in 10 s (timeout), waiting for a stream that could not be opened (no_stream), sent on a stream that failed (stream_failed); the replica repair puts them again once the peer answers', 'reason', ['queue_full', 'peer_silent', 'timeout', 'no_stream', 'stream_failed'], () => meshNode.registry.putDrops())
    const repair = meshNode.registry.repair.stats
    addCollectedCounter(r, 'sipmesh_registry_repair_rounds_total', 'repairs of a replica that missed claims (dropped puts, or found down) begun once it answered again', () => repair.rounds)
    addCollectedCounter(r, 'sipmesh_registry_repair_region_rounds_total', 'of those, repairs over its whole region (every own claim it is a replica of: more dropped than remembered, or it was down)', () => repair.regionRounds)
    addCollectedCounter(r, 'sipmesh_registry_repair_claims_total', 'own claims put again to a returning replica (answered)', () => repair.claims)
    addCollectedCounter(r, 'sipmesh_registry_repair_peers_forgotten_total', 'replicas owed claims that never answered again within the lease (left to the lease renewal)', () => repair.forgotten)
    addCollectedGauge(r, 'sipmesh_registry_repair_remembered', 'AoRs remembered as owed to replicas that missed them (bounded: 4,096 per peer, 32,768 in all)', () => repair.remembered)
    addCollectedCounter(r, 'sipmesh_registry_slow_claims_total', 'new claims that took over 250 ms (signing, this node\'s store and the replicas\' answers; logged at warn)', () => meshNode.registry.slowClaims.count)
    addCollectedCounter(r, 'sipmesh_registry_write_batches_total', 'batched writes of claims to this node\'s store', () => meshNode.registry.writeStats().batches)
    addCollectedCounter(r, 'sipmesh_registry_signing_batches_total', 'batches of signatures sent to the signing thread (this process)', () => meshNode.registry.writeStats().signingBatches)
    addCollectedCounter(r, 'sipmesh_registry_peer_requests_total', 'batched claim-put requests sent to replicas', () => meshNode.registry.writeStats().peerBatches)
    addCollectedGauge(r, 'sipmesh_registry_own_records', 'own claims and releases this node keeps and renews', () => meshNode.registry.ownRecords)
    addCollectedCounter(r, 'sipmesh_registry_peers_down_total', 'peers found down by the liveness probe', () => meshNode.registry.liveness.stats.down)
  }

  /**
   * The gateway's figures (`sipmesh_sip_*`), read from one snapshot per scrape: nothing is
   * counted on the SIP path for them beyond what the gateway counts anyway. Label values are
   * fixed lists, so the number of series is bounded.
   */
  private registerGatewayMetrics (stats: () => GatewayStatsSnapshot): void {
    const r = this.metrics.registry
    const s = oncePerScrape(stats)
    const counter = (name: string, help: string, read: (s: GatewayStatsSnapshot) => number | undefined): void => {
      addCollectedCounter(r, name, help, () => read(s()) ?? 0)
    }
    const gauge = (name: string, help: string, read: (s: GatewayStatsSnapshot) => number | undefined): void => {
      addCollectedGauge(r, name, help, () => read(s()) ?? 0)
    }
    const transports = ['udp', 'tcp', 'ws', 'tls', 'wss'] as const
    counter('sipmesh_sip_requests_total', 'SIP requests received from user agents and the mesh (one per server transaction; retransmissions not counted)', s => s.requests)
    addCollectedLabeledCounter(r, 'sipmesh_sip_responses_total', 'final SIP responses sent to requests this node handled (its own and relayed; not the 400s of unparsable messages, see parse_errors), by status class', 'class', ['2xx', '3xx', '4xx', '5xx', '6xx'], () => s().responses)
    counter('sipmesh_sip_requests_forwarded_mesh_total', 'SIP requests forwarded over the mesh to the node owning the AoR', s => s.forwardedMesh)
    counter('sipmesh_sip_requests_delivered_local_total', 'SIP requests delivered to contacts registered on this node', s => s.deliveredLocal)
    counter('sipmesh_sip_requests_answered_local_total', 'SIP requests addressed to this node itself and answered here (OPTIONS keep-alives, 405)', s => s.answeredLocally)
    counter('sipmesh_sip_loops_detected_total', 'SIP requests refused with 482 Loop Detected', s => s.loops)
    counter('sipmesh_sip_not_owner_retries_total', 'requests re-routed after the node they were sent to said it no longer owns the AoR', s => s.notOwnerRetries)
    addCollectedLabeledCounter(r, 'sipmesh_sip_parse_errors_total', 'SIP messages that did not parse (answered 400/513 when possible, else dropped), by transport (mesh: from other nodes)', 'transport', [...transports, 'mesh'], () => {
      const x = s()
      return { ...x.transport?.parseErrors, mesh: x.parseErrors }
    })
    counter('sipmesh_sip_retransmissions_absorbed_total', 'retransmitted SIP requests answered by their server transaction (not seen again by the proxy core)', s => s.retransmissionsAbsorbed)
    counter('sipmesh_sip_server_transactions_refused_total', 'SIP requests refused with 503 because the server transaction limit was reached', s => s.overloaded)
    addCollectedLabeledCounter(r, 'sipmesh_sip_overload_rejected_total', 'REGISTERs answered 503 with Retry-After because the node was over capacity (RFC 3261 21.5.4), by reason: pending (too many REGISTERs in progress) or lag (event-loop lag)', 'reason', ['pending', 'lag'], () => s().registerShed)
    gauge('sipmesh_sip_register_pending', 'REGISTERs in progress (waiting for their claim to be stored and written)', s => s.registerPending)
    counter('sipmesh_sip_register_claim_failures_total', 'REGISTERs answered 503 because their claim could not be stored', s => s.registerClaimFailures)
    gauge('sipmesh_sip_reclaim_pending', 'stored registrations not yet claimed again since the restart', s => s.reclaim === undefined || s.reclaim.done ? 0 : s.reclaim.total - s.reclaim.claimed - s.reclaim.lost - s.reclaim.failed - (s.reclaim.superseded ?? 0))
    gauge('sipmesh_sip_server_transactions', 'live SIP server transactions (including those lingering for retransmissions)', s => s.serverTransactions)
    gauge('sipmesh_sip_client_transactions', 'live SIP client transactions', s => s.clientTransactions)
    addCollectedLabeledCounter(r, 'sipmesh_sip_messages_received_total', 'SIP messages received from user agents (parsed), by transport', 'transport', transports, () => s().transport?.messagesIn)
    addCollectedLabeledCounter(r, 'sipmesh_sip_messages_sent_total', 'SIP messages sent to user agents, by transport', 'transport', transports, () => s().transport?.messagesOut)
    counter('sipmesh_sip_rate_limited_total', 'SIP messages dropped by the per-source rate limit', s => s.transport?.rateLimited)
    counter('sipmesh_sip_oversize_total', 'SIP messages refused for their size', s => s.transport?.oversize)
    counter('sipmesh_sip_slow_peers_total', 'TCP/WebSocket connections closed because a message did not complete in time', s => s.transport?.slowPeers)
    counter('sipmesh_sip_idle_closed_total', 'TCP/WebSocket connections closed after the idle timeout', s => s.transport?.idleClosed)
    gauge('sipmesh_sip_connections', 'open SIP TCP and WebSocket connections', s => s.transport?.connections)
    addCollectedLabeledCounter(r, 'sipmesh_sip_connections_refused_total', 'SIP TCP/WebSocket connections refused, by the cap they met: per source address (host) or on all connections (total)', 'cap', ['host', 'total'], () => s().transport?.connectionsRefused)
    counter('sipmesh_sip_requests_forwarded_peer_total', 'SIP requests sent to a peer network over TLS', s => s.forwardedPeer)
    counter('sipmesh_sip_peer_requests_refused_total', 'SIP requests from peer networks refused with 403 (From not in the peer\'s domain)', s => s.peerRefused)
    counter('sipmesh_sip_tls_handshake_failures_total', 'TLS handshakes that failed or timed out (plain SIP to the TLS port, a client that never finishes)', s => s.transport?.tlsHandshakeFailures)
    counter('sipmesh_sip_tls_refused_total', 'TLS connections refused for a certificate: untrusted, expired or naming no configured peer (inbound), or a peer dial that failed', s => s.transport?.tlsRefused)
    counter('sipmesh_sip_silent_connections_closed_total', 'inbound SIP TCP/WebSocket connections closed because no whole SIP message came within the first-message timeout', s => s.transport?.silentClosed)
    counter('sipmesh_sip_mesh_messages_received_total', 'SIP messages the gateway received from other nodes over the mesh', s => s.meshIn)
    counter('sipmesh_sip_mesh_messages_sent_total', 'SIP messages the gateway sent to other nodes over the mesh', s => s.meshOut)
    gauge('sipmesh_sip_bindings', 'contacts registered on this node (all AoRs)', s => s.bindings)
    gauge('sipmesh_sip_presence_presentities', 'presentities the presence agent tracks', s => s.presence?.presentities)
    gauge('sipmesh_sip_presence_subscriptions', 'presence subscriptions of watchers served by this node', s => s.presence?.subscriptions)
    gauge('sipmesh_sip_presence_backend_subscriptions', 'back-end presence subscriptions this node holds to owner nodes', s => s.presence?.backendSubscriptions)
    gauge('sipmesh_sip_presence_peer_backend_subscriptions', 'back-end presence subscriptions this node holds to peer networks (one per presentity and package, whatever the watchers)', s => s.presence?.peerBackendSubscriptions)
    gauge('sipmesh_sip_presence_peer_backends_served', 'back-end presence subscriptions of peer networks this node serves', s => s.presence?.peerBackendsServed)
    gauge('sipmesh_sip_presence_publications', 'live presence publications (PUBLISH) held by this node', s => s.presence?.publications)
    counter('sipmesh_sip_presence_notifies_sent_total', 'presence NOTIFYs sent', s => s.presence?.notifiesSent)
    counter('sipmesh_sip_presence_rate_limited_total', 'SUBSCRIBE/PUBLISH requests refused by the presence rate limit', s => s.presence?.rateLimited)
    gauge('sipmesh_sip_offline_messages', 'offline IMs stored here and not delivered yet', s => s.offline?.messages)
    gauge('sipmesh_sip_offline_users', 'users with offline IMs waiting here', s => s.offline?.users)
    counter('sipmesh_sip_offline_stored_total', 'MESSAGEs stored for users who were away (answered 202)', s => s.offline?.stored)
    counter('sipmesh_sip_offline_delivered_total', 'stored MESSAGEs delivered to a device (2xx) and removed', s => s.offline?.delivered)
    counter('sipmesh_sip_offline_refused_total', 'stored MESSAGEs a device refused for good, removed undelivered', s => s.offline?.refused)
    counter('sipmesh_sip_auth_challenges_total', 'digest challenges sent (401/407)', s => s.auth?.challenged)
    counter('sipmesh_sip_auth_successes_total', 'requests whose digest credentials were accepted', s => s.auth?.authenticated)
    counter('sipmesh_sip_auth_failures_total', 'digest credentials refused (wrong password, stale or replayed nonce) and challenged again', s => s.auth?.failed)
    counter('sipmesh_sip_auth_forbidden_total', 'requests refused with 403 (a user without a secret, or another user\'s credentials)', s => s.auth?.forbidden)
    counter('sipmesh_sip_auth_malformed_total', 'requests refused with 400 for malformed credentials', s => s.auth?.malformed)
    // what the kernel dropped before the node could read it (Linux; absent elsewhere: 0)
    const udp = oncePerScrape(() => {
      const a = this.gatewayInstance?.udpAddress?.()
      return a === undefined ? undefined : udpSocketStats(a.host, a.port)
    })
    addCollectedCounter(r, 'sipmesh_sip_udp_receive_drops_total', 'SIP datagrams the kernel dropped because the UDP socket\'s receive buffer was full: load the node never saw (nor answered 503); Linux only', () => udp()?.drops ?? 0)
    addCollectedGauge(r, 'sipmesh_sip_udp_receive_queue_bytes', 'bytes of SIP datagrams waiting in the UDP socket\'s receive buffer at the scrape (Linux only)', () => udp()?.rxQueueBytes ?? 0)
  }
}
