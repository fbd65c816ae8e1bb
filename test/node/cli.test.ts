// The `sipmesh` command's answers to bad usage: fast, non-zero, and a message that says what is wrong.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const BIN = fileURLToPath(new URL('../../node/bin/sipmesh.js', import.meta.url))

function sipmesh (args: string[], env: Record<string, string> = {}): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const base: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SIPMESH_')) base[k] = v
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`sipmesh ${args.join(' ')} did not exit`)) }, 15_000)
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }) })
  })
}

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
    await Promise.all(cases.map(async ([args, env, message]) => {
      const r = await sipmesh(args, env)
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
      assert.match(r.stderr, message, args.join(' '))
      assert.doesNotMatch(r.stdout, /node started/)
    }))
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

  test('a start failure is said once when stdout and stderr are one place (a terminal, one log file)', async () => {
    const { createServer } = await import('node:net')
    const { openSync, closeSync, readFileSync } = await import('node:fs')
    const server = createServer()
    await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
    const port = (server.address() as import('node:net').AddressInfo).port
    const out = join(dir, 'both.log')
    const fd = openSync(out, 'w')
    try {
      const child = spawn(process.execPath, [BIN, 'start', '--data-dir', join(dir, 'busy-once'), '--p2p', '/ip4/127.0.0.1/tcp/0', '--sip', '127.0.0.1:0', '--admin', `127.0.0.1:${port}`], { stdio: ['ignore', fd, fd] })
      assert.equal(await new Promise(resolve => { child.once('exit', resolve) }), 1)
      const text = readFileSync(out, 'utf8')
      assert.equal(text.split('\n').filter(l => l.includes('EADDRINUSE')).length, 1, text)
      assert.match(text, /^sipmesh: cannot start: cannot start the admin API on 127\.0\.0\.1:\d+: .*EADDRINUSE/m)
    } finally {
      closeSync(fd)
      server.close()
    }
  })

  test('a bad bootstrap peer id names the flag or variable and what is wrong with it', async () => {
    for (const [args, env, message] of [
      [['start', '--bootstrap', '/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWbad'], {}, /--bootstrap \(item 1\): "12D3KooWbad" after \/p2p\/ is not a peer id/],
      [['start'], { SIPMESH_BOOTSTRAP: '/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWL5P6dqFUrEbHjXqT7Gd8HDCt2kKGmTQfdXyRvtCPxbJs,/ip4/1.2.3.4/tcp/1/p2p/nope' }, /SIPMESH_BOOTSTRAP \(item 2\): "nope" after \/p2p\/ is not a peer id/],
      [['start', '--bootstrap', '/ip4/127.0.0.1/tcp/p2p'], {}, /--bootstrap \(item 1\): ".*" is not a multiaddr/]
    ] as Array<[string[], Record<string, string>, RegExp]>) {
      const r = await sipmesh(args, env)
      assert.equal(r.code, 2, r.stderr)
      assert.match(r.stderr, message)
      assert.doesNotMatch(r.stderr, /Incorrect length|Non-base58|at .*\.js:/)
    }
  })

  test('test-suite variables (SIPMESH_REQUIRE_SIPP, SIPMESH_TEST_LOG) are not settings: start accepts them', async () => {
    const r = await sipmesh(['start', '--help'], { SIPMESH_REQUIRE_SIPP: '1', SIPMESH_TEST_LOG: '1' })
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stderr, '')
  })

  test('--help: value names, descriptions aligned in one column', async () => {
    const r = await sipmesh(['start', '--help'])
    const options = r.stdout.split('\n').filter(l => /^ {2}-/.test(l))
    for (const flag of ['--sip <host:port>', '--bootstrap <multiaddr>', '--data-dir <dir>', '--psk <file>', '--admin-token <token>', '--log-format <format>', '--mdns ']) {
      assert.ok(options.some(l => l.includes(flag)), flag)
    }
    const columns = new Set(options.map(l => /^ {2}\S.*? {2,}(?=\S)/.exec(l)?.[0].length))
    assert.equal(columns.size, 1, options.join('\n'))
    // continuation lines start in that column too, and no line is wider than 100
    const col = [...columns][0] ?? 0
    for (const l of r.stdout.split('\n')) {
      assert.ok(l.length <= 100, l)
      if (/^ +\S/.test(l) && !/^ {2}-/.test(l)) assert.equal(/^ */.exec(l)?.[0].length, col, l)
    }
  })

  test('sipmesh psk writes a private-network key (0600), never over an existing file unless --force', async () => {
    const { readFile, stat } = await import('node:fs/promises')
    const file = join(dir, 'swarm.key')
    const first = await sipmesh(['psk', file])
    assert.equal(first.code, 0, first.stderr)
    assert.match(first.stdout, /--psk /)
    const key = await readFile(file, 'utf8')
    assert.match(key, /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}$/)
    assert.equal((await stat(file)).mode & 0o777, 0o600)
    const again = await sipmesh(['psk', file])
    assert.equal(again.code, 1)
    assert.match(again.stderr, /exists; not replaced/)
    assert.equal(await readFile(file, 'utf8'), key)
    assert.equal((await sipmesh(['psk', file, '--force'])).code, 0)
    assert.notEqual(await readFile(file, 'utf8'), key)
    const out = await sipmesh(['psk', '-'])
    assert.match(out.stdout, /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n$/)
    for (const bad of [['psk', 'a', 'b'], ['psk', '--bogus'], ['psk', '--force=yes']]) {
      const r = await sipmesh(bad)
      assert.equal(r.code, 2, bad.join(' '))
    }
    const missingDir = await sipmesh(['psk', join(dir, 'no', 'such', 'dir', 'k')])
    assert.equal(missingDir.code, 1)
    assert.match(missingDir.stderr, /cannot write/)
  })
})
