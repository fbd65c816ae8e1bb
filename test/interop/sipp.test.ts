// SIPp interop: REGISTER and cross-node MESSAGE (UAC → gateway A → mesh → gateway B → UAS)
// over UDP and TCP, against two in-process gateways. Skips when `sipp` is missing, unless
// SIPMESH_REQUIRE_SIPP=1 (CI), where that is a failure.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { TestMesh } from '../sip-gateway/gateway/fixtures/mesh.ts'
import { freePort, runSipp, requireSipp, sippSkip } from './sipp.ts'


describe('SIPp interop', { skip: sippSkip }, () => {
  let mesh: TestMesh

  before(async () => {
    requireSipp()
    mesh = await TestMesh.spawn(2, { timers: { t1: 500, t2: 4000, t4: 5000 } })
  })
  after(async () => { await mesh?.stop() })

  for (const transport of ['UDP', 'TCP'] as const) {
    const t = transport === 'UDP' ? 'u1' : 't1'

    test(`REGISTER over ${transport}`, async () => {
      const a = mesh.nodes[0].sip
      const user = `reg${transport.toLowerCase()}`
      const r = await runSipp('uac-register.xml', `${a.host}:${a.port}`, ['-t', t, '-m', '1', '-key', 'user', user, '-key', 'contact_host', '127.0.0.1', '-key', 'contact_port', '5999'], 10).done
      assert.equal(r.code, 0, `sipp failed: ${r.stderr.slice(-2000)}`)
      assert.equal(mesh.nodes[0].gateway.registrar.lookup(`sip:${user}@example.com`).length, 1)
      assert.equal((await mesh.nodes[1].registry.resolve(`sip:${user}@example.com`))?.node, 'node-a')
    })

    test(`cross-node MESSAGE over ${transport}: SIPp UAC → A → B → SIPp UAS`, async () => {
      const a = mesh.nodes[0].sip
      const b = mesh.nodes[1].sip
      const user = `bob${transport.toLowerCase()}`
      const uasPort = await freePort()
      const calls = 50
      const uas = runSipp('uas-message.xml', `${b.host}:${b.port}`, ['-t', t, '-p', String(uasPort), '-m', String(calls)], 20)
      try {
        await new Promise(resolve => setTimeout(resolve, 300)) // let the UAS bind
        const reg = await runSipp('uac-register.xml', `${b.host}:${b.port}`, ['-t', t, '-m', '1', '-key', 'user', user, '-key', 'contact_host', '127.0.0.1', '-key', 'contact_port', String(uasPort)], 10).done
        assert.equal(reg.code, 0, `register failed: ${reg.stderr.slice(-2000)}`)
        const uac = await runSipp('uac-message.xml', `${a.host}:${a.port}`, ['-t', t, '-s', user, '-m', String(calls), '-r', '100', '-l', '20'], 15).done
                assert.equal(uac.code, 0, `UAC failed: ${uac.stdout.slice(-3000)} ${uac.stderr.slice(-2000)}`)
        const u = await uas.done
        assert.equal(u.code, 0, `UAS failed: ${u.stderr.slice(-2000)}`)
        assert.ok(mesh.nodes[0].gateway.stats.forwardedMesh >= calls)
      } finally {
        if (uas.child.exitCode === null) uas.child.kill()
      }
    })
  }
})
