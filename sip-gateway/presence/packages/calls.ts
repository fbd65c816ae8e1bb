/**
 * The INVITE dialogs the proxy core passes for users of this node (its `dialogs` seam), as the
 * dialog package's state: per AoR, one entry per call and side, moved forward only (trying →
 * early → confirmed → terminated). A terminated entry stays `lingerMs` so that the end reaches
 * watchers (also over back-end subscriptions), then goes. At most `maxCalls` entries: the oldest
 * go first (a call whose BYE this node never saw must not stay forever).
 *
 * Relayed calls: when the user moves to another node mid-call, the call's signalling still
 * crosses the nodes in its route set, not the new owner. The node that proxied it hands its
 * entries over and keeps relaying their changes (calls-exchange.ts); the owner keeps them per
 * relaying node (`relay`, each push replacing that node's set for the user) and shows them with
 * its own (`of`; its own entry wins for one id). A relayed terminated entry lingers like an own
 * one; a live one goes after `relayTtlMs` without a push (its relaying node died).
 */
import { createHash } from 'node:crypto'
import type { Aor } from '../../ports.ts'
import type { ProxiedDialogEvent } from '../../proxy/core.ts'
import type { DialogEntry, DialogState } from '../dialog-info.ts'

const ORDER: Record<DialogState, number> = { trying: 0, proceeding: 1, early: 2, confirmed: 3, terminated: 4 }

interface Call { aor: Aor, entry: DialogEntry, timer?: ReturnType<typeof setTimeout> }

export interface ProxiedCallsInit {
  /** how long an ended call is still shown, ms. @default 3000 */
  lingerMs?: number
  /** most calls tracked. @default 10000 */
  maxCalls?: number
  /** longest a relayed live call is shown without news from its relaying node, ms @default 21600000 (6 h) */
  relayTtlMs?: number
}

/** most relayed entries kept for one user from one node */
export const MAX_RELAYED_PER_USER = 64

interface Relayed { entries: DialogEntry[], timer?: ReturnType<typeof setTimeout> }

export class ProxiedCalls {
  readonly #linger: number
  readonly #max: number
  readonly #changed: (aor: Aor) => void
  /** `${callId}\n${direction}\n${aor}` → call, in insertion order */
  readonly #calls = new Map<string, Call>()
  readonly #byAor = new Map<Aor, Set<Call>>()
  readonly #byCallId = new Map<string, Set<string>>()
  readonly #relayTtl: number
  /** user → relaying node → its entries */
  readonly #relayed = new Map<Aor, Map<string, Relayed>>()
  #relayedCount = 0
  readonly #ownListeners = new Set<(aor: Aor) => void>()

  constructor (changed: (aor: Aor) => void, init: ProxiedCallsInit = {}) {
    this.#changed = changed
    this.#linger = init.lingerMs ?? 3000
    this.#max = init.maxCalls ?? 10_000
    this.#relayTtl = init.relayTtlMs ?? 6 * 3_600_000
  }

