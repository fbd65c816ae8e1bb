// Transaction matching (RFC 3261 17.1.3, 17.2.3): retransmissions, ACK, CANCEL, sent-by, method;
// the cap on live server transactions.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { TransactionLayer, serverKey, clientKey, type MessageFlow } from '../../../sip-gateway/transaction/layer.ts'
import { SipRequest, SipResponse, Headers, createResponse } from '../../../sip-gateway/codec/index.ts'
import { SipStatusError } from '../../../sip-gateway/errors.ts'

function req (method: string, branch: string, sentBy = '10.0.0.1:5060', cseqMethod = method): SipRequest {
  const h = new Headers()
  h.append('Via', `SIP/2.0/UDP ${sentBy};branch=${branch}`)
  h.append('From', '<sip:a@example.com>;tag=1')
  h.append('To', '<sip:b@example.com>')
  h.append('Call-ID', 'c1')
  h.append('CSeq', `1 ${cseqMethod}`)
  return new SipRequest(method, 'sip:b@example.com', h)
}

const flow: MessageFlow = { reliable: true, send () {} }

test('server keys: branch + sent-by + method; ACK maps to INVITE; CANCEL has its own', () => {
  const k = serverKey(req('INVITE', 'z9hG4bKa'))
  assert.equal(serverKey(req('ACK', 'z9hG4bKa', '10.0.0.1:5060', 'ACK')), k)
  assert.notEqual(serverKey(req('CANCEL', 'z9hG4bKa', '10.0.0.1:5060', 'CANCEL')), k)
  assert.notEqual(serverKey(req('INVITE', 'z9hG4bKa', '10.0.0.2:5060')), k, 'another sent-by is another transaction')
  // 17.2.3 / 18.2.1: a sent-by without a port is the default port (5060; 5061 over TLS), and hosts are case-insensitive
  assert.equal(serverKey(req('INVITE', 'z9hG4bKa', '10.0.0.1')), k, 'host and host:5060 are one sent-by')
  assert.equal(serverKey(req('CANCEL', 'z9hG4bKa', 'Proxy.Example.COM', 'CANCEL')), serverKey(req('CANCEL', 'z9hG4bKa', 'proxy.example.com:5060', 'CANCEL')))
  assert.notEqual(serverKey(req('INVITE', 'z9hG4bKa', '10.0.0.1:5061')), k)
  const tls = (sentBy: string): SipRequest => { const r = req('INVITE', 'z9hG4bKa', sentBy); r.headers.set('Via', `SIP/2.0/TLS ${sentBy};branch=z9hG4bKa`); return r }
  assert.equal(serverKey(tls('10.0.0.1')), serverKey(tls('10.0.0.1:5061')), 'over TLS the default is 5061')
  assert.notEqual(serverKey(tls('10.0.0.1')), serverKey(tls('10.0.0.1:5060')))
  assert.notEqual(serverKey(req('INVITE', 'z9hG4bKb')), k)
  // RFC 2543 branches fall back to the dialog fields
  assert.match(serverKey(req('MESSAGE', 'old-branch')), /^2543\|/)
  assert.throws(() => serverKey(new SipRequest('MESSAGE', 'sip:x@y', new Headers())), SipStatusError)
})

test('client keys: branch + CSeq method', () => {
  const r = new SipResponse(200, 'OK', new Headers([['Via', 'SIP/2.0/UDP h;branch=z9hG4bKx'], ['CSeq', '5 CANCEL']]))
  assert.equal(clientKey(r), 'z9hG4bKx|CANCEL')
  assert.equal(clientKey(new SipResponse(200, 'OK', new Headers())), undefined)
})

test('layer: retransmission absorbed, ACK of a non-2xx absorbed, 2xx ACK and CANCEL handed up, stray responses, cap', () => {
  const seen: string[] = []
  const layer = new TransactionLayer({
    onRequest (r, tx) { seen.push(`request ${r.method}`); if (r.method === 'INVITE') tx.respond(createResponse(r, 486, undefined, undefined, { toTag: 't' })) },
    onAck () { seen.push('ack') },
    onCancel (_c, _tx, invite) { seen.push(`cancel ${invite === undefined ? 'unmatched' : 'matched'}`) },
    onStrayResponse () { seen.push('stray') }
  }, { maxServerTransactions: 3 })
  layer.receiveRequest(req('MESSAGE', 'z9hG4bK1'), flow)
  layer.receiveRequest(req('MESSAGE', 'z9hG4bK1'), flow)
  assert.equal(layer.stats.retransmissionsAbsorbed, 1)
  layer.receiveRequest(req('INVITE', 'z9hG4bK2'), flow) // answered 486 (reliable: the tx waits for the ACK)
  layer.receiveRequest(req('ACK', 'z9hG4bK2', '10.0.0.1:5060', 'ACK'), flow) // absorbed by the INVITE transaction
  layer.receiveRequest(req('ACK', 'z9hG4bK9', '10.0.0.1:5060', 'ACK'), flow) // no transaction: a 2xx ACK
  layer.receiveRequest(req('CANCEL', 'z9hG4bK7', '10.0.0.1:5060', 'CANCEL'), flow)
  layer.receiveResponse(new SipResponse(200, 'OK', new Headers([['Via', 'SIP/2.0/UDP h;branch=z9hG4bKq'], ['CSeq', '1 MESSAGE']])), flow)
  assert.deepEqual(seen, ['request MESSAGE', 'request INVITE', 'ack', 'cancel unmatched', 'stray'])
  // the MESSAGE and CANCEL transactions are live (never answered), the INVITE ended with its ACK: 2 of 3
  layer.receiveRequest(req('OPTIONS', 'z9hG4bK3'), flow)
  assert.throws(() => layer.receiveRequest(req('OPTIONS', 'z9hG4bK4'), flow), (e: unknown) => e instanceof SipStatusError && e.status === 503)
  assert.equal(layer.stats.overload, 1)
  layer.close()
  assert.equal(layer.serverCount, 0)
})

