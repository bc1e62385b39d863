'use strict'
// The scenarios. Each is `async (ctx) => {}` and throws an Error whose message is the failure reason.
// ctx (see run.js) starts backends, the proxy under test and clients, and tears them all down afterwards.
const { sleep, waitFor, assert, tcpProbe, freePort } = require('./util')
const { joinGame, chatRoundTrip, loginExpectRefusal, statusPing, componentText, describeEnd, startClient, waitState } = require('./client')
const { startProxyProtocolShim } = require('./proxyproto')

const addr = (b) => `127.0.0.1:${b.port}`

/** Keep chatting for `ms`: one round trip every 500ms. Returns the number of round trips. */
async function chatFor (h, backendName, ms, tag) {
  const end = Date.now() + ms
  let n = 0
  while (Date.now() < end) {
    await chatRoundTrip(h, backendName, `${tag} #${n}`)
    n++
    await sleep(500)
  }
  return n
}

function assertAlive (h, who) {
  assert(!h.state.ended, `${who} was disconnected: ${describeEnd(h.state)}`)
}

// 1. Login through the proxy by hostname, reach play on the right backend, chat and keep-alives for ~3 s.
// Done twice at once: through a server with the default proxy_mode (passthrough) and one with zero_copy.
async function loginPlay (ctx) {
  const alpha = await ctx.backend({ name: 'alpha' })
  const zc = await ctx.backend({ name: 'zc' })
  const proxy = await ctx.proxy({
    alpha: { domains: ['alpha.test'], addresses: [addr(alpha)] },
    zc: { domains: ['zc.test'], addresses: [addr(zc)], proxy_mode: 'zero_copy' }
  })
  await Promise.all([
    playFor(ctx, proxy, alpha, 'alpha.test', 'Steve'),
    playFor(ctx, proxy, zc, 'zc.test', 'Zed').catch((e) => { e.message = `[proxy_mode = "zero_copy"] ${e.message}`; throw e })
  ])
}

async function playFor (ctx, proxy, backend, hostname, username) {
  const h = await ctx.join({ port: proxy.port, hostname, username }, backend.name)
  const ka0 = h.state.keepAlives
  const rounds = await chatFor(h, backend.name, 3000, 'hello')
  assertAlive(h, username)
  const kaClient = h.state.keepAlives - ka0
  const kaBackend = backend.stats.keepAliveAnswers[username]
  // Chat is paced by node's event loop, which a loaded machine slows; a couple of round trips prove forwarding.
  assert(rounds >= 2, `only ${rounds} chat round trips in 3s`)
  assert(kaClient >= 3, `client received only ${kaClient} keep-alives in ~3s (backend sends one every 500ms)`)
  assert(kaBackend >= 3, `backend received only ${kaBackend} keep-alive answers`)
  assert(backend.stats.chats[username].length === rounds, `backend got ${backend.stats.chats[username].length} chat messages, client sent ${rounds}`)
  assert(backend.stats.logins.length === 1 && backend.stats.logins[0] === username, `backend logins: ${JSON.stringify(backend.stats.logins)}`)
}

