/**
 * The behaviour every `Registry` must have, run against the in-memory registry
 * (memory-registry.test.ts) and the DHT registry (dht-registry-compliance.test.ts).
 *
 * A factory builds `n` registries that form one mesh. Checks after a change made on another node
 * use `fresh: true` (a cached route may lag on nodes that were not told).
 */
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import type { ClaimRegistry } from '../../dht/index.ts'
import type { Route } from '../../sip-gateway/ports.ts'

export interface ComplianceMesh {
  registries: ClaimRegistry[]
  stop (): Promise<void>
}

export interface ComplianceOptions {
  /** claim expiry grace to configure (short, for the expiry test) */
  expiryGraceMs: number
}

export type ComplianceFactory = (n: number, options: ComplianceOptions) => Promise<ComplianceMesh>

let counter = 0
const uniqueAor = (): string => `sip:user${process.pid}x${counter++}@example.com`

async function eventually<T> (fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: T
  do {
    last = await fn()
    if (ok(last)) return last
    await new Promise(resolve => setTimeout(resolve, 20))
  } while (Date.now() < deadline)
  throw new Error(`${what}: still ${String(last)} after ${timeoutMs} ms`)
}

function nextCall<T> (timeoutMs: number): { fn: (v: T) => void, wait: (pred?: (v: T) => boolean) => Promise<{ value: T, ms: number }> } {
  const values: Array<{ value: T, at: number }> = []
  const waiters: Array<() => void> = []
  const start = Date.now()
  return {
    fn: (v: T) => { values.push({ value: v, at: Date.now() }); waiters.splice(0).forEach(w => { w() }) },
    wait: async (pred = () => true) => {
      const deadline = Date.now() + timeoutMs
      while (true) {
        const hit = values.find(v => pred(v.value))
        if (hit != null) return { value: hit.value, ms: hit.at - start }
        const left = deadline - Date.now()
        if (left <= 0) throw new Error(`no matching call within ${timeoutMs} ms (got ${values.length} calls)`)
        await new Promise<void>(resolve => { const t = setTimeout(resolve, Math.min(left, 50)); waiters.push(() => { clearTimeout(t); resolve() }) })
      }
    }
  }
}

