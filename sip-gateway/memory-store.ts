/** A `DurableStore` in a Map, for tests (node/ plugs LevelDB). Values are copied in and out. */
import type { DurableStore } from './ports.ts'

export class MemoryStore implements DurableStore {
  readonly map = new Map<string, Uint8Array>()

  async get (key: string): Promise<Uint8Array | undefined> {
    const v = this.map.get(key)
    return v === undefined ? undefined : v.slice()
  }

  async put (key: string, value: Uint8Array): Promise<void> {
    this.map.set(key, value.slice())
  }

  async delete (key: string): Promise<void> {
    this.map.delete(key)
  }

  async * list (prefix: string): AsyncIterable<[key: string, value: Uint8Array]> {
    const keys = [...this.map.keys()].filter(k => k.startsWith(prefix)).sort()
    for (const k of keys) {
      const v = this.map.get(k)
      if (v !== undefined) yield [k, v.slice()]
    }
  }
}
