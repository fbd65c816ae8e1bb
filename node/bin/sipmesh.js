#!/bin/sh
':' //; d=$(dirname "$(readlink -f "$0" 2>/dev/null || echo "$0")"); while [ "$d" != / ] && [ "$d" != . ]; do [ -x "$d/node_modules/node/bin/node" ] && exec "$d/node_modules/node/bin/node" "$0" "$@"; d=$(dirname "$d"); done; exec node "$0" "$@"
// The `sipmesh` command: a file that is both a shell script and JavaScript (issue 14, a lean process).
//
// Run as a program (`node_modules/.bin/sipmesh`, a global install, a systemd ExecStart), /bin/sh
// reads the line above: it finds the Node.js that `npm install` put in the nearest
// node_modules/node/bin/ up from this file (the project's Node 22: the `node` dependency) and
// `exec`s it on this same file, so the process that stays is that Node alone, with the pid, the
// signals and the exit code of the command; without one it execs the `node` on the PATH. For
// JavaScript the line is a string and a comment.
//
// Run by an older `node` directly (`node node/bin/sipmesh.js` with the system Node 20), there is
// no exec: the project's Node 22 runs as a child with the same stdio, in a process group of its
// own so that a Ctrl-C reaches it once (forwarded from here), and this process exits as it does.
// The sources are TypeScript run by Node 22's type stripping.
import { spawn } from 'node:child_process'
import { existsSync, realpathSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const [major, minor] = process.versions.node.split('.').map(Number)
if (major > 22 || (major === 22 && minor >= 18)) {
  const { main } = await import('../cli.ts')
  process.exitCode = await main(process.argv.slice(2))
} else {
  const self = realpathSync(fileURLToPath(import.meta.url))
  let node
  for (let d = dirname(self); node === undefined; d = dirname(d)) {
    const candidate = join(d, 'node_modules', 'node', 'bin', 'node')
    if (existsSync(candidate)) node = candidate
    if (dirname(d) === d) break
  }
  if (node === undefined) {
    console.error(`sipmesh needs Node.js >= 22.18 (this is ${process.version}) and found none in node_modules/node/bin: ` +
      'run `npm install` (it installs Node 22 as the `node` dependency), or run node_modules/.bin/sipmesh.')
    process.exit(1)
  }
  const child = spawn(node, [self, ...process.argv.slice(2)], { stdio: 'inherit', detached: true })
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => { child.kill(sig) })
  child.on('error', (err) => { console.error(`sipmesh: cannot run ${node}: ${err.message}`); process.exit(1) })
  child.on('exit', (code, signal) => {
    if (signal !== null) {
      // die of the same signal, as exec would have
      process.removeAllListeners(signal)
      process.kill(process.pid, signal)
    }
    process.exit(code ?? 1)
  })
}
