"""Export a store so the identical dataset can be loaded into real Prometheus and Loki servers.

* ``metrics.om``: OpenMetrics text that ``promtool tsdb create-blocks-from openmetrics``
  accepts (staleness markers are left out: OpenMetrics cannot carry them);
* ``loki/batch-NNNN.json``: Loki push-API bodies (``{"streams": [{"stream": {...},
  "values": [["<ns>", "<line>"], ...]}]}``), at most ``batch_lines`` lines each,
  every stream's values in time order;
* ``incidents.csv`` and ``near_misses.csv``: id, start, end (RFC 3339), severity,
  matchers, title, kind, alerts.

Example
-------
>>> import tempfile
>>> from vfanalytics.store import Store
>>> from vfanalytics.demo import DemoConfig, generate_demo
>>> out = tempfile.mkdtemp()
>>> with Store(":memory:") as st:
...     _ = generate_demo(st, DemoConfig(days=0.25, users=8, seed=1))
...     result = export_store(st, out)
>>> result["samples"] > 0 and result["log_lines"] > 0
True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from vfanalytics.openmetrics import write_openmetrics
from vfanalytics.store import Store
from vfanalytics.timeutil import format_time

__all__ = ["export_store", "export_incidents_csv"]


def export_store(
    store: Store, out: str | os.PathLike[str], *, batch_lines: int = 5000, progress: Any = None
) -> dict[str, Any]:
    """Write ``metrics.om``, ``loki/*.json`` and the incident CSVs under ``out``."""
    advance = progress or (lambda n=1: None)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    series = store.series()
    metrics = sorted(set(series["metric"].to_list()))
    om_path = out_dir / "metrics.om"
    n_samples = write_openmetrics(series, (store.samples(metric=m) for m in metrics), om_path)
    advance(1)

    loki_dir = out_dir / "loki"
    loki_dir.mkdir(exist_ok=True)
    for old in loki_dir.glob("batch-*.json"):
        old.unlink()
    logs = store.sql("SELECT ts_ns, stream, line FROM logs ORDER BY ts_ns, stream")
    n_batches = 0
    for start in range(0, logs.height, batch_lines):
        chunk = logs.slice(start, batch_lines)
        streams = []
        for (stream,), part in sorted(chunk.group_by("stream"), key=lambda kv: str(kv[0][0])):
            values = [[str(ts), line] for ts, line in part.select("ts_ns", "line").iter_rows()]
            streams.append({"stream": orjson.loads(str(stream)), "values": values})
        n_batches += 1
        (loki_dir / f"batch-{n_batches:04d}.json").write_bytes(orjson.dumps({"streams": streams}))
    advance(1)

    inc_path = export_incidents_csv(store.incidents(), out_dir / "incidents.csv")
    export_incidents_csv(store.incidents("near_misses"), out_dir / "near_misses.csv")
    advance(1)
    return {
        "openmetrics": str(om_path),
        "samples": n_samples,
        "loki_dir": str(loki_dir),
        "loki_batches": n_batches,
        "log_lines": logs.height,
        "incidents": str(inc_path),
    }


def export_incidents_csv(incidents: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Incidents as CSV with RFC 3339 start/end (the format the incident loader reads)."""
    frame = incidents.with_columns(
        pl.col("start_ms").map_elements(format_time, return_dtype=pl.Utf8).alias("start"),
        pl.col("end_ms").map_elements(format_time, return_dtype=pl.Utf8).alias("end"),
    ).select("id", "start", "end", "severity", "matchers", "title", "kind", "alerts")
    frame.write_csv(Path(path))
    return Path(path)
