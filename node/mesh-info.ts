/**
 * What a node knows of the other nodes (the admin API's `GET /mesh`, the dashboard's drawing),
 * over a small libp2p protocol of our own, `/sipmesh/node-info/1.0.0`.
 *
 * The opener writes ONE length-prefixed JSON request and the answerer ONE length-prefixed JSON
 * answer, then both close:
 *
 *   { "q": "summary" }              → the answerer's NodeSummary: peer id, SIP, WebSocket and
 *                                     admin addresses, domains, counts, and the peers it is
 *                                     connected to (its own neighbours: how the drawing learns
 *                                     who is connected to whom)
 *   { "q": "bindings", "aor": a }   → { aor, bindings } of an AoR registered at the answerer
 *                                     (the dashboard's "click an AoR" when another node owns it)
 *
 * Bounded everywhere: requests at most 1 KiB, answers at most 256 KiB, a summary lists at most
 * MAX_LISTED_PEERS peers, `/mesh` asks at most `maxPeers` connected peers (one hop: a peer's
 * neighbours appear as nodes known by id only), each within `timeoutMs`, and the assembled view is
 * kept `cacheMs` so that dashboards polling every second or two cost one round per period.
 * Only mesh peers can ask (the libp2p connection is Noise-authenticated, and private with --psk).
 */
import { lpStream } from '@libp2p/utils'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Connection, Libp2p, PeerId, Startable, Stream } from '@libp2p/interface'
import type { BindingView } from '../sip-gateway/inspect.ts'
import type { Logger } from '../sip-gateway/ports.ts'

export const NODE_INFO_PROTOCOL = '/sipmesh/node-info/1.0.0'
export const MAX_INFO_REQUEST_BYTES = 1024
export const MAX_INFO_ANSWER_BYTES = 256 * 1024
export const MAX_LISTED_PEERS = 64
const MAX_AOR_CHARS = 512

/** One node as it describes itself. */
export interface NodeSummary {
  peerId: string
  sip: string
  /** SIP over WebSocket, when on */
  ws?: string
  /** its admin API (`host:port`) */
  admin: string
  domains: string[]
  registrations: number
  ownedClaims: number
  /** peers it is connected to (at most MAX_LISTED_PEERS) */
  peers: string[]
}

/** A node in `GET /mesh`: described by itself, or known by id only (a neighbour of a neighbour, or one that did not answer). */
export type MeshNodeView = (NodeSummary & { self: boolean, reachable: true, rttMs?: number }) |
{ peerId: string, self: false, reachable: false, error?: string }

export interface MeshView {
  self: string
  nodes: MeshNodeView[]
  /** undirected connections, each once, as [peer id, peer id] in code-unit order */
  links: Array<[string, string]>
  /** ISO 8601 UTC time the view was assembled */
  at: string
}

export class NodeInfoError extends Error {
  static readonly NAME = 'NodeInfoError'
  override readonly name = NodeInfoError.NAME
}

export interface MeshInfoComponents {
  libp2p: Pick<Libp2p, 'peerId' | 'handle' | 'unhandle' | 'dialProtocol' | 'getConnections'>
  logger: Logger
}

export interface MeshInfoInit {
  /** this node's own summary */
  summary: () => NodeSummary
  /** the bindings of an AoR registered here (undefined: no gateway) */
  bindings?: (aor: string) => BindingView[] | undefined
  /** most peers asked for one `/mesh` @default 32 */
  maxPeers?: number
  /** how long one peer may take to answer, ms @default 2000 */
  timeoutMs?: number
  /** how long an assembled view is served again, ms @default 2000 */
  cacheMs?: number
}

type Request = { q: 'summary' } | { q: 'bindings', aor: string }

function isStringArray (v: unknown, max: number): v is string[] {
  return Array.isArray(v) && v.length <= max && v.every(x => typeof x === 'string' && x.length <= 256)
}

