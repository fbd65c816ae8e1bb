// Allocation-site pretenuring is turned off at a node's start (node/pretenuring.ts): the flag must
// be one this runtime's V8 knows. V8 takes an unknown flag without an error and only says so on
// stderr, so each case runs in a child process of its own (the flag is process-wide) and reads it.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const MODULE = JSON.stringify(fileURLToPath(new URL('../../node/pretenuring.ts', import.meta.url)))

function run (code: string): { status: number | null, stdout: string, stderr: string } {
  return spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 30_000 })
}

test('stopPretenuring: V8 takes the flag (no "unrecognized flag" on stderr)', () => {
  const out = run(`
    import { stopPretenuring, NO_PRETENURING_FLAG } from ${MODULE}
    console.log(JSON.stringify({ ok: stopPretenuring(), flag: NO_PRETENURING_FLAG }))
  `)
  assert.equal(out.status, 0, out.stderr)
  const r = JSON.parse(out.stdout.trim()) as { ok: boolean, flag: string }
  assert.equal(r.ok, true)
  assert.equal(r.flag, '--no-allocation-site-pretenuring')
  assert.doesNotMatch(out.stderr, /unrecognized flag/i)
})

test('the check above can fail: a flag V8 does not know is reported on stderr', () => {
  const out = run(`
    import { setFlagsFromString } from 'node:v8'
    setFlagsFromString('--no-allocation-site-pretenurin')
  `)
  assert.equal(out.status, 0, out.stderr)
  assert.match(out.stderr, /unrecognized flag/i)
})