  get size (): number { return this.#calls.size + this.#relayedCount }

  /** the calls of a user: this node's, and those other nodes relay (ours win for one id) */
  of (aor: Aor): DialogEntry[] {
    const own = this.own(aor)
    const relayed = this.#relayed.get(aor)
    if (relayed === undefined) return own
    const ids = new Set(own.map(e => e.id))
    const out = [...own]
    for (const r of relayed.values()) for (const e of r.entries) if (!ids.has(e.id)) { ids.add(e.id); out.push(e) }
    return out
  }

  /** the calls of a user this node proxied itself */
  own (aor: Aor): DialogEntry[] {
    return [...(this.#byAor.get(aor) ?? [])].map(c => c.entry)
  }

  /** the calls of a user other nodes relay here, by relaying node */
  relayedBy (aor: Aor): Array<[string, DialogEntry[]]> {
    return [...(this.#relayed.get(aor) ?? [])].map(([node, r]) => [node, r.entries])
  }

  /** be told when this node's own calls of a user change (calls-exchange.ts relays them) */
  onOwnChange (listener: (aor: Aor) => void): () => void {
    this.#ownListeners.add(listener)
    return () => { this.#ownListeners.delete(listener) }
  }

  /**
   * `node` relays its calls of `aor` (all of them: they replace what it relayed before; none: it
   * has none left). Terminated entries linger `lingerMs`; the set goes after `relayTtlMs`.
   */
  relay (aor: Aor, node: string, entries: readonly DialogEntry[]): void {
    let byNode = this.#relayed.get(aor)
    const old = byNode?.get(node)
    if (old !== undefined) { clearTimeout(old.timer); this.#relayedCount -= old.entries.length }
    const kept = entries.slice(0, MAX_RELAYED_PER_USER).map(e => ({ ...e }))
    if (kept.length === 0 || this.#relayedCount + kept.length > this.#max) {
      byNode?.delete(node)
      if (byNode?.size === 0) this.#relayed.delete(aor)
      if (old !== undefined) this.#changed(aor)
      return
    }
    if (byNode === undefined) this.#relayed.set(aor, byNode = new Map())
    const r: Relayed = { entries: kept }
    byNode.set(node, r)
    this.#relayedCount += kept.length
    const live = kept.some(e => e.state !== 'terminated')
    r.timer = setTimeout(() => { if (byNode.get(node) === r) this.relay(aor, node, []) }, live ? this.#relayTtl : this.#linger)
    r.timer.unref?.()
    this.#changed(aor)
  }

  observe (e: ProxiedDialogEvent): void {
    if (e.kind === 'ended') {
      for (const key of [...(this.#byCallId.get(e.callId) ?? [])]) {
        const call = this.#calls.get(key)
        if (call !== undefined) this.#move(key, call, 'terminated')
      }
      return
    }
    const key = `${e.callId}\n${e.direction}\n${e.aor}`
    let call = this.#calls.get(key)
    if (call === undefined) {
      if (e.state === 'terminated' && e.code === undefined) return
      while (this.#calls.size >= this.#max) {
        const oldest = this.#calls.keys().next().value
        if (oldest === undefined) break
        this.#remove(oldest)
      }
      const id = createHash('sha256').update(key).digest('base64url').slice(0, 16)
      call = { aor: e.aor, entry: { id, callId: e.callId, direction: e.direction, state: 'trying', remote: { identity: e.remote } } }
      this.#calls.set(key, call)
      let set = this.#byAor.get(e.aor)
      if (set === undefined) { set = new Set(); this.#byAor.set(e.aor, set) }
      set.add(call)
      let keys = this.#byCallId.get(e.callId)
      if (keys === undefined) { keys = new Set(); this.#byCallId.set(e.callId, keys) }
      keys.add(key)
    }
    this.#move(key, call, e.state, e.code)
  }

  #move (key: string, call: Call, state: DialogState, code?: number): void {
    const entry = call.entry
    if (ORDER[state] < ORDER[entry.state] || (state === entry.state && state !== 'trying')) return
    entry.state = state
    if (state === 'terminated') {
      if (code !== undefined && code >= 300) {
        entry.code = code
        entry.event = code === 487 ? 'cancelled' : 'rejected'
      }
      call.timer = setTimeout(() => { this.#remove(key) }, this.#linger)
      call.timer.unref?.()
    }
    this.#changed(call.aor)
    this.#ownChanged(call.aor)
  }

  #ownChanged (aor: Aor): void {
    for (const l of this.#ownListeners) l(aor)
  }

  #remove (key: string): void {
    const call = this.#calls.get(key)
    if (call === undefined) return
    clearTimeout(call.timer)
    this.#calls.delete(key)
    const set = this.#byAor.get(call.aor)
    set?.delete(call)
    if (set?.size === 0) this.#byAor.delete(call.aor)
    const callId = call.entry.callId ?? ''
    const keys = this.#byCallId.get(callId)
    keys?.delete(key)
    if (keys?.size === 0) this.#byCallId.delete(callId)
    this.#changed(call.aor)
    this.#ownChanged(call.aor)
  }

  stop (): void {
    for (const c of this.#calls.values()) clearTimeout(c.timer)
    this.#calls.clear()
    this.#byAor.clear()
    this.#byCallId.clear()
    for (const byNode of this.#relayed.values()) for (const r of byNode.values()) clearTimeout(r.timer)
    this.#relayed.clear()
    this.#relayedCount = 0
  }
}
