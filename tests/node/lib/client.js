'use strict'
// node-minecraft-protocol clients in offline mode. They dial 127.0.0.1:<port> but put `hostname` in the
// handshake, so the proxy under test routes them exactly as it would route a real player.
const net = require('net')
const mc = require('minecraft-protocol')
const nbt = require('prismarine-nbt')
const { HOST, withTimeout } = require('./util')

/** Turn a chat component (JSON string, parsed JSON or NBT) into plain text. */
function componentText (c) {
  if (c == null) return ''
  if (typeof c === 'string') {
    try { return componentText(JSON.parse(c)) } catch (e) { return c }
  }
  if (typeof c === 'object' && c.type && c.value !== undefined && !Array.isArray(c)) {
    try { return componentText(nbt.simplify(c)) } catch (e) {}
  }
  if (Array.isArray(c)) return c.map(componentText).join('')
  if (typeof c === 'object') {
    let s = typeof c.text === 'string' ? c.text : ''
    if (s === '' && c[''] !== undefined) s = String(c[''])
    if (c.translate) s += c.translate + (c.with ? '(' + c.with.map(componentText).join(',') + ')' : '')
    if (Array.isArray(c.extra)) s += c.extra.map(componentText).join('')
    return s
  }
  return String(c)
}

/**
 * Start a client. Returns { client, state, socketInfo } right away; `state` fills in as things happen:
 *   messages: plain-text system/player chat lines received
 *   keepAlives: keep-alives received from the (proxied) backend
 *   disconnectReason: raw reason of a login or play disconnect, if any
 *   ended / endReason / error
 *   inPlay: true once the Join Game packet arrived
 */
function startClient ({ port, hostname, username, version }) {
  const state = {
    messages: [],
    keepAlives: 0,
    disconnectReason: null,
    ended: false,
    endReason: null,
    error: null,
    inPlay: false,
    localPort: null,
    localAddress: null
  }
  const client = mc.createClient({
    host: hostname,
    port,
    username,
    version,
    auth: 'offline',
    hideErrors: true,
    connect: (c) => {
      const sock = net.connect(port, HOST)
      sock.once('connect', () => {
        state.localPort = sock.localPort
        state.localAddress = sock.localAddress
      })
      c.setSocket(sock)
    }
  })
  client.on('error', (err) => { state.error = state.error || err })
  client.on('end', (reason) => { state.ended = true; state.endReason = reason })
  client.on('disconnect', (p) => { state.disconnectReason = p.reason }) // login state
  client.on('kick_disconnect', (p) => { state.disconnectReason = p.reason }) // play state
  client.on('login', () => { state.inPlay = true })
  client.on('keep_alive', () => { state.keepAlives++ })
  const onMsg = (m) => state.messages.push(componentText(m.formattedMessage))
  client.on('systemChat', onMsg)
  client.on('playerChat', onMsg)
  return { client, state }
}

function describeEnd (state) {
  const parts = []
  if (state.disconnectReason != null) parts.push(`disconnected: ${JSON.stringify(componentText(state.disconnectReason))} (raw ${JSON.stringify(state.disconnectReason)})`)
  if (state.error) parts.push(`error: ${state.error.message}`)
  if (state.ended) parts.push(`connection ended (${state.endReason})`)
  return parts.join('; ') || 'no reason'
}

/** Wait until predicate(state) holds; reject early if the connection ends first. */
function waitState (handle, pred, ms, what) {
  const { client, state } = handle
  return withTimeout(new Promise((resolve, reject) => {
    const check = () => {
      if (pred(state)) { cleanup(); resolve(state); return true }
      if (state.ended) { cleanup(); reject(new Error(`${what}: ${describeEnd(state)}`)); return true }
      return false
    }
    const timer = setInterval(check, 20)
    const onEnd = () => setImmediate(check)
    client.on('end', onEnd)
    function cleanup () { clearInterval(timer); client.removeListener('end', onEnd) }
    check()
  }), ms, what).catch((e) => {
    if (/timed out/.test(e.message)) e.message += ` (client state: ${describeEnd(state)}, inPlay=${state.inPlay}, messages=${JSON.stringify(state.messages)})`
    throw e
  })
}

