/**
 * A node that cannot start says why once (issue 14). The reason goes to the log (for a log file
 * or a journal that keeps stdout) and as one plain line to stderr (for the person who typed the
 * command); when stdout and stderr are the same place (one terminal, one file, one journal stream,
 * as under systemd by default) only the plain line is written, instead of the same words twice.
 */
import { fstatSync } from 'node:fs'
import type { Logger } from '../sip-gateway/ports.ts'

/** whether file descriptors 1 and 2 lead to the same file, terminal, pipe or socket */
export function stdoutIsStderr (): boolean {
  try {
    const out = fstatSync(1)
    const err = fstatSync(2)
    return out.dev === err.dev && out.ino === err.ino
  } catch {
    return false
  }
}

export function reportStartFailure (log: Logger, message: string, same = stdoutIsStderr()): void {
  if (!same) log.error('cannot start the node', { error: message })
  process.stderr.write(`sipmesh: cannot start: ${message}\n`)
}
