"""Typed events between nodes over GossipSub (``node.events``): see ``docs/events.md``."""
