/**
 * An in-memory `PeerChannel` for tests: several channels share one `MemoryChannelHub`, each
 * addressed by its node id. Delivery is asynchronous, ordered per sender, and copies the bytes;
 * sending to an unknown or closed node rejects, like a failed libp2p dial.
 */
import type { AbortOptions, PeerChannel, Unwatch } from './ports.ts'

export class MemoryChannelHub {
  readonly #channels = new Map<string, MemoryChannel>()
  /** messages delivered, for tests */
  delivered = 0

  channel (nodeId: string): MemoryChannel {
    const c = new MemoryChannel(this, nodeId)
    this.#channels.set(nodeId, c)
    return c
  }

  /** @internal */
  _deliver (from: string, to: string, data: Uint8Array): void {
    const target = this.#channels.get(to)
    if (target === undefined || target.closed) throw new Error(`no route to node ${to}`)
    const copy = data.slice()
    setImmediate(() => { this.delivered++; target._receive(from, copy) })
  }

  /** @internal */
  _remove (c: MemoryChannel): void {
    if (this.#channels.get(c.nodeId) === c) this.#channels.delete(c.nodeId)
  }
}

export class MemoryChannel implements PeerChannel {
  readonly nodeId: string
  readonly #hub: MemoryChannelHub
  readonly #handlers = new Set<(node: string, data: Uint8Array) => void>()
  closed = false

  constructor (hub: MemoryChannelHub, nodeId: string) {
    this.#hub = hub
    this.nodeId = nodeId
  }

  async send (node: string, data: Uint8Array, options?: AbortOptions): Promise<void> {
    options?.signal?.throwIfAborted()
    if (this.closed) throw new Error('channel closed')
    this.#hub._deliver(this.nodeId, node, data)
  }

  onMessage (handler: (node: string, data: Uint8Array) => void): Unwatch {
    this.#handlers.add(handler)
    return () => { this.#handlers.delete(handler) }
  }

  close (): void {
    this.closed = true
    this.#hub._remove(this)
  }

  /** @internal */
  _receive (from: string, data: Uint8Array): void {
    if (this.closed) return
    for (const h of this.#handlers) h(from, data)
  }
}
