// RFC 3261 section 17 state machines under Node's fake timers: every timer (A, B, D, E, F, G, H,
// I, J, K, and RFC 6026's L and M) and every transition the figures draw.
import { test, describe, mock, beforeEach, afterEach } from 'node:test'
import assert from 'node:assert/strict'
import { NonInviteClientTransaction } from '../../../sip-gateway/transaction/non-invite-client-transaction.ts'
import { InviteClientTransaction } from '../../../sip-gateway/transaction/invite-client-transaction.ts'
import { NonInviteServerTransaction } from '../../../sip-gateway/transaction/non-invite-server-transaction.ts'
import { InviteServerTransaction } from '../../../sip-gateway/transaction/invite-server-transaction.ts'
import { TransactionState, TransactionStateError } from '../../../sip-gateway/transaction/transaction.ts'
import { Timer, timerSettings } from '../../../sip-gateway/transaction/timers.ts'
import type { TxFlow, TxRequest, TxResponse } from '../../../sip-gateway/transaction/message.ts'

const S = TransactionState
const T = timerSettings() // T1 500, T2 4000, T4 5000
const noHeaders = { get: () => undefined }
const req = (method: string): TxRequest => ({ method, headers: noHeaders })
const res = (status: number): TxResponse => ({ status, headers: noHeaders })

function flow<M> (reliable: boolean, fail = false): TxFlow<M> & { sent: M[] } {
  const sent: M[] = []
  return { reliable, sent, send (m: M) { if (fail) throw new Error('unreachable'); sent.push(m) } }
}

function tu () {
  const log: string[] = []
  return {
    log,
    receiveResponse (r: TxResponse) { log.push(`response ${r.status}`) },
    onRequestTimeout () { log.push('timeout') },
    onTransportError () { log.push('transport-error') },
    onTerminated () { log.push('terminated') }
  }
}

beforeEach(() => { mock.timers.enable({ apis: ['setTimeout'] }) })
afterEach(() => { mock.timers.reset() })

