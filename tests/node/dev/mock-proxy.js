#!/usr/bin/env node
'use strict'
// DEV AID ONLY, never the thing under test: a tiny stand-in for nethergate, used to check the suite's own
// logic (`node run.js --binary dev/mock-proxy.js`) while the real binary is unavailable. It implements just
// enough of the documented behaviour (routing, rewrite, PROXY v2, disconnect_message, max_players) and
// reads only the TOML subset that lib/proxy.js writes.
const fs = require('fs')
const net = require('net')
const path = require('path')

function parseValue (s) {
  s = s.trim()
  if (s.startsWith('{')) {
    const out = {}
    const inner = s.slice(1, -1).trim()
    // split on commas outside quotes
    let depth = 0; let q = false; let cur = ''; const parts = []
    for (let i = 0; i < inner.length; i++) {
      const ch = inner[i]
      if (ch === '"' && inner[i - 1] !== '\\') q = !q
      if (!q && (ch === '{' || ch === '[')) depth++
      if (!q && (ch === '}' || ch === ']')) depth--
      if (!q && depth === 0 && ch === ',') { parts.push(cur); cur = '' } else cur += ch
    }
    if (cur.trim()) parts.push(cur)
    for (const p of parts) { const i = p.indexOf('='); out[p.slice(0, i).trim()] = parseValue(p.slice(i + 1)) }
    return out
  }
  return JSON.parse(s)
}
function parseToml (text) {
  const o = {}
  for (const line of text.split('\n')) {
    if (!line.trim() || line.trim().startsWith('#')) continue
    const i = line.indexOf('=')
    o[line.slice(0, i).trim()] = parseValue(line.slice(i + 1))
  }
  return o
}

const cfgPath = process.argv[process.argv.indexOf('--config') + 1]
const cfg = parseToml(fs.readFileSync(cfgPath, 'utf8'))
const sdir = path.resolve(path.dirname(cfgPath), cfg.servers_dir)
const servers = fs.readdirSync(sdir).filter((f) => f.endsWith('.toml')).map((f) => ({
  name: f.replace(/\.toml$/, ''), active: 0, rr: 0, ...parseToml(fs.readFileSync(path.join(sdir, f), 'utf8'))
}))
const [bindHost, bindPort] = cfg.bind.split(':')

function route (host) {
  host = host.split('\0')[0].replace(/\.$/, '').toLowerCase()
  for (const s of servers) if (s.domains.some((d) => d.toLowerCase() === host)) return s
  let best = null; let bestLen = -1
  for (const s of servers) {
    for (const d of s.domains) {
      if (d.startsWith('*.') && host.endsWith(d.slice(1).toLowerCase()) && d.length > bestLen) { best = s; bestLen = d.length }
    }
  }
  return best
}

function readVarInt (b, o) {
  let v = 0; let shift = 0
  for (let i = 0; i < 5; i++) {
    if (o + i >= b.length) return null
    const x = b[o + i]
    v |= (x & 0x7f) << shift
    if (!(x & 0x80)) return [v, o + i + 1]
    shift += 7
  }
  throw new Error('varint too long')
}
function varInt (v) {
  const out = []
  v >>>= 0
  do { let x = v & 0x7f; v >>>= 7; if (v) x |= 0x80; out.push(x) } while (v)
  return Buffer.from(out)
}
function mcString (s) { const b = Buffer.from(s, 'utf8'); return Buffer.concat([varInt(b.length), b]) }
function frame (id, body) { const p = Buffer.concat([varInt(id), body]); return Buffer.concat([varInt(p.length), p]) }
/** Returns [payload, nextOffset] or null. */
function readFrame (b, o) {
  const l = readVarInt(b, o); if (!l) return null
  if (l[1] + l[0] > b.length) return null
  return [b.subarray(l[1], l[1] + l[0]), l[1] + l[0]]
}

function proxyV2 (sock) {
  const sig = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
  const h = Buffer.alloc(16 + 12)
  sig.copy(h); h[12] = 0x21; h[13] = 0x11; h.writeUInt16BE(12, 14)
  sock.remoteAddress.replace('::ffff:', '').split('.').forEach((x, i) => { h[16 + i] = Number(x) })
  sock.localAddress.replace('::ffff:', '').split('.').forEach((x, i) => { h[20 + i] = Number(x) })
  h.writeUInt16BE(sock.remotePort, 24); h.writeUInt16BE(sock.localPort, 26)
  return h
}

net.createServer((c) => {
  let buf = Buffer.alloc(0)
  c.on('error', () => {})
  const onData = (d) => {
    buf = Buffer.concat([buf, d])
    const f = readFrame(buf, 0); if (!f) return
    const [hs, off] = f
    let o = 1
    let proto; [proto, o] = readVarInt(hs, o)
    let hl; [hl, o] = readVarInt(hs, o)
    const host = hs.subarray(o, o + hl).toString('utf8'); o += hl
    const port = hs.readUInt16BE(o); o += 2
    const [next] = readVarInt(hs, o)
    const s = route(host)
    if (!s) { c.destroy(); return }
    if (next === 2) {
      if (!readFrame(buf, off)) return // wait for Login Start
      if (s.max_players && s.active >= s.max_players) {
        c.end(frame(0, mcString(JSON.stringify({ text: 'Server is full' }))))
        return
      }
    }
    c.removeListener('data', onData)
    c.pause()
    if (next === 2) { s.active++; c.once('close', () => s.active--) }
    const start = s.rr++
    dial(0)
    function dial (k) {
    const addr = s.addresses[(start + k) % s.addresses.length]
    const [bh, bp] = addr.split(':')
    const b = net.connect(Number(bp), bh)
    b.once('error', () => {
      if (k + 1 < s.addresses.length) { dial(k + 1); return }
      const msg = JSON.stringify({ text: s.disconnect_message || 'Server is offline' })
      if (next === 2) { c.end(frame(0, mcString(msg))); return }
      c.write(frame(0, mcString(JSON.stringify({ version: { name: '?', protocol: proto }, players: { max: 0, online: 0 }, description: JSON.parse(msg) }))))
      let rb = buf.subarray(off)
      const pong = () => {
        let o2 = 0; let fr
        while ((fr = readFrame(rb, o2))) { if (fr[0][0] === 1) { c.end(frame(1, fr[0].subarray(1))); return true } o2 = fr[1] }
        return false
      }
      if (!pong()) { c.on('data', (d) => { rb = Buffer.concat([rb, d]); pong() }); c.resume() }
    })
    b.once('connect', () => {
      let newHost = host
      const rw = s.domain_rewrite
      const rest = host.includes('\0') ? host.slice(host.indexOf('\0')) : ''
      if (rw && typeof rw === 'object' && rw.explicit) newHost = rw.explicit + rest
      else if (rw === 'from_backend') newHost = bh + rest
      const newHs = frame(0, Buffer.concat([varInt(proto), mcString(newHost), Buffer.from([port >> 8, port & 0xff]), varInt(next)]))
      if (s.send_proxy_protocol) b.write(s.proxy_protocol_version === 1 ? `PROXY TCP4 127.0.0.1 127.0.0.1 ${c.remotePort} ${c.localPort}\r\n` : proxyV2(c))
      b.write(newHs)
      b.write(buf.subarray(off))
      c.pipe(b); b.pipe(c)
      b.on('error', () => c.destroy()); c.on('error', () => b.destroy())
      c.resume()
    })
    }
  }
  c.on('data', onData)
}).listen(Number(bindPort), bindHost, () => console.error(`mock proxy listening on ${cfg.bind}`))
process.on('SIGTERM', () => process.exit(0))
