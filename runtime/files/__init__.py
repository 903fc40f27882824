"""IPFS-style file sharing (``node.files``): UnixFS, the blockstore, Bitswap; see ``docs/files.md``."""
