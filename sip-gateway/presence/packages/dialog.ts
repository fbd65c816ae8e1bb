/**
 * The `dialog` event package (RFC 4235): busy lamps. A presentity's state is the union of the
 * dialogs it PUBLISHed (dialog-info bodies, RFC 3903 as for presence; a later publication's dialog
 * replaces an earlier one with the same id) and of the INVITE dialogs this node proxied for it
 * (calls.ts). The canonical document is full state with version 0; each user agent's NOTIFY is
 * rendered from it (RFC 4235 4.1): the first one full, later ones partial (only the dialogs that
 * changed, a dialog that disappeared as terminated; nothing changed, after a refresh: full), with
 * `version` increasing by one per NOTIFY of that subscription. Who may watch: the presence rules.
 *
 * Partial publications (RFC 4235 4.1's `state="partial"` applied to PUBLISH, as Kamailio's
 * dialoginfo and presence_dialoginfo exchange them): a partial document modifies the publication
 * its SIP-If-Match names (RFC 3903 4.4) and is merged into it by dialog id: a dialog it names
 * replaces the stored one, a dialog it reports `terminated` is removed, the others stay. Its
 * `version` must be exactly one above the stored document's (RFC 4235 4.1: a gap means a document
 * was lost, so the merge would be wrong): otherwise 412, upon which RFC 3903 4.1's publisher
 * publishes its full state afresh. A partial document with no publication to modify (no
 * SIP-If-Match) is refused with 400: there is nothing to merge it into.
 */
import { Buffer } from 'node:buffer'
import type { Aor, Logger } from '../../ports.ts'
import type { ProxiedDialogEvent } from '../../proxy/core.ts'
import { ConditionalRequestFailedError, PublicationStore, type PublicationStoreInit, type PublishResult } from '../publications.ts'
import type { PresenceAuthorization, Decision } from '../authorization.ts'
import { ChangeListeners, acceptsType, dropPublications, versioned, type EventPackage, type PublishInput, type RenderState } from '../package.ts'
import { DIALOG_INFO_CONTENT_TYPE, DialogInfoError, MAX_DIALOGS, buildDialogInfo, dialogXml, parseDialogInfo, type DialogEntry, type DialogInfo } from '../dialog-info.ts'
import { ProxiedCalls, type ProxiedCallsInit } from './calls.ts'

export interface DialogPackageComponents {
  authorization: PresenceAuthorization
  logger: Logger
}

export interface DialogPackageInit {
  publications?: Omit<PublicationStoreInit, 'logger'>
  calls?: ProxiedCallsInit
}

export class DialogPackage implements EventPackage {
  readonly name = 'dialog'
  readonly contentType = DIALOG_INFO_CONTENT_TYPE
  readonly publications: PublicationStore<DialogInfo>
  readonly calls: ProxiedCalls
  readonly #authorization: PresenceAuthorization
  readonly #changes = new ChangeListeners()
  /** canonical documents parsed once, whatever the number of watchers rendering them */
  readonly #parsed = new WeakMap<Uint8Array, DialogInfo>()

  constructor (components: DialogPackageComponents, init: DialogPackageInit = {}) {
    this.#authorization = components.authorization
    this.publications = new PublicationStore<DialogInfo>({ minExpires: 5, ...init.publications, logger: components.logger })
    this.publications.onChange((c) => { if (c.event === this.name) this.#changes.emit(c.presentity) })
    this.calls = new ProxiedCalls(aor => { this.#changes.emit(aor) }, init.calls)
  }

  /** the proxy core's dialog seam */
  observe (event: ProxiedDialogEvent): void { this.calls.observe(event) }

  accepts (accept: readonly string[]): boolean { return acceptsType(accept, DIALOG_INFO_CONTENT_TYPE) }

  decide (aor: Aor, watcher: string): Decision { return this.#authorization.decide(aor, watcher) }

  compose (aor: Aor): Uint8Array {
    const dialogs = new Map<string, DialogEntry>()
    for (const pub of this.publications.get(aor, this.name)) for (const d of pub.body.dialogs) dialogs.set(d.id, d)
    for (const d of this.calls.of(aor)) dialogs.set(d.id, d)
    return Buffer.from(buildDialogInfo({ version: 0, state: 'full', entity: aor, dialogs: [...dialogs.values()] }))
  }

  neutral (aor: Aor): Uint8Array {
    return Buffer.from(buildDialogInfo({ version: 0, state: 'full', entity: aor, dialogs: [] }))
  }

  render (_aor: Aor, canonical: Uint8Array, state: RenderState): Uint8Array {
    let doc = this.#parsed.get(canonical)
    if (doc === undefined) { doc = parseDialogInfo(canonical); this.#parsed.set(canonical, doc) }
    const r = versioned(state, doc.dialogs, d => d.id, dialogXml, (d): DialogEntry | undefined => d.state === 'terminated' ? undefined : { ...d, state: 'terminated' })
    return Buffer.from(buildDialogInfo({ ...doc, version: r.version, state: r.full ? 'full' : 'partial', dialogs: r.items }))
  }

  publish (input: PublishInput): PublishResult {
    const parsed = input.body === undefined || input.body.length === 0 ? undefined : parseDialogInfo(input.body)
    const body = parsed?.state === 'partial' ? this.#merged(input.presentity, input.ifMatch, parsed) : parsed
    return this.publications.publish({ presentity: input.presentity, event: this.name, ifMatch: input.ifMatch, expires: input.expires, body })
  }

  /** a partial document merged into the publication SIP-If-Match names (see the header) */
  #merged (aor: Aor, ifMatch: string | undefined, partial: DialogInfo): DialogInfo {
    if (ifMatch === undefined) throw new DialogInfoError('partial state without a publication to modify (publish full state first)')
    const etag = ifMatch.trim()
    const prior = this.publications.get(aor, this.name).find(p => p.etag === etag)?.body
    // an unknown entity tag: the store answers 412 itself
    if (prior === undefined) return { ...partial, state: 'full' }
    if (partial.version !== prior.version + 1) throw new ConditionalRequestFailedError(etag)
    const dialogs = new Map(prior.dialogs.map(d => [d.id, d]))
    for (const d of partial.dialogs) {
      if (d.state === 'terminated') dialogs.delete(d.id)
      else dialogs.set(d.id, d)
    }
    if (dialogs.size > MAX_DIALOGS) throw new DialogInfoError(`more than ${MAX_DIALOGS} dialogs after the merge`)
    return { version: partial.version, state: 'full', entity: prior.entity, dialogs: [...dialogs.values()] }
  }

  etags (aor: Aor): string[] { return this.publications.get(aor, this.name).map(p => p.etag) }

  displaced (aor: Aor): void { dropPublications(this.publications, aor, this.name) }

  onChange (listener: (aor: Aor) => void): () => void { return this.#changes.add(listener) }

  stop (): void {
    this.publications.stop()
    this.calls.stop()
  }
}