// 2. Two servers behind one proxy, exact and wildcard domains; an unknown host never reaches a backend.
async function routing (ctx) {
  const alpha = await ctx.backend({ name: 'alpha' })
  const beta = await ctx.backend({ name: 'beta' })
  const gamma = await ctx.backend({ name: 'gamma' })
  const deadPort = await freePort() // nothing listens there
  const proxy = await ctx.proxy({
    alpha: { domains: ['alpha.test'], addresses: [addr(alpha)] },
    beta: { domains: ['beta.test', '*.wild.test'], addresses: [addr(beta)] },
    // one dead address first: the proxy must fail over to the live one
    gamma: { domains: ['failover.test'], addresses: [`127.0.0.1:${deadPort}`, addr(gamma)], timeouts: { connect: '2s' } }
  })
  const cases = [
    ['alpha.test', 'alpha', 'p_exact'],
    ['foo.wild.test', 'beta', 'p_wild'],
    ['beta.test', 'beta', 'p_beta'],
    ['ALPHA.Test', 'alpha', 'p_upper'],
    ['Bar.WILD.test', 'beta', 'p_wildup'],
    ['failover.test', 'gamma', 'p_fail1'],
    ['failover.test', 'gamma', 'p_fail2']
  ]
  const joined = await Promise.all(cases.map(([hostname, want, username]) =>
    ctx.join({ port: proxy.port, hostname, username }, want)))
  for (let i = 0; i < cases.length; i++) await chatRoundTrip(joined[i], cases[i][1], `routed via ${cases[i][0]}`)

  const before = { alpha: alpha.stats.tcpConnections, beta: beta.stats.tcpConnections, gamma: gamma.stats.tcpConnections }
  // unknown host: login and status ping must both be closed without touching a backend
  const refused = await loginExpectRefusal({ port: proxy.port, hostname: 'unknown.test', username: 'p_unknown', version: ctx.version })
  let pingErr = null
  try {
    const r = await statusPing({ port: proxy.port, hostname: 'nobody.example', version: ctx.version }, 5000)
    pingErr = `status ping for an unknown host got an answer: ${JSON.stringify(r.response)}`
  } catch (e) { /* expected: closed */ }
  // and the wildcard must not match the bare suffix's sibling
  const refused2 = await loginExpectRefusal({ port: proxy.port, hostname: 'wild.test.evil', username: 'p_unknown2', version: ctx.version })
  await sleep(300)
  const after = { alpha: alpha.stats.tcpConnections, beta: beta.stats.tcpConnections, gamma: gamma.stats.tcpConnections }
  assert(after.alpha === before.alpha && after.beta === before.beta && after.gamma === before.gamma,
    `unknown hosts reached a backend: TCP connections before ${JSON.stringify(before)}, after ${JSON.stringify(after)}`)
  const leaked = [...alpha.stats.handshakes, ...beta.stats.handshakes, ...gamma.stats.handshakes].filter((hs) => /unknown|nobody|evil/.test(hs.serverHost))
  assert(leaked.length === 0, `backend saw handshakes for unknown hosts: ${JSON.stringify(leaked)}`)
  if (pingErr) throw new Error(pingErr)
  assert(!refused.state.inPlay && !refused2.state.inPlay, 'unknown host reached play')
  // routed players are all still there
  joined.forEach((h, i) => assertAlive(h, cases[i][2]))
  assert(alpha.stats.tcpConnections === 2 && beta.stats.tcpConnections === 3 && gamma.stats.tcpConnections === 2,
    `backend connection counts alpha=${alpha.stats.tcpConnections} (want 2) beta=${beta.stats.tcpConnections} (want 3) gamma=${gamma.stats.tcpConnections} (want 2)`)
}

// 3. Status through the proxy shows the backend's MOTD and counts; backend down -> disconnect_message.
async function status (ctx) {
  const motd = `Alpha says hi on ${ctx.version}`
  const downMsg = `Backend "alpha" is down — réessayez (${ctx.version})`
  const alpha = await ctx.backend({ name: 'alpha', motd, maxPlayers: 37 })
  const proxy = await ctx.proxy({
    alpha: { domains: ['alpha.test'], addresses: [addr(alpha)], disconnect_message: downMsg, timeouts: { connect: '2s' } }
  })
  const h = await ctx.join({ port: proxy.port, hostname: 'alpha.test', username: 'Alex' }, 'alpha')
  const up = await statusPing({ port: proxy.port, hostname: 'alpha.test', version: ctx.version })
  const r = up.response
  assert(componentText(r.description) === motd, `MOTD through the proxy is ${JSON.stringify(r.description)}, backend's is ${JSON.stringify(motd)}`)
  assert(r.players && r.players.max === 37 && r.players.online === 1, `players through the proxy: ${JSON.stringify(r.players)}, want max 37 online 1`)
  assert(r.version && r.version.protocol === require('minecraft-data')(ctx.version).version.version, `version in status: ${JSON.stringify(r.version)}`)
  assert(up.pongMatches, `pong payload ${up.pongTime} does not match the ping`)
  h.client.end()

  await alpha.close()
  assert(!(await tcpProbe(alpha.port)), 'backend port still accepts connections after close')

  const down = await statusPing({ port: proxy.port, hostname: 'alpha.test', version: ctx.version })
  const d = down.response.description
  assert(d && typeof d === 'object' && d.text === downMsg,
    `status description with the backend down is ${JSON.stringify(d)}, want {"text":${JSON.stringify(downMsg)}}`)
  assert(down.pongMatches, `pong with the backend down: payload ${down.pongTime} does not match the ping`)

  const refused = await loginExpectRefusal({ port: proxy.port, hostname: 'alpha.test', username: 'Late', version: ctx.version })
  assert(refused.raw != null, `login with the backend down got no Login Disconnect: ${describeEnd(refused.state)}`)
  let parsed = null
  try { parsed = JSON.parse(refused.raw) } catch (e) {}
  assert(parsed && parsed.text === downMsg, `login disconnect reason is ${JSON.stringify(refused.raw)}, want {"text":${JSON.stringify(downMsg)}}`)
}

