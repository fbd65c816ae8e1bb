/**
 * The seam where the SIP gateway (sip-gateway/) plugs into the node. `sipmesh start` runs
 * `defaultGateway`; while it is undefined a node runs the mesh and the admin API only (no SIP).
 *
 * To plug the gateway in, export here a `GatewayFactory` that builds it from the context the node
 * gives it: `{ registry, peerChannel, store, logger, config, announceSip }` (see
 * `GatewayContext` in sipmesh-node.ts), and returns `{ start, stop, registrations }`.
 */
import type { GatewayFactory } from './sipmesh-node.ts'

export const defaultGateway: GatewayFactory | undefined = undefined
