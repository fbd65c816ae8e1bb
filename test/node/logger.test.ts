import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createPinoLogger, toPortLogger, libp2pComponentLogger } from '../../node/logger.ts'
import type { LogLevel } from '../../node/config.ts'

function capture (level: LogLevel): { lines: () => Array<Record<string, unknown>>, raw: string[], log: ReturnType<typeof createPinoLogger> } {
  const raw: string[] = []
  const log = createPinoLogger({ level, base: { node: 'n1' }, destination: { write: (s: string) => { raw.push(s) } } })
  return { raw, log, lines: () => raw.join('').split('\n').filter(l => l !== '').map(l => JSON.parse(l) as Record<string, unknown>) }
}

describe('logging', () => {
  test('one JSON object per line with level, ISO time, message and fields; the level filters', () => {
    const { log, raw, lines } = capture('info')
    const port = toPortLogger(log)
    port.debug('hidden')
    port.info('registered', { aor: 'sip:alice@example.com' })
    port.child({ component: 'registrar' }).warn('refused "quoted"\nnewline', { status: 423 })
    assert.equal(raw.length, 2)
    const [a, b] = lines()
    assert.equal(a.level, 'info')
    assert.equal(a.msg, 'registered')
    assert.equal(a.aor, 'sip:alice@example.com')
    assert.equal(a.node, 'n1')
    assert.match(String(a.time), /^\d{4}-\d\d-\d\dT/)
    assert.equal(b.level, 'warn')
    assert.equal(b.component, 'registrar')
    assert.equal(b.status, 423)
    assert.equal(b.msg, 'refused "quoted"\nnewline')
  })

  test('nested children: a field set again replaces the outer one (no duplicate JSON keys), components join', () => {
    const { log, raw, lines } = capture('info')
    toPortLogger(log).child({ component: 'sip-gateway' }).child({ sub: 'im' }).child({ component: 'offline-store', sub: 'store' }).info('ready')
    assert.equal((raw[0].match(/"component"/g) ?? []).length, 1)
    assert.equal((raw[0].match(/"sub"/g) ?? []).length, 1)
    const [line] = lines()
    assert.equal(line.component, 'sip-gateway:offline-store')
    assert.equal(line.sub, 'store')
  })

  test('libp2p component logs: off (and free) above debug, JSON lines at debug', () => {
    const quiet = capture('info')
    const l = libp2pComponentLogger(quiet.log).forComponent('libp2p:dht')
    assert.equal(l.enabled, false)
    l('hello %s', 'world')
    l.error('bad')
    l.newScope('x')('scoped')
    assert.equal(quiet.raw.length, 0)

    const loud = capture('debug')
    const d = libp2pComponentLogger(loud.log).forComponent('libp2p:dht')
    assert.equal(d.enabled, true)
    d('dial %p at %a (%d tries)', 'QmPeer', '/ip4/127.0.0.1/tcp/1', 3)
    d.error('query failed %e', new Error('boom'))
    d.trace('not at debug')
    d.newScope('net')('scoped %o', { a: 1 })
    const [a, b, c] = loud.lines()
    assert.equal(loud.lines().length, 3)
    assert.deepEqual([a.level, a.component, a.msg], ['debug', 'libp2p:dht', 'dial QmPeer at /ip4/127.0.0.1/tcp/1 (3 tries)'])
    assert.deepEqual([b.level, b.msg], ['warn', 'query failed boom'])
    assert.equal(c.component, 'libp2p:dht:net')
  })

  test('our own components\' errors (sipmesh:*) are written at warn above debug; their debug lines and libp2p\'s are not', () => {
    const quiet = capture('info')
    const logger = libp2pComponentLogger(quiet.log)
    const ours = logger.forComponent('sipmesh:dht:validator')
    ours('refused expired record')
    ours.error('refused claim record: %s', 'claim is unsigned')
    ours.newScope('x').error('scoped')
    logger.forComponent('libp2p:dht').error('dial failed')
    const lines = quiet.lines()
    assert.equal(lines.length, 2)
    assert.deepEqual([lines[0].level, lines[0].component, lines[0].msg], ['warn', 'sipmesh:dht:validator', 'refused claim record: claim is unsigned'])
    assert.equal(lines[1].component, 'sipmesh:dht:validator:x')
    const silent = capture('error')
    libp2pComponentLogger(silent.log).forComponent('sipmesh:dht:validator').error('not at error level')
    assert.equal(silent.raw.length, 0)
  })

  test('our own components\' info lines (the replica repair\'s) are written at info; not above it', () => {
    type Info = { info: (formatter: string, ...args: unknown[]) => void }
    const at = capture('info')
    const ours = libp2pComponentLogger(at.log).forComponent('sipmesh:dht:repair') as unknown as Info
    ours.info('repair of %p done: %d claims', 'QmPeer', 10)
    assert.deepEqual(at.lines().map(l => [l.level, l.component, l.msg]), [['info', 'sipmesh:dht:repair', 'repair of QmPeer done: 10 claims']])
    const above = capture('warn')
    ;(libp2pComponentLogger(above.log).forComponent('sipmesh:dht:repair') as unknown as Info).info('not at warn')
    assert.equal(above.raw.length, 0)
  })
})
