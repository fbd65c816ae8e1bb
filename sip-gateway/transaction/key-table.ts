/**
 * A table of values by string key for a hot path where entries come and go all the time (a live
 * transaction per request, gone a few milliseconds later): what a `Map` would do, without what a
 * churning `Map` costs the young generation in V8.
 *
 * Why not a `Map`: V8 (12.4, Node 22) grows, compacts and shrinks a `Map`'s hash table by making a
 * new one and leaving the old one behind with a link to the new one and its entries as they were.
 * Once one of those tables is in the old generation (every full GC moves the live one there),
 * the scavenger takes what it points to as alive until the next full GC finds it dead: the next
 * table, that one's entries, the table after it, … every value put in the map since. A table of
 * live transactions that churns (set and delete per request) so keeps every request's whole graph
 * (the parsed message, its clone, the transaction, the branch) alive through scavenges and
 * promotes it, which makes scavenges long and fills the old generation. Measured: a sliding
 * window of 16 live entries, each a small object graph, 100,000 times after a full GC: 4.3 KB per
 * entry survived scavenges through a `Map`, ~90 B through this table (its test); the relays in
 * `bench-relay-path.ts` at 16 requests in flight: see the commit that brought this.
 *
 * Here the values sit in an object without a prototype used as a dictionary (V8's dictionary
 * mode, whose old backing store is let go when it grows or shrinks), and the count beside it.
 */
export class KeyTable<V> {
  #entries: Record<string, V> = Object.create(null) as Record<string, V>
  #size = 0

  get size (): number { return this.#size }

  // An empty table answers without the lookup: a key read from a message is a fresh string, and a
  // dictionary lookup first finds (or makes) its internalized copy in V8's string table, a cost
  // paid on every REGISTER answered at once (its server transaction never waits in the table).
  get (key: string): V | undefined { return this.#size === 0 ? undefined : this.#entries[key] }

  has (key: string): boolean { return this.#size !== 0 && this.#entries[key] !== undefined }

  /** `value` must not be undefined (undefined reads as absent) */
  set (key: string, value: V): void {
    if (this.#entries[key] === undefined) this.#size++
    this.#entries[key] = value
  }

  delete (key: string): boolean {
    if (this.#entries[key] === undefined) return false
    delete this.#entries[key]
    this.#size--
    return true
  }

  values (): V[] {
    return Object.values(this.#entries)
  }

  clear (): void {
    this.#entries = Object.create(null) as Record<string, V>
    this.#size = 0
  }
}
