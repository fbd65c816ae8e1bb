// A stream's chunks handed to its `message` listeners by plain calls (node/direct-messages.ts):
// the same bytes in the same order as through the library's read buffer and events, whichever way
// each chunk comes (paused, listened to late, a listener added once), on a real AbstractMessageStream
// of @libp2p/utils. Real connections are in mesh-writes.test.ts and peer-channel.test.ts.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { AbstractMessageStream, type SendResult } from '@libp2p/utils'
import { defaultLogger } from '@libp2p/logger'
import { directMessages, hasDirectMessages } from '../../node/direct-messages.ts'

/** the smallest stream of the library's: what it reads is what `onData` is given */
class TestStream extends AbstractMessageStream {
  constructor () { super({ log: defaultLogger().forComponent('test:direct-messages') }) }
  /** every write taken whole */
  sendData (data: { byteLength: number }): SendResult { return { sentBytes: data.byteLength, canSendMore: true } }
  sendReset (): void {}
  sendPause (): void {}
  sendResume (): void {}
  async close (): Promise<void> {}
  /** what a transport below calls with each chunk it reads */
  read (bytes: Uint8Array): void { this.onData(bytes) }
}

const bytes = (...xs: number[]): Uint8Array => Uint8Array.from(xs)
/** the bytes of what a listener got (a Uint8Array, or a Uint8ArrayList from the library's path) */
const flat = (data: Uint8Array | { subarray: () => Uint8Array }): number[] => [...(data instanceof Uint8Array ? data : data.subarray())]
const tick = async (): Promise<void> => { await new Promise(resolve => setTimeout(resolve, 5)) }

