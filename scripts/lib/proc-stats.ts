/**
 * What benchmarks read about the processes they started, from /proc (Linux): CPU time and resident
 * memory of a process and its direct children (Kamailio's workers), figures that, unlike a rate,
 * do not depend on how busy the shared machine is.
 */
import { readdirSync, readFileSync } from 'node:fs'

/** pid → parent pid and CPU ticks (user + system) of every process, or undefined without /proc */
function processTable (): Map<number, { ppid: number, ticks: number }> | undefined {
  const table = new Map<number, { ppid: number, ticks: number }>()
  try {
    for (const d of readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue
      let stat: string
      try { stat = readFileSync(`/proc/${d}/stat`, 'utf8') } catch { continue }
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ') // fields from 3 (state) on
      table.set(Number(d), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) })
    }
  } catch {
    return undefined
  }
  return table
}

/** the given processes and their direct children */
export function withChildren (roots: number[]): number[] {
  const table = processTable()
  if (table === undefined) return roots
  const set = new Set(roots)
  return [...table].filter(([pid, p]) => set.has(pid) || set.has(p.ppid)).map(([pid]) => pid)
}

/** CPU time (user + system, ms) of the given processes and their direct children */
export function cpuMs (roots: number[]): number | undefined {
  if (roots.length === 0) return undefined
  const table = processTable()
  if (table === undefined) return undefined
  const set = new Set(roots)
  let ticks = 0
  for (const [pid, p] of table) if (set.has(pid) || set.has(p.ppid)) ticks += p.ticks
  return ticks * 10 // USER_HZ is 100 on Linux
}

/** resident set size of one process in bytes (VmRSS of /proc/<pid>/status), undefined once it is gone */
export function rssBytes (pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m === null ? undefined : Number(m[1]) * 1024
  } catch {
    return undefined
  }
}

/**
 * proportional set size of one process in bytes (/proc/<pid>/smaps_rollup: each shared page
 * counted once over the processes sharing it), undefined once it is gone; summed over Kamailio's
 * processes it counts its shared memory once, where a sum of RSS counts it in every process
 */
export function pssBytes (pid: number): number | undefined {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))
    return m === null ? undefined : Number(m[1]) * 1024
  } catch {
    return undefined
  }
}

/**
 * CPU ticks (user + system) of each thread of a process by thread name (threads of one name
 * summed: libuv's pool, V8's GC helpers and worker threads), the main thread as `main`, or
 * undefined without /proc.
 */
export function threadTicks (pid: number = process.pid): Map<string, number> | undefined {
  const out = new Map<string, number>()
  try {
    for (const t of readdirSync(`/proc/${pid}/task`)) {
      let stat: string
      try { stat = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8') } catch { continue }
      const name = t === String(pid) ? 'main' : stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      out.set(name, (out.get(name) ?? 0) + Number(f[11]) + Number(f[12]))
    }
  } catch {
    return undefined
  }
  return out
}
