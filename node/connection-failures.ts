/**
 * Peer connections that failed or were refused, so that a node that cannot join the mesh says so
 * (a different pre-shared key, a peer id not on an allow-list, a bootstrap address nobody listens
 * on) instead of running alone with `peers: []`.
 *
 * Two parts:
 *
 * - `watchTransport(factory, report)` wraps a libp2p transport: a dial that fails (connect or
 *   upgrade: Noise, the private-network protector, muxer negotiation, the connection gater) and an
 *   inbound connection whose upgrade fails are reported with the remote address, the peer id when
 *   known, and the error. Dials aborted by their caller are not failures of the peer and are not
 *   reported here (libp2p aborts the other addresses of a peer once one connects).
 * - `ConnectionFailures` keeps the recent failures (bounded, newest first, one entry per direction,
 *   address and reason with a count), logs each at warn (an entry that repeats is logged again at
 *   most once a minute, with its count), and counts them by direction for `/metrics`.
 */
import type { Logger } from '../sip-gateway/ports.ts'
import type { Connection, Transport, Upgrader } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'

export type Direction = 'inbound' | 'outbound'

export interface FailureReport {
  direction: Direction
  /** the remote multiaddr (for inbound connections: the address the connection came from) */
  address?: string
  /** the remote peer id, when known */
  peer?: string
  /** what happened, as the operator reads it */
  reason: string
}

export interface ConnectionFailure extends FailureReport {
  count: number
  /** ISO times */
  first: string
  last: string
}

/** The errors a transport wrapper reported, so that callers that see them again do not repeat them. */
const reported = new WeakSet<object>()

/** Whether `err` (or, for an AggregateError, every error in it) was reported already. */
export function wasReported (err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false
  if (reported.has(err)) return true
  const errors = (err as { errors?: unknown[] }).errors
  return Array.isArray(errors) && errors.length > 0 && errors.every(e => typeof e === 'object' && e !== null && reported.has(e))
}

function describe (err: unknown, stage: 'connect' | 'upgrade'): string {
  const e = err as { name?: string, message?: string, code?: string }
  const text = `${e.code ?? e.name ?? 'Error'}: ${e.message ?? String(err)}`
  return stage === 'upgrade' ? `upgrade failed (${text})` : text
}

function peerOf (ma: Multiaddr | undefined): string | undefined {
  return ma?.getComponents().findLast(c => c.name === 'p2p')?.value
}

type TransportFactory = (components: any) => Transport // eslint-disable-line @typescript-eslint/no-explicit-any

/**
 * Wrap a libp2p transport factory so that failed dials and failed inbound upgrades are reported.
 * `hint` may add a likely cause to an upgrade failure (e.g. "a different pre-shared key?").
 */
export function watchTransport (factory: TransportFactory, report: (failure: FailureReport) => void, hint?: (direction: Direction, err: unknown) => string | undefined): TransportFactory {
  const send = (direction: Direction, ma: Multiaddr | undefined, err: unknown, stage: 'connect' | 'upgrade', peer?: string): void => {
    if (typeof err === 'object' && err !== null) reported.add(err)
    const extra = stage === 'upgrade' ? hint?.(direction, err) : undefined
    try {
      report({ direction, address: ma?.toString(), peer: peer ?? peerOf(ma), reason: describe(err, stage) + (extra != null ? `; ${extra}` : '') })
    } catch { /* reporting never breaks a dial */ }
  }
  return (components) => {
    const transport = factory(components)
    const dial = transport.dial.bind(transport)
    const createListener = transport.createListener.bind(transport)
    transport.dial = async (ma, options) => {
      let upgrading = false
      const upgrader = wrapUpgrader(options.upgrader, {
        upgradeOutbound: async (target, maConn, opts) => {
          upgrading = true
          try {
            return await target.upgradeOutbound(maConn, opts)
          } catch (err) {
            if (options.signal?.aborted !== true) send('outbound', ma, err, 'upgrade')
            throw err
          }
        }
      })
      try {
        return await dial(ma, { ...options, upgrader })
      } catch (err) {
        if (!upgrading && options.signal?.aborted !== true) send('outbound', ma, err, 'connect')
        throw err
      }
    }
    transport.createListener = (options) => createListener({
      ...options,
      upgrader: wrapUpgrader(options.upgrader, {
        upgradeInbound: async (target, maConn, opts) => {
          try {
            await target.upgradeInbound(maConn, opts)
          } catch (err) {
            if (opts?.signal?.aborted !== true) send('inbound', maConn.remoteAddr, err, 'upgrade')
            throw err
          }
        }
      })
    })
    return transport
  }
}

