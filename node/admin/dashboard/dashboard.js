// The live mesh dashboard (GET / of every node's admin API). Plain browser JavaScript, no build
// step: it polls this node's JSON endpoints (/summary every second for the plots, the listings
// every few seconds, /mesh for the drawing) and draws with uPlot (served from node_modules).
// Everything shown comes from SIP users or other nodes, so it is written as text (textContent,
// SVG attributes), never parsed as HTML.

const WINDOW_S = 300 // the plots show the last five minutes
const SUMMARY_MS = 1000
const LISTS_MS = 3000
const MESH_MS = 3000

const $ = (id) => document.getElementById(id)
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v)
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)))
  return e
}
const short = (id) => id.length > 14 ? `${id.slice(0, 6)}…${id.slice(-6)}` : id

async function getJson (path) {
  const res = await fetch(path, { cache: 'no-store' })
  const body = await res.json().catch(() => ({}))
  if (!res.ok) throw new Error(body?.error?.message ?? `${path}: HTTP ${res.status}`)
  return body
}

function aorLink (aor) {
  const a = el('a', { class: 'aor', tabindex: '0' }, aor)
  a.addEventListener('click', () => { void showAor(aor) })
  return a
}

function fillTable (id, rows) {
  const body = $(id).tBodies[0]
  body.replaceChildren(...rows.map(cells => el('tr', {}, ...cells.map(c => el('td', {}, c)))))
}

// ---- plots ----------------------------------------------------------------------------------

const COLORS = ['#d9480f', '#1c5fb8', '#2b8a3e', '#862e9c']
const plots = {}

function makePlot (id, series) {
  const box = $(id)
  const data = [[], ...series.map(() => [])]
  const opts = {
    width: Math.max(300, box.clientWidth),
    height: 200,
    cursor: { show: true },
    legend: { show: true },
    scales: { x: { time: true }, y: { range: (_u, min, max) => [0, Math.max(1, max * 1.1)] } },
    series: [{}, ...series.map((label, i) => ({ label, stroke: COLORS[i], width: 2, points: { show: false } }))],
    axes: [{}, { size: 50 }]
  }
  plots[id] = { plot: new uPlot(opts, data, box), data }
}

function pushPoint (id, t, values) {
  const p = plots[id]
  p.data[0].push(t)
  values.forEach((v, i) => p.data[i + 1].push(v))
  while (p.data[0].length > 0 && p.data[0][0] < t - WINDOW_S) for (const s of p.data) s.shift()
  p.plot.setData(p.data)
}

let last
async function pollSummary () {
  const s = await getJson('/summary')
  const t = s.time / 1000
  if (last !== undefined && t > last.t) {
    const dt = t - last.t
    const rate = (k) => Math.max(0, (s.totals[k] - last.totals[k]) / dt)
    pushPoint('plot-sip', t, [rate('sipRequests')])
    pushPoint('plot-claims', t, [rate('claims'), rate('claimsStored')])
    pushPoint('plot-relay', t, [rate('forwardedMesh'), rate('deliveredLocal'), rate('meshIn')])
    pushPoint('plot-latency', t, [s.now.peerRttMs ?? null])
  }
  last = { t, totals: s.totals }
  $('reg-count').textContent = `${s.now.registrations} AoRs, ${s.now.bindings} contacts`
}

// ---- the mesh drawing -------------------------------------------------------------------------

const SVG = 'http://www.w3.org/2000/svg'
const svgEl = (tag, attrs) => {
  const e = document.createElementNS(SVG, tag)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v))
  return e
}

function drawMesh (mesh) {
  const svg = $('mesh')
  const W = 600
  const H = 360
  const nodes = mesh.nodes
  // a circle, this node first at the top; known-by-id nodes on the same ring
  const selfIndex = Math.max(0, nodes.findIndex(n => n.self))
  const ordered = [...nodes.slice(selfIndex), ...nodes.slice(0, selfIndex)]
  const r = nodes.length === 1 ? 0 : Math.min(W, H) / 2 - 50
  const pos = new Map(ordered.map((n, i) => {
    const a = -Math.PI / 2 + 2 * Math.PI * i / ordered.length
    return [n.peerId, { x: W / 2 + r * Math.cos(a), y: H / 2 + r * Math.sin(a) }]
  }))
  const parts = []
  for (const [a, b] of mesh.links) {
    const p = pos.get(a)
    const q = pos.get(b)
    if (p && q) parts.push(svgEl('line', { x1: p.x, y1: p.y, x2: q.x, y2: q.y, 'data-link': `${a} ${b}` }))
  }
  for (const n of ordered) {
    const p = pos.get(n.peerId)
    const g = svgEl('g', { class: `node${n.self ? ' self' : ''}${n.reachable ? '' : ' unknown'}`, 'data-peer': n.peerId })
    const title = svgEl('title', {})
    title.textContent = n.reachable
      ? `${n.peerId}\nSIP ${n.sip}${n.ws ? `, WS ${n.ws}` : ''}\nadmin ${n.admin}\n${n.registrations} registrations, ${n.ownedClaims} claims${n.rttMs !== undefined ? `\nRTT ${n.rttMs} ms` : ''}`
      : `${n.peerId}\n(known by id only${n.error ? `: ${n.error}` : ''})`
    g.append(title, svgEl('circle', { cx: p.x, cy: p.y, r: n.self ? 18 : 14 }))
    const label = svgEl('text', { x: p.x, y: p.y + 30 })
    label.textContent = short(n.peerId)
    g.append(label)
    if (n.reachable) {
      const sub = svgEl('text', { x: p.x, y: p.y + 43 })
      sub.textContent = `${n.registrations} reg · ${n.ownedClaims} claims`
      g.append(sub)
      if (!n.self) g.addEventListener('click', () => { window.open(`http://${n.admin}/`, '_blank', 'noopener') })
    }
    parts.push(g)
  }
  svg.replaceChildren(...parts)
  const reachable = nodes.filter(n => n.reachable).length
  $('mesh-count').textContent = `${nodes.length} node${nodes.length === 1 ? '' : 's'} (${reachable} answering), ${mesh.links.length} connections`
  const me = nodes.find(n => n.self)
  if (me) {
    $('node-id').textContent = me.peerId
    $('node-sip').textContent = `SIP ${me.sip}${me.ws ? ` · WS ${me.ws}` : ''} · admin ${me.admin}`
    $('phone-link').hidden = !me.ws
  }
}