/** A summary from another node, checked field by field: anything else is refused. */
export function parseSummary (v: unknown): NodeSummary {
  const s = v as Partial<Record<keyof NodeSummary, unknown>> | null
  const str = (x: unknown): x is string => typeof x === 'string' && x.length <= 256
  const count = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0
  if (s === null || typeof s !== 'object' || !str(s.peerId) || !str(s.sip) || !str(s.admin) || (s.ws !== undefined && !str(s.ws)) ||
    !isStringArray(s.domains, 64) || !count(s.registrations) || !count(s.ownedClaims) || !isStringArray(s.peers, MAX_LISTED_PEERS)) {
    throw new NodeInfoError('malformed node summary')
  }
  return { peerId: s.peerId, sip: s.sip, ...(s.ws !== undefined ? { ws: s.ws } : {}), admin: s.admin, domains: s.domains, registrations: s.registrations, ownedClaims: s.ownedClaims, peers: s.peers }
}

function parseRequest (bytes: Uint8Array): Request {
  const v = JSON.parse(new TextDecoder().decode(bytes)) as { q?: unknown, aor?: unknown } | null
  if (v !== null && typeof v === 'object' && v.q === 'summary') return { q: 'summary' }
  if (v !== null && typeof v === 'object' && v.q === 'bindings' && typeof v.aor === 'string' && v.aor.length <= MAX_AOR_CHARS) return { q: 'bindings', aor: v.aor }
  throw new NodeInfoError('unknown request')
}

function parseBindings (v: unknown): BindingView[] {
  const b = (v as { bindings?: unknown } | null)?.bindings
  if (!Array.isArray(b) || b.length > 1000) throw new NodeInfoError('malformed bindings answer')
  return b.map((x: Partial<BindingView> | null) => {
    if (x === null || typeof x !== 'object' || typeof x.contact !== 'string' || typeof x.expires !== 'string' ||
      (x.transport !== undefined && typeof x.transport !== 'string') || (x.source !== undefined && typeof x.source !== 'string') ||
      x.params === null || typeof x.params !== 'object') throw new NodeInfoError('malformed binding')
    const params: Record<string, string | null> = {}
    for (const [k, p] of Object.entries(x.params)) if (typeof p === 'string' || p === null) params[k] = p
    return { contact: x.contact, expires: x.expires, params, ...(x.transport !== undefined ? { transport: x.transport } : {}), ...(x.source !== undefined ? { source: x.source } : {}) }
  })
}

const encode = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v))

export class MeshInfo implements Startable {
  private readonly libp2p: MeshInfoComponents['libp2p']
  private readonly log: Logger
  private readonly init: MeshInfoInit
  private shutdown?: AbortController
  private cached?: { at: number, view: Promise<MeshView> }
  readonly stats = { asked: 0, answered: 0, failed: 0, refused: 0 }

  constructor (components: MeshInfoComponents, init: MeshInfoInit) {
    this.libp2p = components.libp2p
    this.log = components.logger.child({ component: 'mesh-info' })
    this.init = init
  }

  async start (): Promise<void> {
    this.shutdown = new AbortController()
    await this.libp2p.handle(NODE_INFO_PROTOCOL, (stream, connection) => { void this.answer(stream, connection) }, { maxInboundStreams: 4 })
  }

  async stop (): Promise<void> {
    this.shutdown?.abort()
    this.cached = undefined
    await this.libp2p.unhandle(NODE_INFO_PROTOCOL).catch(() => {})
  }

  private signal (extra?: AbortSignal): AbortSignal {
    const signals = [AbortSignal.timeout(this.init.timeoutMs ?? 2000)]
    if (this.shutdown != null) signals.push(this.shutdown.signal)
    if (extra != null) signals.push(extra)
    return AbortSignal.any(signals)
  }

