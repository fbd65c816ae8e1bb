// --psk and --allow-peer as an operator sets them: nodes outside the private mesh never get in.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKey } from '@libp2p/pnet'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { loadConfig } from '../../node/config.ts'
import { SipmeshNode } from '../../node/sipmesh-node.ts'
import { loadOrCreateIdentity } from '../../node/persistence.ts'
import { createPinoLogger } from '../../node/logger.ts'

const silent = createPinoLogger({ level: 'silent' })

async function waitFor (check: () => boolean, ms: number, what: string): Promise<void> {
  const until = Date.now() + ms
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

describe('private mesh', () => {
  let dir: string
  const running: SipmeshNode[] = []

  async function node (name: string, flags: string[] = []): Promise<SipmeshNode> {
    const { config } = await loadConfig(['--data-dir', join(dir, name), '--p2p', '/ip4/127.0.0.1/tcp/0', '--admin', '127.0.0.1:0', '--sip', '127.0.0.1:5999', ...flags], {})
    const n = new SipmeshNode({ config, logger: silent, libp2pMetrics: false, bootstrapRetryMs: 200 })
    await n.start()
    running.push(n)
    return n
  }

  function addr (n: SipmeshNode): string {
    return n.mesh.libp2p.getMultiaddrs()[0].toString()
  }

  before(async () => { dir = await mkdtemp(join(tmpdir(), 'sipmesh-private-')) })
  after(async () => {
    await Promise.all(running.map(async n => { await n.stop() }))
    await rm(dir, { recursive: true, force: true })
  })

  test('--psk: nodes with the same key connect; a different key or none cannot', async () => {
    const keyA = new Uint8Array(95)
    generateKey(keyA)
    const keyB = new Uint8Array(95)
    generateKey(keyB)
    await writeFile(join(dir, 'a.key'), keyA)
    await writeFile(join(dir, 'b.key'), keyB)
    const first = await node('psk1', ['--psk', join(dir, 'a.key')])
    const friend = await node('psk2', ['--psk', join(dir, 'a.key'), '--bootstrap', addr(first)])
    const stranger = await node('psk3', ['--psk', join(dir, 'b.key'), '--bootstrap', addr(first)])
    const open = await node('psk4', ['--bootstrap', addr(first)])
    await waitFor(() => first.status().peers.includes(friend.peerId), 10_000, 'the node with the same key to connect')
    // the others keep retrying their bootstrap dial; give them time to fail several times
    await new Promise(resolve => setTimeout(resolve, 1500))
    assert.deepEqual(first.status().peers, [friend.peerId])
    assert.deepEqual(stranger.status().peers, [])
    assert.deepEqual(open.status().peers, [])
  })

  test('--psk with a missing or malformed key file fails at start with a clear message', async () => {
    await assert.rejects(node('psk-missing', ['--psk', join(dir, 'nope.key')]), /cannot read the pre-shared key file .*nope\.key/)
    await writeFile(join(dir, 'garbage.key'), 'this is not a swarm key')
    await assert.rejects(node('psk-garbage', ['--psk', join(dir, 'garbage.key')]), /bad pre-shared key file .*garbage\.key/)
  })

  test('--allow-peer: only listed peer ids get a connection', async () => {
    const friendDir = join(dir, 'allow-friend')
    const friendId = peerIdFromPrivateKey((await loadOrCreateIdentity(friendDir)).privateKey).toString()
    const gate = await node('allow-gate', ['--allow-peer', friendId])
    const friend = await node('allow-friend', ['--bootstrap', addr(gate)])
    assert.equal(friend.peerId, friendId)
    const other = await node('allow-other', ['--bootstrap', addr(gate)])
    await waitFor(() => gate.status().peers.includes(friendId), 10_000, 'the listed peer to connect')
    await new Promise(resolve => setTimeout(resolve, 1500))
    assert.deepEqual(gate.status().peers, [friendId])
    assert.ok(!other.status().peers.includes(gate.peerId))
  })
})