export function registryCompliance (name: string, factory: ComplianceFactory): void {
  describe(`Registry compliance: ${name}`, () => {
    let mesh: ComplianceMesh
    let r: ClaimRegistry[]
    const hour = (): number => Date.now() + 3_600_000

    before(async () => {
      mesh = await factory(3, { expiryGraceMs: 200 })
      r = mesh.registries
    })
    after(async () => { await mesh?.stop() })

    test('a claim is won and resolves to the claimer on every node', async () => {
      const aor = uniqueAor()
      const res = await r[0].claim(aor, { expiresAt: hour() })
      assert.equal(res.won, true)
      assert.equal(res.route.node, r[0].nodeId)
      assert.equal(res.route.sip, r[0].sip)
      assert.equal(res.route.aor, aor)
      assert.equal(res.previous, undefined)
      for (const reg of r) {
        const route = await reg.resolve(aor, { fresh: true })
        assert.equal(route?.node, r[0].nodeId)
        assert.equal(route?.version, res.route.version)
      }
    })

    test('AoRs are normalized (scheme and domain case, parameters)', async () => {
      const aor = uniqueAor()
      await r[0].claim(aor.replace('example.com', 'EXAMPLE.com') + ';transport=tcp', { expiresAt: hour() })
      const route = await r[1].resolve(aor, { fresh: true })
      assert.equal(route?.node, r[0].nodeId)
      assert.equal(route?.aor, aor)
    })

    test('malformed AoRs are refused', async () => {
      for (const bad of ['', 'alice', 'sip:@example.com', 'sip:alice@', 'http://x@y', 'sip:a b@example.com', `sip:${'a'.repeat(600)}@example.com`]) {
        await assert.rejects(r[0].claim(bad, { expiresAt: hour() }), { name: 'InvalidAorError' }, bad)
        await assert.rejects(r[0].resolve(bad), { name: 'InvalidAorError' }, bad)
      }
    })

    test('routeNow answers what resolve answers once the route is known here, and nothing it would have to look up', async () => {
      const aor = uniqueAor()
      const res = await r[0].claim(aor, { expiresAt: hour() })
      const resolved = await r[1].resolve(aor, { fresh: true })
      assert.deepEqual(r[1].routeNow?.(aor), resolved)
      assert.equal(r[1].routeNow?.(aor)?.version, res.route.version)
      assert.equal(r[0].routeNow?.(aor)?.node, r[0].nodeId)
      assert.equal(r[1].routeNow?.(uniqueAor()), undefined)
      for (const bad of ['', 'alice', 'sip:@example.com', 'http://x@y', `sip:${'a'.repeat(600)}@example.com`, '<sip:x@example.com>;;;']) {
        assert.equal(r[1].routeNow?.(bad), undefined, bad)
      }
      await r[0].release(aor)
      for (const reg of r) {
        assert.equal(await reg.resolve(aor, { fresh: true }), undefined)
        assert.equal(reg.routeNow?.(aor), undefined)
      }
    })

    test('an unclaimed AoR resolves to nothing', async () => {
      assert.equal(await r[1].resolve(uniqueAor()), undefined)
      assert.equal(await r[1].resolve(uniqueAor(), { fresh: true }), undefined)
    })

    test('a newer claim moves the AoR; the displaced owner is told (P3)', async () => {
      const aor = uniqueAor()
      const first = await r[0].claim(aor, { expiresAt: hour() })
      const told = nextCall<[string, Route]>(1_000)
      const un = r[0].onDisplaced((a, by) => { told.fn([a, by]) })
      try {
        const second = await r[1].claim(aor, { expiresAt: hour() })
        assert.equal(second.won, true)
        assert.equal(second.previous?.node, r[0].nodeId)
        assert.ok(second.route.version > first.route.version)
        const { value: [a, by] } = await told.wait(([a]) => a === aor)
        assert.equal(a, aor)
        assert.equal(by.node, r[1].nodeId)
        for (const reg of r) assert.equal((await reg.resolve(aor, { fresh: true }))?.node, r[1].nodeId)
        // the displaced node's cache followed the notice without a lookup
        assert.equal((await r[0].resolve(aor))?.node, r[1].nodeId)
        assert.equal(r[0].routeNow?.(aor)?.node, r[1].nodeId)
      } finally { un() }
    })

    test('a refresh of one\'s own claim keeps the version and the owner (nothing to agree on again)', async () => {
      const aor = uniqueAor()
      const a = await r[2].claim(aor, { expiresAt: hour() })
      const b = await r[2].claim(aor, { expiresAt: hour() + 1000 })
      assert.equal(b.won, true)
      assert.equal(b.route.version, a.route.version)
      assert.equal(b.route.node, r[2].nodeId)
      assert.equal(b.previous?.node, r[2].nodeId)
      for (const reg of r) assert.equal((await reg.resolve(aor, { fresh: true }))?.version, a.route.version)
      // another node's registration still takes over (a new, higher version)
      const c = await r[0].claim(aor, { expiresAt: hour() })
      assert.equal(c.won, true)
      assert.ok(c.route.version > a.route.version)
      assert.equal(c.previous?.node, r[2].nodeId)
    })

    test('the mesh knows a user who registered, also after the release; nobody else', async () => {
      const aor = uniqueAor()
      assert.equal(await r[1].known(aor), false)
      await r[0].claim(aor, { expiresAt: hour() })
      for (const reg of r) assert.equal(await reg.known(aor), true)
      await r[0].release(aor)
      for (const reg of r) {
        assert.equal(await reg.resolve(aor, { fresh: true }), undefined)
        assert.equal(await reg.known(aor), true)
      }
      assert.equal(await r[2].known(uniqueAor()), false)
    })

    test('concurrent claims settle on one owner that every node resolves (P1)', async () => {
      for (let round = 0; round < 5; round++) {
        const aor = uniqueAor()
        const results = await Promise.all(r.map(reg => reg.claim(aor, { expiresAt: hour() })))
        const owners = new Set<string>()
        for (const reg of r) owners.add((await reg.resolve(aor, { fresh: true }))?.node ?? 'none')
        assert.equal(owners.size, 1, `round ${round}: nodes disagree: ${[...owners].join(', ')}`)
        const owner = [...owners][0]
        assert.ok(r.some(reg => reg.nodeId === owner), 'the owner is one of the claimers')
        const winner = results[r.findIndex(reg => reg.nodeId === owner)]
        assert.equal(winner.won, true)
      }
    })

    test('release makes the AoR resolve to nothing everywhere; only the owner can release', async () => {
      const aor = uniqueAor()
      await r[0].claim(aor, { expiresAt: hour() })
      await r[1].release(aor) // not the owner: no effect
      assert.equal((await r[2].resolve(aor, { fresh: true }))?.node, r[0].nodeId)
      await r[0].release(aor)
      for (const reg of r) assert.equal(await reg.resolve(aor, { fresh: true }), undefined)
      // and it can be claimed again
      const again = await r[1].claim(aor, { expiresAt: hour() })
      assert.equal(again.won, true)
      assert.equal((await r[2].resolve(aor, { fresh: true }))?.node, r[1].nodeId)
    })

    test('a watcher of an unclaimed AoR is told of the claim, the move and the release', async () => {
      const aor = uniqueAor()
      const calls = nextCall<Route | undefined>(1_500)
      const un = r[2].watch(aor, calls.fn)
      try {
        await new Promise(resolve => setTimeout(resolve, 200)) // interest registered
        await r[0].claim(aor, { expiresAt: hour() })
        const claimed = await calls.wait(v => v?.node === r[0].nodeId)
        assert.ok(claimed.ms < 1_500)
        await r[1].claim(aor, { expiresAt: hour() })
        await calls.wait(v => v?.node === r[1].nodeId)
        await r[1].release(aor)
        await calls.wait(v => v === undefined)
      } finally { un() }
    })

    test('a watcher of a claimed AoR is told its current route', async () => {
      const aor = uniqueAor()
      await r[0].claim(aor, { expiresAt: hour() })
      const calls = nextCall<Route | undefined>(1_500)
      const un = r[1].watch(aor, calls.fn)
      try {
        await calls.wait(v => v?.node === r[0].nodeId)
      } finally { un() }
    })

    test('a claim expires at registration expiry plus the grace (P5)', async () => {
      const aor = uniqueAor()
      const res = await r[0].claim(aor, { expiresAt: Date.now() + 200 })
      assert.ok(res.route.expiresAt >= Date.now() + 200 && res.route.expiresAt <= Date.now() + 500, 'expiresAt includes the grace')
      assert.equal((await r[1].resolve(aor, { fresh: true }))?.node, r[0].nodeId)
      await eventually(async () => await r[1].resolve(aor, { fresh: true }), v => v === undefined, 2_000, 'expired claim')
      assert.equal(await r[0].resolve(aor), undefined)
      for (const reg of r) assert.equal(reg.routeNow?.(aor), undefined)
      assert.equal(await r[2].resolve(aor, { fresh: true }), undefined)
    })

    test('a node never resolves an older claim than one it has seen (P2)', async () => {
      const aor = uniqueAor()
      await r[0].claim(aor, { expiresAt: hour() })
      const newer = await r[1].claim(aor, { expiresAt: hour() })
      for (let i = 0; i < 3; i++) {
        for (const reg of r) {
          const v = (await reg.resolve(aor, { fresh: i % 2 === 0 }))?.version ?? -1n
          assert.ok(v >= newer.route.version)
          assert.ok((reg.routeNow?.(aor)?.version ?? -1n) >= newer.route.version)
        }
      }
    })
  })
}