// 4. domain_rewrite: explicit, from_backend and none, for login and status; decorations survive a rewrite.
async function rewrite (ctx) {
  const ex = await ctx.backend({ name: 'ex' })
  const fb = await ctx.backend({ name: 'fb' })
  const pl = await ctx.backend({ name: 'plain' })
  const proxy = await ctx.proxy({
    ex: { domains: ['ex.test'], addresses: [addr(ex)], domain_rewrite: { explicit: 'rewritten.example' } },
    fb: { domains: ['fb.test'], addresses: [addr(fb)], domain_rewrite: 'from_backend' },
    plain: { domains: ['plain.test'], addresses: [addr(pl)], domain_rewrite: 'none' }
  })
  const checks = [
    // [backend, hostname the client sends, host the backend must see]
    [ex, 'ex.test', 'rewritten.example'],
    [fb, 'fb.test', '127.0.0.1'],
    [pl, 'Plain.TEST', 'Plain.TEST'],
    [ex, 'ex.test\0FML2\0', 'rewritten.example\0FML2\0']
  ]
  const errors = []
  let i = 0
  for (const [b, hostname, want] of checks) {
    const n0 = b.stats.handshakes.length
    const h = await ctx.join({ port: proxy.port, hostname, username: `rw${i++}` }, b.name)
    await chatRoundTrip(h, b.name, 'after rewrite')
    h.client.end()
    const hs = b.stats.handshakes.slice(n0).filter((x) => x.nextState === 2)
    if (hs.length !== 1) errors.push(`login via ${JSON.stringify(hostname)}: backend ${b.name} saw ${hs.length} login handshakes`)
    else if (hs[0].serverHost !== want) errors.push(`login via ${JSON.stringify(hostname)}: backend ${b.name} saw host ${JSON.stringify(hs[0].serverHost)}, want ${JSON.stringify(want)}`)
  }
  for (const [b, hostname, want] of checks.slice(0, 3)) {
    const n0 = b.stats.handshakes.length
    await statusPing({ port: proxy.port, hostname, version: ctx.version })
    const hs = b.stats.handshakes.slice(n0).filter((x) => x.nextState === 1)
    if (hs.length !== 1) errors.push(`status via ${JSON.stringify(hostname)}: backend ${b.name} saw ${hs.length} status handshakes`)
    else if (hs[0].serverHost !== want) errors.push(`status via ${JSON.stringify(hostname)}: backend ${b.name} saw host ${JSON.stringify(hs[0].serverHost)}, want ${JSON.stringify(want)}`)
  }
  if (errors.length) throw new Error(errors.join('; '))
}

