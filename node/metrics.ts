/**
 * Metrics of one node: a prom-client registry of its own (so several nodes in one process keep
 * separate figures) holding our counters and gauges, plus libp2p's metrics when the libp2p node
 * was created with `@libp2p/prometheus-metrics` on the same registry. `/metrics` serves it.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client'

export interface NodeMetrics {
  registry: Registry
  adminRequests: Counter<'route' | 'status'>
  aorLookups: Histogram<'result'>
}

export function createNodeMetrics (): NodeMetrics {
  const registry = new Registry()
  return {
    registry,
    adminRequests: new Counter({
      name: 'sipmesh_admin_requests_total',
      help: 'admin HTTP API requests by route and status code',
      labelNames: ['route', 'status'] as const,
      registers: [registry]
    }),
    aorLookups: new Histogram({
      name: 'sipmesh_admin_aor_lookup_seconds',
      help: 'time to resolve an AoR for GET /aor/<aor>, by result (found, not_found, error)',
      labelNames: ['result'] as const,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry]
    })
  }
}

/** A gauge whose value is read when scraped. */
export function addCollectedGauge (registry: Registry, name: string, help: string, read: () => number): void {
  new Gauge({ name, help, registers: [registry], collect () { this.set(read()) } })
}

/** A counter whose running total is read when scraped (for totals kept elsewhere). */
export function addCollectedCounter (registry: Registry, name: string, help: string, read: () => number): void {
  let last = 0
  new Counter({
    name,
    help,
    registers: [registry],
    collect () {
      const now = read()
      if (now > last) this.inc(now - last)
      last = now
    }
  })
}

/**
 * A counter with one label whose values are a fixed list (bounded cardinality), each running
 * total read when scraped. Every listed value is exported, at 0 until it counts; keys `read`
 * returns outside the list are ignored.
 */
export function addCollectedLabeledCounter (registry: Registry, name: string, help: string, label: string, values: readonly string[], read: () => Readonly<Partial<Record<string, number>>> | undefined): void {
  const last = new Map<string, number>(values.map(v => [v, 0]))
  new Counter({
    name,
    help,
    labelNames: [label],
    registers: [registry],
    collect () {
      const now = read()
      for (const v of values) {
        const n = now?.[v] ?? 0
        const before = last.get(v) ?? 0
        this.inc({ [label]: v }, n > before ? n - before : 0)
        if (n > before) last.set(v, n)
      }
    }
  })
}

/**
 * `read()` at most once per scrape: prom-client runs every collect callback synchronously at the
 * start of `registry.metrics()`, so the value is kept until the current job's microtasks run.
 * Many metrics read from one snapshot that costs something to build (a walk of a map).
 */
export function oncePerScrape<T> (read: () => T): () => T {
  let cached: { value: T } | undefined
  return () => {
    if (cached === undefined) {
      cached = { value: read() }
      queueMicrotask(() => { cached = undefined })
    }
    return cached.value
  }
}
