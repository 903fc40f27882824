"""msuite.runtime: the node, its subsystems, and the ``msuite`` command line."""

from .errors import MsuiteError, NodeError, NotConfigured, NotSupported, StartError

__all__ = ["MsuiteError", "NodeError", "NotConfigured", "NotSupported", "StartError"]
