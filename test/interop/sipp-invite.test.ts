// SIPp interop for session IM (issue 5): INVITE with an MSRP SDP from a SIPp UAC on gateway A to a
// SIPp UAS registered on gateway B, over UDP and TCP: 100/180/200, the ACK and the BYE following
// the Record-Route set across the mesh, the SDP's MSRP paths checked by both ends. Skips when
// `sipp` is missing, unless SIPMESH_REQUIRE_SIPP=1.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { TestMesh } from '../sip-gateway/gateway/fixtures/mesh.ts'
import { freePort, runSipp, requireSipp, sippSkip, sippCounter } from './sipp.ts'


describe('SIPp interop: INVITE across nodes', { skip: sippSkip }, () => {
  let mesh: TestMesh

  before(async () => {
    requireSipp()
    mesh = await TestMesh.spawn(2, { timers: { t1: 500, t2: 4000, t4: 5000 } })
  })
  after(async () => { await mesh?.stop() })

  for (const transport of ['UDP', 'TCP'] as const) {
    const t = transport === 'UDP' ? 'u1' : 't1'

    for (const contact of ['registered', 'other'] as const) {
    // `other`: the UAS runs without -s, so its dialog Contact (sip:service@...) is not the one it
    // registered, as with many real phones (issue 10 item 7): the ACK and BYE must reach it anyway
    test(`INVITE / 180 / 200 / ACK / BYE over ${transport}: SIPp UAC → A → B → SIPp UAS (${contact} dialog Contact)`, async () => {
      const a = mesh.nodes[0].sip
      const b = mesh.nodes[1].sip
      const user = `callee${transport.toLowerCase()}${contact}`
      const uasPort = await freePort()
      const calls = 10
      const uas = runSipp('uas-invite.xml', `${b.host}:${b.port}`, ['-t', t, '-p', String(uasPort), ...(contact === 'registered' ? ['-s', user] : []), '-m', String(calls)], 20)
      try {
        await new Promise(resolve => setTimeout(resolve, 300)) // let the UAS bind
        const reg = await runSipp('uac-register.xml', `${b.host}:${b.port}`, ['-t', t, '-m', '1', '-key', 'user', user, '-key', 'contact_host', '127.0.0.1', '-key', 'contact_port', String(uasPort)], 10).done
        assert.equal(reg.code, 0, `register failed: ${reg.stderr.slice(-2000)}`)
        const uac = await runSipp('uac-invite.xml', `${a.host}:${a.port}`, ['-t', t, '-s', user, '-m', String(calls), '-r', '20', '-l', '5'], 15).done
        assert.equal(uac.code, 0, `UAC failed: ${uac.stdout.slice(-3000)} ${uac.stderr.slice(-2000)}`)
        assert.equal(sippCounter(uac.stdout, 'Successful call'), calls)
        const u = await uas.done
        assert.equal(u.code, 0, `UAS failed: ${u.stdout.slice(-3000)} ${u.stderr.slice(-2000)}`)
        assert.ok(mesh.nodes[0].gateway.stats.forwardedMesh >= calls)
      } finally {
        if (uas.child.exitCode === null) uas.child.kill()
      }
    })
    }
  }
})