describe('non-INVITE client transaction (17.1.2)', () => {
  test('timer E retransmits at T1, 2T1, 4T1 ... capped at T2, timer F times out at 64*T1', () => {
    const f = flow<TxRequest>(false); const u = tu()
    const tx = new NonInviteClientTransaction('k', req('MESSAGE'), f, u, T)
    tx.start()
    assert.equal(f.sent.length, 1)
    const at: number[] = []
    let now = 0
    for (let i = 0; i < 64; i++) {
      mock.timers.tick(500); now += 500
      if (f.sent.length > at.length + 1) at.push(now)
      if (tx.state === S.Terminated) break
    }
    // retransmissions at 500, 1500, 3500, 7500, 11500, 15500 ... (intervals 500, 1000, 2000, 4000, 4000 ...)
    assert.deepEqual(at.slice(0, 6), [500, 1500, 3500, 7500, 11500, 15500])
    assert.equal(now, 32000)
    assert.equal(tx.state, S.Terminated)
    assert.deepEqual(u.log, ['terminated', 'timeout'])
  })

  test('a provisional response moves to proceeding and timer E then runs at T2', () => {
    const f = flow<TxRequest>(false); const u = tu()
    const tx = new NonInviteClientTransaction('k', req('MESSAGE'), f, u, T)
    tx.start()
    tx.receiveResponse(res(100))
    assert.equal(tx.state, S.Proceeding)
    mock.timers.tick(500) // the E armed in trying fires once more
    assert.equal(f.sent.length, 2)
    mock.timers.tick(3999)
    assert.equal(f.sent.length, 2)
    mock.timers.tick(1)
    assert.equal(f.sent.length, 3)
  })

  test('in proceeding, timer F still falls at 64*T1 between two T2 retransmissions (E and F share one timer)', () => {
    const f = flow<TxRequest>(false)
    const log: string[] = []
    let now = 0
    const tx = new NonInviteClientTransaction('k', req('MESSAGE'), f, {
      receiveResponse (r: TxResponse) { log.push(`response ${r.status} at ${now}`) },
      onRequestTimeout () { log.push(`timeout at ${now}`) },
      onTransportError () { log.push('transport-error') },
      onTerminated () { log.push(`terminated at ${now}`) }
    }, T)
    tx.start()
    const sentAt: number[] = [0]
    for (; now < 40_000;) {
      if (now === 1000) tx.receiveResponse(res(180))
      now += 100; mock.timers.tick(100)
      if (f.sent.length > sentAt.length) sentAt.push(now)
    }
    // E at 500, 1500, then every T2 from there: 5500 ... 29500; F at 32000, not at an E tick
    assert.deepEqual(sentAt, [0, 500, 1500, 5500, 9500, 13500, 17500, 21500, 25500, 29500].map(t => Math.ceil(t / 100) * 100))
    assert.deepEqual(log, ['response 180 at 1000', 'terminated at 32000', 'timeout at 32000'])
    assert.equal(tx.state, S.Terminated)
  })

  test('final response: completed, retransmissions absorbed, timer K = T4 then terminated', () => {
    const f = flow<TxRequest>(false); const u = tu()
    const tx = new NonInviteClientTransaction('k', req('MESSAGE'), f, u, T)
    tx.start()
    tx.receiveResponse(res(200))
    assert.equal(tx.state, S.Completed)
    tx.receiveResponse(res(200))
    assert.deepEqual(u.log, ['response 200'])
    mock.timers.tick(4999)
    assert.equal(tx.state, S.Completed)
    assert.equal(f.sent.length, 1, 'no retransmission after the final response')
    mock.timers.tick(1)
    assert.equal(tx.state, S.Terminated)
  })

  test('reliable flow: no timer E, timer K is zero', () => {
    const f = flow<TxRequest>(true); const u = tu()
    const tx = new NonInviteClientTransaction('k', req('MESSAGE'), f, u, T)
    tx.start()
    mock.timers.tick(31999)
    assert.equal(f.sent.length, 1)
    tx.receiveResponse(res(404))
    assert.equal(tx.state, S.Terminated)
    assert.deepEqual(u.log, ['response 404', 'terminated'])
  })

  test('reliable flow: timer F still times out', () => {
    const f = flow<TxRequest>(true); const u = tu()
    const tx = new NonInviteClientTransaction('k', req('OPTIONS'), f, u, T)
    tx.start()
    mock.timers.tick(32000)
    assert.equal(tx.state, S.Terminated)
    assert.ok(u.log.includes('timeout'))
  })

  test('a transport error terminates and tells the TU (503)', () => {
    const f = flow<TxRequest>(false, true); const u = tu()
    const tx = new NonInviteClientTransaction('k', req('MESSAGE'), f, u, T)
    tx.start()
    assert.equal(tx.state, S.Terminated)
    assert.deepEqual(u.log, ['terminated', 'transport-error'])
  })
})

describe('INVITE client transaction (17.1.1)', () => {
  const ackOf = () => req('ACK')

  test('timer A doubles without cap, timer B times out at 64*T1 in calling', () => {
    const f = flow<TxRequest>(false); const u = tu()
    const tx = new InviteClientTransaction('k', req('INVITE'), f, u, T, ackOf)
    tx.start()
    const at: number[] = []
    for (let now = 0; now < 32000;) {
      mock.timers.tick(500); now += 500
      if (f.sent.length > at.length + 1) at.push(now)
    }
    assert.deepEqual(at, [500, 1500, 3500, 7500, 15500, 31500])
    assert.equal(tx.state, S.Terminated)
    assert.ok(u.log.includes('timeout'))
  })

  test('a provisional stops timer A and B; proceeding never times out by B', () => {
    const f = flow<TxRequest>(false); const u = tu()
    const tx = new InviteClientTransaction('k', req('INVITE'), f, u, T, ackOf)
    tx.start()
    tx.receiveResponse(res(180))
    mock.timers.tick(60000)
    assert.equal(tx.state, S.Proceeding)
    assert.equal(f.sent.length, 1)
    tx.terminate()
  })

  test('300-699: ACK sent, completed, retransmitted final ACKed again but not passed up, timer D 32 s', () => {
    const f = flow<TxRequest>(false); const u = tu()
    const tx = new InviteClientTransaction('k', req('INVITE'), f, u, T, ackOf)
    tx.start()
    tx.receiveResponse(res(486))
    assert.equal(tx.state, S.Completed)
    assert.deepEqual(f.sent.map(m => m.method), ['INVITE', 'ACK'])
    tx.receiveResponse(res(486))
    assert.deepEqual(f.sent.map(m => m.method), ['INVITE', 'ACK', 'ACK'])
    assert.deepEqual(u.log, ['response 486'])
    mock.timers.tick(31999)
    assert.equal(tx.state, S.Completed)
    mock.timers.tick(1)
    assert.equal(tx.state, S.Terminated)
  })

  test('reliable: timer D is zero', () => {
    const f = flow<TxRequest>(true); const u = tu()
    const tx = new InviteClientTransaction('k', req('INVITE'), f, u, T, ackOf)
    tx.start()
    tx.receiveResponse(res(603))
    assert.equal(tx.state, S.Terminated)
  })

  test('2xx: accepted (RFC 6026), 2xx retransmissions go up, timer M ends it', () => {
    const f = flow<TxRequest>(false); const u = tu()
    const tx = new InviteClientTransaction('k', req('INVITE'), f, u, T, ackOf)
    tx.start()
    tx.receiveResponse(res(200))
    tx.receiveResponse(res(200))
    assert.equal(tx.state, S.Accepted)
    assert.deepEqual(u.log, ['response 200', 'response 200'])
    assert.equal(f.sent.length, 1, 'the transaction never ACKs a 2xx')
    mock.timers.tick(32000)
    assert.equal(tx.state, S.Terminated)
  })
})

