// make_vectors.mjs: UnixFS CID test vectors from an independent implementation
// (js ipfs-unixfs-importer), for msuite's Python importer tests.
//
// Regenerate:  cd tests/runtime/files/js && npm ci && node make_vectors.mjs > vectors.json
//
// Options (Kubo's modern `ipfs add --cid-version=1 --raw-leaves`), all passed explicitly:
//   cidVersion 1, rawLeaves true, fixed-size chunker of 262144 bytes,
//   balanced layout with maxChildrenPerNode 174, reduceSingleLeafToSelf true,
//   wrapWithDirectory false, fieldOrder 'links-first', no mtime / mode.
//
// Content of a file of size N: byte i (0 <= i < N) is (i * 7 + floor(i / 251)) % 256.
// (It repeats every 251 * 256 = 64256 bytes, so 262144-byte chunk k equals chunk k + 251:
// files of more than 251 chunks have duplicate leaves, which the blockstore stores once.)
//
// Per file: size, cid (root, base32), blocks (number of distinct CIDs put to the
// blockstore), puts (number of put calls), and for sizes <= 1 MiB block_list: every distinct
// block as {cid, length}, in DAG pre-order (root first, children left to right).
//
// Every vector is also checked here a second way, without the importer: each block's CID is
// recomputed from its bytes with node:crypto's SHA-256, the DAG is walked from the root with
// @ipld/dag-pb + ipfs-unixfs (filesize and blocksizes must add up), and the leaves read in
// order must equal the content formula byte for byte. Any mismatch exits non-zero.

import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import * as dagPB from '@ipld/dag-pb'
import { UnixFS } from 'ipfs-unixfs'
const raw = { code: 0x55 } // multicodec 'raw'

const CHUNK = 262144
const MAX_CHILDREN = 174
const MiB = 1048576

export const OPTIONS = {
  cidVersion: 1,
  rawLeaves: true,
  reduceSingleLeafToSelf: true,
  wrapWithDirectory: false,
  fieldOrder: 'links-first'
}

export function importerOptions (chunkSize = CHUNK) {
  return {
    ...OPTIONS,
    chunker: fixedSize({ chunkSize }),
    layout: balanced({ maxChildrenPerNode: MAX_CHILDREN })
  }
}

const PERIOD = 251 * 256
const PATTERN = new Uint8Array(PERIOD)
for (let i = 0; i < PERIOD; i++) PATTERN[i] = (i * 7 + Math.floor(i / 251)) % 256

/** Bytes [start, start + n) of the content. */
export function content (n, start = 0) {
  const out = new Uint8Array(n)
  let pos = start % PERIOD
  let off = 0
  while (off < n) {
    const take = Math.min(n - off, PERIOD - pos)
    out.set(PATTERN.subarray(pos, pos + take), off)
    off += take
    pos = 0
  }
  return out
}

/** The first n bytes of the content, in pieces (not aligned with the chunker on purpose). */
function * pieces (n, size = 1000003) {
  for (let start = 0; start < n; start += size) yield content(Math.min(size, n - start), start)
}

/** A blockstore that keeps every block and counts puts. */
class RecordingStore {
  constructor () { this.blocks = new Map(); this.puts = 0 }
  async put (cid, bytes) {
    this.puts++
    if (!(bytes instanceof Uint8Array)) throw new Error('put: expected Uint8Array')
    this.blocks.set(cid.toString(), { cid, bytes: Uint8Array.from(bytes) })
    return cid
  }
}

function fail (msg) { throw new Error(`self-check failed: ${msg}`) }

