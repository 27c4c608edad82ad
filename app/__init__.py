"""The catalog managers' web app (``prodkg app``): browse the graph, review the queue, record decisions."""

from prodkg.app.server import create_app, serve

__all__ = ["create_app", "serve"]
