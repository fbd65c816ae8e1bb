// SIPp interop for the dialog event package (RFC 4235): a SIPp busy lamp on gateway A subscribes to
// bob, registered on gateway B, while carl (on A) calls bob: SIPp checks the full document first,
// then partial ones with versions 1, 2, 3 for early, confirmed and terminated, and the final NOTIFY
// of its unsubscribe; over UDP and TCP. Skips when `sipp` is missing, unless SIPMESH_REQUIRE_SIPP=1.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { TestMesh } from '../sip-gateway/gateway/fixtures/mesh.ts'
import { TestUa } from '../sip-gateway/gateway/fixtures/ua.ts'
import { runSipp, requireSipp, sippSkip } from './sipp.ts'

describe('SIPp interop: SUBSCRIBE Event: dialog', { skip: sippSkip }, () => {
  let mesh: TestMesh
  const uas: TestUa[] = []

  before(async () => {
    requireSipp()
    mesh = await TestMesh.spawn(2, { timers: { t1: 500, t2: 4000, t4: 5000 } })
  })
  after(async () => {
    for (const u of uas) await u.close()
    await mesh?.stop()
  })

  for (const transport of ['UDP', 'TCP'] as const) {
    test(`busy lamp over ${transport}: full, then early / confirmed / terminated as partial NOTIFYs`, async () => {
      const user = `lampbob${transport.toLowerCase()}`
      const bob = await TestUa.open(user, mesh.nodes[1].sip)
      const carl = await TestUa.open(`carl${transport.toLowerCase()}`, mesh.nodes[0].sip)
      uas.push(bob, carl)
      assert.equal((await bob.register(600))?.status, 200)
      const a = mesh.nodes[0].sip
      const sipp = runSipp('uac-subscribe-dialog.xml', `${a.host}:${a.port}`, ['-t', transport === 'UDP' ? 'u1' : 't1', '-s', user, '-m', '1'], 20)
      const sent = (): number => mesh.nodes[0].gateway.presence.stats.notifiesSent
      const step = async (n: number): Promise<void> => {
        await bob.waitFor(() => sent() >= n ? true : undefined, 5000)
        await new Promise(resolve => setTimeout(resolve, 300))
      }
      try {
        await step(1)
        const base = sent()
        bob.answer = () => undefined
        const callId = `lamp-${transport}`
        const inv = carl.build({ method: 'INVITE', uri: bob.aor, callId, cseq: 1, fromTag: 'cl', headers: [['Contact', carl.contact]] })
        carl.sendRaw(inv.text)
        const invite = await bob.waitFor(() => bob.received.find(m => m.method === 'INVITE' && m.headers.get('Call-ID') === callId))
        assert.ok(invite !== undefined)
        const rr = invite.headers.getAll('Record-Route').map(r => ['Record-Route', r] as [string, string])
        bob.reply(invite, 180, rr)
        await step(base + 1)
        bob.reply(invite, 200, [...rr, ['Contact', bob.contact]])
        assert.equal((await carl.waitFinal(inv.branch))?.status, 200)
        await step(base + 2)
        bob.answer = () => 200
        carl.answer = () => 200
        const routes = invite.headers.getAll('Record-Route').map(r => ['Route', r] as [string, string])
        assert.equal((await bob.request({ method: 'BYE', uri: carl.contact.slice(1, -1), callId, cseq: 1, fromTag: 'uas', to: `<${carl.aor}>;tag=cl`, from: `<${bob.aor}>`, headers: routes }))?.status, 200)
        const r = await sipp.done
        assert.equal(r.code, 0, `sipp failed: ${r.stdout.slice(-3000)} ${r.stderr.slice(-2000)}`)
      } finally {
        if (sipp.child.exitCode === null) sipp.child.kill()
      }
    })
  }
})
