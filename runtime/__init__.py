"""msuite.runtime: the node, its subsystems, and the ``msuite`` command line."""

__all__: list[str] = []
