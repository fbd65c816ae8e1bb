// The `sipmesh` executable (node/bin/sipmesh.js, shell and JavaScript in one file): run as a
// program it execs the project's Node 22, so the process that runs the node is the one that was
// started (no wrapper stays resident); run by an older system `node` it runs Node 22 as a child
// and passes a Ctrl-C on once.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { mkdtemp, readlink, rm, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { cleanEnv } from '../e2e/fixtures/processes.ts'

const BIN = fileURLToPath(new URL('../../node/bin/sipmesh.js', import.meta.url))
const PROJECT_NODE = fileURLToPath(new URL('../../node_modules/node/bin/node', import.meta.url))

/** the system's own `node` when it is older than 22 (the case the re-run exists for), else undefined */
function oldSystemNode (): string | undefined {
  for (const candidate of ['/usr/bin/node', '/usr/local/bin/node']) {
    try {
      const v = execFileSync(candidate, ['--version'], { encoding: 'utf8' }).trim()
      if (Number(v.slice(1).split('.')[0]) < 22) return candidate
    } catch {
      // not there
    }
  }
  return undefined
}

function startArgs (dataDir: string): string[] {
  return ['start', '--sip', '127.0.0.1:0', '--p2p', '/ip4/127.0.0.1/tcp/0', '--admin', '127.0.0.1:0', '--data-dir', dataDir]
}

describe('the sipmesh executable', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'sipmesh-bin-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  test('run as a program through a symlink, with no Node on the PATH: it execs Node 22 in place', async () => {
    const link = join(dir, 'sipmesh')
    await symlink(BIN, link)
    // a PATH with a shell and coreutils only: the Node must come from node_modules/node
    const env = { ...cleanEnv(), PATH: '/usr/bin:/bin' }
    const version = execFileSync(link, ['--version'], { encoding: 'utf8', env, cwd: dir })
    assert.match(version, /^\d+\.\d+\.\d+\n$/)
    const child = spawn(link, startArgs(join(dir, 'direct')), { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
    try {
      const first = await new Promise<string>((resolve, reject) => {
        createInterface({ input: child.stdout }).once('line', resolve)
        child.once('exit', (code) => { reject(new Error(`exited ${code}`)) })
      })
      // the node's own pid is the pid that was spawned: the shell line exec'd, nothing stayed between
      assert.equal((JSON.parse(first) as { pid: number }).pid, child.pid)
      assert.equal(await readlink(`/proc/${child.pid}/exe`), await (await import('node:fs/promises')).realpath(PROJECT_NODE))
    } finally {
      child.kill('SIGINT')
      const code = await new Promise<number | null>(resolve => { child.once('exit', resolve) })
      assert.equal(code, 0)
    }
    // exit codes come through: bad usage is 2
    const bad = spawn(link, ['frobnicate'], { env, stdio: 'ignore' })
    assert.equal(await new Promise(resolve => { bad.once('exit', resolve) }), 2)
  })

  test('run by an older system node: Node 22 runs as a child; one Ctrl-C stops it cleanly, once', async (t) => {
    const old = oldSystemNode()
    if (old === undefined) { t.skip('no system node older than 22 here'); return }
    // a process group of its own, as a shell gives a foreground job
    const child = spawn(old, [BIN, ...startArgs(join(dir, 'old'))], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    const lines: string[] = []
    createInterface({ input: child.stdout }).on('line', (l) => { lines.push(l) })
    const started = await new Promise<{ pid: number }>((resolve, reject) => {
      const timer = setInterval(() => {
        const l = lines.find(x => x.includes('"sipmesh node started"'))
        if (l !== undefined) { clearInterval(timer); resolve(JSON.parse(l) as { pid: number }) }
      }, 50)
      child.once('exit', (code) => { clearInterval(timer); reject(new Error(`exited ${code}`)) })
    })
    assert.notEqual(started.pid, child.pid, 'a child runs the node')
    assert.equal(await readlink(`/proc/${started.pid}/exe`), await (await import('node:fs/promises')).realpath(PROJECT_NODE))
    // as a terminal does: SIGINT to the foreground process group (the wrapper's); the node has its own
    process.kill(-child.pid!, 'SIGINT')
    const code = await new Promise<number | null>(resolve => { child.once('exit', resolve) })
    assert.equal(code, 0)
    assert.equal(lines.filter(l => l.includes('"shutting down"')).length, 1)
    assert.ok(lines.some(l => l.includes('"sipmesh node stopped"')), lines.slice(-5).join('\n'))
    const bad = spawn(old, [BIN, 'frobnicate'], { stdio: 'ignore' })
    assert.equal(await new Promise(resolve => { bad.once('exit', resolve) }), 2)
  })
})