// 5. send_proxy_protocol: the backend (behind a PROXY v2 parsing shim) learns the client's real address.
async function proxyProtocol (ctx) {
  const alpha = await ctx.backend({ name: 'alpha' })
  const shim = await startProxyProtocolShim(alpha.port)
  ctx.defer(() => shim.close())
  const beta = await ctx.backend({ name: 'beta' })
  const shimV1 = await startProxyProtocolShim(beta.port)
  ctx.defer(() => shimV1.close())
  const proxy = await ctx.proxy({
    alpha: { domains: ['alpha.test'], addresses: [`127.0.0.1:${shim.port}`], send_proxy_protocol: true },
    beta: { domains: ['v1.test'], addresses: [`127.0.0.1:${shimV1.port}`], send_proxy_protocol: true, proxy_protocol_version: 1 }
  })
  const h = await ctx.join({ port: proxy.port, hostname: 'alpha.test', username: 'Real' }, 'alpha')
  await chatRoundTrip(h, 'alpha', 'through the shim')
  assert(shim.records.length === 1, `shim saw ${shim.records.length} connections: ${JSON.stringify(shim.records)}`)
  const rec = shim.records[0]
  assert(!rec.error, `backend connection: ${rec.error}`)
  const hd = rec.header
  const desc = JSON.stringify(hd)
  assert(hd.version === 2, `PROXY header version ${hd.version}, default must be v2: ${desc}`)
  assert(hd.command === 'PROXY', `PROXY header command ${hd.command}: ${desc}`)
  assert(hd.family === 'TCP4', `PROXY header family ${hd.family}: ${desc}`)
  assert(hd.srcAddr === '127.0.0.1' && hd.srcPort === h.state.localPort,
    `PROXY header source ${hd.srcAddr}:${hd.srcPort}, the client is ${h.state.localAddress}:${h.state.localPort}`)
  assert(hd.dstAddr === '127.0.0.1' && hd.dstPort === proxy.port,
    `PROXY header destination ${hd.dstAddr}:${hd.dstPort}, the client connected to 127.0.0.1:${proxy.port}`)
  // status connections get a header too
  const p = await statusPing({ port: proxy.port, hostname: 'alpha.test', version: ctx.version })
  assert(componentText(p.response.description) === 'alpha MOTD', `status through the shim: ${JSON.stringify(p.response)}`)
  assert(shim.records.length === 2 && shim.records[1].header && shim.records[1].header.version === 2,
    `status connection: shim records ${JSON.stringify(shim.records.slice(1))}`)
  // the text header when asked for: proxy_protocol_version = 1
  const h1 = await ctx.join({ port: proxy.port, hostname: 'v1.test', username: 'Text' }, 'beta')
  await chatRoundTrip(h1, 'beta', 'through the v1 shim')
  assert(shimV1.records.length === 1, `v1 shim saw ${shimV1.records.length} connections: ${JSON.stringify(shimV1.records)}`)
  const r1 = shimV1.records[0]
  assert(!r1.error, `v1 backend connection: ${r1.error}`)
  const d1 = JSON.stringify(r1.header)
  assert(r1.header.version === 1 && r1.header.family === 'TCP4', `proxy_protocol_version = 1 sent ${d1}`)
  assert(r1.header.srcAddr === '127.0.0.1' && r1.header.srcPort === h1.state.localPort && r1.header.dstPort === proxy.port,
    `v1 header ${d1}, the client is ${h1.state.localAddress}:${h1.state.localPort} connected to port ${proxy.port}`)
  assertAlive(h, 'Real')
  assertAlive(h1, 'Text')
}

