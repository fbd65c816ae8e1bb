/**
 * The record kad-dht keeps in the datastore for a DHT key (`@libp2p/record`'s `Record` protobuf:
 * key = 1, value = 2, timeReceived = 5 as an RFC 3339 string with nanoseconds), written for a
 * batch of claims at a time.
 *
 * `Libp2pRecord.serialize()` formats the date into a string for every record and encodes through
 * protons' writer (a list of operations, then a copy into the result): ~3.5 KB allocated per
 * record, and a new claim is stored three times on a 3-node mesh (the owner and two replicas).
 * Here the time is formatted once per batch and each record is one allocation. The bytes are
 * those of `Libp2pRecord.serialize()` (the tests compare them), which reads them back.
 */

/** The `timeReceived` of records stored at `ms`, as the UTF-8 bytes `Libp2pRecord` writes. */
export function recordTime (ms: number): Uint8Array {
  // toISOString has milliseconds; the record format has nanoseconds (same instant)
  return Buffer.from(new Date(ms).toISOString().slice(0, -1) + '000000Z', 'latin1')
}

function varintLength (n: number): number {
  let len = 1
  while (n >= 0x80) {
    n >>>= 7
    len++
  }
  return len
}

function writeField (out: Uint8Array, at: number, tag: number, bytes: Uint8Array): number {
  out[at++] = tag
  let n = bytes.byteLength
  while (n >= 0x80) {
    out[at++] = (n & 0x7f) | 0x80
    n >>>= 7
  }
  out[at++] = n
  out.set(bytes, at)
  return at + bytes.byteLength
}

/** a field's encoded length; protobuf leaves out empty bytes fields, as protons does */
function fieldLength (bytes: Uint8Array): number {
  return bytes.byteLength === 0 ? 0 : 1 + varintLength(bytes.byteLength) + bytes.byteLength
}

/** The serialized record of `value` under the DHT key `key`, received at `time` (`recordTime`). */
export function storedRecord (key: Uint8Array, value: Uint8Array, time: Uint8Array): Uint8Array {
  const out = new Uint8Array(fieldLength(key) + fieldLength(value) + fieldLength(time))
  let at = 0
  if (key.byteLength > 0) at = writeField(out, at, 0x0a, key)
  if (value.byteLength > 0) at = writeField(out, at, 0x12, value)
  if (time.byteLength > 0) writeField(out, at, 0x2a, time)
  return out
}
