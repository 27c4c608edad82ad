"""The Prefect flow, the CLI, run configuration and run directories; no ML or RDF logic lives here."""

if __name__ != "prodkg.flows":  # the folder installs as prodkg.flows; a bare `import flows` would load a second copy
    raise ImportError("import prodkg.flows, not flows")