// 6. max_players = 2: the third concurrent login is refused, the first two keep playing; a freed slot is reusable.
async function maxPlayers (ctx) {
  const alpha = await ctx.backend({ name: 'alpha' })
  const proxy = await ctx.proxy({ alpha: { domains: ['alpha.test'], addresses: [addr(alpha)], max_players: 2 } })
  const [h1, h2] = await Promise.all([
    ctx.join({ port: proxy.port, hostname: 'alpha.test', username: 'first' }, 'alpha'),
    ctx.join({ port: proxy.port, hostname: 'alpha.test', username: 'second' }, 'alpha')
  ])
  const ka = [h1.state.keepAlives, h2.state.keepAlives]
  const refused = await loginExpectRefusal({ port: proxy.port, hostname: 'alpha.test', username: 'third', version: ctx.version })
  assert(refused.text != null, `third login got no disconnect reason: ${describeEnd(refused.state)}`)
  assert(/full/i.test(refused.text), `third login's reason does not say the server is full: ${JSON.stringify(refused.raw)}`)
  assert(!alpha.stats.logins.includes('third'), 'third player reached the backend')
  // the first two are still playing
  alpha.broadcast('still here?')
  await Promise.all([h1, h2].map((h) => waitState(h, (s) => s.messages.includes('still here?'), 3000, 'broadcast after the refusal')))
  await chatRoundTrip(h1, 'alpha', 'one')
  await chatRoundTrip(h2, 'alpha', 'two')
  await waitFor(() => h1.state.keepAlives > ka[0] + 1 && h2.state.keepAlives > ka[1] + 1, 3000,
    `keep-alives stopped after the refusal (first ${ka[0]}->${h1.state.keepAlives}, second ${ka[1]}->${h2.state.keepAlives})`)
  assertAlive(h1, 'first')
  assertAlive(h2, 'second')
  // a slot freed by a leaving player can be taken again
  h1.client.end()
  const deadline = Date.now() + 5000
  let h4 = null
  let lastErr = null
  while (!h4 && Date.now() < deadline) {
    try {
      h4 = await ctx.join({ port: proxy.port, hostname: 'alpha.test', username: 'fourth' }, 'alpha', 4000)
    } catch (e) { lastErr = e; await sleep(250) }
  }
  assert(h4, `after the first player left, a new login was still refused: ${lastErr && lastErr.message}`)
  assertAlive(h2, 'second')
}

// 7. 50 concurrent real clients log in and stay connected for 10 s.
async function manyClients (ctx) {
  const N = 50
  const alpha = await ctx.backend({ name: 'alpha', maxPlayers: 100, keepAliveMs: 1000 })
  const proxy = await ctx.proxy({ alpha: { domains: ['alpha.test'], addresses: [addr(alpha)] } })
  const hs = await Promise.all(Array.from({ length: N }, (_, i) =>
    ctx.join({ port: proxy.port, hostname: 'alpha.test', username: `bot${i}` }, 'alpha', 30000)))
  const ka0 = hs.map((h) => h.state.keepAlives)
  await sleep(10000)
  const dead = hs.filter((h) => h.state.ended).map((h) => `${h.client.username}: ${describeEnd(h.state)}`)
  assert(dead.length === 0, `${dead.length}/${N} clients were disconnected during the 10s: ${dead.slice(0, 3).join('; ')}`)
  const starving = hs.filter((h, i) => h.state.keepAlives - ka0[i] < 5)
  assert(starving.length === 0, `${starving.length} clients received fewer than 5 keep-alives in 10s (e.g. ${starving[0] && starving[0].state.keepAlives - ka0[hs.indexOf(starving[0])]})`)
  await Promise.all(hs.map((h, i) => chatRoundTrip(h, 'alpha', `bye ${i}`, 10000)))
  assert(alpha.stats.logins.length === N, `backend saw ${alpha.stats.logins.length} logins, want ${N}`)
  assert(alpha.players.size === N, `backend has ${alpha.players.size} players online, want ${N}`)
}

const SCENARIOS = [
  { name: 'login_play', fn: loginPlay, timeoutMs: 30000 },
  { name: 'routing', fn: routing, timeoutMs: 40000 },
  { name: 'status', fn: status, timeoutMs: 40000 },
  { name: 'domain_rewrite', fn: rewrite, timeoutMs: 40000 },
  { name: 'proxy_protocol', fn: proxyProtocol, timeoutMs: 30000 },
  { name: 'max_players', fn: maxPlayers, timeoutMs: 40000 },
  { name: 'many_clients', fn: manyClients, timeoutMs: 90000, newestOnly: true }
]

module.exports = { SCENARIOS }
