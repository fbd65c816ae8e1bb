/**
 * `sipmesh cluster --nodes N`: N nodes on loopback, each a child process of `sipmesh start`, for
 * local development.
 *
 * Node i (1-based) gets the block of ten ports starting at `base + 10 * (i - 1)`: SIP on the
 * first, libp2p on the second, the admin API on the third, SIP over WebSocket on the fourth (so
 * with the default base 5060: node 1 SIP 5060, libp2p 5061, admin 5062, WebSocket 5063; node 2
 * SIP 5070, ...): every node serves the dashboard at http://<admin>/ and the browser phone at
 * http://<admin>/phone. Its data dir is
 * `<data-dir>/node-<i>`; the identities are created there before the nodes start, so every node
 * is given every other node as a bootstrap address and the start order does not matter, and a
 * cluster started again has the same peer ids. Each node's JSON log goes to `node-<i>/node.log`.
 *
 * Before starting anything it checks that every address the nodes will listen on is free (SIP over
 * UDP and TCP, libp2p, admin API); one in use is named with EADDRINUSE and nothing starts. A node
 * is up once its admin API answers as that node; a node that exits first is reported with the
 * last line it wrote on stderr.
 *
 * Each node's admin token (node/admin/auth.ts) is created in its data dir with its identity, so
 * the cluster knows it and prints it.
 *
 * Once every node is up (and connected to the others, or after a few seconds) it prints a table:
 * node, peer id, SIP, admin, WebSocket, admin token (one row per node, columns separated by
 * spaces), then one status line.
 * Ctrl-C (SIGINT), SIGTERM or SIGHUP to the cluster process stops every node (each gets SIGTERM,
 * SIGKILL after 10 s). So does the death of the process that started the cluster: `npx` runs it
 * under `sh -c`, and a SIGTERM to `npx` kills that shell without passing the signal on, which
 * would leave the cluster and its nodes running. A SIGINT sent to the `npx` process alone stops at
 * that shell (it waits for the command): signal the cluster process itself (its pid is printed),
 * or its process group, as Ctrl-C does.
 */
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createSocket } from 'node:dgram'
import { createWriteStream } from 'node:fs'
import { createServer } from 'node:net'
import type { WriteStream } from 'node:fs'
import { join, resolve as resolvePath } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { LOG_LEVELS } from './config.ts'
import { formatTable } from './cli-admin.ts'
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, exitAfterSignal, nextSignal } from './signals.ts'
import { helpColumns } from './help.ts'

export const MAX_CLUSTER_NODES = 64
const PORTS_PER_NODE = 10

export function clusterUsage (): string {
  return [
    'Usage: sipmesh cluster --nodes N [options]',
    '',
    'Runs N sipmesh nodes on 127.0.0.1, wired to each other; Ctrl-C stops them all.',
    'Node i uses the ports base+10*(i-1): +0 SIP, +1 libp2p, +2 admin API (dashboard, /phone), +3 SIP over WebSocket.',
    '',
    ...helpColumns([
      ['--nodes <N>', `how many nodes (1-${MAX_CLUSTER_NODES})`],
      ['--domain <domain>', 'SIP domain (repeatable or comma-separated; default: the node default)'],
      ['--base-port <port>', 'first port (default 5060)'],
      ['--data-dir <dir>', 'where the nodes keep their data, one node-<i> folder each (default ./.sipmesh-cluster)'],
      ['--log-level <level>', `log level of the nodes: ${LOG_LEVELS.join(', ')} (default info)`],
      ['-h, --help', 'this help']
    ])
  ].join('\n')
}

interface ClusterOptions {
  nodes: number
  domains: string[]
  basePort: number
  dataDir: string
  logLevel: string
}

class UsageError extends Error {}

