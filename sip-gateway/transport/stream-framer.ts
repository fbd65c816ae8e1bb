/**
 * Framing of SIP messages on a byte stream (RFC 3261 18.3): the header section ends at the first
 * empty line, the body is exactly Content-Length bytes (mandatory on streams). Several messages
 * may arrive in one read and one message over many reads; CRLFs between messages are skipped
 * (RFC 3261 7.5) and a double CRLF is a keep-alive ping (RFC 5626 3.5.1).
 *
 * The buffer grows by doubling and the header search resumes where it stopped, so a peer sending
 * one byte at a time costs linear work, and nothing is held beyond `maxMessageSize`.
 */
import { Buffer } from 'node:buffer'
import { findHeadEnd } from '../codec/parser.ts'

export type FrameEvent =
  /** one whole message (a copy, safe to keep) */
  | { kind: 'message', data: Uint8Array }
  /** a double-CRLF keep-alive: answer with one CRLF */
  | { kind: 'ping' }
  /**
   * The stream cannot be framed any more (too large, missing or bad Content-Length): answer with
   * `status` when `head` (the header section, when complete) makes it possible, then close.
   */
  | { kind: 'error', status: number, reason: string, head?: Uint8Array }

// linear: no nested or adjacent quantifiers over the same characters (the head is hostile input)
const CONTENT_LENGTH = /^(?:content-length|l)[ \t]*:([^\r\n]*)/im
/** a line that continues the previous header line (RFC 3261 7.3.1 folding) */
const FOLDED = /\r?\n[ \t]/
/** a Content-Length value (a module constant: a regular expression literal in a function is a new RegExp per call) */
const DIGITS_10 = /^[0-9]{1,10}$/
const FOLDS = /\r?\n[ \t]+/g

/**
 * The Content-Length value of a header section, with folded lines joined first (RFC 3261 7.3.1:
 * `Content-Length:` CRLF SP `42` is the same header as `Content-Length: 42`; RFC 4475 3.1.1.1).
 * undefined when the header is absent.
 */
function contentLengthOf (head: string): string | undefined {
  const text = FOLDED.test(head) ? head.replace(FOLDS, ' ') : head
  const m = CONTENT_LENGTH.exec(text)
  return m === null ? undefined : m[1].trim()
}

export class StreamFramer {
  private readonly maxMessageSize: number
  private buf: Buffer
  private len = 0
  /** where the next search for the end of the header section starts */
  private scanFrom = 0
  /** total length of the message being read, once its header section is complete */
  private total = -1
  private failed = false

  constructor (maxMessageSize: number) {
    this.maxMessageSize = maxMessageSize
    this.buf = Buffer.allocUnsafe(Math.min(4096, maxMessageSize + 4))
  }

  /** True while part of a message is buffered (the slow-peer clock runs). */
  get pending (): boolean {
    return this.len > 0 && this.buf[0] !== 13 && this.buf[0] !== 10
  }

  /** Feed bytes; returns what they complete, in order. After an error, nothing more. */
  push (chunk: Uint8Array): FrameEvent[] {
    const events: FrameEvent[] = []
    if (this.failed) return events
    let offset = 0
    while (offset < chunk.length) {
      // copy as much as the message limit allows (plus a little for CRLF skipping)
      const room = this.maxMessageSize + 4 - this.len
      if (room <= 0) break
      const n = Math.min(room, chunk.length - offset)
      this.append(chunk, offset, n)
      offset += n
      if (!this.drain(events)) return events
    }
    if (offset < chunk.length && !this.failed) {
      // still full: the message being read is larger than allowed
      this.fail(events, 513, 'Message Too Large')
    }
    return events
  }

  private append (chunk: Uint8Array, offset: number, n: number): void {
    if (this.len + n > this.buf.length) {
      let size = this.buf.length * 2
      while (size < this.len + n) size *= 2
      const next = Buffer.allocUnsafe(Math.min(size, this.maxMessageSize + 4))
      this.buf.copy(next, 0, 0, this.len)
      this.buf = next
    }
    this.buf.set(chunk.subarray(offset, offset + n), this.len)
    this.len += n
  }

  /** Take every complete frame out of the buffer; false once failed. */
  private drain (events: FrameEvent[]): boolean {
    while (this.len > 0) {
      if (this.total === -1) {
        // CRLFs before a start line: keep-alive pings or stray line ends
        const b = this.buf
        let skip = 0
        while (skip < this.len && (b[skip] === 13 || b[skip] === 10)) {
          if (b[skip] === 13 && b[skip + 1] === 10 && b[skip + 2] === 13 && b[skip + 3] === 10) {
            events.push({ kind: 'ping' })
            skip += 4
          } else if (skip + 3 >= this.len && b[skip] === 13) {
            break // maybe the start of a ping whose rest has not arrived
          } else {
            skip++
          }
        }
        if (skip > 0) this.consume(skip)
        if (this.len === 0) return true
        if (this.buf[0] === 13 || this.buf[0] === 10) return true
        const found = findHeadEnd(this.buf.subarray(0, this.len), this.scanFrom)
        if (found === undefined) {
          this.scanFrom = Math.max(0, this.len - 3)
          if (this.len > this.maxMessageSize) {
            this.fail(events, 513, 'Message Too Large')
            return false
          }
          return true
        }
        const head = this.buf.subarray(0, found.headEnd)
        const text = head.toString('latin1')
        const value = contentLengthOf(text)
        if (value === undefined) {
          this.fail(events, 400, 'Missing Content-Length on a stream', head)
          return false
        }
        if (!DIGITS_10.test(value)) {
          this.fail(events, 400, 'Malformed Content-Length header', head)
          return false
        }
        const total = found.bodyStart + Number(value)
        if (total > this.maxMessageSize) {
          this.fail(events, 513, 'Message Too Large', head)
          return false
        }
        this.total = total
      }
      if (this.len < this.total) return true
      const data = new Uint8Array(this.total)
      data.set(this.buf.subarray(0, this.total))
      events.push({ kind: 'message', data })
      this.consume(this.total)
      this.total = -1
    }
    return true
  }

  private consume (n: number): void {
    this.buf.copy(this.buf, 0, n, this.len)
    this.len -= n
    this.scanFrom = 0
  }

  private fail (events: FrameEvent[], status: number, reason: string, head?: Buffer): void {
    this.failed = true
    events.push(head === undefined
      ? { kind: 'error', status, reason }
      : { kind: 'error', status, reason, head: Uint8Array.from(head) })
    this.len = 0
  }
}
