// SIPp interop for resource lists (RFC 4662): a SIPp subscriber on gateway B subscribes to a list
// PUT on gateway A (B fetches it from A, its home) whose members are registered on A and nowhere;
// it checks the 200's Require: eventlist, the multipart/related RLMI NOTIFY with full state and an
// open member, then unsubscribes (final NOTIFY terminated), over UDP and TCP. Skips when `sipp` is
// missing, unless SIPMESH_REQUIRE_SIPP=1 (CI), where that is a failure.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { TestMesh } from '../sip-gateway/gateway/fixtures/mesh.ts'
import { TestUa } from '../sip-gateway/gateway/fixtures/ua.ts'
import { runSipp, requireSipp, sippSkip } from './sipp.ts'

describe('SIPp interop: resource list SUBSCRIBE', { skip: sippSkip }, () => {
  let mesh: TestMesh
  let bob: TestUa

  before(async () => {
    requireSipp()
    mesh = await TestMesh.spawn(2, { timers: { t1: 500, t2: 4000, t4: 5000 } })
    bob = await TestUa.open('boblist', mesh.nodes[0].sip)
    assert.equal((await bob.register(600))?.status, 200)
    await mesh.nodes[0].gateway.presence.putList('sip:sipp-list@example.com', { members: [bob.aor, 'sip:nobody-sipp@example.com'] })
  })
  after(async () => {
    await bob?.close()
    await mesh?.stop()
  })

  for (const transport of ['UDP', 'TCP'] as const) {
    test(`list subscriber over ${transport}: SUBSCRIBE → 200 (Require: eventlist) + multipart RLMI NOTIFY → unsubscribe → final NOTIFY`, async () => {
      const b = mesh.nodes[1].sip
      const r = await runSipp('uac-subscribe-list.xml', `${b.host}:${b.port}`, ['-t', transport === 'UDP' ? 'u1' : 't1', '-s', 'sipp-list', '-m', '3', '-r', '10', '-l', '3'], 15).done
      assert.equal(r.code, 0, `sipp failed: ${r.stdout.slice(-3000)} ${r.stderr.slice(-2000)}`)
      // the list subscriptions ended, and with them node B's member subscriptions
      await bob.waitFor(() => mesh.nodes[1].gateway.presence.stats.subscriptions === 0 ? true : undefined, 2000)
      assert.equal(mesh.nodes[1].gateway.presence.stats.subscriptions, 0)
    })
  }
})
