// Running SIPp from tests and benchmarks: find it, pick free ports, run a scenario to completion.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createSocket } from 'node:dgram'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'

export const SCENARIOS = join(dirname(fileURLToPath(import.meta.url)), 'scenarios')

export function sippAvailable (): boolean {
  const r = spawnSync('sipp', ['-v'], { encoding: 'utf8' })
  return r.error === undefined && /SIPp v/.test(`${r.stdout}${r.stderr}`)
}

/**
 * Whether the interop suites run: `describe(name, { skip: sippSkip }, ...)` skips them with a
 * reason when sipp is missing, except where SIPMESH_REQUIRE_SIPP=1 (CI): there they run and
 * `requireSipp()` in their `before` fails them.
 */
const sippRequired = process.env.SIPMESH_REQUIRE_SIPP === '1'
export const sippSkip: string | false = !sippAvailable() && !sippRequired
  ? 'sipp is not installed (apt-get install sip-tester); set SIPMESH_REQUIRE_SIPP=1 to make this fail'
  : false

export function requireSipp (): void {
  if (!sippAvailable()) throw new Error('sipp is required (SIPMESH_REQUIRE_SIPP=1) but not installed')
}

/** a port free on 127.0.0.1 for both UDP and TCP (best effort) */
export async function freePort (): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const s = createServer()
    const port = await new Promise<number>((resolve, reject) => {
      s.once('error', reject)
      s.listen(0, '127.0.0.1', () => { const a = s.address(); resolve(typeof a === 'object' && a !== null ? a.port : 0) })
    })
    await new Promise<void>(resolve => s.close(() => resolve()))
    const u = createSocket('udp4')
    const ok = await new Promise<boolean>(resolve => {
      u.once('error', () => resolve(false))
      u.bind(port, '127.0.0.1', () => resolve(true))
    })
    if (ok) { await new Promise<void>(resolve => u.close(() => resolve())); return port }
  }
  throw new Error('no free port')
}

export interface SippRun {
  child: ChildProcess
  done: Promise<{ code: number | null, stdout: string, stderr: string }>
}

/** start `sipp` with a scenario of ours against `target` (host:port); bounded by `timeoutS` */
export function runSipp (scenario: string, target: string, args: string[], timeoutS = 20, cwd?: string): SippRun {
  const child = spawn('sipp', [
    '-sf', join(SCENARIOS, scenario), target,
    '-i', '127.0.0.1', '-nostdin', '-timeout', `${timeoutS}s`, '-timeout_error',
    ...args
  ], { stdio: ['ignore', 'pipe', 'pipe'], cwd })
  let stdout = ''
  let stderr = ''
  child.stdout?.on('data', (d: Buffer) => { if (stdout.length < 200_000) stdout += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { if (stderr.length < 200_000) stderr += d.toString() })
  const done = new Promise<{ code: number | null, stdout: string, stderr: string }>(resolve => {
    child.on('close', (code) => resolve({ code, stdout, stderr }))
    child.on('error', (err) => resolve({ code: -1, stdout, stderr: stderr + String(err) }))
  })
  return { child, done }
}

/** the cumulative value of a row of SIPp's final statistics screen ("Successful call", "Failed call") */
export function sippCounter (stdout: string, row: string): number {
  const re = new RegExp(`${row}\\s*\\|\\s*\\d+\\s*\\|\\s*(\\d+)`, 'g')
  let last: number | undefined
  for (const m of stdout.matchAll(re)) last = Number(m[1])
  return last ?? 0
}

/** retransmissions SIPp made: the sum of the Retrans column of the sent messages in its last scenario screen */
export function sippRetransmissions (stdout: string): number {
  const screens = stdout.split('Scenario Screen')
  const last = screens[screens.length - 1]
  let sum = 0
  for (const m of last.matchAll(/^\s*\S+\s+-+>\s+\d+\s+(\d+)/gm)) sum += Number(m[1])
  return sum
}
