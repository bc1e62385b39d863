'use strict'
// A real Minecraft backend built on node-minecraft-protocol's server, in offline mode.
// It records what the proxy makes it see (TCP connections, handshakes, logins, keep-alive answers),
// greets every player with a system message naming itself, and echoes chat back as system messages.
const mc = require('minecraft-protocol')
const nbt = require('prismarine-nbt')
const { HOST, freePort } = require('./util')

const ZERO_UUID = '00000000-0000-0000-0000-000000000000'

function mcDataFor (version) {
  const mcData = require('minecraft-data')(version)
  if (!mcData) throw new Error(`minecraft-data has no data for ${version}`)
  return mcData
}

/** The Join Game packet for this version (minecraft-data ships one from 1.16 on; older ones are built here). */
function loginPacketFor (mcData, client, maxPlayers) {
  if (mcData.loginPacket) {
    return {
      ...mcData.loginPacket,
      enforceSecureChat: false,
      enforcesSecureChat: false,
      entityId: client.id,
      isHardcore: false,
      gameMode: 0,
      previousGameMode: 1,
      hashedSeed: [0, 0],
      maxPlayers,
      viewDistance: 10,
      reducedDebugInfo: false,
      enableRespawnScreen: true,
      isDebug: false,
      isFlat: false
    }
  }
  // 1.8 .. 1.15
  return {
    entityId: client.id,
    gameMode: 0,
    dimension: 0,
    difficulty: 1,
    maxPlayers: Math.min(maxPlayers, 255),
    levelType: 'default',
    reducedDebugInfo: false,
    viewDistance: 10,
    hashedSeed: [0, 0],
    enableRespawnScreen: true
  }
}

/** Send a system (non-player) chat message with plain text. */
function sendSystemMessage (mcData, client, text) {
  if (mcData.supportFeature('signedChat')) {
    client.write('system_chat', {
      content: mcData.supportFeature('chatPacketsUseNbtComponents')
        ? nbt.comp({ text: nbt.string(text) })
        : JSON.stringify({ text }),
      isActionBar: false,
      type: 1 // 1.19.0 only
    })
  } else {
    client.write('chat', { message: JSON.stringify({ text }), position: 1, sender: ZERO_UUID })
  }
}

/**
 * Start a backend.
 * opts: { name, version, motd, maxPlayers, keepAliveMs, port }
 * Returns a handle: { name, port, stats, players, close() }.
 */
async function startBackend (opts) {
  const name = opts.name
  const version = opts.version
  const mcData = mcDataFor(version)
  const port = opts.port || await freePort()
  const stats = {
    tcpConnections: 0, // raw TCP connections accepted
    handshakes: [], // { serverHost, serverPort, protocolVersion, nextState, remoteAddress, remotePort }
    logins: [], // usernames that reached play state
    keepAliveAnswers: {}, // username -> count of keep-alive answers from that client
    chats: {}, // username -> [messages]
    errors: []
  }
  const players = new Map()

  const server = mc.createServer({
    'online-mode': false,
    host: HOST,
    port,
    version,
    motd: opts.motd || `${name} MOTD`,
    maxPlayers: opts.maxPlayers || 20,
    // server-side keep-alive period (node-minecraft-protocol calls it checkTimeoutInterval)
    checkTimeoutInterval: opts.keepAliveMs || 500,
    kickTimeout: 30000,
    hideErrors: true,
    errorHandler: (client, err) => {
      stats.errors.push(`${client.username || '?'}: ${err && err.message}`)
      client.end(String(err && err.message))
    }
  })

  await new Promise((resolve, reject) => {
    server.once('listening', resolve)
    server.once('error', reject)
  })
  server.on('error', (err) => stats.errors.push(`server: ${err.message}`))
  server.socketServer.on('connection', () => { stats.tcpConnections++ })

  server.on('connection', (client) => {
    client.on('error', (err) => stats.errors.push(`conn: ${err && err.message}`))
    client.once('set_protocol', (p) => {
      stats.handshakes.push({
        serverHost: p.serverHost,
        serverPort: p.serverPort,
        protocolVersion: p.protocolVersion,
        nextState: p.nextState,
        remoteAddress: client.socket && client.socket.remoteAddress,
        remotePort: client.socket && client.socket.remotePort
      })
    })
  })

  server.on('playerJoin', (client) => {
    const username = client.username
    players.set(username, client)
    stats.logins.push(username)
    stats.keepAliveAnswers[username] = 0
    stats.chats[username] = []
    client.on('end', () => { if (players.get(username) === client) players.delete(username) })
    client.on('keep_alive', () => { stats.keepAliveAnswers[username]++ })

    client.write('login', loginPacketFor(mcData, client, server.maxPlayers))
    sendSystemMessage(mcData, client, `welcome to backend:${name}`)

    const onChat = (packet) => {
      stats.chats[username].push(packet.message)
      sendSystemMessage(mcData, client, `echo:${name}:${packet.message}`)
    }
    client.on('chat', onChat) // before 1.19
    client.on('chat_message', onChat) // 1.19+
  })

  let closed = false
  return {
    name,
    port,
    version,
    stats,
    players,
    server,
    /** Broadcast a system message to every player in play state. */
    broadcast (text) {
      for (const c of players.values()) sendSystemMessage(mcData, c, text)
    },
    /** Stop listening and kick everyone. Resolves when the listener is closed. */
    close () {
      if (closed) return Promise.resolve()
      closed = true
      return new Promise((resolve) => {
        server.socketServer.once('close', resolve)
        try { server.close() } catch (e) { resolve() }
        // node's close waits for open sockets; destroy them so it finishes
        for (const c of Object.values(server.clients)) { try { c.socket.destroy() } catch (e) {} }
      })
    }
  }
}

module.exports = { startBackend, sendSystemMessage, mcDataFor }
