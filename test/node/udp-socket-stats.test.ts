// The kernel's figures for the SIP UDP socket (node/udp-socket-stats.ts): the address column as
// /proc/net/udp{,6} prints it, the table's parsing (malformed and hostile lines skipped), and a
// real socket flooded while this process is blocked: the drops and the queue show.
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createSocket } from 'node:dgram'
import { existsSync } from 'node:fs'
import { parseUdpTable, procAddress, udpSocketStats } from '../../node/udp-socket-stats.ts'
import { floodWhileBlocked } from './fixtures/udp-flood.ts'

const HEADER = '   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            '
const line = (sl: number, local: string, queues: string, drops: string): string =>
  ` ${sl}: ${local} 00000000:0000 07 ${queues} 00:00000000 00000000     0        0 2007496 2 0000000026ee04e6 ${drops}`

describe('UDP socket figures from /proc/net/udp', () => {
  test('the address column: each 32-bit word in host byte order, the port in hex', () => {
    assert.equal(procAddress('127.0.0.1', 5060, true), '0100007F:13C4')
    assert.equal(procAddress('127.0.0.1', 5060, false), '7F000001:13C4')
    assert.equal(procAddress('0.0.0.0', 1, true), '00000000:0001')
    assert.equal(procAddress('::1', 5060, true), '00000000000000000000000001000000:13C4')
    assert.equal(procAddress('::1', 5060, false), '00000000000000000000000000000001:13C4')
    assert.equal(procAddress('::', 65535, true), '00000000000000000000000000000000:FFFF')
    assert.equal(procAddress('::ffff:127.0.0.1', 80, true), '0000000000000000FFFF00000100007F:0050')
    assert.equal(procAddress('fe80::1%eth0', 80, false), 'FE800000000000000000000000000001:0050')
  })

  test('hosts and ports that are no socket address give nothing', () => {
    for (const host of ['localhost', '', '1.2.3', '1.2.3.4.5', '::1::2', 'x'.repeat(10_000), '1:2:3:4:5:6:7:8:9']) {
      assert.equal(procAddress(host, 5060), undefined, host.slice(0, 20))
    }
    for (const port of [-1, 65536, 1.5, Number.NaN]) assert.equal(procAddress('127.0.0.1', port), undefined)
  })

  test('the socket is found by its address; rx_queue is hex bytes, drops decimal', () => {
    const table = [HEADER, line(1, '0100007F:1770', '00000000:00000000', '0'), line(2, '0100007F:13C4', '00000000:0001F400', '1234'), ''].join('\n')
    assert.deepEqual(parseUdpTable(table, '0100007F:13C4'), { drops: 1234, rxQueueBytes: 128_000 })
    assert.deepEqual(parseUdpTable(table, '0100007F:1770'), { drops: 0, rxQueueBytes: 0 })
    assert.equal(parseUdpTable(table, '0100007F:0001'), undefined)
  })

  test('malformed and hostile tables: skipped lines, never a made-up figure', () => {
    const addr = '0100007F:13C4'
    assert.equal(parseUdpTable('', addr), undefined)
    assert.equal(parseUdpTable('not a table\n' + line(1, addr, '0:0', '1'), addr), undefined, 'no header')
    const bad = [
      ` 1: ${addr} 00000000:0000 07`, // too few columns
      line(2, addr, 'zz:00', '5'), // queues not hex
      line(3, addr, '00000000', '5'), // no rx_queue
      line(4, addr, '0:0', '-1'), // drops negative
      line(5, addr, '0:0', '12abc'), // drops not a number
      line(6, addr, '0:0', '9'.repeat(25)), // drops absurd
      line(7, addr, '0:' + 'F'.repeat(17), '1'), // rx_queue too long
      'x'.repeat(1_000_000) // one huge line
    ]
    assert.equal(parseUdpTable([HEADER, ...bad].join('\n'), addr), undefined)
    // a good line after the bad ones is still found
    assert.deepEqual(parseUdpTable([HEADER, ...bad, line(8, addr, '0:10', '7')].join('\n'), addr), { drops: 7, rxQueueBytes: 16 })
  })

  test('an unreadable table gives nothing', () => {
    assert.equal(udpSocketStats('127.0.0.1', 5060, () => { throw new Error('EACCES') }), undefined)
    assert.equal(udpSocketStats('localhost', 5060, () => HEADER), undefined)
  })

  test('a real socket flooded while this process is blocked: its drops and queue are read', { skip: existsSync('/proc/net/udp') ? false : 'no /proc/net/udp (not Linux)' }, async () => {
    const socket = createSocket({ type: 'udp4', recvBufferSize: 64 * 1024 })
    await new Promise<void>(resolve => { socket.bind(0, '127.0.0.1', resolve) })
    let received = 0
    socket.on('message', () => { received++ })
    try {
      const { port } = socket.address()
      assert.deepEqual(udpSocketStats('127.0.0.1', port), { drops: 0, rxQueueBytes: 0 })
      floodWhileBlocked('127.0.0.1', port, 20_000)
      const full = udpSocketStats('127.0.0.1', port)
      assert.ok(full !== undefined)
      assert.ok(full.drops > 0, `drops ${full.drops}`)
      assert.ok(full.rxQueueBytes > 0, 'datagrams wait in the buffer')
      // once the loop runs again the queue is read; the drops stay counted
      const deadline = Date.now() + 10_000
      while (Date.now() < deadline && (udpSocketStats('127.0.0.1', port)?.rxQueueBytes ?? 1) > 0) await new Promise(resolve => setTimeout(resolve, 20))
      const after = udpSocketStats('127.0.0.1', port)
      assert.deepEqual(after, { drops: full.drops, rxQueueBytes: 0 })
      assert.equal(received + full.drops, 20_000, 'every datagram was either read or counted as dropped')
    } finally {
      socket.close()
    }
  })
})
