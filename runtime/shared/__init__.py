"""The shared store: a Merkle-CRDT item store replicated between the nodes of a channel."""
