// SIPp interop with digest authentication: SIPp's own [authentication] answers the gateway's 401
// (MD5: SIPp 3.6 speaks nothing else, and it reads only the first challenge, so its user has an
// MD5 HA1 only in the credentials file and is challenged with MD5 alone) and the REGISTER gets
// 200; with a wrong password it does not. Skips when `sipp` is missing, unless
// SIPMESH_REQUIRE_SIPP=1 (CI).
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { TestMesh } from '../sip-gateway/gateway/fixtures/mesh.ts'
import { parseCredentialsFile } from '../../node/credentials.ts'
import { computeHa1 } from '../../sip-gateway/auth/digest.ts'
import { runSipp, requireSipp, sippSkip } from './sipp.ts'

describe('SIPp interop: digest authentication', { skip: sippSkip }, () => {
  let mesh: TestMesh

  before(async () => {
    requireSipp()
    // the credentials file as an operator writes it: a precomputed MD5 HA1 for the legacy client
    const file = parseCredentialsFile([
      `sippudp@example.com md5:${computeHa1('MD5', 'sippudp', 'example.com', 'udp-secret')}`,
      `sipptcp@example.com md5:${computeHa1('MD5', 'sipptcp', 'example.com', 'tcp-secret')}`,
      'modern@example.com a-password'
    ].join('\n'), ['example.com'])
    assert.deepEqual(file.skipped, [])
    mesh = await TestMesh.spawn(1, { timers: { t1: 500, t2: 4000, t4: 5000 }, auth: { credentials: file.secrets } })
  })
  after(async () => { await mesh?.stop() })

  for (const transport of ['UDP', 'TCP'] as const) {
    const t = transport === 'UDP' ? 'u1' : 't1'
    const user = `sipp${transport.toLowerCase()}`
    const password = `${transport.toLowerCase()}-secret`

    test(`REGISTER over ${transport}: a wrong password is refused, SIPp's [authentication] with the right one gets 200`, async () => {
      const a = mesh.nodes[0].sip
      const target = `${a.host}:${a.port}`
      const args = (pw: string): string[] => ['-t', t, '-m', '1', '-key', 'user', user, '-au', user, '-ap', pw]
      const bad = await runSipp('uac-register-auth.xml', target, args('wrong'), 10).done
      assert.notEqual(bad.code, 0, 'a wrong password must not register')
      assert.match(bad.stderr, /401/, 'answered 401 again')
      assert.equal(mesh.nodes[0].gateway.registrar.lookup(`sip:${user}@example.com`).length, 0)

      const r = await runSipp('uac-register-auth.xml', target, args(password), 10).done
      assert.equal(r.code, 0, `sipp failed: ${r.stderr.slice(-2000)}`)
      assert.equal(mesh.nodes[0].gateway.registrar.lookup(`sip:${user}@example.com`).length, 1)
      assert.equal((await mesh.nodes[0].registry.resolve(`sip:${user}@example.com`))?.node, 'node-a')
    })
  }

  test('the gateway kept serving: counters show the challenges, failures and successes', () => {
    const s = mesh.nodes[0].gateway.auth!.stats
    assert.equal(s.authenticated, 2)
    assert.equal(s.failed, 2)
  })
})