test('CANCEL matching (RFC 3261 9.2, 17.2.3): same branch, sent-by and the INVITE method match; another sent-by or branch does not (481)', () => {
  const sent: SipResponse[] = []
  // unreliable, so the answered CANCEL transaction lingers (timer J) to absorb its retransmission
  const recording: MessageFlow = { reliable: false, send (m) { if (m instanceof SipResponse) sent.push(m) } }
  const invites = new Map<string, unknown>()
  const matched: unknown[] = []
  // answers CANCEL as the proxy core does: 481 when it matches no INVITE, 200 otherwise
  const layer = new TransactionLayer({
    onRequest (r, tx) { if (r.method === 'INVITE') invites.set(r.headers.get('Via') ?? '', tx) },
    onAck () {},
    onCancel (c, tx, invite) {
      matched.push(invite)
      tx.respond(createResponse(c, invite === undefined ? 481 : 200, undefined, undefined, { toTag: 't' }))
    },
    onStrayResponse () {}
  })
  const invite = req('INVITE', 'z9hG4bKinv', '10.0.0.1:5060')
  layer.receiveRequest(invite, recording) // pending: never answered
  const inviteTx = invites.get(invite.headers.get('Via') ?? '')
  assert.ok(inviteTx !== undefined)
  const cancel = (branch: string, sentBy: string): number | undefined => {
    const before = sent.length
    layer.receiveRequest(req('CANCEL', branch, sentBy, 'CANCEL'), recording)
    return sent.length === before + 1 ? sent[sent.length - 1].status : undefined
  }
  assert.equal(cancel('z9hG4bKinv', '10.0.0.1:5061'), 481, 'another port: another sent-by')
  assert.equal(cancel('z9hG4bKinv', '10.0.0.2:5060'), 481, 'another host: another sent-by')
  assert.equal(cancel('z9hG4bKother', '10.0.0.1:5060'), 481, 'another branch')
  assert.deepEqual(matched, [undefined, undefined, undefined])
  assert.equal(cancel('z9hG4bKinv', '10.0.0.1:5060'), 200, 'the INVITE\'s own branch and sent-by')
  assert.equal(matched[3], inviteTx, 'handed up with the INVITE server transaction it cancels')
  // a retransmitted CANCEL is absorbed by its own transaction, which re-sends the 200
  assert.equal(cancel('z9hG4bKinv', '10.0.0.1:5060'), 200)
  assert.equal(matched.length, 4)
  layer.close()
})

test('layer: a non-INVITE transaction answered over UDP lingers as its response bytes for timer J, then is forgotten', async () => {
  const sent: Uint8Array[] = []
  const udp: MessageFlow = {
    reliable: false,
    send () { throw new Error('a lingering response is resent as bytes') },
    serialize: (m) => new TextEncoder().encode(`bytes of ${(m as SipResponse).status}`),
    sendBytes (data) { sent.push(data) }
  }
  const seen: string[] = []
  let tx: { state: string } | undefined
  const layer = new TransactionLayer({
    onRequest (r, t) { seen.push(r.method); tx = t; t.respond(createResponse(r, 200, undefined, undefined, { toTag: 't' })) },
    onAck () {},
    onCancel () {},
    onStrayResponse () {}
  }, { timers: { t1: 5 } }) // timer J = 64 * 5 = 320 ms
  const t0 = performance.now()
  layer.receiveRequest(req('REGISTER', 'z9hG4bKr1'), udp)
  assert.equal(tx?.state, 'terminated', 'the transaction object is done with')
  assert.equal(layer.serverCount, 1, 'its response lingers')
  layer.receiveRequest(req('REGISTER', 'z9hG4bKr1'), udp)
  assert.deepEqual(sent.map(b => new TextDecoder().decode(b)), ['bytes of 200', 'bytes of 200'], 'the retransmission gets the same bytes')
  assert.equal(layer.stats.retransmissionsAbsorbed, 1)
  assert.deepEqual(seen, ['REGISTER'])
  while (layer.serverCount > 0) {
    assert.ok(performance.now() - t0 < 2000, 'forgotten after timer J')
    await new Promise(resolve => setTimeout(resolve, 10))
  }
  assert.ok(performance.now() - t0 >= 320, 'not before timer J')
  // now the same request is a new one
  layer.receiveRequest(req('REGISTER', 'z9hG4bKr1'), udp)
  assert.deepEqual(seen, ['REGISTER', 'REGISTER'])
  layer.close()
})

