/**
 * SIP over TLS (RFC 3261 26.2, RFC 5630): a listener and dialled connections on node:tls. Once
 * the handshake is done a TLS socket is a stream like a TCP one, so `TcpConnection` (framing by
 * Content-Length, pings, limits) carries it unchanged; this file only makes and checks sockets.
 *
 * Identity: a certificate names SIP domains (tls-identity.ts, RFC 5922 7.1). A server asks every
 * client for a certificate but does not require one (user agents have none); a client that shows
 * one must be trusted by the configured authorities and name a configured peer domain, else the
 * connection is refused as soon as the handshake ends. A dialled connection to a peer checks the
 * server's certificate against the authorities and the domain it was dialled for.
 */
import { connect, createServer, type PeerCertificate, type Server, type TLSSocket } from 'node:tls'
import { TransportError } from '../errors.ts'
import type { Address } from './types.ts'
import { certificateDomains } from './tls-identity.ts'
import { settleConnect } from './tcp.ts'

export interface TlsCredentials {
  /** PEM certificate chain of this node (its domain in subjectAltName) */
  cert: string
  /** PEM private key */
  key: string
  /** PEM authorities trusted for peers' certificates; absent: Node's default list */
  ca?: string
}

/** Why a peer's certificate is refused, or its peer domain (undefined: a client without one). */
export type TlsVerdict = { refused: string } | { peerDomain: string | undefined }

function hasCertificate (cert: PeerCertificate | Record<string, never> | null | undefined): cert is PeerCertificate {
  return cert !== null && cert !== undefined && Object.keys(cert).length > 0
}

/**
 * The verdict on an inbound connection once its handshake is done: a client without a
 * certificate is a user agent; one with a certificate must be trusted and name one of `peers`.
 */
export function inboundVerdict (socket: TLSSocket, peers: ReadonlySet<string>): TlsVerdict {
  const cert = socket.getPeerCertificate()
  if (!hasCertificate(cert)) return { peerDomain: undefined }
  if (!socket.authorized) return { refused: `untrusted certificate (${String(socket.authorizationError)})` }
  const domains = certificateDomains(cert)
  const peer = domains.find(d => peers.has(d))
  if (peer === undefined) return { refused: `certificate names no configured peer (${domains.join(', ') || 'no domain'})` }
  return { peerDomain: peer }
}

export interface TlsListenOptions {
  handshakeTimeoutMs: number
  onSecure: (socket: TLSSocket) => void
  /** a handshake that failed or timed out (plain SIP sent to the port, a client that never finishes) */
  onHandshakeError: (err: Error, remote: string | undefined) => void
}

/** Listen for TLS connections; resolves with the bound address. */
export async function listenTls (address: Address, credentials: TlsCredentials, options: TlsListenOptions): Promise<{ server: Server, address: Address }> {
  const server = createServer({
    cert: credentials.cert,
    key: credentials.key,
    ca: credentials.ca,
    requestCert: true,
    rejectUnauthorized: false,
    handshakeTimeout: options.handshakeTimeoutMs,
    minVersion: 'TLSv1.2'
  }, options.onSecure)
  server.on('tlsClientError', (err, socket) => {
    options.onHandshakeError(err, socket.remoteAddress)
    socket.destroy()
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host: address.host, port: address.port, exclusive: true }, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const bound = server.address()
  if (bound === null || typeof bound === 'string') throw new Error('tls server has no address')
  return { server, address: { host: bound.address, port: bound.port } }
}

export interface TlsDialResult {
  socket: TLSSocket
  /** the domain the server's certificate vouches for: `domain` when asked, else its first one in `peers` */
  peerDomain: string | undefined
}

/**
 * Dial a TLS connection, failing after `timeoutMs` (connect and handshake together). With
 * `domain`, the server's certificate must name it (a peer network, RFC 5922); without, any
 * certificate the authorities trust is accepted and its domain read.
 */
export async function dialTls (target: Address, credentials: TlsCredentials, peers: ReadonlySet<string>, timeoutMs: number,
  domain?: string, signal?: AbortSignal): Promise<TlsDialResult> {
  const socket = connect({
    host: target.host,
    port: target.port,
    cert: credentials.cert,
    key: credentials.key,
    ca: credentials.ca,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
    // SNI takes a host name only; an address is not sent
    ...(domain !== undefined ? { servername: domain } : {}),
    checkServerIdentity: (_host, cert) => {
      const names = certificateDomains(cert)
      if (domain !== undefined && !names.includes(domain)) {
        return new TransportError(`certificate of ${target.host}:${target.port} does not name ${domain} (${names.join(', ') || 'no domain'})`)
      }
      return undefined
    }
  })
  socket.setNoDelay(true)
  await settleConnect(socket, 'secureConnect', {
    failed: (err) => `tls to ${target.host}:${target.port} failed: ${err.message}`,
    timedOut: `tls to ${target.host}:${target.port} timed out`
  }, timeoutMs, signal)
  const names = certificateDomains(socket.getPeerCertificate())
  return { socket, peerDomain: domain ?? names.find(d => peers.has(d)) }
}
