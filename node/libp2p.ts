/**
 * The libp2p 3 assembly of a sipmesh node: TCP (and the in-process memory transport on request),
 * Noise, yamux, identify, ping, kad-dht under our own protocol in server mode with our claim
 * validator/selector, discovery by bootstrap list and optional mDNS, optional private network
 * (pre-shared key) and peer allow-list, and the claim registry (`dht/`) on top.
 *
 * The datastore handed to libp2p is always wrapped by `ClaimGuardDatastore`, so kad-dht never
 * replaces a stored claim with an older one (js-libp2p#3377).
 *
 * ```ts
 * const node = await createMeshNode({ listen: ['/ip4/127.0.0.1/tcp/0'], sip: '127.0.0.1:5060' })
 * await node.start()
 * await node.registry.claim('sip:alice@example.com', { expiresAt: Date.now() + 3600_000 })
 * await node.stop()
 * ```
 */
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { memory } from '@libp2p/memory'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { PeerActivity } from './peer-activity.ts'
import { ping } from '@libp2p/ping'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { bootstrap } from '@libp2p/bootstrap'
import { mdns } from '@libp2p/mdns'
import { preSharedKey } from '@libp2p/pnet'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromString } from '@libp2p/peer-id'
import { defaultLogger } from '@libp2p/logger'
import { MemoryDatastore } from 'datastore-core'
import { ClaimGuardDatastore } from '../dht/datastore-guard.ts'
import { claimRecordHandlers } from '../dht/record/validator.ts'
import { DhtRegistry } from '../dht/dht-registry.ts'
import { watchTransport, type FailureReport } from './connection-failures.ts'
import { coalesceTcpWrites } from './tcp-writes.ts'
import { noiseLengthsWithoutThrow } from './noise-length.ts'
import type { DhtRegistryInit } from '../dht/index.ts'
import type { ComponentLogger, Libp2p, PeerId, PrivateKey, StreamHandler, StreamHandlerOptions, ConnectionGater, Transport } from '@libp2p/interface'
import type { Identify } from '@libp2p/identify'
import type { KadDHT } from '@libp2p/kad-dht'
import type { Ping } from '@libp2p/ping'
import type { Datastore } from 'interface-datastore'
import type { Libp2pOptions } from 'libp2p'

/** kad-dht protocol of the sipmesh DHT (keeps it apart from the public IPFS DHT). */
export const SIPMESH_KAD_PROTOCOL = '/sipmesh/kad/1.0.0'

export type MeshServices = { dht: KadDHT, identify: Identify, ping: Ping }
export type MeshLibp2p = Libp2p<MeshServices>

