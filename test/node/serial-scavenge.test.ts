// A node makes V8's scavenges serial at start (node/serial-scavenge.ts). Checked in the process of a
// real node: a child process runs a SipmeshNode under `--trace-gc-nvp`, allocates, and reads V8's
// own account of each scavenge, whose `background.scavenge.parallel` is the copying done by worker
// threads (0.00 when the main thread did it all). The same child with `--parallel-scavenge` on its
// command line (the operator's choice) is the control: its scavenges do use the workers.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { serialScavenge, SERIAL_SCAVENGE_FLAG } from '../../node/serial-scavenge.ts'

const CONFIG = JSON.stringify(fileURLToPath(new URL('../../node/config.ts', import.meta.url)))
const NODE = JSON.stringify(fileURLToPath(new URL('../../node/sipmesh-node.ts', import.meta.url)))

/** a real node in a child process with these V8 flags: the background share of each scavenge made after its start */
async function scavengesOfANode (dataDir: string, flags: string[]): Promise<{ background: number[], stderr: string }> {
  const code = `
    import { loadConfig } from ${CONFIG}
    import { SipmeshNode } from ${NODE}
    const { config } = await loadConfig(['--data-dir', ${JSON.stringify(dataDir)}, '--p2p', '/ip4/127.0.0.1/tcp/0', '--admin', '127.0.0.1:0',
      '--sip', '127.0.0.1:0', '--domain', 'example.com', '--log-level', 'error'], {})
    const node = new SipmeshNode({ config, libp2pMetrics: false })
    await node.start()
    console.log('NODE-STARTED')
    // young objects, a few MB of them alive at each scavenge: work enough for V8 to share it out
    let keep = []
    for (let round = 0; round < 300; round++) {
      const a = []
      for (let i = 0; i < 20000; i++) a.push({ i, s: 'x' + i })
      keep.push(a)
      if (keep.length > 3) keep.shift()
    }
    console.log('CHURNED ' + keep.length)
    await node.stop()
  `
  const child = spawn(process.execPath, ['--trace-gc-nvp', ...flags, '--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c })
  child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c })
  const timer = setTimeout(() => child.kill('SIGKILL'), 90_000)
  const status = await new Promise<number | null>(resolve => child.once('exit', resolve))
  clearTimeout(timer)
  assert.equal(status, 0, stderr.slice(-2000))
  const after = stdout.slice(stdout.indexOf('NODE-STARTED'), stdout.indexOf('CHURNED'))
  assert.ok(stdout.includes('NODE-STARTED') && stdout.includes('CHURNED'), stdout.slice(-2000))
  const background = after.split('\n').filter(l => l.includes(' gc=s ')).map(l => Number(/background\.scavenge\.parallel=([\d.]+)/.exec(l)?.[1] ?? Number.NaN))
  return { background, stderr }
}

describe('serial scavenges', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'sipmesh-scavenge-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  test('a node\'s process scavenges on its main thread alone', async () => {
    const { background, stderr } = await scavengesOfANode(join(dir, 'default'), [])
    assert.ok(background.length >= 10, `only ${background.length} scavenges`)
    assert.deepEqual(background.filter(ms => ms !== 0), [], 'no scavenge had work done by worker threads')
    assert.doesNotMatch(stderr, /unrecognized flag/i)
  })

  test('--parallel-scavenge on the command line wins (and shows that the check above can fail)', async () => {
    const { background } = await scavengesOfANode(join(dir, 'operator'), ['--parallel-scavenge'])
    assert.ok(background.length >= 10, `only ${background.length} scavenges`)
    assert.ok(background.some(ms => ms > 0), `worker threads copied in none of ${background.length} scavenges`)
  })

  test('the operator\'s flags are found on the command line and in NODE_OPTIONS', () => {
    assert.equal(SERIAL_SCAVENGE_FLAG, '--no-parallel-scavenge')
    assert.equal(serialScavenge(['--parallel-scavenge']), 'operator')
    assert.equal(serialScavenge(['--no-parallel-scavenge']), 'operator')
    assert.equal(serialScavenge(['--single-threaded-gc', '--expose-gc']), 'operator')
    assert.equal(serialScavenge([], '--max-old-space-size=512 --parallel_scavenge'), 'operator')
    // unrelated flags, and names that only start alike, are not a choice
    assert.equal(serialScavenge(['--parallel-scavenge-x', '--max-semi-space-size=16'], '--single-threaded-gcx'), 'serial')
  })

  test('Node 22 refuses these V8 flags in NODE_OPTIONS: the command line is the operator\'s way', () => {
    for (const flag of ['--parallel-scavenge', '--single-threaded-gc']) {
      const r = spawnSync(process.execPath, ['-e', '0'], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: flag }, timeout: 30_000 })
      assert.notEqual(r.status, 0, `${flag} taken in NODE_OPTIONS: serialScavenge's NODE_OPTIONS check now matters`)
      assert.match(r.stderr, /not allowed in NODE_OPTIONS/)
    }
  })
})
