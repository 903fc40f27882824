// selfcheck.mjs: Helia-to-Helia check of helia_peer.mjs.
//
// Starts two helia_peer.mjs processes, has B dial A, adds a 3 MiB file (the content formula of
// make_vectors.mjs) on A, cats it on B over bitswap and compares the bytes. Also checks that
// `add` gives vectors.json's CID for 1 MiB, that both peers agree on CIDs, and that a CID nobody
// has fails with {"ok": false} after its timeout while the peer keeps answering.
// Prints one line per check and "N passed, N failed"; exits 1 on any failure.
//
// Run: cd tests/runtime/files/js && npm ci && node selfcheck.mjs

import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'

const here = new URL('.', import.meta.url).pathname
const vectors = JSON.parse(readFileSync(join(here, 'vectors.json'), 'utf8'))

function content (n) {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = (i * 7 + Math.floor(i / 251)) % 256
  return out
}

class Peer {
  constructor (name) {
    this.name = name
    this.proc = spawn(process.execPath, [join(here, 'helia_peer.mjs')], { stdio: ['pipe', 'pipe', 'inherit'] })
    this.lines = createInterface({ input: this.proc.stdout })[Symbol.asyncIterator]()
  }

  async next (ms = 60000) {
    let timer
    const timeout = new Promise((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.name}: no answer in ${ms} ms`)), ms)
    })
    try {
      const { value, done } = await Promise.race([this.lines.next(), timeout])
      if (done) throw new Error(`${this.name}: exited`)
      return JSON.parse(value)
    } finally {
      clearTimeout(timer)
    }
  }

  async call (command) {
    this.proc.stdin.write(JSON.stringify(command) + '\n')
    return this.next()
  }
}

let passed = 0
let failed = 0
function check (name, ok, detail = '') {
  if (ok) passed++; else failed++
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ': ' + detail : ''}`)
}

const sha = (b) => createHash('sha256').update(b).digest('hex')

async function main () {
  const dir = mkdtempSync(join(tmpdir(), 'helia-selfcheck-'))
  const a = new Peer('A')
  const b = new Peer('B')
  try {
    const [ra, rb] = await Promise.all([a.next(), b.next()])
    check('both peers ready', ra.ready === true && rb.ready === true, `A=${ra.peer} ${ra.addrs.join(' ')}`)
    check('A listens on 127.0.0.1 TCP only', ra.addrs.length > 0 &&
      ra.addrs.every(x => /^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/\w+$/.test(x)), ra.addrs.join(' '))

    const big = content(3 * 1048576)
    const bigPath = join(dir, 'three-mib.bin')
    writeFileSync(bigPath, big)
    const oneMiB = join(dir, 'one-mib.bin')
    writeFileSync(oneMiB, content(1048576))

    const dial = await b.call({ cmd: 'dial', addr: ra.addrs[0] })
    check('B dials A', dial.ok === true, JSON.stringify(dial))

    const added = await a.call({ cmd: 'add', path: bigPath })
    check('A adds 3 MiB', added.ok === true, added.cid)
    const again = await b.call({ cmd: 'add', path: bigPath })
    check('B gets the same CID for the same file', again.ok && again.cid === added.cid, again.cid)

    const v1 = vectors.files.find(v => v.size === 1048576).cid
    const one = await a.call({ cmd: 'add', path: oneMiB })
    check('add of 1 MiB matches vectors.json', one.cid === v1, `${one.cid} vs ${v1}`)
    const oneBig = await a.call({ cmd: 'add_bytes_1mib_chunks', path: oneMiB })
    check('add_bytes_1mib_chunks of 1 MiB is one raw block', oneBig.ok && oneBig.cid.startsWith('bafkrei'), oneBig.cid)

    // a fresh B-side copy would be served locally, so fetch something only A has
    const onlyA = join(dir, 'only-a.bin')
    writeFileSync(onlyA, Buffer.concat([Buffer.from('only on A\n'), big]))
    const addedA = await a.call({ cmd: 'add', path: onlyA })
    const out = join(dir, 'fetched.bin')
    const cat = await b.call({ cmd: 'cat', cid: addedA.cid, out, timeout_ms: 30000 })
    const fetched = readFileSync(out)
    const expected = readFileSync(onlyA)
    check('B cats A\'s file over bitswap', cat.ok === true && cat.bytes === expected.length &&
      sha(fetched) === sha(expected), cat.ok === false ? cat.error : `${cat.bytes} bytes in ${cat.seconds?.toFixed(3)} s, sha256 ${sha(fetched).slice(0, 16)}`)

    const missing = 'bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy'
    const miss = await b.call({ cmd: 'cat', cid: missing, out: join(dir, 'missing.bin'), timeout_ms: 1500 })
    check('cat of a CID nobody has fails after its timeout', miss.ok === false, miss.error)
    const bad = await b.call({ cmd: 'cat', cid: 'not-a-cid', out: join(dir, 'x') })
    check('a bad CID is an error', bad.ok === false, bad.error)
    const after = await b.call({ cmd: 'add', path: oneMiB })
    check('B still answers after errors', after.ok === true && after.cid === v1)

    const [sa, sb] = await Promise.all([a.call({ cmd: 'stop' }), b.call({ cmd: 'stop' })])
    const codes = await Promise.all([a, b].map(p => p.proc.exitCode ?? new Promise(resolve => p.proc.on('exit', resolve))))
    check('both stop with exit 0', sa.ok && sb.ok && codes.every(c => c === 0), `exit codes ${codes}`)
  } finally {
    for (const p of [a, b]) if (p.proc.exitCode == null) p.proc.kill()
    rmSync(dir, { recursive: true, force: true })
  }
  console.log(`${passed} passed, ${failed} failed`)
  process.exit(failed === 0 ? 0 : 1)
}

main().catch((err) => { console.error(err); process.exit(1) })