function parseClusterArgs (args: string[]): ClusterOptions | 'help' {
  let values
  try {
    values = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        nodes: { type: 'string' },
        domain: { type: 'string', multiple: true },
        'base-port': { type: 'string' },
        'data-dir': { type: 'string' },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' }
      }
    }).values
  } catch (err) {
    throw new UsageError((err as Error).message.split('\n')[0])
  }
  if (values.help === true) return 'help'
  if (values.nodes == null) throw new UsageError('--nodes <N> is required')
  if (!/^\d{1,3}$/.test(values.nodes) || Number(values.nodes) < 1 || Number(values.nodes) > MAX_CLUSTER_NODES) {
    throw new UsageError(`--nodes: expected a whole number from 1 to ${MAX_CLUSTER_NODES}, got "${values.nodes}"`)
  }
  const nodes = Number(values.nodes)
  const basePortText = values['base-port'] ?? '5060'
  if (!/^\d{1,5}$/.test(basePortText) || Number(basePortText) < 1) throw new UsageError(`--base-port: expected a port number, got "${basePortText}"`)
  const basePort = Number(basePortText)
  if (basePort + PORTS_PER_NODE * nodes > 65535) {
    throw new UsageError(`--base-port ${basePort} leaves no room for ${nodes} nodes of ${PORTS_PER_NODE} ports each below 65536`)
  }
  const logLevel = values['log-level'] ?? 'info'
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) throw new UsageError(`--log-level: expected one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`)
  const domains = (values.domain ?? []).flatMap(d => d.split(',')).map(d => d.trim()).filter(d => d !== '')
  return { nodes, domains, basePort, dataDir: resolvePath(values['data-dir'] ?? './.sipmesh-cluster'), logLevel }
}

interface ClusterNode {
  index: number
  dataDir: string
  peerId: string
  sip: string
  p2p: string
  admin: string
  ws: string
  /** the bearer token of the node's admin API (PUT/DELETE) */
  token: string
  child?: ChildProcess
  log?: WriteStream
  started: boolean
  exited: boolean
  peers: number
  /** the last line the node wrote on stderr (why it did not start) */
  lastError?: string
}

const BIN = fileURLToPath(new URL('./bin/sipmesh.js', import.meta.url))

function childEnv (): NodeJS.ProcessEnv {
  // the cluster sets every option by flag; inherited SIPMESH_* settings (or a config file) would
  // make the nodes differ from the table
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SIPMESH_')) env[k] = v
  return env
}

async function getStatus (admin: string): Promise<{ peerId: string, peers: string[] } | undefined> {
  try {
    const res = await fetch(`http://${admin}/status`, { signal: AbortSignal.timeout(1000) })
    if (!res.ok) return undefined
    return await res.json() as { peerId: string, peers: string[] }
  } catch {
    return undefined
  }
}

/** Why `host:port` cannot be bound (`EADDRINUSE`, `EACCES`), or undefined when it is free. */
async function bindError (transport: 'tcp' | 'udp', host: string, port: number): Promise<string | undefined> {
  return await new Promise((resolve) => {
    if (transport === 'udp') {
      const s = createSocket('udp4')
      s.once('error', (err: NodeJS.ErrnoException) => { s.close(); resolve(err.code ?? err.message) })
      s.bind(port, host, () => { s.close(() => { resolve(undefined) }) })
    } else {
      const s = createServer()
      s.once('error', (err: NodeJS.ErrnoException) => { resolve(err.code ?? err.message) })
      s.listen(port, host, () => { s.close(() => { resolve(undefined) }) })
    }
  })
}

/** The first address of a node that is not free, as a sentence, or undefined. */
async function portProblem (n: ClusterNode): Promise<string | undefined> {
  const hostPort = (hp: string): [string, number] => [hp.slice(0, hp.lastIndexOf(':')), Number(hp.slice(hp.lastIndexOf(':') + 1))]
  const [sipHost, sipPort] = hostPort(n.sip)
  const p2pPort = Number(n.p2p.slice(n.p2p.lastIndexOf('/') + 1))
  const [adminHost, adminPort] = hostPort(n.admin)
  const checks: Array<[string, 'tcp' | 'udp', string, number]> = [
    ['SIP over UDP', 'udp', sipHost, sipPort],
    ['SIP over TCP', 'tcp', sipHost, sipPort],
    ['libp2p', 'tcp', '127.0.0.1', p2pPort],
    ['admin API', 'tcp', adminHost, adminPort],
    ['SIP over WebSocket', 'tcp', sipHost, sipPort + 3]
  ]
  for (const [what, transport, host, port] of checks) {
    const code = await bindError(transport, host, port)
    if (code != null) {
      const why = code === 'EADDRINUSE' ? 'EADDRINUSE: another process uses it' : code
      return `node ${n.index} cannot listen on ${host}:${port} (${what}, ${transport.toUpperCase()}): ${why}; stop that process or choose another --base-port`
    }
  }
  return undefined
}

