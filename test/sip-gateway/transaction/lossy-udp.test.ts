// Retransmission over real UDP sockets that drop datagrams: the non-INVITE and INVITE client
// transactions recover, the server transactions absorb the duplicates and re-send their last
// response. T1 is shortened to 20 ms so the test takes well under a second.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createSocket, type Socket } from 'node:dgram'
import { TransactionLayer, type TransactionCore, type MessageFlow, type ServerTransaction } from '../../../sip-gateway/transaction/layer.ts'
import { parseMessage, serializeMessage, createResponse, SipRequest, Headers, type SipResponse } from '../../../sip-gateway/codec/index.ts'

const sockets: Socket[] = []
after(() => { for (const s of sockets) s.close() })

async function udp (): Promise<Socket> {
  const s = createSocket('udp4')
  await new Promise<void>(resolve => s.bind(0, '127.0.0.1', () => resolve()))
  sockets.push(s)
  return s
}

/** a flow that drops the datagrams whose index is in `drop` (0-based, per flow) */
function lossyFlow (socket: Socket, port: number, drop: Set<number>, log: string[]): MessageFlow {
  let n = 0
  return {
    reliable: false,
    send (m) {
      const i = n++
      const what = m instanceof SipRequest ? m.method : String(m.status)
      if (drop.has(i)) { log.push(`drop ${what}`); return }
      log.push(`send ${what}`)
      socket.send(serializeMessage(m), port, '127.0.0.1')
    }
  }
}

function request (method: string, port: number): SipRequest {
  const h = new Headers()
  h.append('Via', `SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bK${Math.random().toString(36).slice(2)}`)
  h.append('Max-Forwards', '70')
  h.append('From', '<sip:a@example.com>;tag=1')
  h.append('To', '<sip:b@example.com>')
  h.append('Call-ID', `lossy-${method}`)
  h.append('CSeq', `1 ${method}`)
  h.append('Content-Length', '0')
  return new SipRequest(method, 'sip:b@127.0.0.1', h)
}

test('lossy UDP: MESSAGE and INVITE transactions recover by retransmission', async () => {
  const cs = await udp()
  const ss = await udp()
  const clientLog: string[] = []
  const serverLog: string[] = []
  let requestsSeen = 0
  // the server answers MESSAGE 200 and INVITE 486; its first two responses are lost
  const serverFlow = lossyFlow(ss, cs.address().port, new Set([0, 1]), serverLog)
  const serverCore: TransactionCore<MessageFlow> = {
    onRequest (req: SipRequest, tx: ServerTransaction) {
      requestsSeen++
      tx.respond(createResponse(req, req.method === 'INVITE' ? 486 : 200, undefined, undefined, { toTag: 'srv' }))
    },
    onAck () {},
    onCancel () {},
    onStrayResponse () {}
  }
  const timers = { t1: 20, t2: 80, t4: 100 }
  const server = new TransactionLayer(serverCore, { timers })
  const client = new TransactionLayer<MessageFlow>({ onRequest () {}, onAck () {}, onCancel () {}, onStrayResponse () {} }, { timers })
  ss.on('message', (data) => {
    const m = parseMessage(data)
    if (m instanceof SipRequest) server.receiveRequest(m, serverFlow)
  })
  cs.on('message', (data) => {
    const m = parseMessage(data)
    if (!(m instanceof SipRequest)) client.receiveResponse(m, serverFlow)
  })
  // the client's first two sends of each request are lost
  const got = async (method: string): Promise<SipResponse | string> => await new Promise(resolve => {
    const flow = lossyFlow(cs, ss.address().port, new Set([0, 1]), clientLog)
    client.sendRequest(request(method, cs.address().port), flow, {
      receiveResponse (r) { if (r.status >= 200) resolve(r) },
      onRequestTimeout () { resolve('timeout') },
      onTransportError () { resolve('transport error') }
    })
  })
  const message = await got('MESSAGE')
  assert.equal(typeof message === 'string' ? message : message.status, 200)
  assert.equal(requestsSeen, 1, 'the server TU saw the request once')
  assert.ok(server.stats.retransmissionsAbsorbed >= 1, 'retransmissions were absorbed by the server transaction')
  assert.ok(clientLog.filter(l => l === 'drop MESSAGE').length === 2 && clientLog.filter(l => l === 'send MESSAGE').length >= 1)

  const invite = await got('INVITE')
  assert.equal(typeof invite === 'string' ? invite : invite.status, 486)
  // the lost 486 was re-sent by timer G or on the INVITE retransmission, and the ACK arrived
  await new Promise(resolve => setTimeout(resolve, 100))
  assert.ok(clientLog.includes('send ACK'), `ACK sent: ${clientLog.join(', ')}`)
  assert.equal(requestsSeen, 2)
  client.close(); server.close()
})
