"""Every exception vfanalytics raises on purpose.

The CLI turns each of these into one line on stderr and an exit code
(:attr:`VfaError.exit_code`); a traceback from ``vfa`` is a bug.

Exception tree::

    VfaError
    ├── UsageError                 bad arguments, values or configuration (exit 2)
    │   ├── TimeParseError         a time or duration that cannot be parsed
    │   └── ConfigError            configuration that fails validation
    ├── InputFileError             a malformed input file: names file and line
    │   ├── RuleFileError          Prometheus rule / promtool test files
    │   ├── IncidentFileError      incident CSV / YAML
    │   ├── FlagFileError          feature-flag YAML / JSON
    │   └── OpenMetricsError       OpenMetrics / Prometheus text files
    ├── QueryError                 a PromQL / LogQL query that cannot be evaluated
    │   ├── PromQLSyntaxError      parse error, with position
    │   └── UnsupportedQuery       valid PromQL outside the supported subset
    ├── SourceError                a remote source (Prometheus API, Loki) failed
    │   ├── SourceHTTPError        an HTTP error answer, with the server's message
    │   └── RetryBudgetExceeded    transient faults outlasted the retry budget
    ├── StoreError                 the DuckDB store
    │   ├── StoreLockedError       another process holds the write lock
    │   ├── StoreCorruptError      the file is not a readable vfanalytics store
    │   └── SchemaVersionError     the store was written by a newer vfanalytics
    └── ReportError                a report notebook failed (names notebook and cell)

Example
-------
>>> from vfanalytics.exceptions import UsageError, VfaError
>>> issubclass(UsageError, VfaError), UsageError.exit_code
(True, 2)
"""

from __future__ import annotations

__all__ = [
    "VfaError",
    "UsageError",
    "TimeParseError",
    "ConfigError",
    "InputFileError",
    "RuleFileError",
    "IncidentFileError",
    "FlagFileError",
    "OpenMetricsError",
    "QueryError",
    "PromQLSyntaxError",
    "UnsupportedQuery",
    "SourceError",
    "SourceHTTPError",
    "RetryBudgetExceeded",
    "StoreError",
    "StoreLockedError",
    "StoreCorruptError",
    "SchemaVersionError",
    "ReportError",
]


class VfaError(Exception):
    """Base class of every error vfanalytics raises deliberately."""

    #: process exit code the CLI uses for this error
    exit_code: int = 1


class UsageError(VfaError):
    """Bad arguments, values or configuration given by the user."""

    exit_code = 2


class TimeParseError(UsageError):
    """A timestamp or duration string that cannot be parsed."""


class ConfigError(UsageError):
    """Configuration that fails validation."""


class InputFileError(VfaError):
    """A malformed input file.

    Parameters
    ----------
    message:
        What is wrong.
    path:
        The file, when known.
    line:
        1-based line number, when known.
    """

    exit_code = 2

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.reason = message
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")


class RuleFileError(InputFileError):
    """A Prometheus rule file or promtool unit-test file that fails validation."""


class IncidentFileError(InputFileError):
    """An incident file (CSV or YAML) with a bad row."""


class FlagFileError(InputFileError):
    """A feature-flag file (YAML or JSON) that fails validation."""


class OpenMetricsError(InputFileError):
    """An OpenMetrics / Prometheus text exposition file that cannot be parsed."""


class QueryError(VfaError):
    """A query that cannot be evaluated."""

    exit_code = 2


class PromQLSyntaxError(QueryError):
    """A PromQL expression that does not parse; the message carries the position."""


class UnsupportedQuery(QueryError):
    """Valid PromQL that the offline evaluator does not implement; names the construct."""


class SourceError(VfaError):
    """A remote source (Prometheus HTTP API, Loki) failed."""


class SourceHTTPError(SourceError):
    """An HTTP error answer; carries the status and the server's own message."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class RetryBudgetExceeded(SourceError):
    """Transient faults (timeouts, 5xx, 429, resets) outlasted the retry budget."""


class StoreError(VfaError):
    """A problem with the DuckDB store."""


class StoreLockedError(StoreError):
    """Another process holds the store's write lock."""


class StoreCorruptError(StoreError):
    """The file is not a readable vfanalytics store."""


class SchemaVersionError(StoreError):
    """The store's schema is newer than this version of vfanalytics understands."""


class ReportError(VfaError):
    """A report notebook failed; the message names the notebook and the cell."""
