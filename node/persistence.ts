/**
 * What a node keeps in its data directory:
 *
 *   <data-dir>/peer.key   the libp2p Ed25519 private key (protobuf), created on first run, mode 0600
 *   <data-dir>/datastore  LevelDB: kad-dht records and the peer store (libp2p), and the gateway's
 *                         durable entries under their own key prefix (`/sipmesh/store/`)
 *
 * so a restarted node has the same peer id, its stored records and its gateway state.
 */
import { mkdir, readFile, rename, writeFile, chmod } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { LevelDatastore } from 'datastore-level'
import { Key } from 'interface-datastore'
import { fromString as hexToBytes, toString as bytesToHex } from 'uint8arrays'
import type { PrivateKey } from '@libp2p/interface'
import type { Datastore } from 'interface-datastore'
import type { DurableStore } from '../sip-gateway/ports.ts'

export const KEY_FILE = 'peer.key'
export const DATASTORE_DIR = 'datastore'

export class IdentityError extends Error {
  static readonly NAME = 'IdentityError'
  override readonly name = IdentityError.NAME
}

/** Read the node's private key from the data dir, or generate and store an Ed25519 key. */
export async function loadOrCreateIdentity (dataDir: string): Promise<{ privateKey: PrivateKey, created: boolean }> {
  await mkdir(dataDir, { recursive: true })
  const path = join(dataDir, KEY_FILE)
  let bytes: Uint8Array | undefined
  try {
    bytes = await readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new IdentityError(`cannot read the node key ${path}: ${(err as Error).message}`)
    }
  }
  if (bytes != null) {
    try {
      return { privateKey: privateKeyFromProtobuf(bytes), created: false }
    } catch (err) {
      // never replace a damaged identity silently: the operator decides
      throw new IdentityError(`the node key ${path} is damaged (${(err as Error).message}); move it away to start with a new identity`)
    }
  }
  const privateKey = await generateKeyPair('Ed25519')
  const tmp = `${path}.${process.pid}.tmp`
  await writeFile(tmp, privateKeyToProtobuf(privateKey), { mode: 0o600 })
  await chmod(tmp, 0o600)
  await rename(tmp, path)
  return { privateKey, created: true }
}

/** Open (creating when missing) the LevelDB datastore of a data dir. */
export async function openDatastore (dataDir: string): Promise<LevelDatastore> {
  const path = join(dataDir, DATASTORE_DIR)
  await mkdir(path, { recursive: true })
  const store = new LevelDatastore(path)
  try {
    await store.open()
  } catch (err) {
    const cause = (err as { cause?: Error }).cause
    const detail = cause != null ? `${(err as Error).message}: ${cause.message}` : (err as Error).message
    throw new IdentityError(`cannot open the datastore ${path} (is another node using this data dir?): ${detail}`)
  }
  return store
}

const STORE_PREFIX = '/sipmesh/store/'

/** LevelDB hands out Buffers; the store's users get plain Uint8Arrays (a view, no copy). */
function plain (value: Uint8Array): Uint8Array {
  return Object.getPrototypeOf(value) === Uint8Array.prototype ? value : new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
}

/**
 * The gateway's `DurableStore` over a libp2p datastore, under its own key prefix. Keys are stored
 * hex-encoded so any string is a valid key and the byte order of keys (LevelDB's order) is the
 * order of the original keys; a key prefix is a hex prefix.
 */
export class DatastoreDurableStore implements DurableStore {
  private readonly datastore: Datastore

  constructor (datastore: Datastore) {
    this.datastore = datastore
  }

  private key (key: string): Key {
    return new Key(STORE_PREFIX + bytesToHex(new TextEncoder().encode(key), 'base16'), false)
  }

  async get (key: string): Promise<Uint8Array | undefined> {
    try {
      return plain(await this.datastore.get(this.key(key)))
    } catch (err) {
      if ((err as Error).name === 'NotFoundError') return undefined
      throw err
    }
  }

  async put (key: string, value: Uint8Array): Promise<void> {
    await this.datastore.put(this.key(key), value)
  }

  async delete (key: string): Promise<void> {
    await this.datastore.delete(this.key(key))
  }

  async * list (prefix: string): AsyncIterable<[key: string, value: Uint8Array]> {
    const hexPrefix = STORE_PREFIX + bytesToHex(new TextEncoder().encode(prefix), 'base16')
    const decoder = new TextDecoder()
    for await (const { key, value } of this.datastore.query({ prefix: hexPrefix })) {
      const k = key.toString()
      if (!k.startsWith(hexPrefix)) continue
      yield [decoder.decode(hexToBytes(k.slice(STORE_PREFIX.length), 'base16')), plain(value)]
    }
  }
}
