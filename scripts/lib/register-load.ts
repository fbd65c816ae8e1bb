/**
 * REGISTER load from SIPp for the registration benchmarks (bench-register, bench-fleet): distinct
 * users per run, refreshes of them, and what a step of load came to (successes, failures,
 * retransmissions, the rate achieved, the CPU the registrar's processes spent per registration).
 */
import { mkdtempSync } from 'node:fs'
import { loadavg } from 'node:os'
import { join } from 'node:path'
import { runSipp, sippCounter, sippRetransmissions } from '../../test/interop/sipp.ts'
import { cpuMs } from './proc-stats.ts'
import { udpSocketStats } from '../../node/udp-socket-stats.ts'

/** the port every bound Contact names (nothing listens there: no request is sent to a contact) */
export const CONTACT_PORT = 5999

export interface Step {
  /** the offered rate, REGISTERs per second in total */
  rate: number
  sent: number
  ok: number
  /** failed calls plus calls not finished when SIPp was stopped */
  failed: number
  retrans: number
  seconds: number
  achieved: number
  /** CPU time of the registrar's processes per registration, µs (less their idle CPU when known) */
  cpuUsPerReg?: number
  /**
   * datagrams the kernel dropped at the targets' SIP UDP sockets during the step (receive buffer
   * full: requests they never saw, which SIPp retransmits); undefined where it cannot be read
   */
  kernelDrops?: number
  /** no failure, retransmissions < 1% of the REGISTERs sent, at least 90% of the offered rate achieved */
  clean: boolean
  /** seconds since `spawnedAt`: where the step is in a CPU profile of the registrar */
  from: number
  to: number
}

export interface RegisterLoad {
  /** SIP host:port of each registrar; one SIPp per entry, each with its own users */
  entries: string[]
  /** users are `<prefix>1` … (`<prefix>e<i>-1` … with several entries); Call-ID `<user's prefix><n>@bench` */
  prefix: string
  rate: number
  calls: number
  /** the CSeq: 1 for new users, higher for each refresh of the same users */
  cseq: number
  /** the registrar's processes, for CPU time (with their direct children) */
  pids: number[]
  /** a directory for SIPp's files */
  dir: string
  /** performance.now() when the registrar was spawned */
  spawnedAt?: number
  /** Expires of every REGISTER, seconds @default 3600 */
  expires?: number
  /** CPU the registrar spends idle, ms per second (see `idleCpu`): subtracted from the step's CPU */
  idleCpuMsPerS?: number
}

/** the CPU (ms per second) the processes spend with nothing to do, over `ms` */
export async function idleCpu (pids: number[], ms = 3000): Promise<number | undefined> {
  const c0 = cpuMs(pids)
  const t0 = performance.now()
  await new Promise(resolve => setTimeout(resolve, ms))
  const c1 = cpuMs(pids)
  return c0 === undefined || c1 === undefined ? undefined : (c1 - c0) / ((performance.now() - t0) / 1000)
}

/**
 * REGISTER `calls` users at `rate`/s in total, split over the entries; bounded by the sending
 * time plus 20 s (calls not answered by then count as failed)
 */
export async function registerRun (l: RegisterLoad): Promise<Step> {
  return await sippStep({
    ...l,
    scenario: 'uac-register-bench.xml',
    args: (p) => ['-key', 'prefix', p, '-key', 'contact_port', String(CONTACT_PORT), '-key', 'expires', String(l.expires ?? 3600),
      '-cid_str', `${p}%u@bench`, '-base_cseq', String(l.cseq)]
  })
}

export interface SippStepInit {
  /** a scenario of test/interop/scenarios */
  scenario: string
  /** SIP host:port of each target; one SIPp per entry, each with its own prefix */
  entries: string[]
  /** `<prefix>` alone, or `<prefix>e<i>-` per entry with several entries */
  prefix: string
  /** calls per second in total */
  rate: number
  calls: number
  /** SIPp arguments beyond the common ones, given the entry's prefix */
  args: (prefix: string) => string[]
  pids: number[]
  dir: string
  spawnedAt?: number
  idleCpuMsPerS?: number
}

/**
 * One step of SIPp load: `calls` calls of `scenario` at `rate`/s in total, split over the entries;
 * bounded by the sending time plus 20 s (calls not finished by then count as failed). CPU per call
 * is that of the target's processes (less their idle CPU when known).
 */
