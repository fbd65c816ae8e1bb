/**
 * A started registry has its signing thread running before the first claim (its start-up would
 * otherwise be the first REGISTERs' wait). Its own file: the thread is one per process, and any
 * earlier claim in the process would have started it.
 */
import { test } from 'node:test'
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import assert from 'node:assert/strict'
import { Mesh } from '../fixtures/mesh.ts'
import { signingThread } from '../../dht/record/sign-batch.ts'

test('the registry starts the signing thread when it starts, and the first claim is signed on it', async () => {
  assert.equal(signingThread.started, false, 'nothing in this process started it before')
  const mesh = await Mesh.spawn(1)
  try {
    assert.equal(signingThread.started, true)
    const before = { ...signingThread.stats }
    const r = await mesh.nodes[0].registry.claim('sip:first@example.com', { expiresAt: Date.now() + 3_600_000 })
    assert.equal(r.won, true)
    assert.equal(signingThread.stats.signatures - before.signatures, 1)
    assert.equal(signingThread.stats.fallbacks, before.fallbacks)
  } finally {
    await mesh.stop()
  }
})

test('a process whose signing thread was started and never signed exits by itself', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sipmesh-signing-'))
  try {
    // a script file, not -e: the thread inherits the process's flags (--input-type would break it)
    const script = join(dir, 'prepare.ts')
    await writeFile(script, `
      import { signingThread } from ${JSON.stringify(new URL('../../dht/record/sign-batch.ts', import.meta.url).href)}
      signingThread.prepare()
      // wait until the thread is up and idle, as a node that never signs would be
      await new Promise(resolve => setTimeout(resolve, 1000))
      if (!signingThread.started || signingThread.stats.fallbacks > 0) process.exit(3)
    `)
    const child = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 60_000 })
    assert.equal(child.signal, null, `killed (it did not exit by itself): ${child.stderr}`)
    assert.equal(child.status, 0, child.stderr)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