function table (nodes: ClusterNode[]): string {
  const rows = [['node', 'peer id', 'SIP', 'admin', 'WebSocket', 'admin token']]
  for (const n of nodes) rows.push([String(n.index), n.peerId, n.sip, `http://${n.admin}`, `ws://${n.ws}`, n.token])
  return formatTable(rows)
}

async function stopAll (nodes: ClusterNode[], timeoutMs = 10_000): Promise<void> {
  await Promise.all(nodes.map(async (n) => {
    const child = n.child
    if (child == null || n.exited) return
    const exited = new Promise<void>((resolve) => { child.once('exit', () => { resolve() }) })
    child.kill('SIGTERM')
    const timer = setTimeout(() => { if (!n.exited) child.kill('SIGKILL') }, timeoutMs)
    await exited
    clearTimeout(timer)
  }))
  for (const n of nodes) n.log?.end()
}

/**
 * The first of SIGINT, SIGTERM, SIGHUP (a closed terminal), or the death of the parent process
 * (polled: Node has no event for it), so that the nodes never outlive the cluster's reason to run.
 */
function clusterSignal (pollMs = 500): Promise<NodeJS.Signals | 'disconnect' | 'parent-exited'> {
  const parent = process.ppid
  let timer: ReturnType<typeof setInterval> | undefined
  let onHup: (() => void) | undefined
  const orphaned = new Promise<'parent-exited' | 'SIGHUP'>((resolve) => {
    timer = setInterval(() => { if (process.ppid !== parent) resolve('parent-exited') }, pollMs)
    timer.unref()
    onHup = () => { resolve('SIGHUP') }
    process.once('SIGHUP', onHup)
  })
  return Promise.race([nextSignal(), orphaned]).finally(() => {
    clearInterval(timer)
    if (onHup != null) process.off('SIGHUP', onHup)
  })
}

