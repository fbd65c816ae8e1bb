/**
 * Replica repair (issue 9, `dht/republish/repair.ts`): how long a replica that missed `--aors`
 * claims while frozen takes to hold them all again once it answers, and what the repair costs.
 *
 *   npm exec -- node scripts/bench-repair.ts [--aors 10000] [--region] [--null-replica]
 *
 * An in-process loopback TCP mesh of 4 nodes (LevelDB each, leases of an hour: no renewal runs).
 * Node 3's claim-put handler is gated (test/dht/fixtures/replica-gate.ts: it takes requests and
 * answers none, as a SIGSTOPped node); node 0 makes `--aors` new claims, 500 in flight; once the
 * put to node 3 timed out and every claim was dropped for it, the gate opens and the repair runs.
 * Reported: the time from the gate opening until node 0's repair is done and node 3 holds every
 * claim, the repair's requests and claims, the process's CPU over the repair (node 0 and node 3
 * share the process: `--null-replica` makes node 3 answer `stored` without storing, so the CPU is
 * node 0's plus the framing of the answers), and the event loop's delay meanwhile (what a SIP
 * message handled by this process would have waited). `--region`: node 0 remembers 100 AoRs at
 * most, so the repair walks its whole region of own records instead.
 *
 * Bounded: a fixed count; each wait at most 120 s; everything started is stopped.
 */
import { parseArgs } from 'node:util'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { cpuUsage } from 'node:process'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { openDatastore } from '../node/persistence.ts'
import { Mesh, waitFor } from '../test/fixtures/mesh.ts'
import { gate, quietLog, storedValue } from '../test/dht/fixtures/replica-gate.ts'
import { claimKey } from '../dht/record/claim.ts'
import { CLAIM_PUT_PROTOCOL, PUT_TIMEOUT_MS, PutStatus, putHandler } from '../dht/replication/put-protocol.ts'
import type { LevelDatastore } from 'datastore-level'

const { values: args } = parseArgs({
  options: {
    aors: { type: 'string', default: '10000' },
    region: { type: 'boolean', default: false },
    'null-replica': { type: 'boolean', default: false }
  }
})
const AORS = Math.min(Math.max(Number(args.aors), 1), 200_000)
const WAIT_MS = 120_000

const dir = await mkdtemp(join(tmpdir(), 'sipmesh-bench-repair-'))
const stores: LevelDatastore[] = []
for (let i = 0; i < 4; i++) stores.push(await openDatastore(join(dir, `node-${i}`)))
const repair = args.region ? { maxRememberedPerPeer: 100 } : {}
const mesh = await Mesh.spawn(4, { perNode: (i) => ({ datastore: stores[i], registry: { leaseMs: 3_600_000, ...(i === 0 ? { repair } : {}) } }) })
const [owner, , , replica] = mesh.nodes
try {
  let opened: () => void = () => {}
  if (args['null-replica']) {
    const held = new Promise<void>(resolve => { opened = resolve })
    await replica.libp2p.unhandle(CLAIM_PUT_PROTOCOL)
    await replica.libp2p.handle(CLAIM_PUT_PROTOCOL, putHandler(quietLog, async (_from, claims) => {
      await held
      return claims.map(() => ({ status: PutStatus.stored }))
    }), { maxInboundStreams: 64, maxOutboundStreams: 64 })
  } else {
    const g = await gate(replica)
    opened = g.open
  }
  const aor = (i: number): string => `sip:repair${i}@example.com`
  const until = Date.now() + 3_600_000
  const t0 = performance.now()
  let next = 0
  await Promise.all(Array.from({ length: 500 }, async () => {
    while (next < AORS) {
      const i = next++
      await owner.registry.claim(aor(i), { expiresAt: until }, { firstReplica: true })
    }
  }))
  const claimMs = performance.now() - t0
  await waitFor(() => owner.registry.putDrops().timeout > 0, PUT_TIMEOUT_MS + WAIT_MS, 'the put to node 3 to time out', 50)
  const drops = owner.registry.putDrops()
  const owed = owner.registry.repair.owed()
  console.log(`${AORS} claims made in ${(claimMs / 1000).toFixed(1)} s while node 3 was frozen; dropped for it: ${JSON.stringify(drops)}; owed: ${JSON.stringify(owed.map(o => ({ aors: o.aors, region: o.region })))}`)

  const stats0 = { ...owner.registry.repair.stats }
  const requests0 = owner.registry.writeStats().peerBatches
  const delay = monitorEventLoopDelay({ resolution: 10 })
  delay.enable()
  const cpu0 = cpuUsage()
  const r0 = performance.now()
  opened()
  await waitFor(() => owner.registry.repair.stats.rounds > stats0.rounds && owner.registry.repair.owed().length === 0, WAIT_MS, 'the repair to end', 10)
  const repairMs = performance.now() - r0
  const cpu = cpuUsage(cpu0)
  delay.disable()
  const s = owner.registry.repair.stats
  const requests = owner.registry.writeStats().peerBatches - requests0
  let held = AORS
  if (!args['null-replica']) {
    held = 0
    for (let i = 0; i < AORS; i++) if (await storedValue(replica, claimKey(aor(i))) != null) held++
  }
  const cpuMs = (cpu.user + cpu.system) / 1000
  console.log(`repair: ${s.rounds - stats0.rounds} round(s) (${s.regionRounds - stats0.regionRounds} over the region), done ${Math.round(repairMs)} ms after node 3 answered again; node 3 holds ${held} of ${AORS}`)
  console.log(`  claims re-put ${s.claims - stats0.claims} in ${s.requests - stats0.requests} requests (node 0's claim-put requests to all peers meanwhile: ${requests}); stored ${s.stored - stats0.stored}, already held ${s.stale - stats0.stale}`)
  console.log(`  process CPU over the repair ${Math.round(cpuMs)} ms = ${Math.round(cpuMs * 1000 / Math.max(1, s.claims - stats0.claims))} µs per claim re-put (${args['null-replica'] ? 'node 0 + answer framing' : 'node 0 and node 3 storing'}); ${Math.round(cpuMs / repairMs * 100)}% of one core`)
  console.log(`  event loop delay during the repair: p50 ${(delay.percentile(50) / 1e6).toFixed(1)} ms, p99 ${(delay.percentile(99) / 1e6).toFixed(1)} ms, max ${(delay.max / 1e6).toFixed(1)} ms`)
} finally {
  await mesh.stop()
  await Promise.allSettled(stores.map(async s => { await s.close() }))
  await rm(dir, { recursive: true, force: true })
}
