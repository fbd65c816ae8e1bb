// SIPp interop for presence: a SIPp watcher on gateway B subscribes to a user registered on gateway A
// (back-end subscription over the mesh), checks the immediate NOTIFY (active, basic open), refreshes
// in the dialog (200, NOTIFY active) and unsubscribes (200, final NOTIFY terminated), over UDP and TCP. Skips when `sipp` is missing,
// unless SIPMESH_REQUIRE_SIPP=1 (CI), where that is a failure.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { TestMesh } from '../sip-gateway/gateway/fixtures/mesh.ts'
import { TestUa } from '../sip-gateway/gateway/fixtures/ua.ts'
import { runSipp, requireSipp, sippSkip } from './sipp.ts'


describe('SIPp interop: SUBSCRIBE/NOTIFY', { skip: sippSkip }, () => {
  let mesh: TestMesh
  let bob: TestUa

  before(async () => {
    requireSipp()
    mesh = await TestMesh.spawn(2, { timers: { t1: 500, t2: 4000, t4: 5000 } })
    bob = await TestUa.open('bobpres', mesh.nodes[0].sip)
    assert.equal((await bob.register(600))?.status, 200)
  })
  after(async () => {
    await bob?.close()
    await mesh?.stop()
  })

  for (const transport of ['UDP', 'TCP'] as const) {
    test(`watcher over ${transport}: SUBSCRIBE → 200 + NOTIFY (open) → refresh → 200 + NOTIFY → unsubscribe → final NOTIFY`, async () => {
      const b = mesh.nodes[1].sip
      const calls = 5
      const r = await runSipp('uac-subscribe.xml', `${b.host}:${b.port}`, ['-t', transport === 'UDP' ? 'u1' : 't1', '-s', 'bobpres', '-m', String(calls), '-r', '10', '-l', '5'], 15).done
      assert.equal(r.code, 0, `sipp failed: ${r.stdout.slice(-3000)} ${r.stderr.slice(-2000)}`)
      // every watcher's subscription ended, and so did node B's back-end subscription (no watcher left)
      await bob.waitFor(() => mesh.nodes[1].gateway.presence.stats.subscriptions === 0 ? true : undefined, 2000)
      assert.equal(mesh.nodes[1].gateway.presence.stats.subscriptions, 0)
    })
  }
})
