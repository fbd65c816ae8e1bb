/**
 * Small named errors of the claim registry, matched by `err.name`.
 */

/** A claim record failed validation (signature, size, expiry, key, fields); `message` says why. */
export class InvalidClaimError extends Error {
  static readonly code = 'InvalidClaimError'
  constructor (message: string) {
    super(message)
    this.name = 'InvalidClaimError'
  }
}

/**
 * A claim that was valid but has expired: routine (a node that went away without releasing), so
 * logged quietly, unlike the other refusals. Still an InvalidClaimError by name.
 */
export class ExpiredClaimError extends InvalidClaimError {
  constructor (message = 'claim expired') {
    super(message)
  }
}

/** The datastore guard refused to overwrite a stored claim with an older one. */
export class StaleClaimError extends Error {
  constructor (message = 'refusing to replace a newer stored claim with an older one') {
    super(message)
    this.name = 'StaleClaimError'
  }
}

/** An AoR that is not of the form `sip:user@domain`. */
export class InvalidAorError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InvalidAorError'
  }
}

/** The registry was used before `start()` or after `stop()`. */
export class NotStartedError extends Error {
  constructor (message = 'the registry is not started') {
    super(message)
    this.name = 'NotStartedError'
  }
}

/**
 * A claim-put not sent because its peer's queue is full or the peer is silent (put-protocol.ts):
 * routine while a replica is frozen, repaired later by the owner's lease renewal.
 */
export class PutDroppedError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'PutDroppedError'
  }
}

/** The message of anything thrown. */
export function errorMessage (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** The name of anything thrown (`err.name`), or '' */
export function errorName (err: unknown): string {
  return err instanceof Error ? err.name : ''
}
