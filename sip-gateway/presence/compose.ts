/**
 * Presence composition: the one document watchers of a presentity see, made from every live
 * publication of that presentity (one per device, RFC 3903), or from registration state alone when
 * nobody has published (SPEC: "Registration state alone yields a basic open/closed status").
 *
 * The policy is a plain union (draft-ietf-simple-intradomain-federation 7.1.3: retain what is not
 * understood, add nothing that overlaps):
 * - tuples of all publications, in publication order; a tuple id already taken by an earlier
 *   publication gets a deterministic suffix (`id-2`, `id-3`, …); an identical tuple published twice
 *   appears once;
 * - presence-level notes merged, duplicates (same text and language) dropped;
 * - presence-level extension elements (RPID person/device, …) unioned the same way; their `id`
 *   attribute shares the document's xs:ID space with tuple ids and is de-duplicated alike.
 *
 * Publication order is the order of their `key`s (for example the creation sequence), not of the
 * array: composing the same set in any order yields the same document (the commutativity the draft's
 * 7.2 asks of composition policies).
 */

import type { PidfDocument, PidfNote, PidfTuple, XmlElement } from './pidf.ts'

export interface ComposeInput {
  /** a stable, unique ordering key for the publication (e.g. a zero-padded creation sequence) */
  key: string
  doc: PidfDocument
}

/**
 * The presence URI for an AoR: `sip:alice@example.com` → `pres:alice@example.com` (RFC 3859).
 * Anything that is not a sip/sips URI is returned unchanged.
 */
export function presUriFor (aor: string): string {
  const m = /^sips?:([^;?]+)/iu.exec(aor)
  return m === null ? aor : `pres:${m[1]}`
}

function canonical (value: unknown): string {
  return JSON.stringify(value, (k, v: unknown) => k === 'prefix' ? undefined : v)
}

function idOf (el: XmlElement): string | undefined {
  return el.attrs.find(a => a.ns === '' && a.name === 'id')?.value
}

/** Compose publications of one presentity into one PIDF document. */
export function composePresence (entity: string, inputs: readonly ComposeInput[]): PidfDocument {
  const ordered = [...inputs].sort((a, b) => a.key < b.key ? -1 : a.key > b.key ? 1 : 0)

  // Every id that appears anywhere is reserved, so a renamed id never takes one a later
  // publication uses as written.
  const reserved = new Set<string>()
  for (const { doc } of ordered) {
    for (const t of doc.tuples) reserved.add(t.id)
    for (const e of doc.extra) {
      const id = idOf(e)
      if (id !== undefined) reserved.add(id)
    }
  }
  const taken = new Set<string>()
  const claim = (id: string): string => {
    if (!taken.has(id)) {
      taken.add(id)
      return id
    }
    let n = 2
    while (taken.has(`${id}-${n}`) || reserved.has(`${id}-${n}`)) n++
    const renamed = `${id}-${n}`
    taken.add(renamed)
    return renamed
  }

  const out: PidfDocument = { entity, tuples: [], notes: [], extra: [] }
  const seenTuples = new Set<string>()
  const seenNotes = new Set<string>()
  const seenExtra = new Set<string>()
  for (const { doc } of ordered) {
    for (const t of doc.tuples) {
      const c = canonical(t)
      if (seenTuples.has(c)) continue
      seenTuples.add(c)
      const tuple: PidfTuple = { ...t, id: claim(t.id) }
      out.tuples.push(tuple)
    }
    for (const n of doc.notes) {
      const c = canonical([n.text, n.lang ?? null])
      if (seenNotes.has(c)) continue
      seenNotes.add(c)
      const note: PidfNote = { ...n }
      out.notes.push(note)
    }
    for (const e of doc.extra) {
      const c = canonical(e)
      if (seenExtra.has(c)) continue
      seenExtra.add(c)
      const id = idOf(e)
      if (id === undefined) {
        out.extra.push(e)
      } else {
        const newId = claim(id)
        out.extra.push(newId === id ? e : { ...e, attrs: e.attrs.map(a => a.ns === '' && a.name === 'id' ? { ...a, value: newId } : a) })
      }
    }
  }
  return out
}

/** The tuple id of the document derived from registration state. */
export const REGISTRATION_TUPLE_ID = 'registration'

/**
 * The document derived from registration state alone, used when nobody has published: one tuple,
 * basic `open` when the user has at least one live binding, `closed` otherwise. Contacts are not
 * exposed (they are device addresses, not presence).
 */
export function registrationPresence (entity: string, liveBindings: number): PidfDocument {
  return {
    entity,
    tuples: [{ id: REGISTRATION_TUPLE_ID, status: { basic: liveBindings > 0 ? 'open' : 'closed', extra: [] }, extra: [], notes: [] }],
    notes: [],
    extra: []
  }
}

/**
 * The document watchers of a presentity see: the composition of its live publications, or the
 * registration-derived document when there are none.
 */
export function presentityDocument (entity: string, publications: readonly ComposeInput[], liveBindings: number): PidfDocument {
  return publications.length > 0 ? composePresence(entity, publications) : registrationPresence(entity, liveBindings)
}
