/**
 * The signing thread (see sign-batch.ts): signs batches of messages with the Ed25519 keys the main
 * thread hands it, one message in and one out per batch.
 *
 *   in:  { key: id, object: KeyObject }                          a key, once, before its first batch
 *        { id, key: id, data: ArrayBuffer, ends: Uint32Array }  the messages, back to back
 *   out: { id, signatures: ArrayBuffer }                         64 bytes per message, in order
 *        { id, error: string }
 */
import { sign } from 'node:crypto'
import { parentPort } from 'node:worker_threads'
import type { KeyObject } from 'node:crypto'

interface KeyMessage { key: number, object: KeyObject }
interface BatchMessage { id: number, key: number, data: ArrayBuffer, ends: Uint32Array }

const keys = new Map<number, KeyObject>()
const port = parentPort!

port.on('message', (m: KeyMessage | BatchMessage) => {
  if ('object' in m) {
    keys.set(m.key, m.object)
    return
  }
  try {
    const key = keys.get(m.key)
    if (key == null) throw new Error(`unknown key ${m.key}`)
    const data = new Uint8Array(m.data)
    const out = new Uint8Array(m.ends.length * 64)
    let at = 0
    for (let i = 0; i < m.ends.length; i++) {
      const sig = sign(null, data.subarray(at, m.ends[i]), key)
      if (sig.byteLength !== 64) throw new Error('not an Ed25519 signature')
      out.set(sig, i * 64)
      at = m.ends[i]
    }
    port.postMessage({ id: m.id, signatures: out.buffer }, [out.buffer])
  } catch (err) {
    port.postMessage({ id: m.id, error: (err as Error).message })
  }
})