test('layer: a non-INVITE client transaction answered over UDP lingers as its key for timer K: retransmitted finals are absorbed, then they are stray', async () => {
  const udp: MessageFlow = { reliable: false, send () {} }
  const strays: number[] = []
  const layer = new TransactionLayer({ onRequest () {}, onAck () {}, onCancel () {}, onStrayResponse (r) { strays.push(r.status) } }, { timers: { t1: 5, t4: 200 } })
  const got: number[] = []
  let terminated = 0
  const tx = layer.sendRequest(req('MESSAGE', 'z9hG4bKc1'), udp, { receiveResponse (r) { got.push(r.status) }, onRequestTimeout () { got.push(408) }, onTransportError () { got.push(503) }, onTerminated () { terminated++ } })
  const t0 = performance.now()
  const ok = (status = 200): SipResponse => new SipResponse(status, 'OK', new Headers([['Via', 'SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKc1'], ['CSeq', '1 MESSAGE']]))
  layer.receiveResponse(ok(), udp)
  assert.equal(tx.state, 'terminated', 'the transaction object is done with at once')
  assert.equal(terminated, 1)
  assert.equal(layer.clientCount, 1, 'its key lingers')
  // retransmissions of the final response (and a different final: a broken peer) are absorbed, not handed up
  layer.receiveResponse(ok(), udp)
  layer.receiveResponse(ok(500), udp)
  assert.deepEqual(got, [200])
  assert.deepEqual(strays, [])
  assert.equal(layer.stats.responsesAbsorbed, 2)
  // a response with another branch or method is stray as before
  layer.receiveResponse(new SipResponse(200, 'OK', new Headers([['Via', 'SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKc1'], ['CSeq', '1 INFO']])), udp)
  assert.deepEqual(strays, [200])
  while (layer.clientCount > 0) {
    assert.ok(performance.now() - t0 < 2000, 'forgotten after timer K')
    await new Promise(resolve => setTimeout(resolve, 10))
  }
  assert.ok(performance.now() - t0 >= 200, 'not before timer K')
  layer.receiveResponse(ok(), udp)
  assert.deepEqual(strays, [200, 200], 'after timer K a retransmission is stray')
  // over a reliable flow nothing lingers (timer K is zero)
  layer.sendRequest(req('MESSAGE', 'z9hG4bKc2'), flow, { receiveResponse () {}, onRequestTimeout () {}, onTransportError () {} })
  layer.receiveResponse(new SipResponse(200, 'OK', new Headers([['Via', 'SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKc2'], ['CSeq', '1 MESSAGE']])), flow)
  assert.equal(layer.clientCount, 0)
  layer.close()
})

test('layer: a non-INVITE transaction answered after its turn is live meanwhile (a retransmission absorbed, counted), then lingers; one whose core threw is not kept', async () => {
  const sent: string[] = []
  const udp: MessageFlow = {
    reliable: false,
    send () { throw new Error('bytes only') },
    serialize: (m) => new TextEncoder().encode(`bytes of ${(m as SipResponse).status}`),
    sendBytes (data) { sent.push(new TextDecoder().decode(data)) }
  }
  const seen: string[] = []
  const later: Array<() => void> = []
  const layer = new TransactionLayer({
    onRequest (r, t) {
      seen.push(r.method)
      if (r.method === 'OPTIONS') throw new Error('core failed')
      later.push(() => { t.respond(createResponse(r, 200, undefined, undefined, { toTag: 't' })) })
    },
    onAck () {},
    onCancel () {},
    onStrayResponse () {}
  }, { timers: { t1: 5 } })
  try {
    layer.receiveRequest(req('REGISTER', 'z9hG4bKa1'), udp)
    assert.equal(layer.serverCount, 1, 'live while it waits')
    layer.receiveRequest(req('REGISTER', 'z9hG4bKa1'), udp)
    assert.deepEqual(seen, ['REGISTER'], 'the retransmission absorbed in trying')
    assert.equal(layer.stats.retransmissionsAbsorbed, 1)
    await Promise.resolve()
    later.shift()?.()
    assert.equal(layer.serverCount, 1, 'now lingering, no longer live')
    layer.receiveRequest(req('REGISTER', 'z9hG4bKa1'), udp)
    assert.deepEqual(sent, ['bytes of 200', 'bytes of 200'])
    assert.throws(() => { layer.receiveRequest(req('OPTIONS', 'z9hG4bKa2'), udp) }, /core failed/)
    assert.equal(layer.serverCount, 1, 'a transaction whose core threw is not kept')
  } finally { layer.close() }
})
