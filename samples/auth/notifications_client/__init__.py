"""Typed stubs of notifications.v1.Notifications, copied by ``update_clients.py`` (do not edit).

auth only calls this service (``node.grpc.client("notifications.v1.Notifications")``);
msuite generates code for served services only, so the stubs are kept here, beside
``gen/``, which ``msuite generate`` replaces whole.
"""
