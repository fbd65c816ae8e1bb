/**
 * The message shapes the transaction layer relies on. Structural on purpose: the codec's
 * `SipRequest` / `SipResponse` satisfy them, and the state machines stay testable without it.
 */
export interface TxHeaders {
  get (name: string): string | undefined
}

export interface TxRequest {
  readonly method: string
  readonly headers: TxHeaders
}

export interface TxResponse {
  readonly status: number
  readonly headers: TxHeaders
}

/**
 * Where a transaction sends its messages: a flow to one peer (a UDP address, a TCP or WebSocket
 * connection, a mesh peer). `reliable` decides which timers run (RFC 3261 17.1.1.2, 17.1.2.2).
 * `send` may throw or reject: that is a transport error (RFC 3261 17.1.4 / 17.2.4).
 */
export interface TxFlow<M = TxRequest | TxResponse> {
  readonly reliable: boolean
  send (message: M): void | Promise<void>
  /**
   * Optional, both or neither: serialize a message, and send bytes serialized so. A transaction
   * that lingers to answer retransmissions (a non-INVITE server transaction over UDP, timer J:
   * 32 s) keeps its final response as these bytes instead of the message object (whose header
   * values point into the request's text), about 2 KB less per live transaction.
   */
  serialize? (message: M): Uint8Array
  sendBytes? (data: Uint8Array): void | Promise<void>
}
