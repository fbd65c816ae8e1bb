/**
 * The seam where the SIP gateway (sip-gateway/) plugs into the node: `sipmesh start` runs
 * `defaultGateway`. It gets the context the node builds (`GatewayContext` in sipmesh-node.ts:
 * `{ registry, peerChannel, store, logger, config, announceSip }`) and returns
 * `{ start, stop, registrations }`. Leave it undefined to run the mesh and the admin API only.
 */
import { sipGateway } from '../sip-gateway/index.ts'
import type { GatewayFactory } from './sipmesh-node.ts'

export const defaultGateway: GatewayFactory | undefined = sipGateway
