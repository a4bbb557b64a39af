"""Import sample files into the store: OpenMetrics / Prometheus text, long CSV and Parquet.

* **OpenMetrics** (``.om``, ``.prom``, ``.txt``, or any file starting with ``#``): read
  with :func:`vfanalytics.openmetrics.read_openmetrics` (samples need timestamps).
* **CSV / Parquet**, one row per sample: a ``value`` column, a time column (``ts`` in
  ms, or ``timestamp`` as a datetime, RFC 3339 text or float seconds), and the series
  either as a ``labels`` column (a JSON object, ``__name__`` included) or as a
  ``metric`` (or ``__name__``) column plus one column per label.

A file is imported in one transaction with its ``pulls`` row (kind ``file``, the
absolute path as source), so a bad file leaves the store as it was, and samples
already stored are skipped. Label sets are parsed once per distinct series, never
per sample.

Example
-------
>>> import tempfile, os
>>> from vfanalytics.store import Store
>>> d = tempfile.mkdtemp()
>>> _ = open(os.path.join(d, "m.csv"), "w").write("metric,job,ts,value\\nup,api,0,1\\nup,api,15000,0\\n")
>>> with Store(os.path.join(d, "s.duckdb")) as st:
...     import_file(st, os.path.join(d, "m.csv"))
(1, 2)
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import polars as pl

from vfanalytics.exceptions import InputFileError
from vfanalytics.series import labels_frame
from vfanalytics.store import Store

__all__ = ["import_file", "read_sample_file", "FILE_KINDS"]

FILE_KINDS = {".om": "openmetrics", ".prom": "openmetrics", ".txt": "openmetrics", ".csv": "csv",
              ".parquet": "parquet", ".pq": "parquet"}



def _kind(path: Path) -> str:
    kind = FILE_KINDS.get(path.suffix.lower())
    if kind is None:
        with open(path, "rb") as fh:
            head = fh.read(1)
        kind = "openmetrics" if head == b"#" else "csv"
    return kind


def _times(frame: pl.DataFrame, path: Path) -> pl.Series:
    if "ts" in frame.columns:
        ts = frame["ts"]
        if not ts.dtype.is_integer():
            try:
                ts = ts.cast(pl.Int64, strict=True)
            except pl.exceptions.InvalidOperationError:
                raise InputFileError("column ts must hold integer milliseconds", str(path)) from None
        return ts.cast(pl.Int64).alias("ts")
    if "timestamp" in frame.columns:
        t = frame["timestamp"]
        if t.dtype == pl.Utf8:
            parsed = t.str.to_datetime(time_zone="UTC", strict=False, time_unit="ms")
            bad = parsed.is_null() & t.is_not_null()
            if bad.any():
                row = int(bad.arg_max() or 0)
                raise InputFileError(f"row {row + 1}: timestamp {t[row]!r} is not RFC 3339", str(path))
            return parsed.dt.epoch("ms").alias("ts")
        if isinstance(t.dtype, pl.Datetime):
            return t.dt.epoch("ms").alias("ts")
        if t.dtype.is_numeric():
            return (t.cast(pl.Float64) * 1000).round(0).cast(pl.Int64).alias("ts")
    raise InputFileError("needs a time column: ts (ms) or timestamp", str(path))


def read_sample_file(path: str | os.PathLike[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read a sample file into ``(series, samples)`` frames (the store's shapes)."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError("no such file", str(p))
    kind = _kind(p)
    if kind == "openmetrics":
        from vfanalytics.openmetrics import read_openmetrics

        return read_openmetrics(p)
    try:
        frame = pl.read_parquet(p) if kind == "parquet" else pl.read_csv(p, infer_schema_length=10_000)
    except (pl.exceptions.ComputeError, pl.exceptions.PolarsError, OSError) as exc:
        raise InputFileError(f"cannot read {kind}: {str(exc).splitlines()[0]}", str(p)) from None
    if "value" not in frame.columns:
        raise InputFileError("needs a value column", str(p))
    try:
        values = frame["value"].cast(pl.Float64, strict=True)
    except pl.exceptions.InvalidOperationError:
        raise InputFileError("column value must be numeric", str(p)) from None
    ts = _times(frame, p)
    if ts.null_count():
        raise InputFileError(f"row {int(ts.is_null().arg_max() or 0) + 1}: missing time", str(p))
    if "labels" in frame.columns:
        key_cols = ["labels"]
    else:
        name_col = "metric" if "metric" in frame.columns else "__name__" if "__name__" in frame.columns else None
        if name_col is None:
            raise InputFileError("needs a labels column (JSON) or a metric column", str(p))
        skip = {"ts", "timestamp", "value", "series_id"}
        key_cols = [c for c in frame.columns if c not in skip]
    keys = frame.select([pl.col(c).cast(pl.Utf8) for c in key_cols])
    distinct = keys.unique(maintain_order=True)
    label_sets = []
    for i, row in enumerate(distinct.iter_rows(named=True)):
        if key_cols == ["labels"]:
            try:
                obj = orjson.loads(row["labels"] or "")
            except orjson.JSONDecodeError:
                obj = None
            if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
                raise InputFileError(f"labels {row['labels']!r} is not a JSON object of strings", str(p))
            label_sets.append(obj)
        else:
            ls = {("__name__" if k in ("metric", "__name__") else k): v for k, v in row.items() if v not in (None, "")}
            if "__name__" not in ls:
                raise InputFileError(f"series #{i + 1} has no metric name", str(p))
            label_sets.append(ls)
    series = labels_frame(label_sets)
    ids = distinct.with_columns(series["series_id"])
    samples = (
        keys.with_columns(ts, values)
        .join(ids, on=key_cols, how="left", nulls_equal=True)
        .select("series_id", "ts", "value")
    )
    return series.unique("series_id"), samples


def import_file(store: Store, path: str | os.PathLike[str]) -> tuple[int, int]:
    """Import one file atomically; returns ``(series in the file, new samples written)``."""
    p = Path(path).resolve()
    series, samples = read_sample_file(p)
    with store.transaction():
        store.insert_series(series)
        rows = store.insert_samples(samples, dedupe=True)
        if not samples.is_empty():
            store.record_pull(
                source=p.as_uri(), kind="file", query=p.name, step_ms=0,
                start_ms=int(samples["ts"].min()), end_ms=int(samples["ts"].max()), rows=rows,  # type: ignore[arg-type]
            )
    return series.height, rows
