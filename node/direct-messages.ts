/**
 * The bytes a libp2p connection reads, handed from layer to layer (TCP → Noise → yamux → the SIP
 * stream) as plain calls of the layers' `message` listeners, without a read buffer and an
 * EventTarget dispatch at each.
 *
 * `@libp2p/utils`' AbstractMessageStream (7.4) is the base of each layer: TCP's connection, Noise's
 * encrypted stream, and yamux's streams. Each chunk a layer reads is appended to its read buffer (a
 * Uint8ArrayList), cut out of it again as a new list, wrapped in a `StreamMessageEvent` and
 * dispatched through Node's EventTarget (and `main-event`'s wrapper of every listener) to the layer
 * above. The buffer and the event exist for readers that pause a stream or attach late; the layers
 * above listen from the start and never pause. Per chunk read, three times over, that was a list
 * appended to, a list made, an event object and a dispatch: with one or two SIP messages per chunk
 * (a paced load) ~0.6 KB of garbage per layer per relayed MESSAGE (`bench-relay-path.ts --mode
 * cross --window 2`, its heap profile), and Node's EventTarget is not a cheap dispatcher.
 *
 * Each write a layer passes on ends with an `idle` event (`safeDispatchEvent`: a CustomEvent made
 * and dispatched) that on these layers nobody listens to but for a moment while a stream closes;
 * a wrapped stream makes an event only when its type has a listener (`listenerCount`, which the
 * library's own emitter keeps), which is all a dispatch to nobody would have done.
 *
 * `directMessages` wraps one stream instance: it keeps the `message` listeners added to it (plain
 * functions; a listener added `once`, with a signal or as an object turns it off for good), and
 * while the stream is readable, holds nothing in its read buffer and has listeners, a chunk is
 * given to each listener at once as `{ data }` (what they read of the event). Anything else (a
 * paused or closing stream, bytes buffered before, an empty chunk, no listener yet) takes the
 * library's own path, whose events reach the same listeners, so the order of the bytes is kept
 * whichever way they come. A listener that throws is reported as an EventTarget would: thrown again
 * on the next tick. A stream that is not such a stream is left alone.
 *
 * Hand-written because the library has no option for it. Applied where node/libp2p.ts already
 * wraps the layers: the TCP connection before its upgrade (node/tcp-writes.ts), Noise's stream once
 * secured (node/noise-length.ts), the SIP stream by the peer channel.
 */

/** what a layer's `message` listener is given: the chunk, as the event carries it */
interface MessageLike { data: unknown }
type Listener = (evt: MessageLike) => void

/** the members of AbstractMessageStream used here */
interface MessageStream {
  onData: (data: { byteLength: number }) => void
  readStatus: string
  readBuffer: { byteLength: number }
  listenerCount: (type: string) => number
  safeDispatchEvent: (type: string, detail?: unknown) => boolean
  addEventListener: (type: string, listener: unknown, options?: unknown) => void
  removeEventListener: (type: string, listener: unknown, options?: unknown) => void
}

const patched = new WeakSet<object>()

function isMessageStream (s: unknown): s is MessageStream {
  if (s == null || typeof s !== 'object') return false
  const m = s as Partial<MessageStream>
  return typeof m.onData === 'function' && typeof m.readStatus === 'string' && typeof m.readBuffer?.byteLength === 'number' &&
    typeof m.addEventListener === 'function' && typeof m.removeEventListener === 'function' &&
    typeof m.listenerCount === 'function' && typeof m.safeDispatchEvent === 'function'
}

/** whether `directMessages` wrapped `stream` */
export function hasDirectMessages (stream: unknown): boolean {
  return stream != null && typeof stream === 'object' && patched.has(stream)
}

/** Hand `stream`'s chunks to its `message` listeners by plain calls (see above); whether it applied. */
export function directMessages (stream: unknown): boolean {
  if (!isMessageStream(stream) || patched.has(stream)) return false
  patched.add(stream)
  const listeners: Listener[] = []
  let usable = true
  const add = stream.addEventListener
  const remove = stream.removeEventListener
  const onData = stream.onData
  const safeDispatch = stream.safeDispatchEvent
  // an event nobody listens to is not made: the stream's 'idle' after every write it passes on,
  // at each layer, had a CustomEvent made and dispatched for no listener
  stream.safeDispatchEvent = function (this: MessageStream, type: string, detail?: unknown): boolean {
    if (this.listenerCount(type) === 0) return true
    return safeDispatch.call(this, type, detail)
  }
  stream.addEventListener = function (this: MessageStream, type: string, listener: unknown, options?: unknown): void {
    if (type === 'message') {
      const plain = options == null || typeof options === 'boolean' || (typeof options === 'object' && (options as { once?: boolean }).once !== true && (options as { signal?: unknown }).signal == null)
      if (typeof listener === 'function' && plain) {
        if (!listeners.includes(listener as Listener)) listeners.push(listener as Listener)
      } else {
        usable = false
      }
    }
    add.call(this, type, listener, options)
  }
  stream.removeEventListener = function (this: MessageStream, type: string, listener: unknown, options?: unknown): void {
    if (type === 'message') {
      const i = listeners.indexOf(listener as Listener)
      if (i >= 0) listeners.splice(i, 1)
    }
    remove.call(this, type, listener, options)
  }
  stream.onData = function (this: MessageStream, data: { byteLength: number }): void {
    if (!usable || listeners.length === 0 || this.readStatus !== 'readable' || this.readBuffer.byteLength > 0 || data.byteLength === 0) {
      onData.call(this, data)
      return
    }
    const evt: MessageLike = { data }
    // as an EventTarget does: the listeners as they were when the dispatch began
    const now = listeners.length === 1 ? listeners : listeners.slice()
    for (const listener of now) {
      try {
        listener(evt)
      } catch (err) {
        process.nextTick(() => { throw err })
      }
    }
  }
  return true
}