/** Independent checks of one DAG; returns the distinct blocks in pre-order. */
function verify (store, root, size) {
  for (const { cid, bytes } of store.blocks.values()) {
    if (cid.version !== 1 || cid.multihash.code !== 0x12) fail(`${cid}: not CIDv1 sha2-256`)
    const digest = createHash('sha256').update(bytes).digest()
    if (Buffer.compare(digest, Buffer.from(cid.multihash.digest)) !== 0) fail(`${cid}: digest mismatch`)
    if (cid.code !== raw.code && cid.code !== dagPB.code) fail(`${cid}: codec ${cid.code}`)
  }
  const order = []
  const seen = new Set()
  let offset = 0
  const walk = (cid) => {
    const block = store.blocks.get(cid.toString())
    if (block == null) fail(`${cid} missing`)
    if (!seen.has(cid.toString())) { seen.add(cid.toString()); order.push(block) }
    if (cid.code === raw.code) {
      const expect = content(block.bytes.length, offset)
      if (Buffer.compare(Buffer.from(block.bytes), Buffer.from(expect)) !== 0) fail(`${cid}: bytes at ${offset}`)
      if (block.bytes.length > CHUNK) fail(`${cid}: leaf longer than a chunk`)
      offset += block.bytes.length
      return BigInt(block.bytes.length)
    }
    const node = dagPB.decode(block.bytes)
    // re-encoding must give the same bytes (canonical form)
    if (Buffer.compare(Buffer.from(dagPB.encode(node)), Buffer.from(block.bytes)) !== 0) fail(`${cid}: not canonical`)
    const fs = UnixFS.unmarshal(node.Data)
    if (fs.type !== 'file') fail(`${cid}: type ${fs.type}`)
    if (node.Links.length > MAX_CHILDREN) fail(`${cid}: ${node.Links.length} links`)
    if (node.Links.length === 0) {
      const data = fs.data ?? new Uint8Array(0)
      const expect = content(data.length, offset)
      if (Buffer.compare(Buffer.from(data), Buffer.from(expect)) !== 0) fail(`${cid}: inline bytes`)
      offset += data.length
      return BigInt(data.length)
    }
    if (fs.blockSizes.length !== node.Links.length) fail(`${cid}: blocksizes vs links`)
    let sum = 0n
    node.Links.forEach((link, i) => {
      const got = walk(link.Hash)
      if (got !== fs.blockSizes[i]) fail(`${cid}: blocksize ${i} is ${fs.blockSizes[i]}, child holds ${got}`)
      const child = store.blocks.get(link.Hash.toString())
      const tsize = childTsize(store, link.Hash)
      if (link.Tsize !== tsize) fail(`${cid}: link ${i} Tsize ${link.Tsize}, expected ${tsize} (${child.bytes.length} own)`)
      sum += got
    })
    if (fs.fileSize() !== sum) fail(`${cid}: filesize ${fs.fileSize()} != sum of blocksizes ${sum}`)
    return sum
  }
  const total = walk(root)
  if (total !== BigInt(size) || offset !== size) fail(`root holds ${total} bytes, expected ${size}`)
  if (seen.size !== store.blocks.size) fail(`${store.blocks.size - seen.size} unreachable blocks`)
  return order
}

/** Cumulative size of a DAG (own bytes + Tsize of links), as Kubo writes link Tsize. */
function childTsize (store, cid) {
  const block = store.blocks.get(cid.toString())
  if (cid.code === raw.code) return block.bytes.length
  const node = dagPB.decode(block.bytes)
  return node.Links.reduce((acc, l) => acc + l.Tsize, block.bytes.length)
}

async function fileVector (size) {
  const store = new RecordingStore()
  let root
  for await (const entry of importer([{ content: pieces(size) }], store, importerOptions())) root = entry
  const order = verify(store, root.cid, size)
  const v = {
    size,
    cid: root.cid.toString(),
    root_codec: root.cid.code === raw.code ? 'raw' : 'dag-pb',
    blocks: store.blocks.size,
    puts: store.puts,
    leaves: [...store.blocks.values()].filter(b => b.cid.code === raw.code).length
  }
  if (size <= MiB) v.block_list = order.map(b => ({ cid: b.cid.toString(), length: b.bytes.length }))
  return v
}

