// The browser phone for developers (GET /phone when the node runs SIP over WebSocket): a SIP.js
// UserAgent (served from node_modules/sip.js/lib as ES modules) that registers with this node
// (RFC 3261 10, over RFC 7118 WebSocket), watches buddies' presence (SUBSCRIBE/NOTIFY, RFC 3856
// with PIDF bodies, RFC 3863), publishes its own status (PUBLISH, RFC 3903) and chats (MESSAGE,
// RFC 3428). Messages stored for the user while away arrive once it registers.
// Everything received is written as text (textContent), never parsed as HTML.
import { Messager, Publisher, Registerer, RegistererState, Subscriber, UserAgent } from '/vendor/sip.js/index.js'

const $ = (id) => document.getElementById(id)
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v)
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)))
  return e
}

let config
let ua
let registerer
let publisher
let me
const buddies = new Map() // aor → { subscriber, status, note, li }
let chatWith

function state (text) { $('state').textContent = text }

function log (cls, who, text) {
  const line = el('div', { class: `msg ${cls}` }, el('span', { class: 'who' }, who ? `${who}: ` : ''), text)
  $('log').append(line)
  $('log').scrollTop = $('log').scrollHeight
}

/** `bob` → sip:bob@<domain>; a full sip: URI as it is */
function toAor (text) {
  const t = text.trim()
  if (t === '') return undefined
  const aor = t.startsWith('sip:') ? t : `sip:${t.includes('@') ? t : `${t}@${$('domain').value}`}`
  return UserAgent.makeURI(aor) ? aor : undefined
}

// ---- presence documents (RFC 3863) --------------------------------------------------------------

