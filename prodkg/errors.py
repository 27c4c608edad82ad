"""The one exception tree of prodkg: every error the project raises on purpose derives from ProdkgError."""


class ProdkgError(Exception):
    """Base class of every error prodkg raises on purpose."""


class ConfigError(ProdkgError):
    """A configuration value is missing, malformed or contradictory."""


class CatalogError(ProdkgError):
    """A whole-catalog problem (missing column, empty file, unreadable format).

    Row-level problems never raise: the row is quarantined with its reason.
    """


class UnknownComponentError(ProdkgError, KeyError):
    """A registry was asked for a name it does not hold; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class ModelLoadError(ProdkgError):
    """Weights could not be found or loaded (for example: no network to reach a model hub)."""


class DataLoadError(ProdkgError):
    """A dataset could not be found locally nor downloaded and verified."""


class StageError(ProdkgError):
    """A pipeline stage received a table that does not match its contract."""


class StoreError(ProdkgError):
    """The knowledge-graph store could not be opened, written or swapped."""


class QueryError(ProdkgError):
    """A SPARQL query is malformed, refused (for example an update on a read-only store) or timed out."""


class ResourceError(ProdkgError):
    """The machine failed the run: disk full (ENOSPC), another I/O error, or a folder it may not write.

    The last good graph stays live; the failed run's partial files are removed (by the run itself when it
    can, else by the next run or ``prodkg gc``).
    """


class OutputBusyError(ProdkgError):
    """Another run holds the output folder's run lock; the message names it (run id, pid, host, since when)."""
