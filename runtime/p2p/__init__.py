"""The libp2p side of the node: the trio thread, the bridge, the host, discovery, protocols.

Trio code stays in this package; :mod:`msuite.runtime.p2p.bridge` is where it
meets the node's asyncio loop.
"""
