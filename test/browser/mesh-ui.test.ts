// Issue 14 in a real headless browser (Debian chromium through puppeteer-core) against a 3-node
// mesh of separate `sipmesh start` processes on 127.0.0.1:
// - the dashboard of node 1 draws the three nodes and their connections, its plots draw the
//   REGISTER traffic (checked on a screenshot: pixels of the series colour in the plot's region),
//   and a click on an AoR shows its owner and bindings;
// - the browser phone on node 1 (alice) and on node 2 (bob): both register over WebSocket, see
//   each other's presence (SUBSCRIBE/NOTIFY) and bob's published status, chat both ways (MESSAGE),
//   and a message sent while bob is away is stored (202) and arrives when he registers again.
// Skips without chromium, unless SIPMESH_REQUIRE_BROWSER=1 (CI), where that is a failure.
import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { run, stop, httpGet, waitFor, register, UdpUa, type Proc } from '../e2e/fixtures/processes.ts'
import { browserSkip, launchBrowser, type TestBrowser } from './fixtures/browser.ts'
import type { Page } from 'puppeteer-core'

interface Node { name: string, dataDir: string, proc?: Proc, udp: number, admin: string, peerId: string, multiaddr: string }

async function startNode (n: Node, bootstrap?: string): Promise<void> {
  const args = ['start', '--domain', 'example.com', '--sip', '127.0.0.1:0', '--ws', '127.0.0.1:0', '--p2p', '/ip4/127.0.0.1/tcp/0',
    '--admin', '127.0.0.1:0', '--data-dir', n.dataDir, '--log-level', 'info']
  if (bootstrap !== undefined) args.push('--bootstrap', bootstrap)
  n.proc = run(args)
  const started = JSON.parse(await n.proc.waitForLine(l => l.includes('"sipmesh node started"'), 30_000)) as { peerId: string, multiaddrs: string[], admin: string, sip: string }
  n.udp = Number(started.sip.split(':')[1])
  n.admin = started.admin
  n.peerId = started.peerId
  n.multiaddr = started.multiaddrs[0]
}

/** Pixels of a PNG screenshot, decoded by the browser itself (a canvas of a blank page). */
async function countPixels (browser: TestBrowser, png: Uint8Array, match: { rgb: [number, number, number], tolerance: number }): Promise<{ matching: number, nonWhite: number, total: number }> {
  const page = await browser.page()
  try {
    // browser-side code as a string: this project's TypeScript has no DOM types
    return await page.evaluate(`(async () => {
      const m = ${JSON.stringify(match)}
      const img = new Image()
      img.src = 'data:image/png;base64,${Buffer.from(png).toString('base64')}'
      await img.decode()
      const canvas = document.createElement('canvas')
      canvas.width = img.width
      canvas.height = img.height
      const ctx = canvas.getContext('2d')
      ctx.drawImage(img, 0, 0)
      const data = ctx.getImageData(0, 0, img.width, img.height).data
      let matching = 0
      let nonWhite = 0
      for (let i = 0; i < data.length; i += 4) {
        if (data[i] < 245 || data[i + 1] < 245 || data[i + 2] < 245) nonWhite++
        if (Math.abs(data[i] - m.rgb[0]) <= m.tolerance && Math.abs(data[i + 1] - m.rgb[1]) <= m.tolerance && Math.abs(data[i + 2] - m.rgb[2]) <= m.tolerance) matching++
      }
      return { matching, nonWhite, total: data.length / 4 }
    })()`) as { matching: number, nonWhite: number, total: number }
  } finally {
    await page.close()
  }
}

/**
 * Click like a user: the page comes to the front first (headless Chromium runs no animation
 * frames in a background tab, and puppeteer's click waits for one).
 */
async function press (page: Page, selector: string): Promise<void> {
  await page.bringToFront()
  await page.click(selector)
}

/** browser-side: the chat log shows `line` */
const logHas = (line: string): string => `document.getElementById('log').textContent.includes(${JSON.stringify(line)})`

async function text (page: Page, selector: string): Promise<string> {
  return await page.$eval(selector, e => e.textContent ?? '')
}

