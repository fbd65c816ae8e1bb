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
 * - The user registered on another node: `offline.take(aor, handOver)` where `handOver` ships
 *   `encodeRecords(batch)` over the mesh and resolves once the peer's `import()` resolved.
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
