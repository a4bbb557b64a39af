"""StructuredLogger JSON lines -> the store's typed ``logs`` frame.

Vaporform's ``StructuredLogger`` (winston) writes one JSON object per line:
``timestamp, level, service, correlationId, message`` and then the fields of its
``meta`` (``actionType`` and the action's own fields). Known keys
(:data:`vfanalytics.store.LOG_FIELDS`) become typed columns, every other key is
kept as JSON in ``extra``, and a line that is not a JSON object is kept raw with
``parse_error = true``: a log line is never dropped.

Example
-------
>>> frame = parse_log_lines([1, 2], ['{"service": "backend"}'] * 2,
...     ['{"level":"info","actionType":"claude_interaction","tokens":812,"x":1}', 'not json'])
>>> frame.select("level", "tokens", "extra", "parse_error").rows()
[('info', 812, '{"x":1}', False), (None, None, None, True)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import polars as pl

from vfanalytics.store import LOG_FIELDS

__all__ = ["parse_log_lines", "LOG_SCHEMA"]

_DUCK_TO_POLARS: dict[str, Any] = {
    "VARCHAR": pl.Utf8,
    "DOUBLE": pl.Float64,
    "BOOLEAN": pl.Boolean,
    "BIGINT": pl.Int64,
    "TIMESTAMP": pl.Datetime("us"),
}

#: column -> Polars dtype of the ``logs`` table, in table order
LOG_SCHEMA: dict[str, Any] = {
    "ts_ns": pl.Int64,
    "stream": pl.Utf8,
    "line": pl.Utf8,
    "parse_error": pl.Boolean,
    **{col: _DUCK_TO_POLARS[typ] for col, typ in LOG_FIELDS.values()},
    "extra": pl.Utf8,
}


def _coerce(value: Any, typ: str) -> Any:
    # A field of the wrong JSON type is kept in extra rather than lost.
    if value is None:
        return None
    if typ == "VARCHAR" or typ == "TIMESTAMP":
        return value if isinstance(value, str) else None
    if typ == "BOOLEAN":
        return value if isinstance(value, bool) else None
    if typ == "BIGINT":
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return None
    if typ == "DOUBLE":
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    return None


def parse_log_lines(
    ts_ns: Sequence[int], streams: Sequence[str], lines: Sequence[str]
) -> pl.DataFrame:
    """Parse log lines into the ``logs`` table's frame.

    Parameters
    ----------
    ts_ns:
        Loki entry timestamps in nanoseconds.
    streams:
        The stream's labels as canonical JSON (:func:`vfanalytics.series.canonical_labels`).
    lines:
        The raw lines.
    """
    fields = list(LOG_FIELDS.items())
    columns: dict[str, list[Any]] = {col: [] for col, _ in LOG_FIELDS.values()}
    extra: list[str | None] = []
    errors: list[bool] = []
    for line in lines:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            errors.append(True)
            for values in columns.values():
                values.append(None)
            extra.append(None)
            continue
        errors.append(False)
        rest = dict(obj)
        for key, (col, typ) in fields:
            value = _coerce(rest.get(key), typ)
            columns[col].append(value)
            if value is not None or rest.get(key) is None:
                rest.pop(key, None)
        extra.append(orjson.dumps(rest).decode() if rest else None)
    frame = pl.DataFrame(
        {
            "ts_ns": pl.Series(ts_ns, dtype=pl.Int64),
            "stream": pl.Series(streams, dtype=pl.Utf8),
            "line": pl.Series(lines, dtype=pl.Utf8),
            "parse_error": pl.Series(errors, dtype=pl.Boolean),
            **{
                col: pl.Series(columns[col], dtype=pl.Utf8 if typ == "TIMESTAMP" else _DUCK_TO_POLARS[typ])
                for col, typ in LOG_FIELDS.values()
            },
            "extra": pl.Series(extra, dtype=pl.Utf8),
        }
    )
    # ISO-8601 timestamps are parsed column-wise, not per line.
    ts_cols = [col for col, typ in LOG_FIELDS.values() if typ == "TIMESTAMP"]
    return frame.with_columns(
        [
            pl.col(c)
            .str.to_datetime(time_zone="UTC", strict=False, time_unit="us")
            .dt.replace_time_zone(None)
            for c in ts_cols
        ]
    )
