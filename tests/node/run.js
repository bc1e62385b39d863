#!/usr/bin/env node
'use strict'
// nethergate end-to-end compatibility suite with real Minecraft protocol implementations
// (node-minecraft-protocol clients and servers, offline mode, 127.0.0.1 only).
//
//   node tests/node/run.js --binary target/debug/nethergate [--label tokio]
//        [--versions 1.8.8,1.21.11] [--scenarios login_play,status] [--jobs 6] [--keep] [--no-install]
//
// Prints `PASS scenario version` / `FAIL scenario version: reason` per (scenario, version), then
// `N passed, N failed`, and exits 1 if anything failed (2 on bad usage).
const fs = require('fs')
const os = require('os')
const path = require('path')
const { execFileSync } = require('child_process')

ensureDependencies()
const mc = require('minecraft-protocol')
const { startBackend } = require('./lib/backend')
const { startProxy } = require('./lib/proxy')
const { joinGame } = require('./lib/client')
const { withTimeout } = require('./lib/util')
const { SCENARIOS } = require('./lib/scenarios')

// Versions covered. Each must be in minecraft-protocol's supportedVersions; the last one is "the newest"
// (used by the scenarios marked newestOnly).
const VERSIONS = ['1.7', '1.8.8', '1.12.2', '1.16.5', '1.19.2', '1.20.4', '1.21.11', '26.1']
// Versions deliberately left out, with the reason printed at every run.
const DROPPED = {
  // '1.x': 'reason'
}

/**
 * The pinned packages live in tests/node/node_modules (not committed). If they are missing, install them from
 * package-lock.json with `npm ci` (from the npm registry; nothing else is fetched at run time). A lock
 * directory keeps two concurrent runs (tokio and smol) from installing at once. `--no-install` disables this.
 */
function ensureDependencies () {
  const have = () => { try { require.resolve('minecraft-protocol', { paths: [__dirname] }); return true } catch (e) { return false } }
  if (have()) return
  if (process.argv.includes('--no-install')) {
    console.error(`error: node_modules missing; run \`npm ci\` in ${__dirname}`)
    console.log('0 passed, 1 failed')
    process.exit(1)
  }
  const lock = path.join(__dirname, '.npm-install.lock')
  const deadline = Date.now() + 5 * 60 * 1000
  for (;;) {
    try { fs.mkdirSync(lock); break } catch (e) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lock}`)
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 500)
    }
  }
  try {
    if (!have()) {
      console.log(`# installing pinned packages: npm ci in ${__dirname}`)
      execFileSync('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: __dirname, stdio: ['ignore', 'inherit', 'inherit'] })
    }
  } finally {
    fs.rmdirSync(lock)
  }
}

function usage (msg) {
  if (msg) console.error(`error: ${msg}`)
  console.error('usage: node run.js --binary <path-to-nethergate> [--label NAME] [--versions a,b] [--scenarios a,b] [--jobs N] [--keep] [--no-install]')
  process.exit(2)
}

function parseArgs (argv) {
  const o = { label: '', jobs: 6, keep: false }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const next = () => { if (i + 1 >= argv.length) usage(`${a} needs a value`); return argv[++i] }
    if (a === '--binary') o.binary = next()
    else if (a === '--label') o.label = next()
    else if (a === '--versions') o.versions = next().split(',').filter(Boolean)
    else if (a === '--scenarios') o.scenarios = next().split(',').filter(Boolean)
    else if (a === '--jobs') o.jobs = Math.max(1, Number(next()) || 1)
    else if (a === '--keep') o.keep = true
    else if (a === '--no-install') { /* handled by ensureDependencies */ }
    else if (a === '-h' || a === '--help') usage()
    else usage(`unknown argument ${a}`)
  }
  if (!o.binary) usage('--binary is required')
  o.binary = path.resolve(o.binary)
  try { fs.accessSync(o.binary, fs.constants.X_OK) } catch (e) { usage(`${o.binary} is not an executable file`) }
  return o
}

/** Per-(scenario, version) context: owns everything the scenario starts. */
class Ctx {
  constructor ({ binary, version, dir }) {
    this.binary = binary
    this.version = version
    this.dir = dir
    this.cleanups = []
    this.proxies = []
    this.clients = []
  }

  defer (fn) { this.cleanups.push(fn) }

  async backend (opts) {
    const b = await startBackend({ version: this.version, ...opts })
    this.defer(() => b.close())
    return b
  }

  async proxy (servers, global = {}) {
    const dir = path.join(this.dir, `proxy${this.proxies.length}`)
    const p = await startProxy({ binary: this.binary, dir, servers, global })
    this.proxies.push(p)
    this.defer(async () => {
      const r = await p.stop()
      if (r.killed) this.notes.push(`proxy ignored SIGTERM for 3s and was killed`)
    })
    return p
  }

  async join (opts, expectBackend, ms) {
    const h = await joinGame({ version: this.version, ...opts }, expectBackend, ms)
    this.clients.push(h)
    return h
  }

