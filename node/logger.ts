/**
 * Structured logs: one JSON object per line (pino), with a level; or, with `--log-format pretty`,
 * the same lines rendered by pino's own pretty printer (pino-pretty: time, level, message, then
 * the fields) for a person at a terminal. Three faces of one pino logger:
 * the pino logger itself (node/), the gateway's `Logger` port, and a libp2p `ComponentLogger`
 * whose lines are JSON too and which stays silent unless the level is `debug` or `trace`.
 */
import { format } from 'node:util'
import { pino } from 'pino'
import { PinoPretty } from 'pino-pretty'
import type { LogFormat, LogLevel } from './config.ts'
import type { Logger } from '../sip-gateway/ports.ts'
import type { ComponentLogger, Logger as Libp2pLogger } from '@libp2p/interface'

export type PinoLogger = pino.Logger

export interface CreateLoggerOptions {
  level: LogLevel
  /** fields on every line, e.g. `{ node: 'n1' }` */
  base?: Record<string, unknown>
  /** where lines go; default stdout */
  destination?: pino.DestinationStream
  /** `pretty`: pino-pretty renders the lines (colours when stdout is a terminal) @default 'json' */
  format?: LogFormat
}

function prettyStream (destination: pino.DestinationStream | undefined): pino.DestinationStream {
  return PinoPretty({
    // written before the call returns, as the JSON destination does, so that a line logged just
    // before exit is not lost
    sync: true,
    colorize: destination === undefined && process.stdout.isTTY,
    translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
    ignore: 'pid,hostname',
    singleLine: true,
    ...(destination !== undefined ? { destination } : { destination: 1 })
  })
}

export function createPinoLogger (options: CreateLoggerOptions): PinoLogger {
  return pino({
    level: options.level,
    base: { pid: process.pid, ...options.base },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) }
  }, options.format === 'pretty' ? prettyStream(options.destination) : options.destination ?? pino.destination({ dest: 1, sync: true }))
}

/**
 * The gateway's `Logger` port over pino. A child is made from the root with the merged fields,
 * so that a field set again by a nested child replaces the outer one instead of appearing twice
 * in the JSON line (pino appends child bindings); nested `component`s join with ':'.
 */
export function toPortLogger (root: PinoLogger, bindings: Record<string, unknown> = {}): Logger {
  const log = Object.keys(bindings).length === 0 ? root : root.child(bindings)
  return {
    debug: (msg, fields) => { log.debug(fields ?? {}, msg) },
    info: (msg, fields) => { log.info(fields ?? {}, msg) },
    warn: (msg, fields) => { log.warn(fields ?? {}, msg) },
    error: (msg, fields) => { log.error(fields ?? {}, msg) },
    child: (fields) => {
      const merged = { ...bindings, ...fields }
      if (typeof bindings.component === 'string' && typeof fields.component === 'string') {
        merged.component = `${bindings.component}:${fields.component}`
      }
      return toPortLogger(root, merged)
    }
  }
}

/** libp2p's debug formatters (%p peer id, %a multiaddr, %b base58, %t base64, %c cid, %e error) as %s. */
function libp2pFormat (formatter: unknown, args: unknown[]): string {
  if (typeof formatter !== 'string') return format(formatter, ...args)
  return format(formatter.replace(/%[pabtce]/g, '%s'), ...args.map(a => a instanceof Error ? a.message : a))
}

function disabledLogger (): Libp2pLogger {
  const noop = (() => {}) as unknown as Libp2pLogger
  return Object.assign(noop, {
    enabled: false,
    error: () => {},
    trace: () => {},
    newScope: () => noop
  })
}

/**
 * A libp2p `ComponentLogger` writing JSON lines through pino: component messages at `debug`,
 * errors at `warn` (libp2p logs many expected failures as errors: dials, resets), traces at
 * `trace`. Silent (no formatting cost) unless pino's level is `debug` or lower, except the errors
 * of our own components (`sipmesh:*`: refused forged records, failed persistence), which are
 * written at `warn` whenever that level is on, and their `info` lines (an extra method of our
 * components' loggers, e.g. the replica repair's), written at `info`.
 */
export function libp2pComponentLogger (log: PinoLogger): ComponentLogger {
  const debugOn = log.isLevelEnabled('debug')
  const traceOn = log.isLevelEnabled('trace')
  const warnOn = log.isLevelEnabled('warn')
  const infoOn = log.isLevelEnabled('info')
  const make = (component: string): Libp2pLogger => {
    if (!debugOn && warnOn && component.startsWith('sipmesh:')) {
      const child = log.child({ component })
      return Object.assign((() => {}) as unknown as Libp2pLogger, {
        enabled: false,
        error: (formatter: unknown, ...args: unknown[]) => { child.warn(libp2pFormat(formatter, args)) },
        info: (formatter: unknown, ...args: unknown[]) => { if (infoOn) child.info(libp2pFormat(formatter, args)) },
        trace: () => {},
        newScope: (name: string) => make(`${component}:${name}`)
      })
    }
    if (!debugOn) return disabledLogger()
    const child = log.child({ component })
    const fn = ((formatter: unknown, ...args: unknown[]) => { child.debug(libp2pFormat(formatter, args)) }) as unknown as Libp2pLogger
    return Object.assign(fn, {
      enabled: true,
      error: (formatter: unknown, ...args: unknown[]) => { child.warn(libp2pFormat(formatter, args)) },
      // our components' `info` (an optional extra the libp2p Logger lacks, see `InfoLogger`): at info
      info: (formatter: unknown, ...args: unknown[]) => { child.info(libp2pFormat(formatter, args)) },
      trace: traceOn ? (formatter: unknown, ...args: unknown[]) => { child.trace(libp2pFormat(formatter, args)) } : () => {},
      newScope: (name: string) => make(`${component}:${name}`)
    })
  }
  return { forComponent: make }
}