// ---- listings ---------------------------------------------------------------------------------

let regCursor
let paged = false // the user asked for more pages: the periodic refresh leaves the table alone
async function loadRegistrations (append) {
  paged = append
  const prefix = $('reg-prefix').value.trim()
  const q = new URLSearchParams({ limit: '50' })
  if (prefix !== '') q.set('prefix', prefix)
  if (append && regCursor) q.set('after', regCursor)
  const page = await getJson(`/registrations?${q}`)
  const rows = page.items.map(r => [
    aorLink(r.aor),
    r.bindings.map(b => b.contact).join('\n'),
    r.bindings.map(b => new Date(b.expires).toLocaleTimeString()).join('\n')
  ])
  const body = $('registrations').tBodies[0]
  if (!append) body.replaceChildren()
  for (const cells of rows) body.append(el('tr', {}, ...cells.map(c => el('td', {}, c))))
  regCursor = page.next
  $('reg-more').hidden = page.next === undefined
}

async function pollLists () {
  const [claims, subs, offline, peers] = await Promise.all([
    getJson('/claims?limit=100'), getJson('/subscriptions?limit=100').catch(() => undefined),
    getJson('/offline?limit=100').catch(() => undefined), getJson('/peers')
  ])
  const self = $('node-id').textContent
  fillTable('claims', claims.stored.items.map(c => [aorLink(c.aor), c.own ? 'this node' : short(c.owner), c.version, new Date(c.expires).toLocaleTimeString()]))
  $('claims-count').textContent = `${claims.owned.total} owned, ${claims.stored.items.filter(c => c.owner !== self).length}${claims.stored.truncated ? '+' : ''} replicated for other nodes`
  if (subs) {
    fillTable('subscriptions', subs.presentities.map(p => [aorLink(p.aor), p.mode === 'remote' ? `at ${short(p.owner ?? '?')} (${p.backend ?? 'no back-end'})` : p.mode,
      [...p.watchers, ...p.watcherNodes.map(n => `node ${short(n)}`)].join('\n')]))
    $('subs-count').textContent = `${subs.total} presentities, ${subs.subscriptions} subscriptions`
  }
  if (offline) {
    fillTable('offline', offline.users.map(u => [aorLink(u.aor), u.messages]))
    $('offline-count').textContent = `${offline.messages} messages for ${offline.total} users`
  }
  fillTable('peers', peers.map(p => [short(p.peerId), p.addresses.join('\n'), p.latencyMs !== undefined ? `${p.latencyMs} ms` : '–',
    p.sipStream.open ? `open${p.sipStream.queued ? `, ${p.sipStream.queued} queued` : ''}` : 'none']))
  $('peers-count').textContent = `${peers.length}`
}

async function showAor (aor) {
  const box = $('aor-detail')
  $('aor-input').value = aor
  box.replaceChildren(el('span', { class: 'dim' }, `looking up ${aor}…`))
  try {
    const v = await getJson(`/bindings/${encodeURIComponent(aor)}`)
    const table = el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'contact'), el('th', {}, 'expires'), el('th', {}, 'params'))),
      el('tbody', {}, ...v.bindings.map(b => el('tr', {}, el('td', {}, b.contact), el('td', {}, new Date(b.expires).toLocaleTimeString()),
        el('td', {}, Object.entries(b.params).map(([k, x]) => x === null ? k : `${k}=${x}`).join('; '))))))
    box.replaceChildren(
      el('div', { id: 'aor-owner' }, `${v.aor} is owned by `, el('span', { class: 'mono' }, v.self ? `this node (${v.owner})` : v.owner), ` · SIP ${v.sip}`),
      v.bindings.length > 0 ? table : el('div', { class: 'dim' }, 'no live bindings'))
  } catch (err) {
    box.replaceChildren(el('span', { class: 'error' }, err.message))
  }
}

// ---- start ------------------------------------------------------------------------------------

function every (ms, fn) {
  const run = async () => {
    try {
      await fn()
      $('status').textContent = `updated ${new Date().toLocaleTimeString()}`
    } catch (err) {
      $('status').textContent = `error: ${err.message}`
    }
    setTimeout(run, ms)
  }
  void run()
}

makePlot('plot-sip', ['requests'])
makePlot('plot-claims', ['made here', 'stored for others'])
makePlot('plot-relay', ['forwarded over the mesh', 'delivered to local contacts', 'received from the mesh'])
makePlot('plot-latency', ['mean peer RTT'])
$('reg-filter').addEventListener('submit', (e) => { e.preventDefault(); void loadRegistrations(false) })
$('reg-more').addEventListener('click', () => { void loadRegistrations(true) })
$('aor-form').addEventListener('submit', (e) => { e.preventDefault(); const v = $('aor-input').value.trim(); if (v) void showAor(v) })
every(SUMMARY_MS, pollSummary)
every(MESH_MS, async () => drawMesh(await getJson('/mesh')))
every(LISTS_MS, async () => { await Promise.all([pollLists(), paged ? undefined : loadRegistrations(false)]) })
window.sipmeshDashboard = { plots }
