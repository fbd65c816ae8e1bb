/**
 * The `sipmesh` command:
 *
 *   sipmesh start [options]                 run one node (options: `sipmesh start --help`)
 *   sipmesh cluster --nodes N [...]         run N nodes on loopback, wired to each other
 *   sipmesh psk [file]                      write a pre-shared key file for a private mesh
 *   sipmesh status | aor <aor> | registrations   ask a running node (cli-admin.ts)
 *   sipmesh cert --domain D [...]           a private CA and certificates for local TLS peering
 *   sipmesh --help | --version
 *
 * `main` returns the exit code (0 ok, 1 runtime failure, 2 bad usage or configuration); it calls
 * `process.exit` only on SIGINT/SIGTERM, after a clean shutdown.
 */
import { readFileSync } from 'node:fs'
import { ConfigError, loadConfig, startUsage } from './config.ts'
import { runCluster, clusterUsage } from './cluster.ts'
import { helpColumns } from './help.ts'
import { adminUsage, runAdminCommand } from './cli-admin.ts'
import { runCert, certUsage } from './cert.ts'
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, exitAfterSignal, nextSignal } from './signals.ts'
import { reportStartFailure } from './start-failure.ts'

export function version (): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
  return pkg.version
}

export function usage (): string {
  return [
    `sipmesh ${version()}: a presence and IM federation node over a libp2p mesh`,
    '',
    'Usage:',
    ...helpColumns([
      ['sipmesh start [options]', 'run one node (sipmesh start --help lists the options)'],
      ['sipmesh cluster --nodes N', 'run N nodes on loopback wired to each other (sipmesh cluster --help)'],
      ['sipmesh status', 'a running node: addresses and peers (--admin host:port, --json)'],
      ['sipmesh aor <aor>', 'who owns an AoR, and its bindings'],
      ['sipmesh registrations', 'the AoRs registered at a node (--prefix, --limit, --after)'],
      ['sipmesh cert --domain D', 'a private CA and TLS certificates for local domains (sipmesh cert --help)'],
      ['sipmesh psk [file]', 'write a pre-shared key file for a private mesh (--psk)'],
      ['sipmesh --help', 'this help'],
      ['sipmesh --version', 'the version']
    ])
  ].join('\n')
}

async function start (args: string[]): Promise<number> {
  let loaded
  try {
    loaded = await loadConfig(args, process.env)
  } catch (err) {
    if ((err as Error).name !== ConfigError.NAME) throw err
    process.stderr.write(`sipmesh: ${(err as Error).message}\nRun 'sipmesh start --help' for the options.\n`)
    return EXIT_USAGE
  }
  if (loaded.help) {
    process.stdout.write(startUsage() + '\n')
    return EXIT_OK
  }
  // loaded only now, so that --help, --version and usage errors answer at once
  const { SipmeshNode } = await import('./sipmesh-node.ts')
  const { defaultGateway } = await import('./gateway.ts')
  const node = new SipmeshNode({ config: loaded.config, gateway: defaultGateway })
  const signal = nextSignal()
  try {
    await node.start()
  } catch (err) {
    reportStartFailure(node.log, (err as Error).message)
    await node.stop()
    return EXIT_FAILURE
  }
  // process-wide, so here and not in the node (tests run several nodes in one process)
  const { MemoryTrimmer } = await import('./memory-trim.ts')
  const { addCollectedCounter } = await import('./metrics.ts')
  const trimmer = new MemoryTrimmer({ logger: node.log.child({ component: 'memory' }) })
  trimmer.start()
  addCollectedCounter(node.metrics.registry, 'sipmesh_memory_trims_total', 'memory-reducing GCs run after a burst (V8 keeps freed pages resident otherwise)', () => trimmer.trims)
  // SIGUSR2: trim now, so that a reading of the node's memory is of what it holds, not of what
  // it did (scripts/bench-presence-load.ts reads it so before and after its subscriptions)
  const onTrimSignal = (): void => { trimmer.trim() }
  process.on('SIGUSR2', onTrimSignal)
  // a library that loses track of a promise must not take the node down
  process.on('unhandledRejection', (reason) => {
    node.log.error('unhandled promise rejection', { error: reason instanceof Error ? reason.stack ?? reason.message : String(reason) })
  })
  const sig = await signal
  node.log.info('shutting down', { signal: sig })
  // a second signal while stopping: give up waiting
  const force = (): void => { process.exit(EXIT_FAILURE) }
  process.once('SIGINT', force)
  process.once('SIGTERM', force)
  trimmer.stop()
  process.off('SIGUSR2', onTrimSignal)
  await node.stop()
  exitAfterSignal(EXIT_OK)
  return EXIT_OK
}

export async function main (argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  try {
    switch (command) {
      case 'start':
        return await start(rest)
      case 'cluster':
        return await runCluster(rest)
      case 'psk':
        // loaded only when asked for: it brings @libp2p/pnet
        return await (await import('./psk.ts')).runPsk(rest)
      case 'status':
      case 'aor':
      case 'registrations':
        return await runAdminCommand(command, rest)
      case 'cert':
        return await runCert(rest)
      case '--version':
      case '-v':
      case 'version':
        process.stdout.write(version() + '\n')
        return EXIT_OK
      case '--help':
      case '-h':
      case 'help':
        if (rest[0] === 'start') process.stdout.write(startUsage() + '\n')
        else if (rest[0] === 'cluster') process.stdout.write(clusterUsage() + '\n')
        else if (rest[0] === 'psk') process.stdout.write((await import('./psk.ts')).pskUsage() + '\n')
        else if (rest[0] === 'status' || rest[0] === 'aor' || rest[0] === 'registrations') process.stdout.write(adminUsage() + '\n')
        else if (rest[0] === 'cert') process.stdout.write(certUsage() + '\n')
        else process.stdout.write(usage() + '\n')
        return EXIT_OK
      case undefined:
        process.stderr.write(usage() + '\n')
        return EXIT_USAGE
      default:
        process.stderr.write(`sipmesh: unknown command '${command.slice(0, 40)}'\n\n${usage()}\n`)
        return EXIT_USAGE
    }
  } catch (err) {
    process.stderr.write(`sipmesh: ${(err as Error).stack ?? String(err)}\n`)
    return EXIT_FAILURE
  }
}
