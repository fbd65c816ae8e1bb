// Retransmission over real UDP sockets that drop chosen datagrams, one socket pair and one pair of
// transaction layers per case so that every loss lands where the case says:
// - timer E: lost MESSAGEs are retransmitted (T1, then 2*T1); the server absorbs the duplicates
//   and re-sends its lost 200 on the next retransmission;
// - timer A: a lost INVITE is retransmitted;
// - timer G: a lost INVITE final response is retransmitted by the server on its own (every
//   INVITE retransmission is dropped, so only timer G can bring it), until the ACK stops it.
// T1 is shortened to 20 ms so each case takes well under a second.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createSocket, type Socket } from 'node:dgram'
import { TransactionLayer, type TransactionCore, type MessageFlow, type ServerTransaction } from '../../../sip-gateway/transaction/layer.ts'
import { parseMessage, serializeMessage, createResponse, SipRequest, Headers, type SipResponse } from '../../../sip-gateway/codec/index.ts'

const sockets: Socket[] = []
after(() => { for (const s of sockets) s.close() })
const timers = { t1: 20, t2: 80, t4: 100 }

async function udp (): Promise<Socket> {
  const s = createSocket('udp4')
  await new Promise<void>(resolve => s.bind(0, '127.0.0.1', () => resolve()))
  sockets.push(s)
  return s
}

interface Sent { what: string, dropped: boolean, at: number }

/** a flow that drops a datagram when `drop(what, n)` says so (`n`: how many of that kind went before) */
function lossyFlow (socket: Socket, port: number, drop: (what: string, n: number) => boolean, log: Sent[]): MessageFlow {
  const counts = new Map<string, number>()
  return {
    reliable: false,
    send (m) {
      const what = m instanceof SipRequest ? m.method : String(m.status)
      const n = counts.get(what) ?? 0
      counts.set(what, n + 1)
      const dropped = drop(what, n)
      log.push({ what, dropped, at: performance.now() })
      if (!dropped) socket.send(serializeMessage(m), port, '127.0.0.1')
    }
  }
}

function request (method: string, port: number): SipRequest {
  const h = new Headers()
  h.append('Via', `SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bK${Math.random().toString(36).slice(2)}`)
  h.append('Max-Forwards', '70')
  h.append('From', '<sip:a@example.com>;tag=1')
  h.append('To', '<sip:b@example.com>')
  h.append('Call-ID', `lossy-${method}-${Math.random().toString(36).slice(2)}`)
  h.append('CSeq', `1 ${method}`)
  h.append('Content-Length', '0')
  return new SipRequest(method, 'sip:b@127.0.0.1', h)
}

/**
 * A client and a server transaction layer on two real UDP sockets; the server's TU answers
 * MESSAGE 200 and INVITE 486. Sends one request and resolves with its final response.
 */
async function exchange (method: string, dropClient: (what: string, n: number) => boolean, dropServer: (what: string, n: number) => boolean): Promise<{
  final: SipResponse | string, clientSent: Sent[], serverSent: Sent[], serverGot: string[], tuSaw: number, server: TransactionLayer<MessageFlow>, close: () => void
  /** taken just before the request was sent / the final response given (before their timers are armed) */
  sentAt: number, respondedAt: number
}> {
  const cs = await udp()
  const ss = await udp()
  const clientSent: Sent[] = []
  const serverSent: Sent[] = []
  const serverGot: string[] = []
  let tuSaw = 0
  let respondedAt = 0
  const serverFlow = lossyFlow(ss, cs.address().port, dropServer, serverSent)
  const clientFlow = lossyFlow(cs, ss.address().port, dropClient, clientSent)
  const serverCore: TransactionCore<MessageFlow> = {
    onRequest (req: SipRequest, tx: ServerTransaction) {
      tuSaw++
      respondedAt = performance.now()
      tx.respond(createResponse(req, req.method === 'INVITE' ? 486 : 200, undefined, undefined, { toTag: 'srv' }))
    },
    onAck () {},
    onCancel () {},
    onStrayResponse () {}
  }
  const server = new TransactionLayer(serverCore, { timers })
  const client = new TransactionLayer<MessageFlow>({ onRequest () {}, onAck () {}, onCancel () {}, onStrayResponse () {} }, { timers })
  ss.on('message', (data) => {
    const m = parseMessage(data)
    if (m instanceof SipRequest) { serverGot.push(m.method); server.receiveRequest(m, serverFlow) }
  })
  cs.on('message', (data) => {
    const m = parseMessage(data)
    if (!(m instanceof SipRequest)) client.receiveResponse(m, clientFlow)
  })
  const sentAt = performance.now()
  const final = await new Promise<SipResponse | string>(resolve => {
    client.sendRequest(request(method, cs.address().port), clientFlow, {
      receiveResponse (r) { if (r.status >= 200) resolve(r) },
      onRequestTimeout () { resolve('timeout') },
      onTransportError () { resolve('transport error') }
    })
  })
  return { final, clientSent, serverSent, serverGot, tuSaw, server, sentAt, respondedAt, close: () => { client.close(); server.close() } }
}