describe('dashboard and browser phone in headless chromium, 3-node mesh of processes', { skip: browserSkip }, () => {
  const nodes: Node[] = []
  const uas: UdpUa[] = []
  let browser: TestBrowser
  let dir = ''

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sipmesh-browser-'))
    for (let i = 0; i < 3; i++) nodes.push({ name: `n${i + 1}`, dataDir: join(dir, `n${i + 1}`), udp: 0, admin: '', peerId: '', multiaddr: '' })
    const browserLaunch = launchBrowser()
    await startNode(nodes[0])
    const boot = `${nodes[0].multiaddr.replace(/\/p2p\/.*$/, '')}/p2p/${nodes[0].peerId}`
    await Promise.all([startNode(nodes[1], boot), startNode(nodes[2], boot)])
    browser = await browserLaunch
    await waitFor(async () => {
      for (const n of nodes) {
        const s = JSON.parse((await httpGet(n.admin, '/status')).body) as { peers: string[] }
        if (!nodes.filter(o => o !== n).every(o => s.peers.includes(o.peerId))) return false
      }
      return true
    }, 20_000, 'every node to see the two others')
  })

  after(async () => {
    await browser?.close()
    for (const u of uas) u.close()
    await Promise.all(nodes.map(async n => await stop(n.proc)))
    rmSync(dir, { recursive: true, force: true })
  })

  test('the dashboard draws the three nodes and their connections, plots the traffic, and shows an AoR\'s owner and bindings', async () => {
    const [n1] = nodes
    const page = await browser.page()
    await page.goto(`http://${n1.admin}/`, { waitUntil: 'load', timeout: 30_000 })
    await page.waitForFunction("document.querySelectorAll('#mesh g.node:not(.unknown)').length === 3 && document.querySelectorAll('#mesh line').length === 3", { timeout: 20_000, polling: 200 })
    const drawn = await page.$$eval('#mesh g.node', gs => gs.map(g => ({ peer: g.getAttribute('data-peer'), self: g.classList.contains('self') })))
    assert.deepEqual(drawn.map(d => d.peer).sort(), nodes.map(n => n.peerId).sort())
    assert.deepEqual(drawn.filter(d => d.self).map(d => d.peer), [n1.peerId])

    // REGISTER traffic on node 1 for a few seconds: the SIP requests/s plot rises
    const ua = new UdpUa()
    uas.push(ua)
    await ua.open()
    for (let i = 0; i < 24; i++) {
      assert.match(await ua.request({ host: '127.0.0.1', port: n1.udp }, register(`sip:user${i}@example.com`, ua.port)), /^SIP\/2\.0 200 /)
      await new Promise(resolve => setTimeout(resolve, 120))
    }
    await page.waitForFunction("['plot-sip', 'plot-claims'].every(id => window.sipmeshDashboard.plots[id].data[1].some(v => v !== null && v > 0))", { timeout: 15_000, polling: 200 })
    await new Promise(resolve => setTimeout(resolve, 1500)) // a few more points, then the picture
    for (const [id, rgb] of [['plot-sip', [217, 72, 15]], ['plot-claims', [217, 72, 15]]] as const) {
      const canvas = await page.$(`#${id} canvas`)
      assert.ok(canvas !== null, `${id} has a canvas`)
      const png = await canvas.screenshot({ type: 'png' })
      const px = await countPixels(browser, png, { rgb: [...rgb], tolerance: 40 })
      assert.ok(px.matching > 40, `${id}: ${px.matching} pixels of the series colour in ${px.total}`)
      assert.ok(px.nonWhite > px.total * 0.01, `${id}: axes and grid drawn (${px.nonWhite} of ${px.total})`)
    }

    // the registrations table lists them; a click on an AoR shows its owner (node 1) and its binding
    await page.waitForFunction("document.querySelectorAll('#registrations tbody a.aor').length >= 24", { timeout: 10_000, polling: 200 })
    await page.click('#registrations tbody a.aor')
    await page.waitForSelector('#aor-owner', { timeout: 10_000 })
    assert.match(await text(page, '#aor-owner'), new RegExp(`owned by this node \\(${n1.peerId}\\)`))
    assert.match(await text(page, '#aor-detail tbody'), new RegExp(`sip:user\\d+@127\\.0\\.0\\.1:${ua.port}`))
    // the same AoR looked up on node 3's dashboard: owned by node 1, bindings fetched from it
    const page3 = await browser.page()
    await page3.goto(`http://${nodes[2].admin}/`, { waitUntil: 'load', timeout: 30_000 })
    await page3.type('#aor-input', 'sip:user7@example.com')
    await page3.click('#aor-form button')
    await page3.waitForSelector('#aor-owner', { timeout: 10_000 })
    assert.match(await text(page3, '#aor-owner'), new RegExp(`owned by ${n1.peerId}`))
    assert.match(await text(page3, '#aor-detail tbody'), new RegExp(`sip:user7@127\\.0\\.0\\.1:${ua.port}`))
    assert.deepEqual(page.errors, [])
    assert.deepEqual(page3.errors, [])
    await page.close()
    await page3.close()
  })

  test('the browser phone: alice on node 1 and bob on node 2 see each other\'s presence, chat, and a message stored while bob is away arrives', async () => {
    const [n1, n2] = nodes
    const open = async (n: Node, user: string): Promise<Page & { errors: string[] }> => {
      const page = await browser.page()
      await page.goto(`http://${n.admin}/phone`, { waitUntil: 'load', timeout: 30_000 })
      await page.waitForSelector('body[data-ready="true"]', { timeout: 15_000 })
      await page.type('#user', user)
      await press(page, '#register')
      await page.waitForSelector('body[data-registered="true"]', { timeout: 15_000 })
      return page
    }
    const alice = await open(n1, 'alice')
    const bob = await open(n2, 'bob')
    const buddy = async (page: Page, who: string): Promise<void> => {
      await page.type('#buddy', who)
      await press(page, '#add-buddy')
    }
    const statusOf = (page: Page, aor: string, status: string, ms = 15_000): Promise<unknown> =>
      page.waitForSelector(`#buddies li[data-aor="${aor}"][data-status="${status}"]`, { timeout: ms })
    await buddy(alice, 'bob')
    await buddy(bob, 'alice')
    // registered, nothing published: open (from registration state)
    await statusOf(alice, 'sip:bob@example.com', 'open')
    await statusOf(bob, 'sip:alice@example.com', 'open')

    // bob publishes "away": alice sees it
    await bob.select('#status', 'away')
    await press(bob, '#publish')
    await statusOf(alice, 'sip:bob@example.com', 'away')

    // chat both ways (alice's first buddy is the chat's partner)
    await alice.type('#text', 'hello bob, from node 1')
    await press(alice, '#send')
    await bob.waitForFunction(logHas('sip:alice@example.com: hello bob, from node 1'), { timeout: 15_000, polling: 200 })
    await bob.type('#text', 'hi alice, node 2 here')
    await press(bob, '#send')
    await alice.waitForFunction(logHas('sip:bob@example.com: hi alice, node 2 here'), { timeout: 15_000, polling: 200 })

    // bob signs out: alice sees him closed; her message is stored (202) and arrives when he is back
    await press(bob, '#unregister')
    await bob.waitForSelector('body[data-registered="false"]', { timeout: 15_000 })
    await statusOf(alice, 'sip:bob@example.com', 'closed')
    await alice.type('#text', 'while you were away')
    await press(alice, '#send')
    await alice.waitForFunction(logHas('is away: the message is stored'), { timeout: 15_000, polling: 200 })
    await press(bob, '#register')
    await bob.waitForSelector('body[data-registered="true"]', { timeout: 15_000 })
    await bob.waitForFunction(logHas('sip:alice@example.com: while you were away'), { timeout: 20_000, polling: 200 })

    assert.deepEqual(alice.errors, [])
    assert.deepEqual(bob.errors, [])
    await alice.close()
    await bob.close()
  })
})
