/**
 * The SIP message codec of the gateway (RFC 3261 section 7 and 25).
 *
 * Hand-written, not sip.js's parser: as shipped, sip.js re-decodes its generated grammar tables
 * on every call (~1,350 messages/s here) and models every header, while the gateway needs a hot
 * path that reads only what a routing decision needs. So parsing is lazy: `parseMessage` splits
 * the start line and header lines, keeps header values raw, and checks only the headers every
 * decision relies on (Via, From, To, Call-ID, CSeq, Max-Forwards, Content-Length); structured
 * views come on demand from `parseVia`, `parseNameAddr`, `parseUri`, `parseCSeq`.
 *
 * Errors: everything malformed raises `SipParseError` (from `../errors.ts`) with the status to
 * answer (400, 416, 505, 513) and, when the request can be answered, the partly parsed request.
 *
 * ```ts
 * const msg = parseMessage(datagram)
 * if (isRequest(msg) && msg.method === 'OPTIONS') send(serializeMessage(createResponse(msg, 200, undefined, undefined, { toTag: true })))
 * ```
 */
export { Headers, headerKey, headerDisplayName, isListHeader, splitList } from './headers.ts'
export { SipRequest, SipResponse, isRequest, isResponse, type SipMessage } from './message.ts'
export { parseMessage, findHeadEnd, DEFAULT_MAX_MESSAGE_SIZE, type ParseOptions } from './parser.ts'
export { serializeMessage } from './serializer.ts'
export { cutTopVia } from './wire.ts'
export { parseVia, formatVia, type Via } from './via.ts'
export { parseNameAddr, formatNameAddr, type NameAddr } from './name-addr.ts'
export { parseUri, formatUri, aorOf, parsePort, SUPPORTED_SCHEMES, type SipUri } from './uri.ts'
export { parseCSeq, formatCSeq, type CSeq } from './cseq.ts'
export { createResponse, reasonPhrase, generateTag, generateBranch, REASON_PHRASES, type CreateResponseOptions } from './response.ts'
export { parseParams, formatParams, quote, unquote, isToken, type Params } from './params.ts'
export { SipParseError, SipStatusError } from '../errors.ts'
