// The registrar's readers of a REGISTER's To, CSeq and Contact: what the general parsers give, or
// nothing (then the registrar parses), on usual, unusual and hostile values.
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { plainAor, registerSeq, contactsOf, hasStar } from '../../../sip-gateway/registrar/register-fields.ts'
import { Headers, aorOf, parseNameAddr, parseCSeq } from '../../../sip-gateway/codec/index.ts'

describe('register fields', () => {
  test('plainAor: the AoR the parse gives for a plain To, nothing for anything else', () => {
    for (const to of ['<sip:alice@example.com>', '<sip:a.b-c_d!e~f*g\'h(i)@sub.example.com>', '<sip:1@1.2.3.4>']) {
      assert.equal(plainAor(to), aorOf(parseNameAddr(to).uri), to)
    }
    for (const to of ['', '<', '<>', '<sip:>', '<sip:@example.com>', '<sip:alice@>', '<sip:alice>', 'sip:alice@example.com',
      '"A" <sip:alice@example.com>', '<sip:alice@example.com>;tag=1', '<sips:alice@example.com>', '<SIP:alice@example.com>',
      '<sip:alice@Example.com>', '<sip:al%69ce@example.com>', '<sip:alice:pw@example.com>', '<sip:a;b@example.com>',
      '<sip:alice@example.com:5060>', '<sip:alice@example.com;transport=udp>', '<sip:alice@example.com?x=1>', '<sip:a@b@example.com>',
      '<sip:alicé@example.com>', '<sip:alice@exämple.com>', '<sip:al ice@example.com>', '<sip:alice@example.com >', '<tel:+1234>',
      '<sip:alice@example.com>>', '<<sip:alice@example.com>', '<sip:alice@example.com\u0000>', '<sip:a\uD800@example.com>']) {
      assert.equal(plainAor(to), '', JSON.stringify(to))
    }
    // long values are walked once, not refused by length: a plain one is itself
    const long = 'u'.repeat(100_000)
    assert.equal(plainAor(`<sip:${long}@example.com>`), `sip:${long}@example.com`)
    assert.equal(plainAor(`<sip:${long}@example.com`), '')
  })

  test('registerSeq: the number parseCSeq reads; what parseCSeq refuses is refused the same way', () => {
    for (const v of ['1 REGISTER', '0 REGISTER', '0001 REGISTER', '4294967295 REGISTER', '7  REGISTER', '7\tREGISTER', '7 INVITE', '7 REGISTER ', '7 register']) {
      assert.equal(registerSeq(v), parseCSeq(v).seq, v)
    }
    for (const v of ['4294967296 REGISTER', '99999999999 REGISTER', '1a REGISTER', ' REGISTER', 'REGISTER', '-1 REGISTER', '1.5 REGISTER', '', '1', '1 ', '１ REGISTER']) {
      assert.throws(() => parseCSeq(v), v)
      assert.throws(() => registerSeq(v), (err: Error) => err.name === 'SipParseError', v)
    }
  })

  test('contactsOf: what getAll gives, lines and lists alike', () => {
    const cases: string[][] = [[], ['<sip:a@h>'], ['<sip:a@h>;expires=60'], ['<sip:a@h>, <sip:b@h>'], ['<sip:a@h>', '<sip:b@h>'], [''], ['', '<sip:a@h>'],
      ['"a, b" <sip:a@h>'], ['<sip:a@h;x=1,2>'], ['*'], [' * '], ['<sip:a@h>', '*']]
    for (const lines of cases) {
      // and with one more line in the compact form
      for (const compact of [false, true]) {
        const h = new Headers()
        h.append('Via', 'SIP/2.0/UDP h;branch=z9hG4bK1')
        for (const l of lines) h.append('Contact', l)
        if (compact) h.append('m', '<sip:compact@h>')
        h.append('Content-Length', '0')
        assert.deepEqual(contactsOf(h), h.getAll('Contact'), JSON.stringify(lines) + (compact ? ' + m' : ''))
      }
    }
    assert.equal(hasStar(['<sip:a@h>', ' * ']), true)
    assert.equal(hasStar(['<sip:*@h>']), false)
  })
})
