/**
 * Kamailio for the comparisons in the benchmarks: find it, start one with a cfg of ours
 * (scripts/kamailio/) on a loopback UDP port, wait until it answers OPTIONS, read its shared
 * memory with kamcmd, stop it.
 */
import { spawn, spawnSync } from 'node:child_process'
import { createSocket } from 'node:dgram'
import { mkdtempSync } from 'node:fs'
import { join } from 'node:path'
import { freePort } from '../../test/interop/sipp.ts'

export function kamailioAvailable (): boolean {
  const r = spawnSync('kamailio', ['-v'], { encoding: 'utf8' })
  return r.error === undefined && /kamailio \d/.test(`${r.stdout}${r.stderr}`)
}

export interface KamailioProcess {
  /** the main process (its workers are its children) */
  pid: number
  /** host:port of its UDP listener */
  sip: string
  /** its runtime directory (-Y), where the ctl module puts kamailio_ctl */
  rundir: string
  /** logs its ERROR/CRITICAL lines (if any), SIGTERM, SIGKILL after 5 s */
  stop: () => Promise<void>
}

export interface KamailioInit {
  /** the cfg file */
  cfg: string
  /** UDP worker processes (-n) */
  workers: number
  /** a directory for its runtime directory */
  dir: string
  /** shared memory, MB (-m) @default 1024 */
  shmMb?: number
  /** more listeners (`-l`), for example `tls:127.0.0.1:5061` */
  listen?: string[]
}

/** one Kamailio with `cfg` on a free UDP port of 127.0.0.1; resolves once it answers OPTIONS */
export async function startKamailio (init: KamailioInit): Promise<KamailioProcess> {
  const port = await freePort()
  const rundir = mkdtempSync(join(init.dir, 'kamailio-'))
  const child = spawn('kamailio', ['-f', init.cfg, '-DD', '-E', '-l', `udp:127.0.0.1:${port}`, ...(init.listen ?? []).flatMap(l => ['-l', l]), '-n', String(init.workers), '-Y', rundir, '-m', String(init.shmMb ?? 1024)], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr?.on('data', (d: Buffer) => { if (stderr.length < 20_000) stderr += d.toString() })
  const stop = async (): Promise<void> => {
    const errors = stderr.split('\n').filter(l => /ERROR|CRITICAL/.test(l))
    if (errors.length > 0) console.log(`  kamailio logged ${errors.length} error line(s), the last: ${errors.slice(-3).join(' | ').slice(0, 600)}`)
    child.kill('SIGTERM')
    const t = setTimeout(() => child.kill('SIGKILL'), 5000)
    if (child.exitCode === null && child.signalCode === null) await new Promise(resolve => child.once('exit', resolve))
    clearTimeout(t)
  }
  // ready when it answers OPTIONS
  for (let i = 0; i < 50; i++) {
    if (child.exitCode !== null) break
    if (await optionsAnswered(port)) return { pid: child.pid ?? 0, sip: `127.0.0.1:${port}`, rundir, stop }
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  await stop()
  throw new Error(`kamailio did not answer OPTIONS in 5 s: ${stderr.slice(-1500)}`)
}

/** the shared memory Kamailio uses (`kamcmd core.shmmem`, `used`), bytes; needs ctl.so in the cfg */
export function kamailioShmUsed (k: KamailioProcess): number | undefined {
  const r = spawnSync('kamcmd', ['-s', `unix:${join(k.rundir, 'kamailio_ctl')}`, 'core.shmmem'], { encoding: 'utf8', timeout: 5000 })
  const m = /\bused:\s*(\d+)/.exec(r.stdout ?? '')
  return m === null ? undefined : Number(m[1])
}

/** whether something on 127.0.0.1:`port` answers an OPTIONS with 200 within 200 ms */
export function optionsAnswered (port: number): Promise<boolean> {
  return new Promise(resolve => {
    const sock = createSocket('udp4')
    const t = setTimeout(() => { sock.close(); resolve(false) }, 200)
    sock.on('message', (m) => { if (m.toString().startsWith('SIP/2.0 200')) { clearTimeout(t); sock.close(); resolve(true) } })
    sock.bind(0, '127.0.0.1', () => {
      const lp = sock.address().port
      sock.send([`OPTIONS sip:127.0.0.1:${port} SIP/2.0`, `Via: SIP/2.0/UDP 127.0.0.1:${lp};branch=z9hG4bK${Math.random().toString(36).slice(2)};rport`,
        'Max-Forwards: 70', `From: <sip:bench@example.com>;tag=${lp}`, `To: <sip:127.0.0.1:${port}>`, `Call-ID: ${Math.random().toString(36).slice(2)}`,
        'CSeq: 1 OPTIONS', 'Content-Length: 0', '', ''].join('\r\n'), port, '127.0.0.1')
    })
  })
}
