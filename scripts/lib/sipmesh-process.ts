/**
 * Real `sipmesh start` processes for benchmarks (the operator's command, node/bin/sipmesh.js, run
 * through test/e2e/fixtures/processes.ts), on 127.0.0.1 with ports chosen by the OS; optionally
 * with a V8 CPU profile written when the process exits.
 */
import { appendFileSync } from 'node:fs'
import { httpGet, run, stop, waitFor, type Proc } from '../../test/e2e/fixtures/processes.ts'

export interface SipmeshProcess {
  proc: Proc
  pid: number
  peerId: string
  multiaddrs: string[]
  /** host:port of SIP over UDP and TCP */
  sip: string
  /** host:port of the admin HTTP API */
  admin: string
  /** SIGTERM (a clean stop, which also writes the CPU profile), SIGKILL after 10 s */
  stop: () => Promise<void>
}

export interface SipmeshProcessInit {
  dataDir: string
  /** multiaddrs to bootstrap from */
  bootstrap?: string[]
  /** more `sipmesh start` flags */
  args?: string[]
  /** write a V8 CPU profile (`--cpu-prof`) into this directory when the process exits */
  cpuProfDir?: string
  /** how long it may take to start, ms @default 30000 */
  timeoutMs?: number
}

/**
 * start `sipmesh start` for example.com and resolve once it logged that it started; the
 * benchmarks' BENCH_NODE_ARGS (e.g. "--udp-thread") are added to every node's flags
 */
export async function startSipmesh (init: SipmeshProcessInit): Promise<SipmeshProcess> {
  const fromEnv = (process.env.BENCH_NODE_ARGS ?? '').split(/\s+/).filter(a => a !== '')
  const args = ['start', '--domain', 'example.com', '--sip', '127.0.0.1:0', '--p2p', '/ip4/127.0.0.1/tcp/0', '--admin', '127.0.0.1:0',
    '--data-dir', init.dataDir, '--log-level', 'info', ...(init.bootstrap ?? []).flatMap(b => ['--bootstrap', b]), ...(init.args ?? []), ...fromEnv]
  // BENCH_NODE_OPTIONS: V8/Node flags for the nodes of a benchmark (e.g. `--max-semi-space-size=32`)
  const options = [process.env.BENCH_NODE_OPTIONS ?? '', init.cpuProfDir === undefined ? '' : `--cpu-prof --cpu-prof-dir=${init.cpuProfDir}`].join(' ').trim()
  const env: Record<string, string> = options === '' ? {} : { NODE_OPTIONS: options }
  const proc = run(args, env)
  // BENCH_NODE_OUT=<path>: each node's standard output (its log, and V8's --trace-gc lines when
  // BENCH_NODE_OPTIONS asks for them) appended to <path>.<pid>
  const out = process.env.BENCH_NODE_OUT
  if (out !== undefined && out !== '') proc.child.stdout?.on('data', (chunk: Buffer) => { appendFileSync(`${out}.${proc.child.pid ?? 0}`, chunk) })
  try {
    const line = await proc.waitForLine(l => l.includes('"sipmesh node started"'), init.timeoutMs ?? 30_000)
    const started = JSON.parse(line) as { peerId: string, multiaddrs: string[], sip: string, admin: string }
    return { proc, pid: proc.child.pid ?? 0, peerId: started.peerId, multiaddrs: started.multiaddrs, sip: started.sip, admin: started.admin, stop: async () => { await stop(proc) } }
  } catch (err) {
    await stop(proc, 'SIGKILL')
    throw err
  }
}

/** the node's Prometheus metrics as name{labels} → value (the sum over label sets under the bare name) */
export async function nodeMetrics (node: SipmeshProcess): Promise<Map<string, number>> {
  const r = await httpGet(node.admin, '/metrics')
  const out = new Map<string, number>()
  for (const line of r.body.split('\n')) {
    if (line.startsWith('#') || line.length === 0) continue
    const sp = line.lastIndexOf(' ')
    const key = line.slice(0, sp)
    const value = Number(line.slice(sp + 1))
    if (!Number.isFinite(value)) continue
    out.set(key, value)
    const bare = key.replace(/\{.*$/, '')
    if (bare !== key) out.set(bare, (out.get(bare) ?? 0) + value)
  }
  return out
}

/**
 * Settled: no server transaction left (timer J: 32 s after the last REGISTER), and the node has
 * given back what the burst left in V8's page pool (node/memory-trim.ts: once its loop has been
 * quiet for 40 s), or `trimWaitMs` more have passed. `force`: the node is told to trim at once
 * (SIGUSR2) once the transactions are gone, so that two readings are taken alike.
 */
export async function settleSipmesh (node: SipmeshProcess, ms: number, trimWaitMs = 30_000, force = false): Promise<boolean> {
  if (ms <= 0) return false
  const trims = async (): Promise<number> => (await nodeMetrics(node)).get('sipmesh_memory_trims_total') ?? 0
  const before = await trims()
  const started = performance.now()
  try {
    await waitFor(async () => (await nodeMetrics(node)).get('sipmesh_sip_server_transactions') === 0, ms, 'server transactions to finish')
  } catch {
    return false
  }
  if (force) process.kill(node.pid, 'SIGUSR2')
  try {
    await waitFor(async () => (await trims()) > before, Math.max(1000, Math.min(trimWaitMs, ms - (performance.now() - started))), 'the node to trim its memory')
  } catch {
    console.log('  (the node did not trim its memory after the burst)')
  }
  return true
}

/** resolves once every node sees all the others as peers (at most 60 s), then 3 s more (routing table, identify) */
export async function meshConnected (nodes: SipmeshProcess[]): Promise<void> {
  await waitFor(async () => {
    for (const n of nodes) if ((JSON.parse((await httpGet(n.admin, '/status')).body) as { peers: string[] }).peers.length < nodes.length - 1) return false
    return true
  }, 60_000, 'the mesh to connect')
  await new Promise(resolve => setTimeout(resolve, 3000))
}