  private async answer (stream: Stream, connection: Connection): Promise<void> {
    const signal = this.signal()
    try {
      const lp = lpStream(stream, { maxDataLength: MAX_INFO_REQUEST_BYTES })
      const req = parseRequest((await lp.read({ signal })).subarray())
      let answer: unknown
      if (req.q === 'summary') {
        answer = this.init.summary()
      } else {
        const bindings = this.init.bindings?.(req.aor)
        answer = bindings === undefined ? { error: 'no gateway' } : { aor: req.aor, bindings: bindings.slice(0, 1000) }
      }
      const bytes = encode(answer)
      if (bytes.byteLength > MAX_INFO_ANSWER_BYTES) throw new NodeInfoError('answer too large')
      const out = lpStream(stream, { maxDataLength: MAX_INFO_ANSWER_BYTES })
      await out.write(bytes, { signal })
      await stream.close({ signal }).catch(() => {})
    } catch (err) {
      this.stats.refused++
      this.log.debug('node-info request refused', { peer: connection.remotePeer.toString(), error: (err as Error).message })
      stream.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }

  /** Ask one peer (one request, one answer). Throws on failure or a malformed answer. */
  async ask (peer: PeerId, request: Request, options: { signal?: AbortSignal } = {}): Promise<unknown> {
    const signal = this.signal(options.signal)
    this.stats.asked++
    const stream = await this.libp2p.dialProtocol(peer, NODE_INFO_PROTOCOL, { signal })
    try {
      const lp = lpStream(stream, { maxDataLength: MAX_INFO_ANSWER_BYTES })
      await lp.write(encode(request), { signal })
      const answer = JSON.parse(new TextDecoder().decode((await lp.read({ signal })).subarray())) as unknown
      await stream.close({ signal }).catch(() => {})
      this.stats.answered++
      return answer
    } catch (err) {
      this.stats.failed++
      stream.abort(err instanceof Error ? err : new Error(String(err)))
      throw err
    }
  }

  /** The bindings of `aor` at node `peer` (its owner). */
  async bindingsAt (peer: string, aor: string, options: { signal?: AbortSignal } = {}): Promise<BindingView[]> {
    return parseBindings(await this.ask(peerIdFromString(peer), { q: 'bindings', aor }, options))
  }

  /** This node, the peers it is connected to (asked), and theirs (known by id); cached `cacheMs`. */
  async mesh (): Promise<MeshView> {
    const now = Date.now()
    if (this.cached !== undefined && now - this.cached.at < (this.init.cacheMs ?? 2000)) return await this.cached.view
    const view = this.assemble()
    this.cached = { at: now, view }
    view.catch(() => { if (this.cached?.view === view) this.cached = undefined })
    return await view
  }

  private async assemble (): Promise<MeshView> {
    const me = this.init.summary()
    const nodes = new Map<string, MeshNodeView>([[me.peerId, { ...me, self: true, reachable: true }]])
    const links = new Set<string>()
    const link = (a: string, b: string): void => { if (a !== b) links.add(a < b ? `${a} ${b}` : `${b} ${a}`) }
    const rtt = new Map<string, number>()
    for (const c of this.libp2p.getConnections()) {
      if (c.status === 'open' && c.rtt !== undefined) rtt.set(c.remotePeer.toString(), c.rtt)
    }
    const asked = me.peers.slice(0, this.init.maxPeers ?? 32)
    for (const p of me.peers) link(me.peerId, p)
    const answers = await Promise.all(asked.map(async (id) => {
      try {
        return { id, summary: parseSummary(await this.ask(peerIdFromString(id), { q: 'summary' })) }
      } catch (err) {
        return { id, error: (err as Error).message.slice(0, 200) }
      }
    }))
    for (const a of answers) {
      if (a.summary !== undefined && a.summary.peerId === a.id) {
        const r = rtt.get(a.id)
        nodes.set(a.id, { ...a.summary, self: false, reachable: true, ...(r !== undefined ? { rttMs: r } : {}) })
        for (const p of a.summary.peers) link(a.id, p)
      } else {
        nodes.set(a.id, { peerId: a.id, self: false, reachable: false, error: a.error ?? 'answered as another peer' })
      }
    }
    for (const pair of links) {
      for (const id of pair.split(' ')) if (!nodes.has(id)) nodes.set(id, { peerId: id, self: false, reachable: false })
    }
    return {
      self: me.peerId,
      nodes: [...nodes.values()].sort((a, b) => a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0),
      links: [...links].sort().map(l => l.split(' ') as [string, string]),
      at: new Date().toISOString()
    }
  }
}
