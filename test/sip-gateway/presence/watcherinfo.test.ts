// watcherinfo (RFC 3858) building and parsing: round trips, and hostile or malformed bodies refused
// with WatcherInfoError (400).
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { buildWatcherInfo, parseWatcherInfo, WatcherInfoError, WATCHER_STATUSES, WATCHER_EVENTS, MAX_WATCHERS, type WatcherInfo } from '../../../sip-gateway/presence/watcherinfo.ts'
import { sipStatusFor } from '../../../sip-gateway/presence/index.ts'

const NS = 'urn:ietf:params:xml:ns:watcherinfo'
const doc = (inner: string, attrs = 'version="0" state="full"'): string => `<watcherinfo xmlns="${NS}" ${attrs}>${inner}</watcherinfo>`
const list = (inner: string): string => doc(`<watcher-list resource="sip:bob@example.com" package="presence">${inner}</watcher-list>`)

describe('watcherinfo', () => {
  test('a document round-trips through build and parse', () => {
    const user = fc.stringMatching(/^[a-z0-9._-]{1,12}$/)
    fc.assert(fc.property(fc.array(fc.record({
      id: fc.stringMatching(/^[A-Za-z0-9_-]{1,16}$/),
      uri: user.map(u => `sip:${u}@example.com`),
      status: fc.constantFrom(...WATCHER_STATUSES),
      event: fc.constantFrom(...WATCHER_EVENTS)
    }, { noNullPrototype: true }), { maxLength: 10 }), fc.nat({ max: 1e9 }), (watchers, version) => {
      const input: WatcherInfo = { version, state: 'partial', lists: [{ resource: 'sip:bob@example.com', package: 'presence', watchers }] }
      assert.deepEqual(parseWatcherInfo(buildWatcherInfo(input)), input)
    }))
  })

  test('hostile and malformed bodies are refused (400)', () => {
    const many = (n: number): string => list(Array.from({ length: n }, (_, i) => `<watcher id="w${i}" status="active" event="subscribe">sip:w${i}@x</watcher>`).join(''))
    const bad = [
      '', '<watcherinfo', 'plain text',
      `<!DOCTYPE w [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>${doc('&b;')}`,
      many(MAX_WATCHERS + 1), many(10_000),
      doc('', 'version="a" state="full"'), doc('', 'version="1" state="none"'),
      '<watcherinfo xmlns="urn:other" version="0" state="full"/>',
      list('<watcher status="active" event="subscribe">sip:a@b</watcher>'),
      list('<watcher id="1" status="asleep" event="subscribe">sip:a@b</watcher>'),
      list('<watcher id="1" status="active" event="party">sip:a@b</watcher>'),
      list('<watcher id="1" status="active" event="subscribe">not a uri</watcher>'),
      doc('<watcher-list resource="nope" package="presence"/>'),
      doc('<watcher-list resource="sip:a@b" package="bad package"/>'),
      Buffer.from([0xc3, 0x28])
    ]
    for (const body of bad) {
      assert.throws(() => parseWatcherInfo(body), (err: unknown) => err instanceof WatcherInfoError && sipStatusFor(err)?.status === 400, String(body).slice(0, 80))
    }
  })

  test('random input never throws anything but WatcherInfoError', () => {
    fc.assert(fc.property(fc.oneof(fc.string({ maxLength: 300 }), fc.uint8Array({ maxLength: 300 })), (body) => {
      try { parseWatcherInfo(body) } catch (err) { assert.ok(err instanceof WatcherInfoError, String(err)) }
    }))
  })
})