interface UpgraderOverrides {
  upgradeOutbound?: (target: Upgrader, ...args: Parameters<Upgrader['upgradeOutbound']>) => Promise<Connection>
  upgradeInbound?: (target: Upgrader, ...args: Parameters<Upgrader['upgradeInbound']>) => Promise<void>
}

/** The upgrader with some methods wrapped; everything else is the upgrader's own. */
function wrapUpgrader (upgrader: Upgrader, overrides: UpgraderOverrides): Upgrader {
  return new Proxy(upgrader, {
    get (target, prop, receiver) {
      if (prop === 'upgradeOutbound' && overrides.upgradeOutbound != null) {
        const f = overrides.upgradeOutbound
        return async (...args: Parameters<Upgrader['upgradeOutbound']>) => await f(target, ...args)
      }
      if (prop === 'upgradeInbound' && overrides.upgradeInbound != null) {
        const f = overrides.upgradeInbound
        return async (...args: Parameters<Upgrader['upgradeInbound']>) => { await f(target, ...args) }
      }
      const value = Reflect.get(target, prop, receiver) as unknown
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
    }
  })
}

export interface ConnectionFailuresInit {
  /** failures kept for `/status` @default 32 */
  max?: number
  /** a failure that repeats is logged again at most this often, ms @default 60000 */
  relogMs?: number
  now?: () => number
}

export class ConnectionFailures {
  readonly counts: Record<Direction, number> = { inbound: 0, outbound: 0 }
  private readonly log: Logger
  private readonly entries = new Map<string, ConnectionFailure & { loggedAt: number, unlogged: number }>()
  private readonly max: number
  private readonly relogMs: number
  private readonly now: () => number

  constructor (components: { logger: Logger }, init: ConnectionFailuresInit = {}) {
    this.log = components.logger
    this.max = init.max ?? 32
    this.relogMs = init.relogMs ?? 60_000
    this.now = init.now ?? Date.now
  }

  record (failure: FailureReport): void {
    this.counts[failure.direction]++
    const now = this.now()
    // inbound connections come from a new port each time: one entry per remote host
    const where = failure.direction === 'inbound' ? failure.address?.replace(/\/(tcp|udp)\/\d+/, '') : failure.address
    const key = `${failure.direction} ${where ?? failure.peer ?? ''} ${failure.reason}`
    let e = this.entries.get(key)
    if (e == null) {
      e = { ...failure, count: 0, first: new Date(now).toISOString(), last: '', loggedAt: -Infinity, unlogged: 0 }
      if (this.entries.size >= this.max) {
        const oldest = this.entries.keys().next().value
        if (oldest !== undefined) this.entries.delete(oldest)
      }
    }
    // newest last in the map
    this.entries.delete(key)
    this.entries.set(key, e)
    e.count++
    e.last = new Date(now).toISOString()
    e.unlogged++
    if (now - e.loggedAt >= this.relogMs) {
      const text = failure.direction === 'inbound' ? 'refused or failed inbound peer connection' : 'cannot connect to peer'
      this.log.warn(text, { direction: failure.direction, address: failure.address, peer: failure.peer, reason: failure.reason, ...(e.count > 1 ? { count: e.count, since: e.first } : {}) })
      e.loggedAt = now
      e.unlogged = 0
    }
  }

  /** The recent failures, newest first. */
  recent (): ConnectionFailure[] {
    return [...this.entries.values()].reverse().map(({ loggedAt: _l, unlogged: _u, ...f }) => f)
  }
}
