"""SPARQL 1.1 Protocol endpoint over the published graph; the implementation lives in :mod:`prodkg.kb.sparql`."""

from __future__ import annotations

from prodkg.kb.sparql.server import STATUS_CODES, EndpointSettings, create_app, serve, uvicorn_config

__all__ = ["STATUS_CODES", "EndpointSettings", "create_app", "serve", "uvicorn_config"]
