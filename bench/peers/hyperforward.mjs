// A hypertele-style TCP forwarder on hyperdht, for ptunnel's benchmark (issue 7).
//
// Three roles, one process each, as hypertele users run them:
//   node hyperforward.mjs testnet --size 3
//       runs a local DHT testnet bound to 127.0.0.1 and prints {"bootstrap": ["127.0.0.1:PORT"]}
//   node hyperforward.mjs server --bootstrap 127.0.0.1:PORT --target 127.0.0.1:SINK
//       announces a fresh keypair and pipes every incoming stream to the target TCP port;
//       prints {"publicKey": "HEX"}
//   node hyperforward.mjs client --bootstrap 127.0.0.1:PORT --key HEX [--listen 127.0.0.1:0]
//       listens on TCP and pipes every accepted socket to dht.connect(key); prints {"port": N}
//
// Safety: hyperdht's default bootstrap is the public Holepunch nodes. This script never relies on
// that default: --bootstrap is mandatory for server and client and every node in it must be a
// loopback IPv4 literal, or the script exits before creating a DHT (the Python harness checks the
// same thing before starting it). Every socket binds to 127.0.0.1.
//
// Each role prints exactly one JSON line on stdout when ready and runs until SIGINT/SIGTERM.

import net from 'node:net'
import process from 'node:process'

// hyperdht is imported only after the arguments passed the loopback check, so the check also
// runs (and can be tested) where hyperdht is not installed.
async function hyperdht () {
  return (await import('hyperdht')).default
}

const LOOPBACK = '127.0.0.1'

function fail (message) {
  process.stderr.write(`hyperforward: ${message}\n`)
  process.exit(2)
}

function parseArgs (argv) {
  const args = { _: [] }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a.startsWith('--')) {
      if (i + 1 >= argv.length) fail(`missing value for ${a}`)
      args[a.slice(2)] = argv[++i]
    } else {
      args._.push(a)
    }
  }
  return args
}

function isLoopbackV4 (host) {
  const parts = host.split('.')
  if (parts.length !== 4) return false
  for (const p of parts) {
    if (!/^[0-9]{1,3}$/.test(p) || Number(p) > 255) return false
  }
  return Number(parts[0]) === 127
}

// Parses "127.0.0.1:PORT,127.0.0.1:PORT" and refuses anything that is not on loopback.
function loopbackBootstrap (spec) {
  if (!spec) fail('--bootstrap is required (the default would be public nodes)')
  const nodes = []
  for (const item of spec.split(',')) {
    const m = /^([^:@]+):([0-9]{1,5})$/.exec(item.trim())
    if (!m) fail(`bootstrap node ${JSON.stringify(item)} is not HOST:PORT`)
    const port = Number(m[2])
    if (!isLoopbackV4(m[1]) || port < 1 || port > 65535) {
      fail(`refusing bootstrap node ${item}: not a loopback address`)
    }
    nodes.push({ host: m[1], port })
  }
  if (nodes.length === 0) fail('empty --bootstrap')
  return nodes
}

function parseHostPort (spec, what) {
  const m = /^([^:]+):([0-9]{1,5})$/.exec(spec || '')
  if (!m) fail(`${what} must be HOST:PORT`)
  if (!isLoopbackV4(m[1])) fail(`${what} must be on loopback`)
  return { host: m[1], port: Number(m[2]) }
}

// Pipes two duplex streams both ways and tears both down when either side errors or closes.
function splice (a, b) {
  let done = false
  const destroy = () => {
    if (done) return
    done = true
    a.destroy()
    b.destroy()
  }
  a.on('error', destroy)
  b.on('error', destroy)
  a.on('close', destroy)
  b.on('close', destroy)
  a.pipe(b).pipe(a)
}

function ready (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

function onSignals (cleanup) {
  let closing = false
  const stop = async () => {
    if (closing) return
    closing = true
    // Unannouncing needs the testnet, which may already be gone: do not wait for it forever.
    setTimeout(() => process.exit(0), 1000)
    try {
      await cleanup()
    } finally {
      process.exit(0)
    }
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
}

async function runTestnet (args) {
  const size = Number(args.size || 3)
  const createTestnet = (await import('hyperdht/testnet.js')).default
  const testnet = await createTestnet(size, { host: LOOPBACK })
  const bootstrap = testnet.bootstrap.map((n) => `${n.host}:${n.port}`)
  for (const b of bootstrap) loopbackBootstrap(b)
  onSignals(() => testnet.destroy())
  ready({ bootstrap })
}

async function runServer (args) {
  const bootstrap = loopbackBootstrap(args.bootstrap)
  const target = parseHostPort(args.target, '--target')
  const DHT = await hyperdht()
  const dht = new DHT({ bootstrap, host: LOOPBACK })
  const keyPair = DHT.keyPair()
  const server = dht.createServer((stream) => {
    const socket = net.connect(target.port, target.host)
    socket.setNoDelay(true)
    splice(stream, socket)
  })
  await server.listen(keyPair)
  onSignals(async () => {
    await server.close()
    await dht.destroy()
  })
  ready({ publicKey: keyPair.publicKey.toString('hex') })
}

async function runClient (args) {
  const bootstrap = loopbackBootstrap(args.bootstrap)
  if (!/^[0-9a-f]{64}$/.test(args.key || '')) fail('--key must be 64 hex digits')
  const publicKey = Buffer.from(args.key, 'hex')
  const listen = parseHostPort(args.listen || `${LOOPBACK}:0`, '--listen')
  const DHT = await hyperdht()
  const dht = new DHT({ bootstrap, host: LOOPBACK })
  const server = net.createServer((socket) => {
    socket.setNoDelay(true)
    splice(socket, dht.connect(publicKey))
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(listen.port, listen.host, resolve)
  })
  onSignals(async () => {
    server.close()
    await dht.destroy()
  })
  ready({ port: server.address().port })
}

const args = parseArgs(process.argv.slice(2))
const roles = { testnet: runTestnet, server: runServer, client: runClient }
const role = roles[args._[0]]
if (!role) fail('usage: hyperforward.mjs testnet|server|client [--options]')
role(args).catch((err) => fail(err && err.stack ? err.stack : String(err)))
