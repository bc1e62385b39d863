'use strict'
// A PROXY protocol shim: a TCP server that parses a PROXY v2 (or v1) header from each connection, records it,
// then pipes the remaining bytes to the real backend. It stands where the backend would be, so the proxy under
// test sends its header to it.
const net = require('net')
const { HOST, freePort } = require('./util')

const V2_SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])

/**
 * Parse a PROXY header at the start of buf.
 * Returns null if more bytes are needed, { error } if it is not a valid header, or { header, rest }.
 */
function parseProxyHeader (buf) {
  if (buf.length >= 1 && buf[0] === 0x0d) {
    if (buf.length < 16) return buf.equals(V2_SIG.subarray(0, buf.length)) ? null : { error: 'bad v2 signature' }
    if (!buf.subarray(0, 12).equals(V2_SIG)) return { error: `bad v2 signature: ${buf.subarray(0, 16).toString('hex')}` }
    const verCmd = buf[12]
    const famProto = buf[13]
    const len = buf.readUInt16BE(14)
    if (buf.length < 16 + len) return null
    const body = buf.subarray(16, 16 + len)
    const header = {
      version: verCmd >> 4,
      command: (verCmd & 0x0f) === 1 ? 'PROXY' : (verCmd & 0x0f) === 0 ? 'LOCAL' : `0x${(verCmd & 0x0f).toString(16)}`,
      family: { 0x11: 'TCP4', 0x12: 'UDP4', 0x21: 'TCP6', 0x22: 'UDP6', 0x00: 'UNSPEC' }[famProto] || `0x${famProto.toString(16)}`,
      raw: buf.subarray(0, 16 + len).toString('hex')
    }
    if (header.version !== 2) return { error: `v2 header with version nibble ${header.version}` }
    if (famProto === 0x11) {
      if (len < 12) return { error: `TCP4 block too short (${len})` }
      header.srcAddr = [...body.subarray(0, 4)].join('.')
      header.dstAddr = [...body.subarray(4, 8)].join('.')
      header.srcPort = body.readUInt16BE(8)
      header.dstPort = body.readUInt16BE(10)
    } else if (famProto === 0x21) {
      if (len < 36) return { error: `TCP6 block too short (${len})` }
      const ip6 = (b) => [0, 2, 4, 6, 8, 10, 12, 14].map((i) => b.readUInt16BE(i).toString(16)).join(':')
      header.srcAddr = ip6(body.subarray(0, 16))
      header.dstAddr = ip6(body.subarray(16, 32))
      header.srcPort = body.readUInt16BE(32)
      header.dstPort = body.readUInt16BE(34)
    }
    return { header, rest: buf.subarray(16 + len) }
  }
  if (buf.length >= 1 && buf[0] === 0x50) { // 'P' -> v1 text
    const end = buf.indexOf('\r\n')
    if (end < 0) return buf.length > 107 ? { error: 'v1 line longer than 107 bytes' } : null
    const line = buf.subarray(0, end).toString('latin1')
    const parts = line.split(' ')
    if (parts[0] !== 'PROXY') return { error: `not a PROXY header: ${JSON.stringify(line)}` }
    const header = { version: 1, command: 'PROXY', family: parts[1], raw: line }
    if (parts[1] === 'TCP4' || parts[1] === 'TCP6') {
      header.srcAddr = parts[2]; header.dstAddr = parts[3]
      header.srcPort = Number(parts[4]); header.dstPort = Number(parts[5])
    }
    return { header, rest: buf.subarray(end + 2) }
  }
  return { error: `no PROXY header; first bytes ${buf.subarray(0, 24).toString('hex')}` }
}

/** Start a shim forwarding to 127.0.0.1:targetPort. Returns { port, records, close() }. */
async function startProxyProtocolShim (targetPort) {
  const port = await freePort()
  const records = [] // { header } or { error }
  const sockets = new Set()
  const server = net.createServer((sock) => {
    sockets.add(sock)
    sock.on('close', () => sockets.delete(sock))
    sock.on('error', () => {})
    let buf = Buffer.alloc(0)
    const onData = (d) => {
      buf = Buffer.concat([buf, d])
      const r = parseProxyHeader(buf)
      if (r === null) return
      sock.removeListener('data', onData)
      if (r.error) {
        records.push({ error: r.error })
        sock.destroy()
        return
      }
      records.push({ header: r.header })
      sock.pause()
      const up = net.connect(targetPort, HOST)
      sockets.add(up)
      up.on('close', () => sockets.delete(up))
      up.on('error', () => sock.destroy())
      sock.on('error', () => up.destroy())
      up.once('connect', () => {
        if (r.rest.length) up.write(r.rest)
        sock.pipe(up)
        up.pipe(sock)
        sock.resume()
      })
    }
    sock.on('data', onData)
  })
  await new Promise((resolve, reject) => { server.once('error', reject); server.listen(port, HOST, resolve) })
  return {
    port,
    records,
    close () {
      for (const s of sockets) s.destroy()
      return new Promise((resolve) => server.close(() => resolve()))
    }
  }
}

module.exports = { parseProxyHeader, startProxyProtocolShim }
