"""The node's gRPC side: the server (component ``grpc``), its interceptor chain, and clients by name."""

__all__: list[str] = []
