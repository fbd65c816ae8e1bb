/** Exit codes and signal handling shared by the `sipmesh` commands. */

export const EXIT_OK = 0
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2

/**
 * Resolves with the name of the first SIGINT or SIGTERM, or 'disconnect' when the process was
 * started with an IPC channel (as `sipmesh cluster` starts its nodes) and the parent went away, so
 * that nodes never outlive a cluster that was killed.
 */
export function nextSignal (): Promise<NodeJS.Signals | 'disconnect'> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals | 'disconnect'): void => {
      process.off('SIGINT', on)
      process.off('SIGTERM', on)
      process.off('disconnect', onDisconnect)
      resolve(sig)
    }
    const onDisconnect = (): void => { on('disconnect') }
    process.on('SIGINT', on)
    process.on('SIGTERM', on)
    if (process.channel != null) {
      process.on('disconnect', onDisconnect)
      // the channel must not keep a stopped node alive
      process.channel.unref()
    }
  })
}

/** After a clean shutdown on a signal: exit, even if some library left a handle open. */
export function exitAfterSignal (code: number): void {
  process.exitCode = code
  if (process.connected) process.disconnect()
  setTimeout(() => { process.exit(code) }, 2000).unref()
}
