/**
 * The admin API's pages (issue 14): plain files, no build step, nothing from a CDN.
 *
 *   GET /                    the live mesh dashboard (node/admin/dashboard/index.html)
 *   GET /phone               the browser phone, when the node runs SIP over WebSocket (--ws);
 *                            404 phone_unavailable otherwise
 *   GET /phone/config.json   `{ ws, domains }`: where the phone connects
 *   GET /dashboard/<file>    the pages' scripts and styles
 *   GET /vendor/uplot/<f>    uPlot's browser build and CSS, from node_modules (the plots)
 *   GET /vendor/sip.js/<p>   SIP.js, from node_modules/sip.js/lib: the package (0.21) ships no
 *                            single-file browser bundle, but its `lib/` is ES modules whose imports
 *                            are all relative with a `.js` extension, so a browser loads
 *                            `lib/index.js` as a module as it is
 *
 * Paths are matched against fixed patterns (no `..`, no dot files, a fixed list of extensions)
 * and resolved under their folder; anything else is not found. Files are read on each request
 * (small, and a developer editing them sees the change on reload).
 */
import { readFile } from 'node:fs/promises'
import { dirname, join, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { readOnly, type RouteContext } from './context.ts'

const DASHBOARD_DIR = fileURLToPath(new URL('../dashboard/', import.meta.url))
const SIPJS_DIR = dirname(fileURLToPath(import.meta.resolve('sip.js')))
const UPLOT_DIR = dirname(fileURLToPath(import.meta.resolve('uplot')))

const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
  svg: 'image/svg+xml',
  png: 'image/png',
  json: 'application/json; charset=utf-8'
}

/** What the phone page needs of the node; undefined ws: no WebSocket transport. */
export interface PagesBackend {
  ws (): string | undefined
  domains (): string[]
}

/** `rel` under `root`, or undefined when it would leave it. */
function inside (root: string, rel: string): string | undefined {
  const full = resolve(root, rel)
  return full.startsWith(root.endsWith(sep) ? root : root + sep) ? full : undefined
}

async function sendFile (ctx: RouteContext, route: string, file: string | undefined): Promise<void> {
  const ext = file?.slice(file.lastIndexOf('.') + 1) ?? ''
  let body: Buffer
  try {
    if (file === undefined || TYPES[ext] === undefined) throw new Error('no such file')
    body = await readFile(file)
  } catch {
    ctx.error(route, 404, 'not_found', 'no such file')
    return
  }
  ctx.count(route, 200)
  ctx.res.writeHead(200, {
    'content-type': TYPES[ext],
    'content-length': body.byteLength,
    'cache-control': 'no-cache',
    'x-content-type-options': 'nosniff',
    // the pages talk to this node only (and the phone to its SIP WebSocket)
    'content-security-policy': "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
  })
  ctx.res.end(ctx.req.method === 'HEAD' ? undefined : body)
}

const DASHBOARD_FILE = /^\/dashboard\/([a-z0-9][a-z0-9-]{0,63}\.(?:js|css|html|svg|png))$/u
const UPLOT_FILE = /^\/vendor\/uplot\/(uPlot\.iife\.min\.js|uPlot\.min\.css)$/u
const SIPJS_FILE = /^\/vendor\/sip\.js\/((?:[a-z0-9_-]{1,64}\/){0,4}[a-z0-9_.-]{1,80}\.js)$/u

/** Answers the page paths; false for any other path. */
export async function pageRoute (ctx: RouteContext, backend: PagesBackend | undefined): Promise<boolean> {
  const { path } = ctx
  let m: RegExpExecArray | null
  if (path === '/' || path === '/index.html') {
    if (readOnly(ctx, 'page')) await sendFile(ctx, 'page', join(DASHBOARD_DIR, 'index.html'))
    return true
  }
  if (path === '/phone' || path === '/phone/' || path === '/phone/config.json') {
    if (!readOnly(ctx, 'phone')) return true
    const ws = backend?.ws()
    if (ws === undefined) {
      ctx.error('phone', 404, 'phone_unavailable', 'the browser phone needs SIP over WebSocket: start the node with --ws host:port')
      return true
    }
    if (path === '/phone/config.json') ctx.send('phone', 200, { ws: `ws://${ws}`, domains: backend?.domains() ?? [] })
    else await sendFile(ctx, 'phone', join(DASHBOARD_DIR, 'phone.html'))
    return true
  }
  if ((m = DASHBOARD_FILE.exec(path)) !== null) {
    if (readOnly(ctx, 'page')) await sendFile(ctx, 'page', inside(DASHBOARD_DIR, m[1]))
    return true
  }
  if ((m = UPLOT_FILE.exec(path)) !== null) {
    if (readOnly(ctx, 'vendor')) await sendFile(ctx, 'vendor', inside(UPLOT_DIR, m[1]))
    return true
  }
  if ((m = SIPJS_FILE.exec(path)) !== null) {
    if (readOnly(ctx, 'vendor')) await sendFile(ctx, 'vendor', m[1].split('/').some(s => s.startsWith('.')) ? undefined : inside(SIPJS_DIR, m[1]))
    return true
  }
  return false
}