describe('directMessages', () => {
  test('chunks reach every listener at once, in order, as the very bytes read (no buffer, no event object)', () => {
    const s = new TestStream()
    assert.equal(directMessages(s), true)
    assert.equal(hasDirectMessages(s), true)
    const got: unknown[] = []
    const other: number[][] = []
    s.addEventListener('message', (evt) => { got.push(evt.data) })
    s.addEventListener('message', (evt) => { other.push(flat(evt.data)) })
    const a = bytes(1, 2)
    const b = bytes(3)
    s.read(a)
    s.read(b)
    // synchronous, the same objects: the direct path
    assert.deepEqual(got, [a, b])
    assert.equal(got[0], a)
    assert.deepEqual(other, [[1, 2], [3]])
    assert.equal(s.readBufferLength, 0)
  })

  test('without it the library buffers and dispatches (the control: a copy of the list, not the bytes)', () => {
    const s = new TestStream()
    const got: unknown[] = []
    s.addEventListener('message', (evt) => { got.push(evt.data) })
    const a = bytes(1, 2)
    s.read(a)
    assert.equal(got.length, 1)
    assert.notEqual(got[0], a)
    assert.deepEqual(flat(got[0] as Uint8Array), [1, 2])
  })

  test('bytes read before any listener wait and come first; later chunks go behind them', async () => {
    const s = new TestStream()
    directMessages(s)
    s.read(bytes(1))
    s.read(bytes(2))
    const got: number[][] = []
    s.addEventListener('message', (evt) => { got.push(flat(evt.data)) })
    // read before the library's queued dispatch has run: behind what waits
    s.read(bytes(3))
    await tick()
    s.read(bytes(4))
    assert.deepEqual(got.flat(), [1, 2, 3, 4])
    assert.equal(s.readBufferLength, 0)
  })

  test('a paused stream keeps its chunks and hands them over in order when resumed', async () => {
    const s = new TestStream()
    directMessages(s)
    const got: number[][] = []
    s.addEventListener('message', (evt) => { got.push(flat(evt.data)) })
    s.read(bytes(1))
    s.pause()
    s.read(bytes(2))
    s.read(bytes(3))
    await tick()
    assert.deepEqual(got.flat(), [1])
    s.resume()
    s.read(bytes(4))
    await tick()
    assert.deepEqual(got.flat(), [1, 2, 3, 4])
  })

  test('a listener added once, or as an object, turns the direct path off for good: the library delivers as before', async () => {
    for (const add of [
      (s: TestStream, got: number[]) => { s.addEventListener('message', (evt) => { got.push(...flat(evt.data)) }, { once: true }) },
      (s: TestStream, got: number[]) => { s.addEventListener('message', { handleEvent: (evt: { data: Uint8Array }) => { got.push(...flat(evt.data)) } } as never) }
    ]) {
      const s = new TestStream()
      directMessages(s)
      const got: number[] = []
      const seen: unknown[] = []
      s.addEventListener('message', (evt) => { seen.push(evt.data) })
      add(s, got)
      const a = bytes(7)
      s.read(a)
      await tick()
      assert.deepEqual(got, [7])
      assert.equal(seen.length, 1)
      assert.notEqual(seen[0], a, 'through the library')
    }
  })

  test('a removed listener gets nothing more; with none left, chunks wait in the buffer as before', () => {
    const s = new TestStream()
    directMessages(s)
    const got: number[] = []
    const listener = (evt: { data: Uint8Array | { subarray: () => Uint8Array } }): void => { got.push(...flat(evt.data)) }
    s.addEventListener('message', listener)
    s.read(bytes(1))
    s.removeEventListener('message', listener)
    s.read(bytes(2))
    assert.deepEqual(got, [1])
    assert.equal(s.readBufferLength, 1)
  })

  test('a closed stream drops what it reads, as before; an empty chunk is nobody\'s', () => {
    const s = new TestStream()
    directMessages(s)
    const got: unknown[] = []
    s.addEventListener('message', (evt) => { got.push(evt.data) })
    s.read(new Uint8Array(0))
    assert.equal(got.length, 0)
    s.abort(new Error('gone'))
    s.read(bytes(1))
    assert.equal(got.length, 0)
    assert.equal(s.readBufferLength, 0)
  })

  test('a listener that throws does not keep the chunk from the others; the error is thrown again on the next tick', async () => {
    const s = new TestStream()
    directMessages(s)
    const got: number[] = []
    s.addEventListener('message', () => { throw new Error('listener failed') })
    s.addEventListener('message', (evt) => { got.push(...flat(evt.data)) })
    // the re-throw, caught here instead of by the process
    const nextTick = process.nextTick
    const thrown: unknown[] = []
    process.nextTick = ((fn: () => void) => { nextTick(() => { try { fn() } catch (err) { thrown.push(err) } }) }) as typeof process.nextTick
    try {
      s.read(bytes(5))
    } finally {
      process.nextTick = nextTick
    }
    await tick()
    assert.deepEqual(got, [5])
    assert.equal((thrown[0] as Error | undefined)?.message, 'listener failed')
  })

  test('an event with no listener is not made; one with a listener is dispatched as before', () => {
    const s = new TestStream()
    directMessages(s)
    const made: string[] = []
    const dispatch = s.dispatchEvent.bind(s)
    s.dispatchEvent = (evt: Event): boolean => { made.push(evt.type); return dispatch(evt) }
    // a write: the stream's 'idle' once it is passed on
    s.send(bytes(1, 2, 3))
    assert.deepEqual(made, [])
    let idle = 0
    s.addEventListener('idle', () => { idle++ })
    s.send(bytes(4))
    assert.deepEqual(made, ['idle'])
    assert.equal(idle, 1)
  })

  test('anything but a message stream is left alone; a stream is wrapped once', () => {
    assert.equal(directMessages(undefined), false)
    assert.equal(directMessages({}), false)
    assert.equal(directMessages({ onData () {}, readStatus: 'readable' }), false)
    assert.equal(hasDirectMessages({}), false)
    const s = new TestStream()
    assert.equal(directMessages(s), true)
    assert.equal(directMessages(s), false)
  })
})
