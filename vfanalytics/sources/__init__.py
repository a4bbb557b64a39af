"""Where data comes from: Prometheus-API servers, Loki, and sample files.

Modules
-------
:mod:`~vfanalytics.sources.http`        HTTP with credentials, TLS, retries and redaction
:mod:`~vfanalytics.sources.promjson`    Prometheus API JSON -> long frames, vectorised
:mod:`~vfanalytics.sources.prometheus`  :class:`PrometheusSource` (Prometheus, Thanos, Mimir, VictoriaMetrics)
:mod:`~vfanalytics.sources.loki`        :class:`LokiSource` (exact paging, LogQL metric queries)
:mod:`~vfanalytics.sources.files`       OpenMetrics / CSV / Parquet import
:mod:`~vfanalytics.sources.pull`        incremental, resumable pulls into the store

A small registry (:data:`SOURCES`, :func:`open_source`) maps a kind to its class,
so callers (the CLI, notebooks) pick one by name. Classes are imported lazily: a
notebook that only reads the store never loads ``requests``.

Example
-------
>>> src = open_source("prometheus", "http://127.0.0.1:9090", concurrency=2)
>>> type(src).__name__, src.url
('PrometheusSource', 'http://127.0.0.1:9090')
>>> sorted(SOURCES)
['loki', 'prometheus']
"""

from __future__ import annotations

import importlib
from typing import Any

from vfanalytics.exceptions import UsageError

__all__ = ["SOURCES", "open_source"]

#: kind -> "module:Class" of a remote source
SOURCES: dict[str, str] = {
    "prometheus": "vfanalytics.sources.prometheus:PrometheusSource",
    "loki": "vfanalytics.sources.loki:LokiSource",
}


def open_source(kind: str, url: str, **options: Any) -> Any:
    """A source of ``kind`` (``prometheus`` or ``loki``) at ``url``; options go to its constructor."""
    target = SOURCES.get(kind)
    if target is None:
        raise UsageError(f"unknown source kind {kind!r} (known: {', '.join(sorted(SOURCES))})")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(url, **options)
