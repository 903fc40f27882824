"""Diagnostics on the node's HTTP server: Prometheus metrics, profiling pages, tracing."""
