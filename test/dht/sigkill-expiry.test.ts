// P5 liveness with a real crash: a node in its own process claims an AoR for an hour, is killed
// with SIGKILL (no release, no goodbye), and within seconds no other node routes to it (peer
// liveness: its connections close, a probe dial is refused), long before its lease would end; a
// node that watches the AoR is told it resolves to nothing.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { Mesh, waitFor } from '../fixtures/mesh.ts'
import type { Route } from '../../sip-gateway/ports.ts'

const CLAIMER = fileURLToPath(new URL('./fixtures/claimer.ts', import.meta.url))

test('P5: no node routes to a node killed with SIGKILL, within seconds; watchers are told', async () => {
  const mesh = await Mesh.spawn(3, { registry: { watchIntervalMs: 500 } })
  const aor = `sip:crash-${process.pid}@example.com`
  const registrationMs = 3_600_000
  const child = spawn(process.execPath, [CLAIMER, aor, String(registrationMs),
    ...mesh.nodes.map(n => n.libp2p.getMultiaddrs()[0].toString())], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise<void>(resolve => child.once('exit', () => { resolve() }))
  try {
    const line = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error('the claimer did not claim within 20 s')) }, 20_000)
      createInterface({ input: child.stdout }).once('line', (l) => { clearTimeout(timer); resolve(l) })
    })
    const claimed = JSON.parse(line) as { owner: string, won: boolean }
    assert.equal(claimed.won, true)

    // every node resolves the crashed-to-be node as the owner
    for (const node of mesh.nodes) {
      const route = await node.registry.resolve(aor, { fresh: true })
      assert.equal(route?.node, claimed.owner)
    }
    const seen: Array<Route | undefined> = []
    const unwatch = mesh.nodes[0].registry.watch(aor, (route) => { seen.push(route) })

    child.kill('SIGKILL')
    await exited
    const killedAt = Date.now()

    // the lease would run for minutes: liveness drops the route (bound documented in the README)
    await waitFor(async () => {
      for (const node of mesh.nodes) {
        if (await node.registry.resolve(aor, { fresh: true }) !== undefined) return false
      }
      return true
    }, 15_000, 'every node to stop routing to the dead node', 100)
    await waitFor(() => seen.length > 0 && seen[seen.length - 1] === undefined, 5_000, 'the watcher to be told')
    unwatch()
    assert.ok(Date.now() - killedAt < 15_000)
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL')
    await mesh.stop()
  }
})
