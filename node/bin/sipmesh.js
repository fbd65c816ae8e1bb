#!/usr/bin/env node
// The `sipmesh` command. A plain JS shim so that an old Node gets a clear message instead of a
// syntax error: the sources are TypeScript run by Node 22's type stripping.
const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 18)) {
  console.error(`sipmesh needs Node.js >= 22.18 (this is ${process.version}). ` +
    'Use `npm start` / `npx sipmesh`, which run the Node 22 that `npm install` put in node_modules/.bin.')
  process.exit(1)
}
const { main } = await import('../cli.ts')
process.exitCode = await main(process.argv.slice(2))
