'use strict'
// Small helpers shared by the suite: ports, timeouts, waiting.
const net = require('net')

const HOST = '127.0.0.1'

/** Ask the kernel for a free TCP port on 127.0.0.1 by binding port 0. */
function freePort () {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, HOST, () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Reject with `what timed out after Nms` if `promise` does not settle in time.
 *
 * Node runs due timers before the I/O that arrived meanwhile, so after the event loop stalled (a loaded
 * machine, another scenario compiling a protocol) a timer can fire although the answer is waiting in a
 * socket: the rejection waits for the I/O phase that follows (setImmediate), and an answer that came in
 * time wins.
 */
function withTimeout (promise, ms, what) {
  let timer
  const t = new Promise((resolve, reject) => {
    timer = setTimeout(() => setImmediate(() => reject(new Error(`${what} timed out after ${ms}ms`))), ms)
  })
  return Promise.race([promise, t]).finally(() => clearTimeout(timer))
}

/** Try to open a TCP connection; resolve true when accepted, false when refused. */
function tcpProbe (port, host = HOST) {
  return new Promise((resolve) => {
    const s = net.connect(port, host)
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => { s.destroy(); resolve(false) })
  })
}

/** Milliseconds a `sleep(ms)` overslept by: how long node's event loop was stalled. */
async function sleepMeasured (ms) {
  const t0 = Date.now()
  await sleep(ms)
  return Math.max(0, Date.now() - t0 - ms)
}

/**
 * Poll until something accepts TCP connections on the port.
 *
 * Gives up only after a probe that was started at or after the deadline has failed: when node's event
 * loop stalls past the deadline during a sleep, or while a probe is in flight (seen on a loaded CI
 * machine: one probe, refused while the proxy was still starting, whose error was handled 10 s later),
 * the port is still probed once more before giving up.
 */
async function waitForPort (port, ms, isDead = () => null) {
  const deadline = Date.now() + ms
  let probes = 0
  let stall = 0
  let slowest = 0
  for (;;) {
    const dead = isDead()
    if (dead) throw new Error(dead)
    const started = Date.now()
    if (await tcpProbe(port)) return
    probes++
    slowest = Math.max(slowest, Date.now() - started)
    if (started >= deadline) break
    stall = Math.max(stall, await sleepMeasured(50))
  }
  throw new Error(`nothing accepted connections on ${HOST}:${port} within ${ms}ms (${probes} probes, the slowest ${slowest}ms; node's event loop stalled up to ${stall}ms in sleeps)`)
}

/** Wait until `pred()` is true, polling; like `waitForPort`, the deadline is judged right after a check. */
async function waitFor (pred, ms, what) {
  const deadline = Date.now() + ms
  let stall = 0
  for (;;) {
    if (pred()) return
    if (Date.now() >= deadline) break
    stall = Math.max(stall, await sleepMeasured(25))
  }
  throw new Error(`${what} (waited ${ms}ms${stall > 1000 ? `; node's event loop stalled up to ${stall}ms` : ''})`)
}

function assert (cond, msg) {
  if (!cond) throw new Error(msg)
}

module.exports = { HOST, freePort, sleep, withTimeout, tcpProbe, waitForPort, waitFor, assert }
