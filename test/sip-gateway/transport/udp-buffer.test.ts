// The SIP UDP socket's receive buffer: the kernel's grant is read back, and a grant smaller than
// asked (Linux caps it at net.core.rmem_max) is logged at warn with the sysctl to raise.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { echoLayer } from './fixtures.ts'

/** net.core.rmem_max, where the kernel tells it */
function rmemMax (): number | undefined {
  try { return Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8').trim()) } catch { return undefined }
}

test('a receive buffer asked beyond what the kernel grants is logged at warn, once, with both sizes', { skip: rmemMax() === undefined ? 'not Linux' : false }, async () => {
  const max = rmemMax() as number
  const asked = max * 4 + (1 << 20)
  const { layer, logger } = await echoLayer({ udpBufferSize: asked })
  try {
    const warned = logger.lines.filter(l => l.level === 'warn' && /receive buffer/.test(l.msg))
    assert.equal(warned.length, 1)
    assert.match(warned[0].msg, /net\.core\.rmem_max/)
    assert.equal(warned[0].fields?.asked, asked)
    assert.ok(typeof warned[0].fields?.granted === 'number' && (warned[0].fields.granted as number) < asked)
  } finally { await layer.stop() }
})

test('a receive buffer the kernel grants in full is not warned about', { skip: rmemMax() === undefined ? 'not Linux' : false }, async () => {
  const { layer, logger } = await echoLayer({ udpBufferSize: 64 << 10 })
  try {
    assert.equal(logger.lines.filter(l => l.level === 'warn' && /receive buffer/.test(l.msg)).length, 0)
  } finally { await layer.stop() }
})
