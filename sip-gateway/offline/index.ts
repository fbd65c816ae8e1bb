/**
 * Offline messages (issue 5 item 1): the durable per-user store of MESSAGE requests for users who
 * are known but not registered, and the registry of who is known.
 *
 * How the gateway uses it (wired in by `sip-gateway/im/offline-im.ts`):
 * - MESSAGE for an AoR with no live registration: `knownUsers.isKnown(aor)` false → 404; true →
 *   `await offline.store(aor, { id: messageIdOf(callId, cseq, fromTag), from, to, date, ... })`
 *   then 202 Accepted (also when `stored` is false: a retransmission already kept). A thrown
 *   SipStatusError (480 with Retry-After, 513, 400, 503) is the answer instead.
 * - A MESSAGE that timed out (408) at the device's contact: store it the same way.
 * - REGISTER accepted: `knownUsers.markRegistered(aor)`, then `offline.deliverBacklog(aor, send)`
 *   where `send` relays one MESSAGE (original From, To, Date, body, kept headers) and resolves
 *   with the final response: a 2xx removes it, a transient failure keeps it and the rest for a
 *   later run, a permanent refusal of that message (delivery.ts) drops it and goes on.
 * - The user registered on another node: the same `deliverBacklog(aor, send)`, where `send`
 *   relays each stored MESSAGE as SIP over the PeerChannel to that node (`Sipmesh-Message-Id`
 *   carries its id), which delivers it to her devices like any MESSAGE from the mesh, or stores
 *   it there in turn (202) when a device times out. The backlog stays on the node that stored it
 *   until each message is answered; nothing is handed over in bulk.
 *
 * `take()` / `drain()` / `import()` with `encodeRecords` / `decodeRecords` (a whole backlog
 * handed to another node as records, deduped by id on the receiving side) are the store's API
 * for moving backlogs between nodes, e.g. a node that leaves the mesh for good; the gateway does
 * not call them today.
 */
export { OfflineStore, DAY_MS } from './store.ts'
export type {
  OfflineStoreInit, OfflineStoreComponents, StoreResult, ImportResult, DeliverResult, SweepResult,
  OfflineStats, SendFn, SendAnswer, HandOverFn, Timers
} from './store.ts'
export { Delivery, deliveryOf, decidingResponse } from './delivery.ts'
export { KnownUsers, KNOWN_PREFIX } from './known-users.ts'
export type { KnownUsersInit, KnownUsersComponents } from './known-users.ts'
export { messageIdOf, encodeRecords, decodeRecords, isAor } from './record.ts'
export type { OfflineMessage, OfflineRecord } from './record.ts'
export { OfflineQuotaError, OfflineMessageTooLargeError, InvalidOfflineMessageError, OfflineStoreStoppedError, QuotaScope } from './errors.ts'
