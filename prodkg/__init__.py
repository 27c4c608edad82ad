"""prodkg: build a product knowledge graph from e-commerce catalogs by transfer learning."""

__version__ = "0.1.0"