describe('non-INVITE server transaction (17.2.2)', () => {
  test('trying absorbs retransmissions, proceeding and completed resend the last response, timer J', () => {
    const f = flow<TxResponse>(false)
    const tx = new NonInviteServerTransaction('k', req('MESSAGE'), f, T)
    tx.receiveRequest(req('MESSAGE'))
    assert.equal(f.sent.length, 0)
    tx.respond(res(100))
    assert.equal(tx.state, S.Proceeding)
    tx.receiveRequest(req('MESSAGE'))
    assert.deepEqual(f.sent.map(r => r.status), [100, 100])
    tx.respond(res(200))
    assert.equal(tx.state, S.Completed)
    tx.receiveRequest(req('MESSAGE'))
    tx.respond(res(500)) // ignored: the final response is sent
    assert.deepEqual(f.sent.map(r => r.status), [100, 100, 200, 200])
    mock.timers.tick(31999)
    assert.equal(tx.state, S.Completed)
    mock.timers.tick(1)
    assert.equal(tx.state, S.Terminated)
  })

  test('reliable: timer J is zero', () => {
    const f = flow<TxResponse>(true)
    const tx = new NonInviteServerTransaction('k', req('MESSAGE'), f, T)
    tx.respond(res(404))
    assert.equal(tx.state, S.Terminated)
  })

  test('transport error while responding terminates and tells the TU', () => {
    const f = flow<TxResponse>(false, true)
    let told = false
    const tx = new NonInviteServerTransaction('k', req('MESSAGE'), f, T, { onTransportError: () => { told = true } })
    tx.respond(res(200))
    assert.equal(tx.state, S.Terminated)
    assert.ok(told)
  })
})

