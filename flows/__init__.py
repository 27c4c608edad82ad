"""The Prefect flow, the CLI, run configuration and run directories; no ML or RDF logic lives here."""
