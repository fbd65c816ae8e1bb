// The `sipmesh` command as a newcomer meets it (issue 14): a start failure said once, a bad
// bootstrap address that names the flag, test variables that are not settings, --help in aligned
// columns, and `sipmesh psk`. Each case spawns the real command; independent ones run together.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { BIN, sipmesh as run } from './fixtures/cli.ts'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** the command, with room for a loaded machine */
async function sipmesh (args: string[], env: Record<string, string> = {}): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return await run(args, env, 60_000)
}

describe('sipmesh for a newcomer', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'sipmesh-cli-ops-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

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
    const cases: Array<Promise<void>> = []
    for (const [args, env, message] of [
      [['start', '--bootstrap', '/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWbad'], {}, /--bootstrap \(item 1\): "12D3KooWbad" after \/p2p\/ is not a peer id/],
      [['start'], { SIPMESH_BOOTSTRAP: '/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWL5P6dqFUrEbHjXqT7Gd8HDCt2kKGmTQfdXyRvtCPxbJs,/ip4/1.2.3.4/tcp/1/p2p/nope' }, /SIPMESH_BOOTSTRAP \(item 2\): "nope" after \/p2p\/ is not a peer id/],
      [['start', '--bootstrap', '/ip4/127.0.0.1/tcp/p2p'], {}, /--bootstrap \(item 1\): ".*" is not a multiaddr/]
    ] as Array<[string[], Record<string, string>, RegExp]>) {
      cases.push((async () => {
        const r = await sipmesh(args, env)
        assert.equal(r.code, 2, r.stderr)
        assert.match(r.stderr, message)
        assert.doesNotMatch(r.stderr, /Incorrect length|Non-base58|at .*\.js:/)
      })())
    }
    await Promise.all(cases)
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
    const [out, missingDir, ...bad] = await Promise.all([['psk', '-'], ['psk', join(dir, 'no', 'such', 'dir', 'k')], ['psk', 'a', 'b'], ['psk', '--bogus'], ['psk', '--force=yes']].map(async args => await sipmesh(args)))
    assert.match(out.stdout, /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n$/)
    for (const r of bad) assert.equal(r.code, 2, r.stderr)
    assert.equal(missingDir.code, 1)
    assert.match(missingDir.stderr, /cannot write/)
  })
})
