/**
 * The INVITE dialogs the proxy core passes for users of this node (its `dialogs` seam), as the
 * dialog package's state: per AoR, one entry per call and side, moved forward only (trying →
 * early → confirmed → terminated). A terminated entry stays `lingerMs` so that the end reaches
 * watchers (also over back-end subscriptions), then goes. At most `maxCalls` entries: the oldest
 * go first (a call whose BYE this node never saw must not stay forever).
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
}

export class ProxiedCalls {
  readonly #linger: number
  readonly #max: number
  readonly #changed: (aor: Aor) => void
  /** `${callId}\n${direction}\n${aor}` → call, in insertion order */
  readonly #calls = new Map<string, Call>()
  readonly #byAor = new Map<Aor, Set<Call>>()
  readonly #byCallId = new Map<string, Set<string>>()

  constructor (changed: (aor: Aor) => void, init: ProxiedCallsInit = {}) {
    this.#changed = changed
    this.#linger = init.lingerMs ?? 3000
    this.#max = init.maxCalls ?? 10_000
  }

  get size (): number { return this.#calls.size }

  /** the calls of a user */
  of (aor: Aor): DialogEntry[] {
    return [...(this.#byAor.get(aor) ?? [])].map(c => c.entry)
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
  }

  stop (): void {
    for (const c of this.#calls.values()) clearTimeout(c.timer)
    this.#calls.clear()
    this.#byAor.clear()
    this.#byCallId.clear()
  }
}
