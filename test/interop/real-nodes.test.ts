// The gateway inside real sipmesh nodes (node/'s SipmeshNode: libp2p, the DHT registry, the
// libp2p PeerChannel), two in this process: SIPp registers a device on node B and sends MESSAGEs
// through node A. Skips without sipp, unless SIPMESH_REQUIRE_SIPP=1.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig } from '../../node/config.ts'
import { SipmeshNode } from '../../node/sipmesh-node.ts'
import { sipGateway } from '../../sip-gateway/index.ts'
import { freePort, runSipp, requireSipp, sippSkip } from './sipp.ts'

const dir = mkdtempSync(join(tmpdir(), 'sipmesh-interop-'))
const nodes: SipmeshNode[] = []
after(async () => {
  for (const n of nodes.reverse()) await n.stop()
  rmSync(dir, { recursive: true, force: true })
})

async function start (i: number, bootstrap?: string): Promise<SipmeshNode> {
  const sip = await freePort()
  const { config } = await loadConfig(['--domain', 'example.com', '--sip', `127.0.0.1:${sip}`, '--p2p', '/ip4/127.0.0.1/tcp/0',
    '--data-dir', join(dir, `n${i}`), '--admin', '127.0.0.1:0', '--log-level', 'error', ...(bootstrap === undefined ? [] : ['--bootstrap', bootstrap])], {})
  const node = new SipmeshNode({ config, gateway: sipGateway, libp2pMetrics: false })
  await node.start()
  nodes.push(node)
  return node
}

test('SIPp MESSAGE relay between two real sipmesh nodes over libp2p (UDP)', { skip: sippSkip }, async () => {
  requireSipp()
  const a = await start(0)
  const b = await start(1, a.mesh.libp2p.getMultiaddrs().map(String).find(m => m.includes('127.0.0.1')))
  const uasPort = await freePort()
  const uas = runSipp('uas-message.xml', b.sip, ['-t', 'u1', '-p', String(uasPort), '-m', '20'], 20)
  try {
    await new Promise(resolve => setTimeout(resolve, 300))
    // the DHT needs the two nodes to know each other before a claim can be stored
    let reg
    for (let i = 0; i < 10; i++) {
      reg = await runSipp('uac-register.xml', b.sip, ['-t', 'u1', '-m', '1', '-key', 'user', 'bob', '-key', 'contact_host', '127.0.0.1', '-key', 'contact_port', String(uasPort)], 10).done
      if (reg.code === 0) break
      await new Promise(resolve => setTimeout(resolve, 300))
    }
    assert.equal(reg?.code, 0, `REGISTER failed: ${reg?.stdout.slice(-1500)}`)
    const uac = await runSipp('uac-message.xml', a.sip, ['-t', 'u1', '-s', 'bob', '-m', '20', '-r', '50'], 15).done
    assert.equal(uac.code, 0, `UAC failed: ${uac.stdout.slice(-2500)}`)
    assert.equal((await uas.done).code, 0)
  } finally {
    if (uas.child.exitCode === null) uas.child.kill()
  }
})
