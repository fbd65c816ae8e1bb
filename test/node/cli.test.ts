// The `sipmesh` command's answers to bad usage: fast, non-zero, and a message that says what is wrong.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sipmesh } from './fixtures/cli.ts'

describe('sipmesh CLI usage', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'sipmesh-cli-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  test('--version and --help', async () => {
    const v = await sipmesh(['--version'])
    assert.equal(v.code, 0)
    assert.match(v.stdout, /^\d+\.\d+\.\d+\n$/)
    const h = await sipmesh(['--help'])
    assert.equal(h.code, 0)
    assert.match(h.stdout, /sipmesh start/)
    assert.match(h.stdout, /sipmesh cluster --nodes N/)
    const sh = await sipmesh(['start', '--help'])
    assert.equal(sh.code, 0)
    for (const flag of ['--domain', '--sip', '--ws', '--p2p', '--bootstrap', '--mdns', '--data-dir', '--psk', '--admin', '--config', '--log-level']) {
      assert.ok(sh.stdout.includes(flag), flag)
    }
    const ch = await sipmesh(['cluster', '--help'])
    assert.equal(ch.code, 0)
    assert.match(ch.stdout, /--base-port/)
  })

  test('bad usage exits 2 with a clear message and starts nothing', async () => {
    const badFile = join(dir, 'bad.json')
    await writeFile(badFile, '{ "sip": ')
    const unknownKey = join(dir, 'unknown.json')
    await writeFile(unknownKey, '{ "sip": "127.0.0.1:5060", "colour": "blue" }')
    const cases: Array<[string[], Record<string, string>, RegExp]> = [
      [[], {}, /Usage:/],
      [['frobnicate'], {}, /unknown command 'frobnicate'/],
      [['start', '--bogus'], {}, /Unknown option '--bogus'/],
      [['start', '--sip', 'nonsense'], {}, /--sip: expected host:port/],
      [['start', '--config', badFile], {}, /bad\.json is not valid JSON/],
      [['start', '--config', unknownKey], {}, /unknown key "colour"/],
      [['start', '--config', join(dir, 'missing.json')], {}, /cannot read config file/],
      [['start'], { SIPMESH_ADMIN: 'everywhere' }, /SIPMESH_ADMIN: expected host:port/],
      [['start'], { SIPMESH_TYPO: '1' }, /unknown environment variable SIPMESH_TYPO/],
      [['cluster'], {}, /--nodes <N> is required/],
      [['cluster', '--nodes', '0'], {}, /--nodes: expected a whole number/],
      [['cluster', '--nodes', 'many'], {}, /--nodes: expected a whole number/],
      [['cluster', '--nodes', '3', '--base-port', '65530'], {}, /leaves no room/],
      [['cluster', '--nodes', '3', '--colour'], {}, /Unknown option '--colour'/]
    ]
    // four at a time: fourteen Node processes starting at once on a busy 2-core machine took more
    // than the 15 s each may take
    for (let i = 0; i < cases.length; i += 4) {
      await Promise.all(cases.slice(i, i + 4).map(async ([args, env, message]) => {
        const r = await sipmesh(args, env)
        assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
        assert.match(r.stderr, message, args.join(' '))
        assert.doesNotMatch(r.stdout, /node started/)
      }))
    }
  })

  test('start reads the config file, then the environment, then the flags', async () => {
    const { run, stop, httpGet, waitFor, freePorts, freeSipPort } = await import('../e2e/fixtures/processes.ts')
    const [admin, p2p, otherAdmin] = await freePorts(3)
    const sip = await freeSipPort()
    const file = join(dir, 'node.json')
    await writeFile(file, JSON.stringify({ domain: ['cfg.example'], admin: `127.0.0.1:${otherAdmin}`, p2p: [`/ip4/127.0.0.1/tcp/${p2p}`], 'data-dir': join(dir, 'cfg-node'), sip: '127.0.0.1:1' }))
    const proc = run(['start', '--config', file, '--admin', `127.0.0.1:${admin}`, '--log-level', 'warn'], { SIPMESH_SIP: `127.0.0.1:${sip}` })
    try {
      await waitFor(async () => (await httpGet(`127.0.0.1:${admin}`, '/status')).status === 200, 15_000, 'the node to answer')
      const status = JSON.parse((await httpGet(`127.0.0.1:${admin}`, '/status')).body)
      assert.deepEqual(status.domains, ['cfg.example'])
      assert.equal(status.sip, `127.0.0.1:${sip}`)
      assert.ok(status.multiaddrs[0].startsWith(`/ip4/127.0.0.1/tcp/${p2p}/`))
      // --log-level warn: the info lines are not written
      assert.ok(!proc.lines.some(l => l.includes('"level":"info"')), proc.lines.join('\n'))
      assert.deepEqual(await stop(proc, 'SIGTERM'), { code: 0, signal: null })
    } finally {
      await stop(proc, 'SIGKILL')
    }
  })

  test('a node that cannot start (admin port taken) exits 1 and says why', async () => {
    const { createServer } = await import('node:net')
    const server = createServer()
    await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
    const port = (server.address() as import('node:net').AddressInfo).port
    try {
      const r = await sipmesh(['start', '--data-dir', join(dir, 'busy'), '--p2p', '/ip4/127.0.0.1/tcp/0', '--sip', '127.0.0.1:0', '--admin', `127.0.0.1:${port}`])
      assert.equal(r.code, 1)
      assert.match(r.stderr, /cannot start the admin API on 127\.0\.0\.1:\d+: .*EADDRINUSE/)
    } finally {
      server.close()
    }
  })
})
