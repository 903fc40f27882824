"""The node's HTTP server: the aiohttp app, its middlewares and the JSON-to-gRPC gateway (``gateway``)."""

__all__: list[str] = []
