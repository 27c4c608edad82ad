"""A SPARQL 1.1 server (Virtuoso, Fuseki, GraphDB, ...) as the graph store, and publishing the graph to it.

The names of the modules that implement it, gathered in one place so that
``from prodkg.kb.remote import ...`` keeps working:

* :mod:`kb.sparql_client`: :class:`SparqlServerStore`, the SPARQL 1.1 Protocol and Graph Store
  Protocol client and its result parsing; :func:`check_url`; the credential variables.
* :mod:`kb.virtuoso`: :class:`VirtuosoStore`, Virtuoso's endpoint conventions and answers.
* :mod:`kb.publication`: :class:`Publication`, the registry graph and the swap, and
  :class:`RemoteGraph`, which publishes a run's quads with the contract of
  :meth:`kb.store.KnowledgeGraph.publish`.
* :mod:`kb.server`: :func:`open_server_store` and :func:`mirror_to_server`, what the pipeline's
  graph stage and the CLI call when a run names a server.
"""

from __future__ import annotations

from prodkg.kb.publication import DEFAULT_REGISTRY_GRAPH, Publication, RemoteGraph
from prodkg.kb.server import mirror_to_server, open_server_store
from prodkg.kb.sparql_client import PASSWORD_ENV, USER_ENV, SparqlServerStore, check_url
from prodkg.kb.virtuoso import VirtuosoStore

__all__ = [
    "DEFAULT_REGISTRY_GRAPH",
    "PASSWORD_ENV",
    "USER_ENV",
    "Publication",
    "RemoteGraph",
    "SparqlServerStore",
    "VirtuosoStore",
    "check_url",
    "mirror_to_server",
    "open_server_store",
]
