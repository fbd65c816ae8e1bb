// The whole test suite on Node's own runner: unit, integration (several libp2p nodes on loopback TCP),
// end-to-end (nodes as separate processes, real SIP clients) and the SIPp interop suite.
// `npm test` runs this; `npm test -- test/dht` runs the files under one folder.
import { spawnSync } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'

const major = Number(process.versions.node.split('.')[0])
if (major < 22) {
  console.error(`sipmesh needs Node.js 22 (found ${process.version}); run through npm scripts, which use node_modules/.bin/node`)
  process.exit(1)
}

function collect (path, out) {
  if (statSync(path).isDirectory()) {
    for (const entry of readdirSync(path).sort()) {
      if (entry === 'fixtures' || entry === 'node_modules') continue
      collect(join(path, entry), out)
    }
  } else if (path.endsWith('.test.ts')) {
    out.push(path)
  }
  return out
}

const roots = process.argv.slice(2)
const files = (roots.length > 0 ? roots : ['test']).flatMap(r => collect(r, []))
const result = spawnSync(process.execPath, [
  '--test',
  '--test-reporter=spec',
  '--test-concurrency=2',
  '--test-timeout=180000',
  ...files
], { stdio: 'inherit' })
process.exit(result.status ?? 1)
