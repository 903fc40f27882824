// helia_peer.mjs: a Helia node driven over stdin/stdout, for msuite's interop tests.
//
// Listens on /ip4/127.0.0.1/tcp/0 only: TCP + Noise + Yamux, identify and ping, bitswap as the
// only block broker, no routers, no discovery, no bootstrap, no relay, no WebSockets/WebRTC,
// no HTTP gateways: it never looks anything up on the network. Blockstore and datastore are
// in memory.
//
// Prints one line when ready:
//   {"ready": true, "peer": "<peer id>", "addrs": ["/ip4/127.0.0.1/tcp/NNNN/p2p/<id>"]}
// then reads one JSON command per line on stdin and answers each with one JSON line:
//   {"cmd": "dial", "addr": "<multiaddr with /p2p/>"}          -> {"ok": true}
//   {"cmd": "add", "path": "<file>"}                           -> {"ok": true, "cid": "<base32>"}
//       (cidVersion 1, rawLeaves, 262144-byte chunks, balanced 174, reduceSingleLeafToSelf:
//        the options of make_vectors.mjs, i.e. Kubo's `ipfs add --cid-version=1 --raw-leaves`)
//   {"cmd": "add_bytes_1mib_chunks", "path": "<file>"}         -> same with 1048576-byte chunks
//   {"cmd": "cat", "cid": "...", "out": "<file>", "timeout_ms": 30000}
//                                                  -> {"ok": true, "bytes": N, "seconds": S}
//   {"cmd": "stop"}                                            -> {"ok": true}, exit 0
//   any failure                                   -> {"ok": false, "error": "<message>"}
// Commands run one at a time, in order. End of stdin stops the node too.
// Nothing goes to stderr unless something breaks (or DEBUG=libp2p:*,helia:* is set).

import { createReadStream, createWriteStream } from 'node:fs'
import { once, setMaxListeners } from 'node:events'
import { createInterface } from 'node:readline'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { bitswap } from '@helia/block-brokers'
import { unixfs } from '@helia/unixfs'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { MemoryBlockstore } from 'blockstore-core'
import { MemoryDatastore } from 'datastore-core'
import { createHelia } from 'helia'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { createLibp2p } from 'libp2p'
import { CID } from 'multiformats/cid'

// libp2p 3 and its helpers call Promise.withResolvers (ES2024), which Node 22 has and Node 20
// lacks: this is the whole shim needed (checked with selfcheck.mjs on Node 20.20).
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

function addOptions (chunkSize) {
  return {
    cidVersion: 1,
    rawLeaves: true,
    reduceSingleLeafToSelf: true,
    wrapWithDirectory: false,
    chunker: fixedSize({ chunkSize }),
    layout: balanced({ maxChildrenPerNode: 174 })
  }
}

function send (obj) {
  return new Promise((resolve) => process.stdout.write(JSON.stringify(obj) + '\n', resolve))
}

async function main () {
  const datastore = new MemoryDatastore()
  const blockstore = new MemoryBlockstore()
  const libp2p = await createLibp2p({
    datastore,
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: [],
    services: { identify: identify(), ping: ping() },
    start: false
  })
  const helia = await createHelia({
    libp2p,
    datastore,
    blockstore,
    blockBrokers: [bitswap()],
    routers: []
  })
  const fs = unixfs(helia)

  const handlers = {
    async dial ({ addr }) {
      const ma = multiaddr(addr)
      if (!ma.getComponents().some(c => c.name === 'p2p')) throw new Error('dial: the address needs a /p2p/<peer id> part')
      await libp2p.dial(ma)
      return {}
    },
    async add ({ path }) {
      const cid = await fs.addByteStream(createReadStream(path), addOptions(262144))
      return { cid: cid.toString() }
    },
    async add_bytes_1mib_chunks ({ path }) { // eslint-disable-line camelcase
      const cid = await fs.addByteStream(createReadStream(path), addOptions(1048576))
      return { cid: cid.toString() }
    },
    async cat ({ cid, out, timeout_ms: timeoutMs = 30000 }) {
      const started = performance.now()
      const signal = AbortSignal.timeout(timeoutMs)
      setMaxListeners(Infinity, signal) // one listener per block in flight; silences a warning
      const file = createWriteStream(out)
      let bytes = 0
      try {
        for await (const buf of fs.cat(CID.parse(cid), { signal })) {
          bytes += buf.length
          if (!file.write(buf)) await once(file, 'drain')
        }
      } finally {
        file.end()
        await once(file, 'close')
      }
      return { bytes, seconds: (performance.now() - started) / 1000 }
    }
  }

  let stopping = false
  const stop = async () => {
    if (stopping) return
    stopping = true
    await helia.stop()
  }

  send({
    ready: true,
    peer: libp2p.peerId.toString(),
    addrs: libp2p.getMultiaddrs().map(String)
  })

  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity })
  for await (const line of lines) {
    if (line.trim() === '') continue
    let answer
    try {
      const command = JSON.parse(line)
      if (command == null || typeof command !== 'object') throw new Error('a command is a JSON object')
      if (command.cmd === 'stop') {
        await stop()
        await send({ ok: true })
        process.exit(0)
      }
      const handler = Object.hasOwn(handlers, command.cmd) ? handlers[command.cmd] : undefined
      if (handler == null) throw new Error(`unknown cmd ${JSON.stringify(command.cmd)}`)
      answer = { ok: true, ...(await handler(command)) }
    } catch (err) {
      answer = { ok: false, error: err?.message ?? String(err) }
    }
    await send(answer)
  }
  await stop()
  process.exit(0)
}

main().catch((err) => {
  process.stderr.write(`helia_peer: ${err?.stack ?? err}\n`)
  process.exit(1)
})
