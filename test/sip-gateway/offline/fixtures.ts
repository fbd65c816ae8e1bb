/** Fixtures for the offline store tests: a Map-backed DurableStore with fault hooks, a recording logger. */
import type { Logger } from '../../../sip-gateway/ports.ts'
import { MemoryStore } from '../../../sip-gateway/memory-store.ts'
import type { OfflineMessage } from '../../../sip-gateway/offline/index.ts'

/** The gateway's MemoryStore with fault hooks: a put or delete can be made to throw or wait. */
export class MapStore extends MemoryStore {
  /** called before every put / delete; may throw or delay */
  beforePut: ((key: string) => Promise<void> | void) | undefined
  beforeDelete: ((key: string) => Promise<void> | void) | undefined
  puts = 0

  override async put (key: string, value: Uint8Array): Promise<void> {
    await this.beforePut?.(key)
    this.puts++
    await super.put(key, value)
  }

  override async delete (key: string): Promise<void> {
    await this.beforeDelete?.(key)
    await super.delete(key)
  }

  keys (prefix: string): string[] {
    return [...this.map.keys()].filter(k => k.startsWith(prefix)).sort()
  }
}

export interface LogLine { level: string, msg: string, fields: Record<string, unknown> }

export class RecordingLogger implements Logger {
  readonly lines: LogLine[]
  readonly #fields: Record<string, unknown>

  constructor (lines: LogLine[] = [], fields: Record<string, unknown> = {}) {
    this.lines = lines
    this.#fields = fields
  }

  debug (msg: string, fields?: Record<string, unknown>): void { this.#add('debug', msg, fields) }
  info (msg: string, fields?: Record<string, unknown>): void { this.#add('info', msg, fields) }
  warn (msg: string, fields?: Record<string, unknown>): void { this.#add('warn', msg, fields) }
  error (msg: string, fields?: Record<string, unknown>): void { this.#add('error', msg, fields) }
  child (fields: Record<string, unknown>): Logger { return new RecordingLogger(this.lines, { ...this.#fields, ...fields }) }

  #add (level: string, msg: string, fields: Record<string, unknown> = {}): void {
    this.lines.push({ level, msg, fields: { ...this.#fields, ...fields } })
  }

  at (level: string): LogLine[] {
    return this.lines.filter(l => l.level === level)
  }
}

const enc = new TextEncoder()

export function message (n: number | string, over: Partial<OfflineMessage> = {}): OfflineMessage {
  return {
    id: `m-${n}`,
    from: `"Bob" <sip:bob@example.com>;tag=t${n}`,
    to: '<sip:alice@example.com>',
    date: 'Sat, 21 Nov 2026 10:00:00 GMT',
    contentType: 'text/plain',
    body: enc.encode(`hello ${n}`),
    headers: [['P-Asserted-Identity', '<sip:bob@example.com>']],
    ...over
  }
}

export function text (body: Uint8Array): string {
  return new TextDecoder().decode(body)
}

/** Let pending promise callbacks run (bounded): real setImmediate, unaffected by mocked intervals. */
export async function settle (rounds = 50): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>(resolve => setImmediate(resolve))
}

export const ALICE = 'sip:alice@example.com'
export const BOB = 'sip:bob@example.com'