export async function sippStep (l: SippStepInit): Promise<Step> {
  const per = Math.max(1, Math.round(l.calls / l.entries.length))
  const perRate = Math.max(0.1, l.rate / l.entries.length)
  const cpu0 = cpuMs(l.pids)
  const drops0 = kernelDrops(l.entries)
  const started = performance.now()
  const runs = await Promise.all(l.entries.map(async (entry, i) => {
    const p = l.entries.length === 1 ? l.prefix : `${l.prefix}e${i}-`
    return await runSipp(l.scenario, entry, ['-t', 'u1', ...l.args(p), '-r', String(perRate), '-m', String(per), '-l', '100000',
      '-max_recv_loops', '5000', '-max_sched_loops', '5000'], Math.ceil(per / perRate) + 20, mkdtempSync(join(l.dir, 'sipp-'))).done
  }))
  const elapsed = (performance.now() - started) / 1000
  const cpu1 = cpuMs(l.pids)
  const drops1 = kernelDrops(l.entries)
  const sent = per * l.entries.length
  const ok = runs.reduce((s, r) => s + sippCounter(r.stdout, 'Successful call'), 0)
  const failed = runs.reduce((s, r) => s + sippCounter(r.stdout, 'Failed call'), 0)
  const retrans = runs.reduce((s, r) => s + sippRetransmissions(r.stdout), 0)
  const achieved = ok / Math.max(elapsed - 0.2, 0.1)
  const allFailed = failed + Math.max(0, sent - ok - failed)
  const cpuUsPerReg = cpu0 === undefined || cpu1 === undefined || ok === 0 ? undefined : Math.max(0, cpu1 - cpu0 - (l.idleCpuMsPerS ?? 0) * elapsed) * 1000 / ok
  const from = (started - (l.spawnedAt ?? started)) / 1000
  const dropped = drops0 === undefined || drops1 === undefined ? undefined : drops1 - drops0
  return { rate: l.rate, sent, ok, failed: allFailed, retrans, seconds: elapsed, achieved, cpuUsPerReg, kernelDrops: dropped, clean: allFailed === 0 && retrans < 0.01 * sent && achieved >= 0.9 * l.rate, from, to: from + elapsed }
}

/** the kernel's drop counters of the SIP UDP sockets at `entries` (host:port), summed; undefined unless all are read */
function kernelDrops (entries: string[]): number | undefined {
  let sum = 0
  for (const e of entries) {
    const i = e.lastIndexOf(':')
    const d = udpSocketStats(e.slice(0, i), Number(e.slice(i + 1)))?.drops
    if (d === undefined) return undefined
    sum += d
  }
  return sum
}

/** one line for a step: `kind rate/s: ok …, failed …, retransmissions …, achieved …, CPU …, load … CLEAN` */
export function stepLine (kind: string, s: Step, profileWindow = false): string {
  return `  ${kind} ${String(s.rate).padStart(6)}/s: ok ${s.ok}/${s.sent}, failed ${s.failed}, retransmissions ${s.retrans} (${(100 * s.retrans / Math.max(s.sent, 1)).toFixed(2)}%), achieved ${s.achieved.toFixed(s.rate < 10 ? 1 : 0)}/s${s.cpuUsPerReg === undefined ? '' : `, CPU ${s.cpuUsPerReg.toFixed(0)} µs/reg`}${s.kernelDrops === undefined || s.kernelDrops === 0 ? '' : `, ${s.kernelDrops} dropped by the kernel (receive buffer full)`}, load ${loadavg()[0].toFixed(2)} ${s.clean ? 'CLEAN' : 'NOT CLEAN'}${profileWindow ? ` [profile: --from ${s.from.toFixed(1)} --to ${s.to.toFixed(1)}]` : ''}`
}

/** a/b as "0.63x" for the summaries' ratios to Kamailio; "—" when either is missing */
export const ratio = (a?: number, b?: number): string => a === undefined || b === undefined || b === 0 ? '—' : `${(a / b).toFixed(2)}x`
/** a figure with its unit, "none" when missing */
export const fmt = (n?: number, unit = ''): string => n === undefined ? 'none' : `${n.toLocaleString('en-US')}${unit}`

export const highestClean = (steps: Step[]): Step | undefined => steps.filter(s => s.clean).sort((a, b) => b.rate - a.rate)[0]

/** the steps as plain JSON (rounded) */
export function stepsJson (steps?: Step[]): unknown {
  return steps?.map(s => ({ rate: s.rate, sent: s.sent, ok: s.ok, failed: s.failed, retrans: s.retrans, achieved: Math.round(s.achieved), cpuUsPerReg: s.cpuUsPerReg === undefined ? undefined : Math.round(s.cpuUsPerReg), kernelDrops: s.kernelDrops, clean: s.clean }))
}