  async cleanup () {
    for (const h of this.clients) { try { h.client.end() } catch (e) {} }
    for (const fn of this.cleanups.reverse()) {
      try { await withTimeout(Promise.resolve().then(fn), 5000, 'cleanup') } catch (e) {}
    }
  }

  /** Problems the proxy showed even if the scenario's checks passed (panic, crash). */
  proxyProblems () {
    return this.proxies.flatMap((p) => p.problems())
  }

  proxyLogTail (n = 12) {
    return this.proxies.flatMap((p) => p.output().trim().split('\n').filter(Boolean).slice(-n))
  }
}

async function runTask (opts, root, scenario, version) {
  const dir = path.join(root, `${scenario.name}-${version}`)
  fs.mkdirSync(dir, { recursive: true })
  const ctx = new Ctx({ binary: opts.binary, version, dir })
  ctx.notes = []
  const t0 = Date.now()
  let error = null
  const run = Promise.resolve().then(() => scenario.fn(ctx))
  run.catch(() => {}) // a timed-out scenario may still reject later
  try {
    await withTimeout(run, scenario.timeoutMs, `scenario`)
  } catch (e) {
    error = e
  }
  const problems = ctx.proxyProblems()
  await ctx.cleanup()
  if (!error && problems.length) error = new Error(problems.join('; '))
  return { scenario: scenario.name, version, error, ms: Date.now() - t0, dir, ctx, problems }
}

async function pool (items, n, worker) {
  let next = 0
  const runners = Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) {
      const i = next++
      await worker(items[i], i)
    }
  })
  await Promise.all(runners)
}

const oneLine = (s) => String(s).replace(/\s*\n\s*/g, ' | ')

async function main () {
  const opts = parseArgs(process.argv.slice(2))
  const started = Date.now()
  const supported = new Set(mc.supportedVersions)
  const pkgVersion = require('minecraft-protocol/package.json').version

  console.log(`# nethergate node e2e${opts.label ? ` [${opts.label}]` : ''}: binary ${opts.binary}, minecraft-protocol ${pkgVersion}, node ${process.version}`)
  let versions = opts.versions || VERSIONS
  for (const [v, why] of Object.entries(DROPPED)) console.log(`# dropped version ${v}: ${why}`)
  versions = versions.filter((v) => {
    if (!supported.has(v)) { console.log(`# dropped version ${v}: not supported by minecraft-protocol ${pkgVersion}`); return false }
    return true
  })
  const newest = versions[versions.length - 1]
  const scenarios = SCENARIOS.filter((s) => !opts.scenarios || opts.scenarios.includes(s.name))
  if (opts.scenarios) {
    const unknown = opts.scenarios.filter((n) => !SCENARIOS.some((s) => s.name === n))
    if (unknown.length) usage(`unknown scenario(s) ${unknown.join(',')}; known: ${SCENARIOS.map((s) => s.name).join(',')}`)
  }
  const tasks = []
  for (const s of scenarios) {
    for (const v of versions) {
      if (s.newestOnly && v !== newest) continue
      tasks.push({ s, v })
    }
  }
  // longest first, so the run's wall time is not dominated by a straggler
  tasks.sort((a, b) => b.s.timeoutMs - a.s.timeoutMs)
  console.log(`# versions: ${versions.join(' ')}; scenarios: ${scenarios.map((s) => s.name).join(' ')}; ${tasks.length} runs, ${opts.jobs} at a time`)

  // Stray errors from sockets that were torn down must not kill the run.
  const stray = []
  process.on('uncaughtException', (e) => stray.push(e))
  process.on('unhandledRejection', (e) => stray.push(e))

  const root = fs.mkdtempSync(path.join(os.tmpdir(), `nethergate-node-${opts.label || 'run'}-`))
  const results = []
  await pool(tasks, opts.jobs, async ({ s, v }) => {
    const r = await runTask(opts, root, s, v)
    results.push(r)
    if (r.error) {
      console.log(`FAIL ${r.scenario} ${r.version}: ${oneLine(r.error.message)}`)
      for (const l of r.ctx.proxyLogTail()) console.log(`    | ${l}`)
      console.log(`    (${(r.ms / 1000).toFixed(1)}s; config and proxy log kept in ${r.dir})`)
    } else {
      console.log(`PASS ${r.scenario} ${r.version}`)
      if (!opts.keep) fs.rmSync(r.dir, { recursive: true, force: true })
    }
    for (const n of r.ctx.notes) console.log(`    note: ${n}`)
  })

  const failed = results.filter((r) => r.error).length
  const passed = results.length - failed
  for (const e of stray.slice(0, 5)) console.log(`# stray error (ignored): ${oneLine(e && e.stack ? e.stack.split('\n').slice(0, 2).join(' ') : e)}`)
  console.log(`# wall time ${((Date.now() - started) / 1000).toFixed(1)}s${failed ? `; logs in ${root}` : ''}`)
  if (!failed && !opts.keep) fs.rmSync(root, { recursive: true, force: true })
  console.log(`${passed} passed, ${failed} failed`)
  // sockets and timers of torn-down clients may linger: exit explicitly
  process.exit(failed ? 1 : 0)
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e)
  console.log('0 passed, 1 failed')
  process.exit(1)
})
