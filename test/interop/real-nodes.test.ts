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
import { freePort, runSipp, requireSipp, sippCounter, sippRetransmissions, sippSkip } from './sipp.ts'

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

// issue 11: the cold start of a new route (the first resolve of the AoR, made by the first
// MESSAGE; the SIP stream between the two nodes is opened as D joins C) must make the MESSAGEs
// behind it wait, not fail. Two fresh nodes that have never relayed to each other; the device registers on D and
// at once SIPp sends 600 MESSAGEs through C over the first second (the first ones, before any
// route exists). Every one must be answered 200 within 8 s (SIPp's retransmissions allowed: a
// message may wait, not fail), and the device must receive each exactly once (SIPp's UAS fails on
// a MESSAGE it did not expect, a duplicate included).
test('the first second of a new cross-node route: no MESSAGE fails or is lost', { skip: sippSkip }, async () => {
  requireSipp()
  const c = await start(2)
  const d = await start(3, c.mesh.libp2p.getMultiaddrs().map(String).find(m => m.includes('127.0.0.1')))
  const uasPort = await freePort()
  const calls = 600
  const uas = runSipp('uas-message.xml', d.sip, ['-t', 'u1', '-p', String(uasPort), '-m', String(calls)], 40)
  try {
    await new Promise(resolve => setTimeout(resolve, 300))
    let reg
    for (let i = 0; i < 10; i++) {
      reg = await runSipp('uac-register.xml', d.sip, ['-t', 'u1', '-m', '1', '-key', 'user', 'carol', '-key', 'contact_host', '127.0.0.1', '-key', 'contact_port', String(uasPort)], 10).done
      if (reg.code === 0) break
      await new Promise(resolve => setTimeout(resolve, 300))
    }
    assert.equal(reg?.code, 0, `REGISTER failed: ${reg?.stdout.slice(-1500)}`)
    // the SIP stream between the nodes was opened by D as it joined C, before any message
    // (openOnConnect; messages that wait for a stream opening are the peer channel's own tests)
    assert.equal(d.peerChannel.stats.streamsPrepared, 1, 'D opened the SIP stream on the connection it dialled')
    assert.equal(c.peerChannel.stats.streamsOpened, 0)
    // no pause: node C has never resolved carol
    const uac = await runSipp('uac-message.xml', c.sip, ['-t', 'u1', '-s', 'carol', '-m', String(calls), '-r', String(calls), '-l', String(calls), '-recv_timeout', '8000'], 30).done
    const ok = sippCounter(uac.stdout, 'Successful call')
    const failed = sippCounter(uac.stdout, 'Failed call')
    const retrans = sippRetransmissions(uac.stdout)
    assert.equal(failed, 0, `failed MESSAGEs (retransmissions ${retrans}): ${uac.stdout.slice(-2500)}`)
    assert.equal(ok, calls, `answered 200: ${ok} of ${calls} (retransmissions ${retrans})`)
    assert.equal(uac.code, 0)
    const device = await uas.done
    assert.equal(device.code, 0, `the device did not receive each MESSAGE once: ${device.stdout.slice(-2000)}`)
    assert.equal(sippCounter(device.stdout, 'Successful call'), calls)
    assert.equal(c.peerChannel.streams().outbound, 1, 'the burst opened the route')
  } finally {
    if (uas.child.exitCode === null) uas.child.kill()
  }
})