describe('INVITE server transaction (17.2.1)', () => {
  test('proceeding resends the last provisional on a retransmitted INVITE', () => {
    const f = flow<TxResponse>(false)
    const tx = new InviteServerTransaction('k', req('INVITE'), f, T)
    tx.respond(res(100))
    tx.receiveRequest(req('INVITE'))
    assert.deepEqual(f.sent.map(r => r.status), [100, 100])
    tx.terminate()
  })

  test('timer G retransmits the final (T1 doubling, capped at T2), timer H gives up at 64*T1', () => {
    const f = flow<TxResponse>(false)
    let ackTimeout = false
    const tx = new InviteServerTransaction('k', req('INVITE'), f, T, { onAckTimeout: () => { ackTimeout = true } })
    tx.respond(res(486))
    assert.equal(tx.state, S.Completed)
    const at: number[] = []
    for (let now = 0; now < 32000;) {
      mock.timers.tick(500); now += 500
      if (f.sent.length > at.length + 1) at.push(now)
    }
    assert.deepEqual(at.slice(0, 6), [500, 1500, 3500, 7500, 11500, 15500])
    assert.equal(tx.state, S.Terminated)
    assert.ok(ackTimeout)
  })

  test('ACK: confirmed, G stops, further ACKs absorbed, timer I = T4', () => {
    const f = flow<TxResponse>(false)
    const tx = new InviteServerTransaction('k', req('INVITE'), f, T)
    tx.respond(res(404))
    tx.receiveRequest(req('ACK'))
    assert.equal(tx.state, S.Confirmed)
    tx.receiveRequest(req('ACK'))
    mock.timers.tick(4999)
    assert.equal(f.sent.length, 1)
    assert.equal(tx.state, S.Confirmed)
    mock.timers.tick(1)
    assert.equal(tx.state, S.Terminated)
  })

  test('reliable: no timer G, timer I zero', () => {
    const f = flow<TxResponse>(true)
    const tx = new InviteServerTransaction('k', req('INVITE'), f, T)
    tx.respond(res(404))
    mock.timers.tick(10000)
    assert.equal(f.sent.length, 1)
    tx.receiveRequest(req('ACK'))
    assert.equal(tx.state, S.Terminated)
  })

  test('2xx: accepted, TU 2xx retransmissions sent, ACK to the TU, timer L', () => {
    const f = flow<TxResponse>(false)
    const acks: string[] = []
    const tx = new InviteServerTransaction('k', req('INVITE'), f, T, { receiveAck: (a) => acks.push(a.method) })
    tx.respond(res(200))
    assert.equal(tx.state, S.Accepted)
    tx.receiveRequest(req('INVITE')) // absorbed
    tx.respond(res(200))
    tx.receiveRequest(req('ACK'))
    assert.deepEqual(f.sent.map(r => r.status), [200, 200])
    assert.deepEqual(acks, ['ACK'])
    mock.timers.tick(32000)
    assert.equal(tx.state, S.Terminated)
  })
})

test('transitions outside the figure are refused', () => {
  class Probe extends NonInviteServerTransaction {
    force (to: typeof S[keyof typeof S]) { this.transition(to) }
  }
  const tx = new Probe('k', req('MESSAGE'), flow<TxResponse>(true), T)
  assert.throws(() => tx.force(S.Confirmed), TransactionStateError)
  assert.throws(() => tx.force(S.Accepted), TransactionStateError)
  tx.force(S.Terminated)
  assert.throws(() => tx.force(S.Trying), TransactionStateError)
})

test('timer settings are validated', () => {
  assert.throws(() => timerSettings({ t1: 0 }), RangeError)
  assert.throws(() => timerSettings({ t2: Number.NaN }), RangeError)
  assert.deepEqual(timerSettings({ t1: 50 }), { t1: 50, t2: 4000, t4: 5000 })
})

test('Timer: calls its function once with the owner as this; set replaces, clear cancels, pending follows', () => {
  const owner = { fired: [] as string[], note (this: { fired: string[] }) { this.fired.push('a') }, other (this: { fired: string[] }) { this.fired.push('b') } }
  const t = new Timer()
  t.set(100, owner.note, owner)
  assert.equal(t.pending, true)
  mock.timers.tick(99)
  assert.deepEqual(owner.fired, [])
  mock.timers.tick(1)
  assert.deepEqual(owner.fired, ['a'])
  assert.equal(t.pending, false)
  mock.timers.tick(1000)
  assert.deepEqual(owner.fired, ['a'], 'once')
  // set while pending replaces: only the second fires, at its own time
  t.set(100, owner.note, owner)
  mock.timers.tick(50)
  t.set(100, owner.other, owner)
  mock.timers.tick(99)
  assert.deepEqual(owner.fired, ['a'])
  mock.timers.tick(1)
  assert.deepEqual(owner.fired, ['a', 'b'])
  // clear cancels; a timer may be set again from its own function
  t.set(10, owner.note, owner)
  t.clear()
  assert.equal(t.pending, false)
  mock.timers.tick(100)
  assert.deepEqual(owner.fired, ['a', 'b'])
  let again = 0
  const self = { again () { again++; if (again < 3) t.set(10, self.again, self) } }
  t.set(10, self.again, self)
  mock.timers.tick(10); mock.timers.tick(10); mock.timers.tick(10); mock.timers.tick(10)
  assert.equal(again, 3)
  assert.equal(t.pending, false)
})