export interface MeshNodeInit {
  /**
   * Listen multiaddrs (`/ip4/.../tcp/...`, or `/memory/<name>` with `memory: true`).
   *
   * @default ['/ip4/127.0.0.1/tcp/0']
   */
  listen?: string[]
  /**
   * Bootstrap peers (multiaddrs ending in `/p2p/<peer id>`); they are dialled at start.
   *
   * @default []
   */
  bootstrap?: string[]
  /**
   * Discover peers on the LAN with mDNS; a discovered peer is dialled.
   *
   * @default false
   */
  mdns?: boolean
  /**
   * Add the in-process memory transport (scale tests and benchmarks).
   *
   * @default false
   */
  memory?: boolean
  /**
   * Keep TCP (disable only for memory-only meshes).
   *
   * @default true
   */
  tcp?: boolean
  /**
   * Contents of a libp2p v1 pre-shared key file (`/key/swarm/psk/1.0.0/`...); makes the mesh
   * private: a peer without the same key cannot connect.
   *
   * @default undefined (open mesh)
   */
  psk?: Uint8Array
  /**
   * When not empty, only these peer ids (base58 strings) may connect, in or out.
   *
   * @default [] (anyone)
   */
  allowPeers?: string[]
  /**
   * The node's identity (Ed25519). The node/ layer passes the persisted key.
   *
   * @default a fresh Ed25519 key
   */
  privateKey?: PrivateKey
  /**
   * Datastore for DHT records, peer store and own claims (node/ passes LevelDB). Wrapped with the
   * claim write guard.
   *
   * @default an in-memory datastore
   */
  datastore?: Datastore
  /**
   * libp2p metrics implementation, passed through (e.g. `prometheusMetrics()`).
   *
   * @default undefined
   */
  metrics?: Libp2pOptions['metrics']
  /**
   * Component logger (per-node prefix matters when several nodes share a process).
   *
   * @default defaultLogger()
   */
  logger?: ComponentLogger
  /**
   * The SIP address (`host:port`) written into this node's claims.
   *
   * @default '127.0.0.1:5060'
   */
  sip?: string
  /**
   * Claim registry settings (expiry grace, cache TTL, republish interval...).
   *
   * @default {}
   */
  registry?: Omit<DhtRegistryInit, 'sip'>
  /**
   * kad-dht protocol name.
   *
   * @default '/sipmesh/kad/1.0.0'
   */
  kadProtocol?: string
  /**
   * kad-dht k (replication factor and bucket size).
   *
   * @default 20
   */
  kBucketSize?: number
  /**
   * Inbound connections per second per host before refusing (loopback/allowed ranges are exempt).
   *
   * @default 100
   */
  inboundConnectionThreshold?: number
  /**
   * Address ranges always allowed to connect, exempt from rate limits.
   *
   * @default ['/ip4/127.0.0.0/ipcidr/8', '/ip6/::1/ipcidr/128']
   */
  allow?: string[]
  /**
   * Maximum number of connections.
   *
   * @default 300
   */
  maxConnections?: number
  /**
   * libp2p's connection monitor: how often every connection is pinged (a failed ping aborts it).
   *
   * @default 10000
   */
  pingIntervalMs?: number
  /**
   * Told of every peer connection that failed or was refused, in either direction (see
   * `connection-failures.ts`), with a reason an operator can act on.
   *
   * @default undefined
   */
  onConnectionFailure?: (failure: FailureReport) => void
}

/**
 * Concurrent `/ipfs/ping/1.0.0` streams per connection, each way. libp2p's connection monitor
 * pings every connection every 10 s on a stream of its own, and aborts the connection when it
 * cannot open one; kad-dht pings contacts through the ping service at the same time. With the
 * ping service's default limit (1 outbound) the two collide and the monitor aborts a healthy
 * connection with every stream on it (the SIP stream too), and both nodes dial again.
 */
export const PING_STREAMS_PER_CONNECTION = 8

/** How long the first claims of a node that was given bootstrap peers or mDNS wait for a DHT peer. */
export const DEFAULT_JOIN_WAIT_MS = 3_000

/** A started-or-not sipmesh libp2p node with its claim registry. */
export interface MeshNode {
  readonly libp2p: MeshLibp2p
  readonly peerId: PeerId
  readonly privateKey: PrivateKey
  /** the guarded datastore libp2p uses */
  readonly datastore: ClaimGuardDatastore
  readonly registry: DhtRegistry
  /** when this node last did work of ours with each peer (node/idle-connections.ts) */
  readonly activity: PeerActivity
  /** Register a handler for another protocol of ours (e.g. the SIP peer channel). */
  handle (protocol: string, handler: StreamHandler, options?: StreamHandlerOptions): Promise<void>
  /** Start libp2p, then the registry (which re-asserts persisted claims). */
  start (): Promise<void>
  /** Stop the registry, then libp2p. */
  stop (): Promise<void>
}

