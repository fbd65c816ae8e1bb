/**
 * What the kernel knows of the SIP UDP socket and the node does not: datagrams it dropped because
 * the socket's receive buffer was full, and the bytes waiting in that buffer now.
 *
 * A node past its capacity sheds REGISTERs with 503 (registrar/overload.ts), but only those it
 * reads; when the event loop falls behind, datagrams wait in the socket's receive buffer and,
 * once it is full, the kernel drops them without a trace in the node's own counters, and user
 * agents retransmit into the same full buffer. An operator needs that figure to tell "the node
 * answered 503" from "the node never saw it".
 *
 * Linux only: `/proc/net/udp` and `/proc/net/udp6` list every UDP socket of the network namespace
 * with its local address, `rx_queue` (hex bytes) and `drops` (decimal). Elsewhere, or when the
 * socket is not listed, the figures are absent (undefined), never made up. Hand-written: no
 * maintained npm package reads these counters, and the format is a dozen whitespace-separated
 * columns.
 */
import { readFileSync } from 'node:fs'
import { isIPv4, isIPv6 } from 'node:net'
import { endianness } from 'node:os'

export interface UdpSocketStats {
  /** datagrams the kernel dropped on this socket (receive buffer full, or a bad checksum) */
  drops: number
  /** bytes waiting in the socket's receive buffer */
  rxQueueBytes: number
}

/** more than any real table holds (a line is ~130 bytes): a longer read is cut, not trusted whole */
const MAX_TABLE_BYTES = 16 * 1024 * 1024

/**
 * The kernel's address column for `host` as `/proc/net/udp{,6}` prints it: each 32-bit word of
 * the address in the host's byte order, as 8 hex digits, then `:` and the port as 4 hex digits.
 * Undefined for a host that is not an IP address.
 */
export function procAddress (host: string, port: number, littleEndian = endianness() === 'LE'): string | undefined {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) return undefined
  let bytes: number[]
  if (isIPv4(host)) {
    bytes = host.split('.').map(Number)
  } else if (isIPv6(host)) {
    const expanded = expandIPv6(host)
    if (expanded === undefined) return undefined
    bytes = expanded
  } else {
    return undefined
  }
  let hex = ''
  for (let w = 0; w < bytes.length; w += 4) {
    const word = bytes.slice(w, w + 4)
    if (littleEndian) word.reverse()
    for (const b of word) hex += b.toString(16).padStart(2, '0')
  }
  return `${hex.toUpperCase()}:${port.toString(16).toUpperCase().padStart(4, '0')}`
}

/** the 16 bytes of an IPv6 address (with an embedded IPv4 tail too) */
function expandIPv6 (host: string): number[] | undefined {
  let h = host
  const zone = h.indexOf('%')
  if (zone !== -1) h = h.slice(0, zone)
  let tail: number[] = []
  const lastColon = h.lastIndexOf(':')
  if (isIPv4(h.slice(lastColon + 1))) {
    tail = h.slice(lastColon + 1).split('.').map(Number)
    h = h.slice(0, lastColon + 1) + '0:0'
  }
  const [head, rest] = h.split('::') as [string, string | undefined]
  const groups = (s: string): string[] => s === '' ? [] : s.split(':')
  const a = groups(head)
  const b = rest === undefined ? [] : groups(rest)
  const fill = 8 - a.length - b.length
  if (fill < 0 || (rest === undefined && fill !== 0)) return undefined
  const all = [...a, ...Array<string>(fill).fill('0'), ...b]
  const bytes: number[] = []
  for (const g of all) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined
    const v = parseInt(g, 16)
    bytes.push(v >> 8, v & 0xff)
  }
  if (tail.length === 4) bytes.splice(12, 4, ...tail)
  return bytes
}

/**
 * Find the socket bound to `address` (as `procAddress` gives it) in the text of a
 * `/proc/net/udp{,6}` table. Lines that do not have the table's form are skipped.
 */
export function parseUdpTable (text: string, address: string): UdpSocketStats | undefined {
  const lines = text.split('\n')
  // the header names the columns; `drops` is the last one on every kernel since 2.6.27
  const header = lines[0]?.trim().split(/\s+/) ?? []
  if (header[1] !== 'local_address') return undefined
  for (let i = 1; i < lines.length; i++) {
    const cols = lines[i].trim().split(/\s+/)
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
    if (cols.length < 13 || cols[1] !== address) continue
    const queues = /^([0-9A-Fa-f]{1,16}):([0-9A-Fa-f]{1,16})$/.exec(cols[4])
    const drops = /^\d{1,20}$/.test(cols[cols.length - 1]) ? Number(cols[cols.length - 1]) : NaN
    if (queues === null || !Number.isSafeInteger(drops)) continue
    const rx = parseInt(queues[2], 16)
    if (!Number.isSafeInteger(rx)) continue
    return { drops, rxQueueBytes: rx }
  }
  return undefined
}

/**
 * The kernel's figures for the UDP socket bound to `host:port` in this network namespace, or
 * undefined where they cannot be read (not Linux, not listed, not an IP address).
 */
export function udpSocketStats (host: string, port: number, read: (path: string) => string = readTable): UdpSocketStats | undefined {
  const address = procAddress(host, port)
  if (address === undefined) return undefined
  const path = isIPv4(host) ? '/proc/net/udp' : '/proc/net/udp6'
  let text: string
  try {
    text = read(path)
  } catch {
    return undefined
  }
  return parseUdpTable(text.length > MAX_TABLE_BYTES ? text.slice(0, MAX_TABLE_BYTES) : text, address)
}

function readTable (path: string): string {
  return readFileSync(path, 'latin1')
}
