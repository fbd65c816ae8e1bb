/**
 * `sipmesh psk [file]`: write a new pre-shared key for a private mesh (`--psk <file>` on every
 * node), in the libp2p private-network format that @libp2p/pnet reads:
 *
 *   /key/swarm/psk/1.0.0/
 *   /base16/
 *   <64 hex digits: 32 random bytes>
 *
 * (@libp2p/pnet's own generateKey makes it). The file is created with mode 0600 and never
 * overwritten unless `--force`; `-` writes the key to stdout.
 */
import { writeFile } from 'node:fs/promises'
import { resolve as resolvePath } from 'node:path'
import { parseArgs } from 'node:util'
import { generateKey } from '@libp2p/pnet'
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from './signals.ts'
import { helpColumns } from './help.ts'

export const DEFAULT_PSK_FILE = 'swarm.key'

export function pskUsage (): string {
  return [
    'Usage: sipmesh psk [file] [--force]',
    '',
    `Writes a new pre-shared key (libp2p private network) to file (default ./${DEFAULT_PSK_FILE}, mode 0600).`,
    'Copy it to every node of the mesh and start each with --psk <file>: nodes without it cannot connect.',
    '',
    ...helpColumns([
      ['[file]', `where to write the key; - for stdout (default ${DEFAULT_PSK_FILE})`],
      ['--force', 'replace the file if it exists (nodes with the old key can no longer connect)'],
      ['-h, --help', 'this help']
    ])
  ].join('\n')
}

/** a new key file's bytes */
export function newPsk (): Uint8Array {
  let key: Uint8Array | undefined
  // generateKey writes into a buffer or a stream; a stream-like sink takes the key whatever its length
  generateKey({ write: (bytes: Uint8Array) => { key = bytes; return true } } as unknown as NodeJS.WriteStream)
  if (key === undefined) throw new Error('@libp2p/pnet generated no key')
  return key
}

export async function runPsk (args: string[]): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({ args, strict: true, allowPositionals: true, options: { force: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } })
  } catch (err) {
    process.stderr.write(`sipmesh psk: ${(err as Error).message.split('\n')[0]}\nRun 'sipmesh psk --help' for the options.\n`)
    return EXIT_USAGE
  }
  if (parsed.values.help === true) { process.stdout.write(pskUsage() + '\n'); return EXIT_OK }
  if (parsed.positionals.length > 1) {
    process.stderr.write('sipmesh psk: one file at most\nRun \'sipmesh psk --help\' for the options.\n')
    return EXIT_USAGE
  }
  const key = newPsk()
  const target = parsed.positionals[0] ?? DEFAULT_PSK_FILE
  if (target === '-') { process.stdout.write(key); process.stdout.write('\n'); return EXIT_OK }
  const path = resolvePath(target)
  try {
    await writeFile(path, key, { mode: 0o600, flag: parsed.values.force === true ? 'w' : 'wx' })
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    process.stderr.write(e.code === 'EEXIST'
      ? `sipmesh psk: ${path} exists; not replaced (--force replaces it, and nodes that keep the old key can no longer connect)\n`
      : `sipmesh psk: cannot write ${path}: ${e.message}\n`)
    return EXIT_FAILURE
  }
  process.stdout.write(`sipmesh psk: wrote a new pre-shared key to ${path} (mode 0600); copy it to every node and start each with --psk ${path}\n`)
  return EXIT_OK
}
