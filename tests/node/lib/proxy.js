'use strict'
// Starts the nethergate binary under test with a config written to a temp dir, waits for its listener,
// and stops it with SIGTERM. Everything it prints is kept for failure reports.
const fs = require('fs')
const path = require('path')
const { spawn } = require('child_process')
const { HOST, freePort, waitForPort, sleep } = require('./util')

/** Minimal TOML for our shapes: strings, numbers, booleans, arrays of those, and inline tables. */
function tomlValue (v) {
  if (typeof v === 'string') return JSON.stringify(v) // TOML basic strings accept JSON escapes we use
  if (typeof v === 'number' || typeof v === 'boolean') return String(v)
  if (Array.isArray(v)) return '[' + v.map(tomlValue).join(', ') + ']'
  if (v && typeof v === 'object') {
    return '{ ' + Object.entries(v).map(([k, x]) => `${k} = ${tomlValue(x)}`).join(', ') + ' }'
  }
  throw new Error(`cannot write ${v} as TOML`)
}
function tomlDoc (obj) {
  return Object.entries(obj).filter(([, v]) => v !== undefined).map(([k, v]) => `${k} = ${tomlValue(v)}`).join('\n') + '\n'
}

/**
 * opts: { binary, dir, servers: { name: { domains, addresses, ...more keys } }, global: { extra main keys } }
 * Returns { port, dir, output(), stop(), exited }.
 */
async function startProxy ({ binary, dir, servers, global = {} }) {
  let lastErr
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort()
    try {
      return await startOnce({ binary, dir, servers, global, port, attempt })
    } catch (e) {
      lastErr = e
      // the port may have been taken between our probe and the proxy's bind: retry with another one
      if (!/in use|AddrInUse|os error 98/i.test(e.message)) break
    }
  }
  throw lastErr
}

async function startOnce ({ binary, dir, servers, global, port, attempt }) {
  fs.mkdirSync(path.join(dir, 'servers'), { recursive: true })
  for (const f of fs.readdirSync(path.join(dir, 'servers'))) fs.unlinkSync(path.join(dir, 'servers', f))
  const main = path.join(dir, 'nethergate.toml')
  // A generous handshake timeout: on a loaded 2-core machine node's event loop can stall for seconds (the
  // backends generate RSA keys), delaying a client's first bytes. The timeout itself is tested in Rust.
  fs.writeFileSync(main, tomlDoc({ bind: `${HOST}:${port}`, servers_dir: 'servers', handshake_timeout: '30s', ...global }))
  for (const [name, spec] of Object.entries(servers)) {
    fs.writeFileSync(path.join(dir, 'servers', `${name}.toml`), tomlDoc(spec))
  }

  const logPath = path.join(dir, `proxy${attempt ? '.' + attempt : ''}.log`)
  const log = fs.createWriteStream(logPath)
  log.on('error', () => {})
  const chunks = []
  let size = 0
  const child = spawn(binary, ['--config', main], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' }
  })
  const onData = (d) => {
    log.write(d)
    if (size < 4 << 20) { chunks.push(d); size += d.length }
  }
  child.stdout.on('data', onData)
  child.stderr.on('data', onData)
  const output = () => Buffer.concat(chunks).toString('utf8')
  let stopping = false
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }))
    child.once('error', (err) => resolve({ code: null, signal: null, error: err }))
  })
  let exitInfo = null
  exited.then((e) => { exitInfo = e })
  // 'close' comes after the output pipes are drained, so nothing is written to the log after it ends
  child.once('close', () => log.end())

  const deadMsg = () => {
    if (!exitInfo) return null
    const how = exitInfo.error ? `could not start: ${exitInfo.error.message}` : `exited early (code ${exitInfo.code}, signal ${exitInfo.signal})`
    return `proxy ${how}; output: ${output().trim().split('\n').slice(-8).join(' | ')}`
  }
  try {
    await waitForPort(port, 10000, deadMsg)
  } catch (e) {
    child.kill('SIGKILL')
    throw e
  }

  return {
    port,
    dir,
    logPath,
    output,
    /** Problems seen so far: unexpected exit, panics. */
    problems () {
      const out = []
      if (exitInfo && !stopping) out.push(`proxy exited unexpectedly (code ${exitInfo.code}, signal ${exitInfo.signal})`)
      const panic = output().split('\n').find((l) => /panicked at|RUST_BACKTRACE/.test(l))
      if (panic) out.push(`proxy panicked: ${panic.trim()}`)
      return out
    },
    /** SIGTERM, then SIGKILL after 3s. Resolves with { code, signal, killed }. */
    async stop () {
      stopping = true
      if (exitInfo) return { ...exitInfo, killed: false }
      child.kill('SIGTERM')
      const timer = sleep(3000).then(() => 'timeout')
      const r = await Promise.race([exited, timer])
      if (r === 'timeout') {
        child.kill('SIGKILL')
        const e = await exited
        return { ...e, killed: true }
      }
      return { ...r, killed: false }
    }
  }
}

module.exports = { startProxy, tomlDoc }
