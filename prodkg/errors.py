"""The one exception tree of prodkg: every error the project raises on purpose derives from ProdkgError.

Each class carries the exit status the command line ends with (``exit_code``), so scripts and
schedulers can tell a bad setting from bad data from a refused graph:

====  =====================================================================================
code  meaning
====  =====================================================================================
0     success
1     an unexpected error (a bug: the traceback is printed)
2     configuration or usage: an unknown name, a value out of range, a missing catalog file,
      a domain the catalog does not have, a malformed query. Nothing was run or written.
3     data or I/O: the catalog or a stage table is unusable, a dataset or model cannot be read,
      the disk is full. The last good graph is untouched.
4     graph refused: the run's graph violates the SHACL shapes; the last good graph stays live
5     store: the graph store or SPARQL server could not be opened, written or swapped
6     another run holds the output folder
130   interrupted (Ctrl-C)
====  =====================================================================================
"""


class ProdkgError(Exception):
    """Base class of every error prodkg raises on purpose."""

    exit_code = 3


class ConfigError(ProdkgError):
    """A configuration value is missing, malformed or contradictory."""

    exit_code = 2


class CatalogError(ProdkgError):
    """A whole-catalog problem (missing column, empty file, unreadable format).

    Row-level problems never raise: the row is quarantined with its reason.
    """


class UnknownComponentError(ProdkgError, KeyError):
    """A registry was asked for a name it does not hold; the message lists the valid names."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class ModelLoadError(ProdkgError):
    """Weights could not be found or loaded (for example: no network to reach a model hub)."""


class DataLoadError(ProdkgError):
    """A dataset could not be found locally nor downloaded and verified."""


class StageError(ProdkgError):
    """A pipeline stage received a table that does not match its contract."""


class GraphRefusedError(StageError):
    """The run's graph violates the SHACL shapes and was not published; the last good graph stays live."""

    exit_code = 4


class StoreError(ProdkgError):
    """The knowledge-graph store could not be opened, written or swapped."""

    exit_code = 5


class OutputBusyError(ProdkgError):
    """Another run holds the output folder's run lock; the message names it (run id, pid, host, since when)."""

    exit_code = 6


class QueryError(ProdkgError):
    """A SPARQL query is malformed, refused (for example an update on a read-only store) or timed out."""

    exit_code = 2


class ResourceError(ProdkgError):
    """The machine failed the run: disk full (ENOSPC), another I/O error, or a folder it may not write.

    The last good graph stays live; the failed run's partial files are removed (by the run itself when it
    can, else by the next run or ``prodkg gc``).
    """

    exit_code = 3
