/**
 * Offline messages (issue 5 item 1): the durable per-user store of MESSAGE requests for users who
 * are known but not registered, and the registry of who is known.
 */
export { OfflineStore, DAY_MS } from './store.ts'
export type {
  OfflineStoreInit, OfflineStoreComponents, StoreResult, ImportResult, DeliverResult, SweepResult,
  OfflineStats, SendFn, HandOverFn, Timers
} from './store.ts'
export { KnownUsers, KNOWN_PREFIX } from './known-users.ts'
export type { KnownUsersInit, KnownUsersComponents } from './known-users.ts'
export { messageIdOf, encodeRecords, decodeRecords, isAor } from './record.ts'
export type { OfflineMessage, OfflineRecord } from './record.ts'
export { OfflineQuotaError, OfflineMessageTooLargeError, InvalidOfflineMessageError, OfflineStoreStoppedError, QuotaScope } from './errors.ts'
