"""Public entry points: ``query_range``, ``query`` and Prometheus-API JSON.

Range queries are evaluated in chunks of steps (Prometheus' own limit of
11,000 points per series is the chunk size), so memory stays bounded for
long ranges; subquery grids are aligned to absolute time, so chunking never
changes a result.

Example
-------
>>> import numpy as np
>>> from vfanalytics.promql.source import FrameSource
>>> src = FrameSource.from_series({'up{job="a"}': (np.arange(0, 120_001, 15_000), np.ones(9))})
>>> query_range("sum(up)", 60_000, 120_000, 30_000, source=src)["value"].to_list()
[1.0, 1.0, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl

from vfanalytics.exceptions import QueryError, UsageError
from vfanalytics.promql.aggregations import format_go_float
from vfanalytics.promql.engine import EvalOptions, Evaluator, parse
from vfanalytics.promql.source import OpenMetricsSource, Source
from vfanalytics.promql.values import Matrix, Scalar, String, Vector, label_key
from vfanalytics.series import series_id
from vfanalytics.timeutil import parse_duration, parse_time

__all__ = [
    "QueryResult",
    "OfflineEvaluator",
    "query_range",
    "query",
    "evaluate_range",
    "evaluate_instant",
    "to_prometheus_json",
    "RESULT_SCHEMA",
]

#: columns of the frames :func:`query_range` and :func:`query` return
RESULT_SCHEMA = {"series_id": pl.UInt64, "labels": pl.Utf8, "ts": pl.Int64, "value": pl.Float64}

#: steps per evaluation chunk (Prometheus refuses more points per series in one range query)
CHUNK_STEPS = 11_000


@dataclass
class QueryResult:
    """A query's result: ``result_type`` is ``matrix``, ``vector``, ``scalar`` or ``string``."""

    result_type: str
    labels: list[dict[str, str]]
    ts: list[np.ndarray]
    values: list[np.ndarray]
    scalar: tuple[int, float] | None = None
    string: tuple[int, str] | None = None

    def to_frame(self) -> pl.DataFrame:
        """Long frame: ``series_id, labels, ts, value`` (a scalar is one series with labels ``{}``)."""
        if self.result_type == "string":
            raise QueryError("a string result has no frame form")
        if self.result_type == "scalar":
            assert self.scalar is not None
            return pl.DataFrame(
                {"series_id": [series_id({})], "labels": ["{}"], "ts": [self.scalar[0]], "value": [self.scalar[1]]},
                schema=RESULT_SCHEMA,
            )
        keys = [label_key(ls) for ls in self.labels]
        ids = [series_id(ls) for ls in self.labels]
        lens = [len(t) for t in self.ts]
        return pl.DataFrame(
            {
                "series_id": np.repeat(np.asarray(ids, dtype=np.uint64), lens),
                "labels": np.repeat(np.asarray(keys, dtype=object), lens).tolist() if keys else [],
                "ts": np.concatenate(self.ts) if self.ts else np.zeros(0, np.int64),
                "value": np.concatenate(self.values) if self.values else np.zeros(0),
            },
            schema=RESULT_SCHEMA,
        )


def _source(source: Source | str | Path | None) -> Source:
    if source is None:
        from vfanalytics.store import Store

        return Store(read_only=True)
    if isinstance(source, str | Path):
        p = Path(source)
        if p.suffix in (".duckdb", ".db"):
            from vfanalytics.store import Store

            return Store(p, read_only=True)
        return OpenMetricsSource(p)
    return source


def _options(prometheus_version: int, lookback: str | int | None, delayed_name_removal: bool) -> EvalOptions:
    if prometheus_version not in (2, 3):
        raise UsageError(f"prometheus_version must be 2 or 3, not {prometheus_version}")
    lb = 300_000 if lookback is None else parse_duration(lookback) if isinstance(lookback, str) else int(lookback)
    return EvalOptions(prometheus_version=prometheus_version, lookback_ms=lb, delayed_name_removal=delayed_name_removal)


def _time(t: str | int | float | datetime) -> int:
    """Ints are ms since the epoch (the internal convention); floats are Unix seconds; strings are parsed."""
    if isinstance(t, int | np.integer) and not isinstance(t, bool):
        return int(t)
    return parse_time(t)


