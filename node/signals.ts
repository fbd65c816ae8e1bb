/** Exit codes and signal handling shared by the `sipmesh` commands. */

export const EXIT_OK = 0
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2

/** Resolves with the name of the first SIGINT or SIGTERM. */
export function nextSignal (): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals): void => {
      process.off('SIGINT', on)
      process.off('SIGTERM', on)
      resolve(sig)
    }
    process.on('SIGINT', on)
    process.on('SIGTERM', on)
  })
}

/** After a clean shutdown on a signal: exit, even if some library left a handle open. */
export function exitAfterSignal (code: number): void {
  process.exitCode = code
  setTimeout(() => { process.exit(code) }, 2000).unref()
}