const xmlEscape = (s) => s.replace(/[<>&"']/g, c => `&#${c.charCodeAt(0)};`)

function pidf (entity, status, note) {
  // basic open/closed carries reachability; away and busy are open with a note (RFC 3863 4.1.4)
  const basic = status === 'closed' ? 'closed' : 'open'
  const text = note || { open: 'available', away: 'away', busy: 'busy', closed: 'offline' }[status]
  return '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="${xmlEscape(entity)}">` +
    `<tuple id="phone"><status><basic>${basic}</basic></status><note>${xmlEscape(text)}</note></tuple></presence>`
}

function readPidf (body) {
  if (!body) return { status: 'unknown', note: '' }
  const doc = new DOMParser().parseFromString(body, 'application/xml')
  if (doc.getElementsByTagName('parsererror').length > 0) return { status: 'unknown', note: '' }
  const basics = [...doc.getElementsByTagNameNS('*', 'basic')].map(b => b.textContent.trim())
  const notes = [...doc.getElementsByTagNameNS('*', 'note')].map(n => n.textContent.trim()).filter(Boolean)
  const note = notes[0] ?? ''
  let status = basics.includes('open') ? 'open' : basics.length > 0 ? 'closed' : 'unknown'
  if (status === 'open' && /^(away|busy)$/i.test(note)) status = note.toLowerCase()
  return { status, note }
}

// ---- buddies --------------------------------------------------------------------------------------

function renderBuddy (aor) {
  const b = buddies.get(aor)
  const dot = el('span', { class: `dot ${b.status}` })
  b.li.replaceChildren(dot, el('span', { class: 'mono' }, aor), el('span', { class: 'dim status' }, b.status === 'unknown' ? 'unknown' : `${b.status}${b.note && b.note !== b.status ? ` – ${b.note}` : ''}`))
  b.li.dataset.status = b.status
  b.li.classList.toggle('selected', chatWith === aor)
}

function selectChat (aor) {
  chatWith = aor
  $('chat-with').textContent = `with ${aor}`
  for (const key of buddies.keys()) renderBuddy(key)
  $('send').disabled = ua === undefined
}

async function addBuddy (aor) {
  if (buddies.has(aor) || ua === undefined) return
  const li = el('li', { 'data-aor': aor })
  li.addEventListener('click', () => { selectChat(aor) })
  $('buddies').append(li)
  const subscriber = new Subscriber(ua, UserAgent.makeURI(aor), 'presence', { expires: 600 })
  buddies.set(aor, { subscriber, status: 'unknown', note: '', li })
  subscriber.delegate = {
    onNotify: (notification) => {
      void notification.accept()
      const b = buddies.get(aor)
      if (b === undefined) return
      Object.assign(b, readPidf(notification.request.body))
      renderBuddy(aor)
    }
  }
  renderBuddy(aor)
  if (chatWith === undefined) selectChat(aor)
  await subscriber.subscribe()
}

// ---- registration -----------------------------------------------------------------------------

async function register (event) {
  event.preventDefault()
  const user = $('user').value.trim()
  me = `sip:${user}@${$('domain').value}`
  if (!/^[A-Za-z0-9._~!$&'()*+,;=%-]{1,64}$/.test(user) || !UserAgent.makeURI(me)) { state('not a valid user name'); return }
  $('register').disabled = true
  state('connecting…')
  const password = $('password').value
  ua = new UserAgent({
    uri: UserAgent.makeURI(me),
    transportOptions: { server: config.ws },
    ...(password ? { authorizationUsername: user, authorizationPassword: password } : {}),
    // /phone?debug=1: SIP.js logs every message to the browser console
    ...(new URLSearchParams(window.location.search).has('debug') ? { logLevel: 'debug', logBuiltinEnabled: true } : { logBuiltinEnabled: false }),
    delegate: {
      onMessage: (message) => {
        void message.accept()
        const from = message.request.from.uri.toString()
        log('in', from, message.request.body)
        if (!buddies.has(from)) void addBuddy(from)
      },
      onDisconnect: (err) => { state(err ? `disconnected: ${err.message}` : 'disconnected') }
    }
  })
  try {
    await ua.start()
    registerer = new Registerer(ua, { expires: 300 })
    registerer.stateChange.addListener((s) => {
      if (s === RegistererState.Registered) {
        state('registered')
        $('me').textContent = me
        document.body.dataset.registered = 'true'
        for (const id of ['publish', 'add-buddy', 'unregister']) $(id).disabled = false
        $('send').disabled = chatWith === undefined
      } else if (s === RegistererState.Unregistered) {
        state('not registered')
        document.body.dataset.registered = 'false'
      }
    })
    await registerer.register({
      requestDelegate: { onReject: (r) => { state(`registration refused: ${r.message.statusCode} ${r.message.reasonPhrase}`); $('register').disabled = false } }
    })
    publisher = new Publisher(ua, UserAgent.makeURI(me), 'presence', { expires: 600, contentType: 'application/pidf+xml' })
  } catch (err) {
    state(`cannot connect: ${err.message}`)
    $('register').disabled = false
  }
}

async function unregister () {
  for (const b of buddies.values()) await b.subscriber.unsubscribe().catch(() => {})
  await registerer?.unregister().catch(() => {})
  await ua?.stop().catch(() => {})
  ua = undefined
  buddies.clear()
  $('buddies').replaceChildren()
  for (const id of ['publish', 'add-buddy', 'unregister', 'send']) $(id).disabled = true
  $('register').disabled = false
  $('me').textContent = 'not registered'
  state('not registered')
  document.body.dataset.registered = 'false'
}

async function publishStatus (event) {
  event.preventDefault()
  if (publisher === undefined) return
  const status = $('status').value
  await publisher.publish(pidf(me, status, $('note').value.trim()))
  log('sys', '', `status: ${status}${$('note').value.trim() ? ` (${$('note').value.trim()})` : ''}`)
}

function send (event) {
  event.preventDefault()
  const text = $('text').value
  if (ua === undefined || chatWith === undefined || text === '') return
  const to = chatWith
  $('text').value = ''
  log('out', 'me', text)
  new Messager(ua, UserAgent.makeURI(to), text).message({
    requestDelegate: {
      onAccept: (r) => { if (r.message.statusCode === 202) log('sys', '', `${to} is away: the message is stored and delivered when they register`) },
      onReject: (r) => { log('sys', '', `not delivered to ${to}: ${r.message.statusCode} ${r.message.reasonPhrase}`) }
    }
  }).catch((err) => { log('sys', '', `not sent: ${err.message}`) })
}

async function main () {
  const res = await fetch('/phone/config.json', { cache: 'no-store' })
  config = await res.json()
  if (!res.ok) { state(config?.error?.message ?? 'no phone on this node'); return }
  $('domain').replaceChildren(...config.domains.map(d => el('option', { value: d }, d)))
  $('login').addEventListener('submit', (e) => { void register(e) })
  $('unregister').addEventListener('click', () => { void unregister() })
  $('status-form').addEventListener('submit', (e) => { void publishStatus(e) })
  $('buddy-form').addEventListener('submit', (e) => {
    e.preventDefault()
    const aor = toAor($('buddy').value)
    if (aor === undefined) { state('not a valid address'); return }
    $('buddy').value = ''
    void addBuddy(aor)
  })
  $('chat-form').addEventListener('submit', send)
  state(`ready (SIP over ${config.ws})`)
  document.body.dataset.ready = 'true'
}

void main()