def _step(step: str | int | float) -> int:
    """Ints are ms; floats are seconds; strings are Prometheus durations (or seconds)."""
    if isinstance(step, int | np.integer) and not isinstance(step, bool):
        return int(step)
    return parse_duration(step)


def evaluate_range(
    expr: str,
    start: str | int | float | datetime,
    end: str | int | float | datetime,
    step: str | int | float,
    *,
    source: Source | str | Path | None = None,
    prometheus_version: int = 3,
    lookback: str | int | None = None,
    delayed_name_removal: bool = False,
) -> QueryResult:
    """Evaluate a range query into a ``matrix`` :class:`QueryResult` (ints are ms, strings are parsed)."""
    t0, t1, st = _time(start), _time(end), _step(step)
    if st <= 0:
        raise UsageError("zero or negative query resolution step widths are not accepted")
    if t1 < t0:
        raise UsageError("end timestamp must not be before start time")
    node = parse(expr)
    src = _source(source)
    ev = Evaluator(src, start=t0, end=t1, options=_options(prometheus_version, lookback, delayed_name_removal))
    times = np.arange(t0, t1 + 1, st, dtype=np.int64)
    parts: dict[str, tuple[dict[str, str], list[np.ndarray], list[np.ndarray]]] = {}
    for a in range(0, len(times), CHUNK_STEPS):
        chunk = times[a : a + CHUNK_STEPS]
        ev.read_ahead_ms = int(times[-1] - chunk[-1])
        out = ev.evaluate(node, chunk)
        if isinstance(out, Scalar):
            out = Vector([{}], out.values[None, :], np.ones((1, len(chunk)), dtype=bool))
        if not isinstance(out, Vector):
            kind = "range vector" if isinstance(out, Matrix) else "string"
            raise QueryError(f'invalid expression type "{kind}" for range query, must be Scalar or instant Vector')
        for i, ls in enumerate(out.labels):
            p = out.present[i]
            if not p.any():
                continue
            key = label_key(ls)
            entry = parts.setdefault(key, (ls, [], []))
            entry[1].append(chunk[p])
            entry[2].append(out.values[i][p])
    items = sorted(parts.values(), key=lambda e: sorted(e[0].items()))
    return QueryResult(
        "matrix",
        [e[0] for e in items],
        [np.concatenate(e[1]) for e in items],
        [np.concatenate(e[2]) for e in items],
    )


def evaluate_instant(
    expr: str,
    time: str | int | float | datetime,
    *,
    source: Source | str | Path | None = None,
    prometheus_version: int = 3,
    lookback: str | int | None = None,
    delayed_name_removal: bool = False,
) -> QueryResult:
    """Evaluate an instant query into a :class:`QueryResult` of any result type."""
    t = _time(time)
    node = parse(expr)
    src = _source(source)
    ev = Evaluator(src, start=t, end=t, options=_options(prometheus_version, lookback, delayed_name_removal))
    out = ev.evaluate(node, np.array([t], dtype=np.int64))
    if isinstance(out, Scalar):
        return QueryResult("scalar", [], [], [], scalar=(t, float(out.values[0])))
    if isinstance(out, String):
        return QueryResult("string", [], [], [], string=(t, out.value))
    if isinstance(out, Matrix):
        lo, hi = out.windows()
        labels, tss, vals = [], [], []
        for i, ls in enumerate(out.labels):
            a, b = int(lo[i, 0]), int(hi[i, 0])
            if b > a:
                labels.append(ls)
                tss.append(out.ts[a:b])
                vals.append(out.val[a:b])
        return QueryResult("matrix", labels, tss, vals)
    labels, tss, vals = [], [], []
    for i, ls in enumerate(out.labels):
        if out.present[i, 0]:
            labels.append(ls)
            tss.append(np.array([t], dtype=np.int64))
            vals.append(out.values[i, :1])
    return QueryResult("vector", labels, tss, vals)


