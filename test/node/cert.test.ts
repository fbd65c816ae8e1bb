import { describe, test, after } from 'node:test'
import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCert, issueCertificate, ensureAuthority, CertError } from '../../node/cert.ts'
import { certificateDomains } from '../../sip-gateway/transport/tls-identity.ts'

describe('sipmesh cert', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sipmesh-cert-'))
  after(() => { rmSync(dir, { recursive: true, force: true }) })

  test('makes a CA and, per domain, a certificate naming it, signed by the CA, for server and client use', async () => {
    const out: string[] = []
    assert.equal(await runCert(['--domain', 'example.com,Example.NET', '--dir', dir], (l) => { out.push(l) }), 0)
    assert.equal(out.length, 3)
    const ca = new X509Certificate(readFileSync(join(dir, 'ca.pem')))
    assert.equal(ca.ca, true)
    for (const d of ['example.com', 'example.net']) {
      const c = new X509Certificate(readFileSync(join(dir, `${d}.pem`)))
      assert.ok(c.checkIssued(ca) && c.verify(ca.publicKey), `${d} is signed by the CA`)
      assert.deepEqual(certificateDomains({ subjectaltname: c.subjectAltName }), [d])
      assert.match(c.keyUsage?.join(',') ?? '', /1\.3\.6\.1\.5\.5\.7\.3\.1.*1\.3\.6\.1\.5\.5\.7\.3\.2/, 'serverAuth and clientAuth')
      assert.ok(statSync(join(dir, `${d}.key`)).size > 0)
    }
  })

  test('an existing CA is kept, so certificates made later chain to it', async () => {
    const before = readFileSync(join(dir, 'ca.pem'), 'utf8')
    assert.equal(await runCert(['--domain', 'example.org', '--dir', dir], () => {}), 0)
    assert.equal(readFileSync(join(dir, 'ca.pem'), 'utf8'), before)
  })

  test('bad usage is refused (exit 2) before anything runs; hostile names never reach openssl', async () => {
    for (const args of [[], ['--domain', 'a;rm -rf /'], ['--domain', '-x'], ['--domain', 'example.com', '--days', '0'], ['--domain', 'example.com', '--days', 'lots'], ['--bogus']]) {
      assert.equal(await runCert(args, () => {}, () => {}), 2, args.join(' '))
    }
    const ca = await ensureAuthority(dir)
    await assert.rejects(issueCertificate(dir, ca, { domains: ['x.com'], name: '../escape' }), (err: Error) => err.name === CertError.NAME)
    await assert.rejects(issueCertificate(dir, ca, { domains: ['x.com'], ips: ['1.2.3.4; echo'] }), (err: Error) => err.name === CertError.NAME)
    await assert.rejects(issueCertificate(dir, ca, { domains: [] }), (err: Error) => err.name === CertError.NAME)
  })

  test('an expired certificate can be made for tests', async () => {
    const ca = await ensureAuthority(dir)
    const c = await issueCertificate(dir, ca, { domains: ['old.example'], days: -1 })
    assert.ok(new Date(new X509Certificate(readFileSync(c.cert)).validTo).getTime() < Date.now())
  })
})
