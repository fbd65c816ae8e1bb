/**
 * What TCP and WebSocket connections share: an id, addresses, the idle timeout and the
 * slow-peer timeout, and the host (the transport layer) they report to.
 */
import type { Logger } from '../ports.ts'
import type { FrameEvent } from './stream-framer.ts'
import type { Address, ConnectionInfo } from './types.ts'

export interface StreamSettings {
  maxMessageSize: number
  idleTimeoutMs: number
  messageTimeoutMs: number
  /** an inbound connection must bring its first whole message within this, ms */
  firstMessageTimeoutMs: number
  maxWriteBuffer: number
}

/** The transport layer, as a connection sees it. */
export interface StreamHost {
  readonly settings: StreamSettings
  readonly log: Logger
  /** one whole message arrived (framed by Content-Length on TCP, one frame on WebSocket) */
  streamMessage (conn: StreamConnection, data: Uint8Array): void
  /** the TCP stream cannot be framed any more: answer when possible, then close */
  framingError (conn: StreamConnection, event: Extract<FrameEvent, { kind: 'error' }>): void
  connectionClosed (conn: StreamConnection): void
  slowPeer (conn: StreamConnection): void
  idle (conn: StreamConnection): void
  /** an inbound connection brought no whole message within `firstMessageTimeoutMs` */
  silent (conn: StreamConnection): void
}

export abstract class StreamConnection {
  readonly info: ConnectionInfo
  protected readonly host: StreamHost
  private slowTimer: ReturnType<typeof setTimeout> | undefined
  private idleTimer: ReturnType<typeof setTimeout> | undefined
  private closeTimer: ReturnType<typeof setTimeout> | undefined
  private firstTimer: ReturnType<typeof setTimeout> | undefined
  /** false once closing or closed: nothing more is read or written */
  open = true

  constructor (host: StreamHost, info: ConnectionInfo) {
    this.host = host
    this.info = info
    this.idleTimer = setTimeout(() => {
      if (!this.open) return
      this.host.idle(this)
      this.destroy()
    }, host.settings.idleTimeoutMs)
    this.idleTimer.unref()
    if (!info.outbound) {
      // a peer that connects and never says anything (CRLF pings included) holds a descriptor
      // for nothing: it has `firstMessageTimeoutMs` to bring one whole message
      this.firstTimer = setTimeout(() => {
        this.firstTimer = undefined
        if (!this.open) return
        this.host.silent(this)
        this.destroy()
      }, host.settings.firstMessageTimeoutMs)
      this.firstTimer.unref()
    }
  }

  /** A whole message arrived: the connection has spoken (the first-message clock stops). */
  protected spoke (): void {
    if (this.firstTimer === undefined) return
    clearTimeout(this.firstTimer)
    this.firstTimer = undefined
  }

  get id (): string {
    return this.info.id
  }

  get remote (): Address {
    return this.info.remote
  }

  /** Traffic: push the idle deadline back. */
  protected touch (): void {
    this.idleTimer?.refresh()
  }

  /**
   * The slow-peer clock: runs from the first byte of a message until it is complete; a message
   * that takes longer than `messageTimeoutMs` closes the connection.
   */
  protected startMessageClock (restart: boolean): void {
    if (this.slowTimer !== undefined && !restart) return
    if (this.slowTimer !== undefined) clearTimeout(this.slowTimer)
    this.slowTimer = setTimeout(() => {
      this.slowTimer = undefined
      if (!this.open) return
      this.host.slowPeer(this)
      this.destroy()
    }, this.host.settings.messageTimeoutMs)
    this.slowTimer.unref()
  }

  protected stopMessageClock (): void {
    if (this.slowTimer !== undefined) clearTimeout(this.slowTimer)
    this.slowTimer = undefined
  }

  /** Send bytes; throws TransportError when closed or when the peer does not read. */
  abstract write (data: Uint8Array): void

  /** Stop reading, flush what was written, close; destroy if that takes too long. */
  closeAfterFlush (): void {
    if (!this.open) return
    this.open = false
    this.stopMessageClock()
    this.gracefulClose()
    this.closeTimer = setTimeout(() => this.destroy(), 2000)
    this.closeTimer.unref()
  }

  /** Close now. */
  destroy (): void {
    this.open = false
    this.clearTimers()
    this.forceClose()
  }

  protected abstract gracefulClose (): void
  protected abstract forceClose (): void

  /** Called by subclasses when the socket has closed. */
  protected closed (): void {
    this.open = false
    this.clearTimers()
    this.host.connectionClosed(this)
  }

  private clearTimers (): void {
    this.stopMessageClock()
    this.spoke()
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer)
    if (this.closeTimer !== undefined) clearTimeout(this.closeTimer)
    this.idleTimer = undefined
    this.closeTimer = undefined
  }
}
