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

/** Reject with `what timed out after Nms` if `promise` does not settle in time. */
function withTimeout (promise, ms, what) {
  let timer
  const t = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms}ms`)), ms)
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

/** Poll until something accepts TCP connections on the port. */
async function waitForPort (port, ms, isDead = () => null) {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    const dead = isDead()
    if (dead) throw new Error(dead)
    if (await tcpProbe(port)) return
    await sleep(50)
  }
  throw new Error(`nothing accepted connections on ${HOST}:${port} within ${ms}ms`)
}

/** Wait until `pred()` is true, polling. */
async function waitFor (pred, ms, what) {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (pred()) return
    await sleep(25)
  }
  throw new Error(`${what} (waited ${ms}ms)`)
}

function assert (cond, msg) {
  if (!cond) throw new Error(msg)
}

module.exports = { HOST, freePort, sleep, withTimeout, tcpProbe, waitForPort, waitFor, assert }
