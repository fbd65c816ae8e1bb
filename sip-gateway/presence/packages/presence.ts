/**
 * The `presence` event package (RFC 3856): PIDF documents (RFC 3863) composed from the
 * presentity's publications (RFC 3903), else from its registration state; the neutral document
 * for watchers who may not see it (polite-block, pending, held); the authorization rules decide.
 */
import { Buffer } from 'node:buffer'
import type { Aor, Logger } from '../../ports.ts'
import { PIDF_CONTENT_TYPE, buildPidf, parsePidf, type PidfDocument } from '../pidf.ts'
import { presUriFor, presentityDocument } from '../compose.ts'
import { PublicationStore, type PublicationStoreInit, type PublishResult } from '../publications.ts'
import { neutralPresence, type PresenceAuthorization, type Decision } from '../authorization.ts'
import { ChangeListeners, acceptsType, dropPublications, type EventPackage, type PublishInput } from '../package.ts'

export interface PresencePackageComponents {
  authorization: PresenceAuthorization
  /** live bindings of an AoR on this node */
  bindings: (aor: Aor) => number
  logger: Logger
}

export class PresencePackage implements EventPackage {
  readonly name = 'presence'
  readonly contentType = PIDF_CONTENT_TYPE
  readonly publications: PublicationStore<PidfDocument>
  readonly #authorization: PresenceAuthorization
  readonly #bindings: (aor: Aor) => number
  readonly #changes = new ChangeListeners()

  constructor (components: PresencePackageComponents, init: { publications?: Omit<PublicationStoreInit, 'logger'> } = {}) {
    this.#authorization = components.authorization
    this.#bindings = components.bindings
    this.publications = new PublicationStore<PidfDocument>({ minExpires: 5, ...init.publications, logger: components.logger })
    this.publications.onChange((c) => { if (c.event === this.name) this.changed(c.presentity) })
  }

  accepts (accept: readonly string[]): boolean { return acceptsType(accept, PIDF_CONTENT_TYPE) }

  decide (aor: Aor, watcher: string): Decision { return this.#authorization.decide(aor, watcher) }

  compose (aor: Aor): Uint8Array {
    const pubs = this.publications.get(aor, this.name).map(x => ({ key: x.key, doc: x.body }))
    return Buffer.from(buildPidf(presentityDocument(presUriFor(aor), pubs, this.#bindings(aor))))
  }

  neutral (aor: Aor): Uint8Array {
    return Buffer.from(buildPidf(neutralPresence(presUriFor(aor))))
  }

  publish (input: PublishInput): PublishResult {
    const body = input.body === undefined || input.body.length === 0 ? undefined : parsePidf(input.body)
    return this.publications.publish({ presentity: input.presentity, event: this.name, ifMatch: input.ifMatch, expires: input.expires, body })
  }

  etags (aor: Aor): string[] { return this.publications.get(aor, this.name).map(p => p.etag) }

  displaced (aor: Aor): void { dropPublications(this.publications, aor, this.name) }

  /** the state of a presentity changed (a publication, its bindings) */
  changed (aor: Aor): void { this.#changes.emit(aor) }

  onChange (listener: (aor: Aor) => void): () => void { return this.#changes.add(listener) }

  stop (): void { this.publications.stop() }
}