export async function createMeshNode (init: MeshNodeInit = {}): Promise<MeshNode> {
  const privateKey = init.privateKey ?? await generateKeyPair('Ed25519')
  const logger = init.logger ?? defaultLogger()
  const datastore = new ClaimGuardDatastore(init.datastore ?? new MemoryDatastore(), {
    log: logger.forComponent('sipmesh:dht:guard')
  })
  const { validators, selectors } = claimRecordHandlers(logger.forComponent('sipmesh:dht:validator'))

  const allowPeers = new Set((init.allowPeers ?? []).map(p => peerIdFromString(p).toString()))
  let gater: ConnectionGater = {}
  if (allowPeers.size > 0) {
    const denied = (peer: PeerId): boolean => !allowPeers.has(peer.toString())
    gater = {
      denyDialPeer: denied,
      denyInboundEncryptedConnection: denied,
      denyOutboundEncryptedConnection: denied
    }
  }

  const report = init.onConnectionFailure
  // likely causes of an upgrade that failed, from what this node is configured with
  const hint = (direction: 'inbound' | 'outbound', err: unknown): string | undefined => {
    const name = (err as Error).name
    if (name === 'ConnectionInterceptedError' && allowPeers.size > 0) return 'the peer id is not on this node\'s allow-list (--allow-peer)'
    if (direction === 'inbound') return init.psk != null ? 'the peer may use a different pre-shared key (--psk)' : 'the peer may use a pre-shared key (--psk) this node does not have'
    return init.psk != null
      ? 'the peer may use a different pre-shared key (--psk), or not allow this peer id (--allow-peer)'
      : 'the peer may use a pre-shared key (--psk) this node does not have, or not allow this peer id (--allow-peer)'
  }
  const watched = (factory: (components: any) => Transport): (components: any) => Transport => // eslint-disable-line @typescript-eslint/no-explicit-any
    report != null ? watchTransport(factory, report, hint) : factory
  const transports: NonNullable<Libp2pOptions['transports']> = []
  if (init.tcp !== false) transports.push(watched(coalesceTcpWrites(tcp())))
  if (init.memory === true) transports.push(watched(memory()))

  const peerDiscovery: NonNullable<Libp2pOptions['peerDiscovery']> = []
  if ((init.bootstrap ?? []).length > 0) peerDiscovery.push(bootstrap({ list: init.bootstrap ?? [], timeout: 0 }))
  if (init.mdns === true) peerDiscovery.push(mdns())

  const libp2p = await createLibp2p({
    start: false,
    privateKey,
    datastore,
    logger,
    addresses: { listen: init.listen ?? ['/ip4/127.0.0.1/tcp/0'] },
    transports,
    connectionEncrypters: [noiseLengthsWithoutThrow(noise())],
    streamMuxers: [yamux()],
    connectionProtector: init.psk != null ? preSharedKey({ psk: init.psk }) : undefined,
    connectionGater: gater,
    connectionManager: {
      maxConnections: init.maxConnections ?? 300,
      inboundConnectionThreshold: init.inboundConnectionThreshold ?? 100,
      maxIncomingPendingConnections: 100,
      allow: init.allow ?? ['/ip4/127.0.0.0/ipcidr/8', '/ip6/::1/ipcidr/128']
    },
    peerDiscovery,
    connectionMonitor: init.pingIntervalMs != null ? { pingInterval: init.pingIntervalMs } : undefined,
    metrics: init.metrics,
    services: {
      identify: identify(),
      ping: ping({ maxOutboundStreams: PING_STREAMS_PER_CONNECTION, maxInboundStreams: PING_STREAMS_PER_CONNECTION }),
      dht: kadDHT({
        protocol: init.kadProtocol ?? SIPMESH_KAD_PROTOCOL,
        clientMode: false,
        peerInfoMapper: passthroughMapper,
        allowQueryWithZeroPeers: true,
        kBucketSize: init.kBucketSize,
        validators,
        selectors
      })
    }
  })

  // mDNS (and any other discovery) only announces peers: dial them
  if (init.mdns === true) {
    libp2p.addEventListener('peer:discovery', (evt) => {
      const peer = evt.detail
      if (peer.id.equals(libp2p.peerId) || libp2p.getConnections(peer.id).length > 0) return
      libp2p.dial(peer.multiaddrs.length > 0 ? peer.multiaddrs : peer.id).catch(() => {})
    })
  }

  // our protocols see libp2p through `activity`, which notes the peers they work with
  const activity = new PeerActivity()
  const tracked = activity.track(libp2p)
  const registry = new DhtRegistry({
    peerId: libp2p.peerId,
    privateKey,
    logger,
    dht: libp2p.services.dht,
    datastore,
    libp2p: tracked
  }, {
    // a node that expects peers makes its first claims once it has one (see joinWaitMs)
    joinWaitMs: (init.bootstrap?.length ?? 0) > 0 || init.mdns === true ? DEFAULT_JOIN_WAIT_MS : 0,
    ...init.registry,
    sip: init.sip
  })

  return {
    libp2p,
    peerId: libp2p.peerId,
    privateKey,
    datastore,
    registry,
    activity,
    handle: async (protocol, handler, options) => { await tracked.handle(protocol, handler, options) },
    start: async () => {
      await libp2p.start()
      await registry.start()
    },
    stop: async () => {
      await registry.stop()
      await libp2p.stop()
    }
  }
}