const statusOf = (r: SipResponse | string): number | string => typeof r === 'string' ? r : r.status
const settle = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

test('timer E: lost MESSAGEs are retransmitted at T1 then 2*T1; the server re-sends its lost 200 on a retransmission', async () => {
  const x = await exchange('MESSAGE', (what, n) => what === 'MESSAGE' && n < 2, (what, n) => what === '200' && n === 0)
  try {
    assert.equal(statusOf(x.final), 200)
    const sends = x.clientSent.filter(s => s.what === 'MESSAGE')
    assert.deepEqual(sends.slice(0, 3).map(s => s.dropped), [true, true, false], 'two MESSAGEs lost, the third arrived')
    // timers never fire early: at least T1 after the request was handed over (timer E is armed
    // then, before the first send), then 2*T1 (armed after the send); a little slack for rounding
    assert.ok(sends[1].at - x.sentAt >= timers.t1 - 2, `first retransmission after ${sends[1].at - x.sentAt} ms`)
    assert.ok(sends[2].at - sends[1].at >= 2 * timers.t1 - 2, `second retransmission after ${sends[2].at - sends[1].at} ms`)
    assert.equal(x.tuSaw, 1, 'the server TU saw the request once')
    const oks = x.serverSent.filter(s => s.what === '200')
    assert.ok(oks.length >= 2 && oks[0].dropped && !oks[1].dropped, `the lost 200 was sent again: ${JSON.stringify(oks)}`)
    assert.ok(x.server.stats.retransmissionsAbsorbed >= 1, 'the retransmission was absorbed by the server transaction')
  } finally { x.close() }
})

test('timer A: a lost INVITE is retransmitted; the 486 is ACKed', async () => {
  const x = await exchange('INVITE', (what, n) => what === 'INVITE' && n === 0, () => false)
  try {
    assert.equal(statusOf(x.final), 486)
    const sends = x.clientSent.filter(s => s.what === 'INVITE')
    assert.deepEqual(sends.slice(0, 2).map(s => s.dropped), [true, false])
    assert.ok(sends[1].at - x.sentAt >= timers.t1 - 2, `retransmitted after ${sends[1].at - x.sentAt} ms`)
    assert.equal(x.tuSaw, 1)
    await settle(50)
    assert.ok(x.serverGot.includes('ACK'), `the server got the ACK: ${x.serverGot.join(', ')}`)
  } finally { x.close() }
})

test('timer G: a lost INVITE final response is retransmitted by the server (T1, 2*T1) until the ACK', async () => {
  // the first INVITE arrives, every retransmission of it is lost: only timer G can recover the 486
  const x = await exchange('INVITE', (what, n) => what === 'INVITE' && n > 0, (what, n) => what === '486' && n < 2)
  try {
    assert.equal(statusOf(x.final), 486)
    assert.deepEqual(x.serverGot.filter(m => m === 'INVITE'), ['INVITE'], 'no INVITE retransmission reached the server')
    assert.equal(x.server.stats.retransmissionsAbsorbed, 0)
    assert.ok(x.clientSent.some(s => s.what === 'INVITE' && s.dropped), 'the client did retransmit (lost)')
    const finals = x.serverSent.filter(s => s.what === '486')
    assert.deepEqual(finals.slice(0, 3).map(s => s.dropped), [true, true, false], 'two 486s lost, the third arrived')
    assert.ok(finals[1].at - x.respondedAt >= timers.t1 - 2, `first timer G after ${finals[1].at - x.respondedAt} ms`)
    assert.ok(finals[2].at - finals[1].at >= 2 * timers.t1 - 2, `second timer G after ${finals[2].at - finals[1].at} ms`)
    await settle(50)
    assert.ok(x.serverGot.includes('ACK'), 'the ACK reached the server')
    // the ACK stopped timer G: no 486 goes out any more (T2 is 80 ms, so one would within 200 ms)
    const sent = x.serverSent.filter(s => s.what === '486').length
    await settle(4 * timers.t2)
    assert.equal(x.serverSent.filter(s => s.what === '486').length, sent, 'timer G stopped after the ACK')
  } finally { x.close() }
})