def query_range(
    expr: str,
    start: str | int | float | datetime,
    end: str | int | float | datetime,
    step: str | int | float,
    *,
    source: Source | str | Path | None = None,
    prometheus_version: int = 3,
    lookback: str | int | None = None,
    delayed_name_removal: bool = False,
) -> pl.DataFrame:
    """Evaluate a PromQL range query; a long frame ``series_id, labels, ts, value``.

    Parameters
    ----------
    expr:
        PromQL.
    start, end:
        Inclusive range: ints are ms since the epoch; strings/floats/datetimes
        go through :func:`vfanalytics.timeutil.parse_time` (floats are Unix seconds).
    step:
        Resolution: int ms, or a Prometheus duration / seconds string.
    source:
        A :class:`~vfanalytics.promql.source.Source` (a Store, a FrameSource),
        a store path (``.duckdb``), or an OpenMetrics file path; default the default store.
    prometheus_version:
        3 (left-open windows, default) or 2 (closed on the left, as 2.x).
    lookback:
        Lookback delta (default 5m).
    delayed_name_removal:
        Keep ``__name__`` until the end (Prometheus' ``promql-delayed-name-removal``).
    """
    return evaluate_range(
        expr, start, end, step, source=source, prometheus_version=prometheus_version,
        lookback=lookback, delayed_name_removal=delayed_name_removal,
    ).to_frame()


def query(
    expr: str,
    time: str | int | float | datetime,
    *,
    source: Source | str | Path | None = None,
    prometheus_version: int = 3,
    lookback: str | int | None = None,
    delayed_name_removal: bool = False,
) -> pl.DataFrame:
    """Evaluate an instant query; the same frame shape as :func:`query_range`."""
    return evaluate_instant(
        expr, time, source=source, prometheus_version=prometheus_version,
        lookback=lookback, delayed_name_removal=delayed_name_removal,
    ).to_frame()


class OfflineEvaluator:
    """The design's *Evaluator* protocol (``query_range`` / ``query`` returning frames) over a source.

    Backtests and notebooks take an object with these two methods and do not
    care whether it is this offline engine or a Prometheus server.

    >>> import numpy as np
    >>> from vfanalytics.promql.source import FrameSource
    >>> ev = OfflineEvaluator(FrameSource.from_series({"up": ([0, 60_000], [1.0, 1.0])}))
    >>> ev.query("up", 60_000)["value"].to_list()
    [1.0]
    """

    def __init__(
        self,
        source: Source | str | Path | None = None,
        *,
        prometheus_version: int = 3,
        lookback: str | int | None = None,
        delayed_name_removal: bool = False,
    ) -> None:
        self.source = _source(source)
        self.prometheus_version = prometheus_version
        self.lookback = lookback
        self.delayed_name_removal = delayed_name_removal

    def query_range(
        self, expr: str, start: str | int | float | datetime, end: str | int | float | datetime, step: str | int | float
    ) -> pl.DataFrame:
        """See :func:`query_range`."""
        return query_range(
            expr, start, end, step, source=self.source, prometheus_version=self.prometheus_version,
            lookback=self.lookback, delayed_name_removal=self.delayed_name_removal,
        )

    def query(self, expr: str, time: str | int | float | datetime) -> pl.DataFrame:
        """See :func:`query`."""
        return query(
            expr, time, source=self.source, prometheus_version=self.prometheus_version,
            lookback=self.lookback, delayed_name_removal=self.delayed_name_removal,
        )


def _ts_json(ms: int) -> float | int:
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def to_prometheus_json(result: QueryResult) -> bytes:
    """The Prometheus HTTP API answer for a result (``{"status":"success","data":{...}}``)."""
    data: dict[str, Any]
    if result.result_type == "scalar":
        assert result.scalar is not None
        data = {"resultType": "scalar", "result": [_ts_json(result.scalar[0]), format_go_float(result.scalar[1])]}
    elif result.result_type == "string":
        assert result.string is not None
        data = {"resultType": "string", "result": [_ts_json(result.string[0]), result.string[1]]}
    elif result.result_type == "vector":
        data = {
            "resultType": "vector",
            "result": [
                {"metric": dict(sorted(ls.items())), "value": [_ts_json(int(t[0])), format_go_float(float(v[0]))]}
                for ls, t, v in zip(result.labels, result.ts, result.values, strict=True)
            ],
        }
    else:
        data = {
            "resultType": "matrix",
            "result": [
                {
                    "metric": dict(sorted(ls.items())),
                    "values": [[_ts_json(int(a)), format_go_float(float(b))] for a, b in zip(t, v, strict=True)],
                }
                for ls, t, v in zip(result.labels, result.ts, result.values, strict=True)
            ],
        }
    return orjson.dumps({"status": "success", "data": data})