async function directoryVector () {
  const store = new RecordingStore()
  const files = [['dir/a.txt', 5], ['dir/b.bin', 262145], ['dir/sub/c.txt', 1000]]
  const out = {}
  const candidates = files.map(([path, n]) => ({ path, content: pieces(n) }))
  for await (const entry of importer(candidates, store, importerOptions())) out[entry.path] = entry
  for (const [path, n] of files) {
    const sub = new RecordingStore()
    for await (const e of importer([{ content: pieces(n) }], sub, importerOptions())) {
      if (e.cid.toString() !== out[path].cid.toString()) fail(`${path}: differs from its own import`)
    }
  }
  // walk the directories by hand
  const dirLinks = (cid) => {
    const node = dagPB.decode(store.blocks.get(cid.toString()).bytes)
    const fs = UnixFS.unmarshal(node.Data)
    if (fs.type !== 'directory') fail(`${cid}: type ${fs.type}`)
    return Object.fromEntries(node.Links.map(l => [l.Name, l]))
  }
  const top = dirLinks(out.dir.cid)
  if (Object.keys(top).join() !== 'a.txt,b.bin,sub') fail(`dir lists ${Object.keys(top)}`)
  if (top.sub.Hash.toString() !== out['dir/sub'].cid.toString()) fail('dir/sub link')
  const sub = dirLinks(out['dir/sub'].cid)
  if (sub['c.txt'].Hash.toString() !== out['dir/sub/c.txt'].cid.toString()) fail('dir/sub/c.txt link')
  return {
    description: 'directory dir/ = {a.txt: content(5), b.bin: content(262145), sub/ = {c.txt: content(1000)}}, ' +
      'imported as paths dir/a.txt, dir/b.bin, dir/sub/c.txt with wrapWithDirectory false; no mtime/mode',
    cid: out.dir.cid.toString(),
    sub_cid: out['dir/sub'].cid.toString(),
    blocks: store.blocks.size,
    paths: Object.fromEntries(Object.entries(out).map(([p, e]) => [p, e.cid.toString()])),
    files: Object.fromEntries(files.map(([path, n]) => [path.slice(4), { size: n, cid: out[path].cid.toString() }]))
  }
}

const SIZES = [
  0, 1, 1000, 262143, 262144, 262145,
  174 * CHUNK, 174 * CHUNK + 1, 175 * CHUNK,
  MiB, 10 * MiB, 50 * MiB,
  2 * 174 * CHUNK + 5
]

async function main () {
  // the version a package resolves to from ipfs-unixfs-importer's own folder (npm may nest it there)
  const pkg = (name) => {
    for (const dir of [`./node_modules/ipfs-unixfs-importer/node_modules/${name}`, `./node_modules/${name}`]) {
      if (existsSync(new URL(`${dir}/package.json`, import.meta.url))) {
        return JSON.parse(readFileSync(new URL(`${dir}/package.json`, import.meta.url))).version
      }
    }
    throw new Error(`${name} is not installed`)
  }
  const files = []
  for (const size of SIZES) {
    files.push(await fileVector(size))
    process.stderr.write(`${size} -> ${files.at(-1).cid} (${files.at(-1).blocks} blocks)\n`)
  }
  const empty = files.find(v => v.size === 0)
  const KUBO_EMPTY_RAW = 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku'
  const vectors = {
    header: {
      generator: `ipfs-unixfs-importer ${pkg('ipfs-unixfs-importer')}`,
      libraries: Object.fromEntries(['ipfs-unixfs-importer', 'ipfs-unixfs', '@ipld/dag-pb', 'multiformats']
        .map(n => [n, pkg(n)])),
      node: process.version,
      options: {
        ...OPTIONS,
        chunker: `fixedSize({ chunkSize: ${CHUNK} })`,
        layout: `balanced({ maxChildrenPerNode: ${MAX_CHILDREN} })`,
        equivalent: 'ipfs add --cid-version=1 --raw-leaves (Kubo)'
      },
      content: 'byte i of a file of size N (0 <= i < N) is (i * 7 + floor(i / 251)) % 256',
      regenerate: 'cd tests/runtime/files/js && npm ci && node make_vectors.mjs > vectors.json',
      fields: {
        cid: 'root CID, CIDv1 base32',
        blocks: 'distinct CIDs put to the blockstore',
        puts: 'blockstore put calls (more than blocks when leaves repeat: the content repeats every 251 chunks)',
        leaves: 'distinct raw leaf blocks',
        block_list: 'sizes <= 1 MiB only: every distinct block {cid, length in bytes}, DAG pre-order, root first'
      },
      checked: 'every block CID recomputed with SHA-256; DAG walked with @ipld/dag-pb + ipfs-unixfs ' +
        '(blocksizes, filesize, link Tsize); leaves equal the content formula',
      empty_file_matches_kubo: empty.cid === KUBO_EMPTY_RAW
    },
    files,
    directory: await directoryVector()
  }
  process.stdout.write(JSON.stringify(vectors, null, 2) + '\n')
}

main().catch((err) => { console.error(err); process.exit(1) })