export async function runCluster (args: string[]): Promise<number> {
  let opts: ClusterOptions | 'help'
  try {
    opts = parseClusterArgs(args)
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    process.stderr.write(`sipmesh cluster: ${err.message}\nRun 'sipmesh cluster --help' for the options.\n`)
    return EXIT_USAGE
  }
  if (opts === 'help') {
    process.stdout.write(clusterUsage() + '\n')
    return EXIT_OK
  }

  const { loadOrCreateIdentity } = await import('./persistence.ts')
  const { loadOrCreateAdminToken } = await import('./admin/auth.ts')
  const nodes: ClusterNode[] = []
  for (let i = 1; i <= opts.nodes; i++) {
    const dataDir = join(opts.dataDir, `node-${i}`)
    const { privateKey } = await loadOrCreateIdentity(dataDir)
    const peerId = peerIdFromPrivateKey(privateKey).toString()
    const { token } = await loadOrCreateAdminToken(dataDir)
    const base = opts.basePort + PORTS_PER_NODE * (i - 1)
    nodes.push({
      index: i,
      dataDir,
      peerId,
      sip: `127.0.0.1:${base}`,
      p2p: `/ip4/127.0.0.1/tcp/${base + 1}`,
      admin: `127.0.0.1:${base + 2}`,
      ws: `127.0.0.1:${base + 3}`,
      token,
      started: false,
      exited: false,
      peers: 0
    })
  }

  // every address free before anything starts (a node that cannot bind would otherwise be taken
  // for whatever other process answers on its admin port)
  for (const n of nodes) {
    const problem = await portProblem(n)
    if (problem != null) {
      process.stderr.write(`sipmesh cluster: ${problem}\n`)
      return EXIT_FAILURE
    }
  }

  const signal = clusterSignal()
  let failure: string | undefined
  let onChange: () => void = () => {}

  for (const n of nodes) {
    const flags = ['start', '--sip', n.sip, '--p2p', n.p2p, '--admin', n.admin, '--ws', n.ws, '--data-dir', n.dataDir, '--log-level', opts.logLevel]
    for (const d of opts.domains) flags.push('--domain', d)
    for (const other of nodes) if (other !== n) flags.push('--bootstrap', `${other.p2p}/p2p/${other.peerId}`)
    const child = spawn(process.execPath, [BIN, ...flags], {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      env: childEnv(),
      // a process group of its own: Ctrl-C reaches the cluster only, which then stops each node
      // once (a node treats a second signal as "exit now")
      detached: true
    })
    // the IPC channel is only a lifeline: a node whose cluster dies stops by itself
    child.channel?.unref()
    n.child = child
    n.log = createWriteStream(join(n.dataDir, 'node.log'), { flags: 'a' })
    // the node's log goes to its file; whether it is up is asked of its admin API below, so that
    // readiness does not depend on the log level
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => { n.log?.write(line + '\n') })
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (line) => {
      // the node's one-line reason ("sipmesh: cannot start: ..."), not a stack line after it
      if (line.startsWith('sipmesh: ')) n.lastError ??= line.slice('sipmesh: '.length)
      process.stderr.write(`[node ${n.index}] ${line}\n`)
    })
    child.once('exit', (code, sig) => {
      n.exited = true
      if (!n.started) failure ??= `node ${n.index} exited before it was up (code ${code ?? sig})${n.lastError != null ? `: ${n.lastError}` : ''}; see ${join(n.dataDir, 'node.log')}`
      onChange()
    })
  }

  // a node is up once its admin API answers /status (it starts last) with the expected peer id
  const poll = setInterval(() => {
    for (const n of nodes) {
      if (n.started || n.exited) continue
      void getStatus(n.admin).then((status) => {
        if (status == null || n.started) return
        if (status.peerId !== n.peerId) {
          failure ??= `node ${n.index}: another process answers on its admin address ${n.admin} (as ${status.peerId}, not ${n.peerId}); the address is in use (EADDRINUSE)`
        }
        n.started = true
        onChange()
      })
    }
  }, 200)

  // wait for every node to be up, a failure, a signal or the timeout
  const upTimeout = 60_000
  const outcome = await Promise.race([
    new Promise<'up' | 'failed'>((resolve) => {
      onChange = () => {
        if (failure != null) resolve('failed')
        else if (nodes.every(n => n.started)) resolve('up')
      }
      onChange()
    }),
    signal.then(() => 'signal' as const),
    new Promise<'timeout'>((resolve) => { setTimeout(() => { resolve('timeout') }, upTimeout).unref() })
  ])
  clearInterval(poll)
  onChange = () => {}

  if (outcome !== 'up') {
    if (outcome === 'failed') process.stderr.write(`sipmesh cluster: ${failure}\n`)
    if (outcome === 'timeout') process.stderr.write(`sipmesh cluster: not every node was up after ${upTimeout / 1000} s\n`)
    await stopAll(nodes)
    if (outcome === 'signal') { exitAfterSignal(EXIT_OK); return EXIT_OK }
    return EXIT_FAILURE
  }

  // give the mesh a few seconds to connect everyone to everyone
  const meshDeadline = Date.now() + 15_000
  while (true) {
    await Promise.all(nodes.map(async (n) => {
      const status = await getStatus(n.admin)
      if (status != null) n.peers = status.peers.filter(p => nodes.some(o => o.peerId === p)).length
    }))
    if (nodes.every(n => n.peers >= nodes.length - 1) || Date.now() > meshDeadline) break
    await new Promise(resolve => setTimeout(resolve, 200))
  }

  const wired = nodes.every(n => n.peers >= nodes.length - 1)
    ? 'every node is connected to all the others'
    : `still connecting: ${nodes.map(n => `node ${n.index} sees ${n.peers}`).join(', ')} of ${nodes.length - 1}`
  process.stdout.write(`${table(nodes)}\n\nsipmesh cluster: ${nodes.length} node${nodes.length === 1 ? '' : 's'} up; ${wired}; logs in ${opts.dataDir}/node-<i>/node.log; Ctrl-C (or kill -INT ${process.pid}) stops them all\n`)

  let stopping = false
  for (const n of nodes) {
    n.child?.once('exit', (code, sig) => {
      if (!stopping) process.stderr.write(`sipmesh cluster: node ${n.index} exited (${code ?? sig}); the others keep running\n`)
    })
  }

  const sig = await signal
  stopping = true
  process.stdout.write(`sipmesh cluster: ${sig === 'parent-exited' ? 'the process that started it exited' : sig}, stopping ${nodes.length} nodes\n`)
  await stopAll(nodes)
  process.stdout.write('sipmesh cluster: stopped\n')
  exitAfterSignal(EXIT_OK)
  return EXIT_OK
}