/**
 * Log in, reach play state and receive the backend's greeting. Resolves with the handle.
 * `expectBackend`: backend name that must greet the player.
 */
async function joinGame (opts, expectBackend, ms = 15000) {
  const handle = startClient(opts)
  try {
    await waitState(handle, (s) => s.messages.some((m) => m.includes('welcome to backend:')), ms,
      `${opts.username} joining via ${opts.hostname}`)
  } catch (e) {
    handle.client.end()
    throw e
  }
  const greet = handle.state.messages.find((m) => m.includes('welcome to backend:'))
  if (expectBackend && !greet.includes(`backend:${expectBackend}`)) {
    handle.client.end()
    throw new Error(`${opts.username} via ${opts.hostname} reached the wrong backend: greeting ${JSON.stringify(greet)}, expected backend:${expectBackend}`)
  }
  return handle
}

/** Send one chat line and wait for the backend's echo. */
async function chatRoundTrip (handle, backendName, text, ms = 5000) {
  handle.client.chat(text)
  const want = `echo:${backendName}:${text}`
  await waitState(handle, (s) => s.messages.includes(want), ms, `echo of ${JSON.stringify(text)}`)
}

/** Log in expecting to be refused during login; resolves with the reason as plain text (and raw). */
async function loginExpectRefusal (opts, ms = 10000) {
  const handle = startClient(opts)
  try {
    await withTimeout(new Promise((resolve) => {
      const timer = setInterval(() => {
        if (handle.state.ended || handle.state.disconnectReason != null || handle.state.inPlay) { clearInterval(timer); resolve() }
      }, 20)
    }), ms, `${opts.username} login (expecting refusal)`)
  } finally {
    handle.client.end()
  }
  if (handle.state.inPlay) throw new Error(`${opts.username} was let in (reached play state) but should have been refused`)
  return {
    raw: handle.state.disconnectReason,
    text: handle.state.disconnectReason == null ? null : componentText(handle.state.disconnectReason),
    state: handle.state
  }
}

/**
 * Server list ping through `port` with `hostname` in the handshake.
 * Resolves with { response (parsed JSON), pong: bool, pongTime }.
 */
function statusPing ({ port, hostname, version }, ms = 8000) {
  const mcData = require('minecraft-data')(version)
  const client = new mc.Client(false, mcData.version.minecraftVersion)
  client.on('error', () => {})
  const p = new Promise((resolve, reject) => {
    let response = null
    const payload = BigInt(Date.now()) * 1000n + 123n
    client.once('server_info', (packet) => {
      try { response = JSON.parse(packet.response) } catch (e) { reject(new Error(`status response is not JSON: ${JSON.stringify(packet.response)}`)); return }
      client.once('ping', (pong) => {
        const t = BigInt.asIntN(64, typeof pong.time === 'bigint' ? pong.time : toBig(pong.time))
        resolve({ response, pong: true, pongMatches: t === payload, pongTime: t })
        client.end()
      })
      client.write('ping', { time: payload })
    })
    client.on('end', () => {
      if (!response) reject(new Error('connection closed before any status response'))
      else reject(new Error(`connection closed after the status response but before the pong (response: ${JSON.stringify(response)})`))
    })
    const sock = net.connect(port, HOST)
    client.setSocket(sock)
    sock.once('connect', () => {
      client.write('set_protocol', { protocolVersion: mcData.version.version, serverHost: hostname, serverPort: port, nextState: 1 })
      client.state = mc.states.STATUS
      client.write('ping_start', {})
    })
  })
  return withTimeout(p, ms, `status ping via ${hostname}`).finally(() => { try { client.end() } catch (e) {} })
}

function toBig (t) {
  if (Array.isArray(t)) return (BigInt(t[0]) << 32n) | BigInt(t[1] >>> 0)
  return BigInt(t)
}

module.exports = { startClient, joinGame, chatRoundTrip, loginExpectRefusal, statusPing, waitState, componentText, describeEnd }
