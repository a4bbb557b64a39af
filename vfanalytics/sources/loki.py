"""Pull log lines and LogQL metric results from Grafana Loki.

Loki answers a log query with at most ``limit`` entries (``max_entries_limit_per_query``,
5000 by default) and has no cursor: a client pages by moving ``start`` (forward) or
``end`` (backward) to the last timestamp it received. :class:`LokiSource` pages the
way logcli does, with two corrections that make it exact (both visible in the
recordings of a real Loki 2.4 in ``shared/loki``):

* at the boundary timestamp the next page re-delivers *every* entry at that
  timestamp; the client drops exactly as many copies of each ``(stream, ts, line)``
  as it already holds there (logcli compares line text only and loses lines that
  repeat at one timestamp, within a stream or across streams);
* when the entries at one timestamp fill a whole page, paging cannot move; the
  client asks for that single nanosecond with the largest allowed limit and then
  continues after it (logcli aborts).

Timestamps stay integer nanoseconds throughout (float seconds would merge lines
1 ns apart). Long ranges are split into windows (default 1 h, ms-aligned) that are
paged concurrently; each window is complete when returned, which is what
:func:`vfanalytics.sources.pull.pull_loki` commits atomically.

LogQL metric queries (``rate``, ``count_over_time`` ...) return Prometheus-style
matrices and are decoded like Prometheus answers. Loki 2.4 drops the last step when
``end`` falls on its 30 min split boundary, so the client sends ``end`` half a step
late and keeps only the requested times.

Example
-------
>>> stream_selector(service="backend", env='prod "eu"')
'{service="backend",env="prod \\\\"eu\\\\""}'
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl

from vfanalytics.exceptions import SourceError, UsageError
from vfanalytics.series import canonical_labels
from vfanalytics.sources.http import HttpClient, RetryPolicy
from vfanalytics.sources.prometheus import _LABEL_NAME, Chunk, promql_string, split_steps
from vfanalytics.sources.promjson import SAMPLE_SCHEMA, SERIES_SCHEMA, decode_query_response, labels_frame

__all__ = ["LokiSource", "LogWindow", "stream_selector", "MAX_ENTRIES", "LOG_FRAME_SCHEMA"]

#: Loki's default ``max_entries_limit_per_query``
MAX_ENTRIES = 5000
#: Loki's default ``max_query_length`` less an hour of slack, in ms
MAX_QUERY_LENGTH = 720 * 3600_000
NS_PER_MS = 1_000_000

LOG_FRAME_SCHEMA = {"ts_ns": pl.Int64, "stream": pl.Utf8, "line": pl.Utf8}

Entry = tuple[int, str, str]  # (ts_ns, canonical stream labels, line)


def stream_selector(**labels: str) -> str:
    """A LogQL stream selector with exact matchers, values escaped."""
    if not labels:
        raise UsageError("a stream selector needs at least one label matcher")
    parts = []
    for name, value in labels.items():
        if not _LABEL_NAME.match(name):
            raise UsageError(f"not a label name: {name!r}")
        parts.append(f"{name}={promql_string(value)}")
    return "{" + ",".join(parts) + "}"


@dataclass
class LogWindow:
    """Every line of one window ``[lo_ms, hi_ms]`` (i.e. ``lo_ms*1e6 <= ts_ns < (hi_ms+1)*1e6``)."""

    lo_ms: int
    hi_ms: int
    ts_ns: list[int] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    pages: int = 0


def _flatten(doc: Any) -> list[Entry]:
    if not isinstance(doc, dict) or doc.get("status") != "success":
        raise SourceError(f"unexpected Loki answer: {str(doc)[:200]}")
    data = doc.get("data") or {}
    if data.get("resultType") != "streams":
        raise UsageError(f"not a log query (Loki answered a {data.get('resultType')}); pass --step for metric queries")
    out: list[Entry] = []
    for s in data.get("result") or []:
        labels = canonical_labels(s.get("stream") or {})
        out.extend((int(ts), labels, line) for ts, line in s.get("values") or [])
    return out


class LokiSource:
    """A Loki server (or a gateway in front of one).

    Parameters
    ----------
    url:
        Base URL, e.g. ``http://loki:3100``.
    token, username, password, headers, ca_file, verify, timeout, retry:
        See :class:`~vfanalytics.sources.http.HttpClient`; ``headers={"X-Scope-OrgID": ...}``
        selects a tenant.
    limit:
        Entries per page (≤ ``max_limit``).
    max_limit:
        The server's ``max_entries_limit_per_query``.
    window:
        Length of the windows a long range is split into, in ms.
    concurrency:
        Windows paged at once.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        headers: dict[str, str] | None = None,
        ca_file: str | None = None,
        verify: bool = True,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        limit: int = MAX_ENTRIES,
        max_limit: int = MAX_ENTRIES,
        window: int = 3600_000,
        concurrency: int = 4,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.http = HttpClient(
            url,
            token=token,
            username=username,
            password=password,
            headers=dict(headers or {}),
            ca_file=ca_file,
            verify=verify,
            timeout=timeout,
            retry=retry or RetryPolicy(),
            sleep=sleep or time.sleep,
        )
        if not 1 <= limit <= max_limit:
            raise UsageError(f"limit must be in 1..{max_limit}")
        if window <= 0 or concurrency < 1:
            raise UsageError("window and concurrency must be positive")
        self.limit = limit
        self.max_limit = max_limit
        self.window = window
        self.concurrency = concurrency

    @property
    def url(self) -> str:
        """Base URL without credentials."""
        return self.http.base_url

    def __repr__(self) -> str:
        return f"LokiSource({self.url!r})"

    # -- one page ------------------------------------------------------------------------------------
    def _page(self, logql: str, start_ns: int, end_ns: int, limit: int, direction: str) -> list[Entry]:
        params = [
            ("query", logql),
            ("limit", str(limit)),
            ("start", str(start_ns)),
            ("end", str(end_ns)),
            ("direction", direction),
        ]
        return _flatten(self.http.get("/loki/api/v1/query_range", params).json())

    # -- paging --------------------------------------------------------------------------------------
    def entries(
        self, logql: str, start_ns: int, end_ns: int, *, direction: str = "forward", limit: int | None = None
    ) -> tuple[list[Entry], int]:
        """Every entry with ``start_ns <= ts < end_ns``, each exactly once, and the number of pages.

        Entries come in ``direction`` order of time (ties: by stream, then Loki's order).
        """
        if direction not in ("forward", "backward"):
            raise UsageError("direction must be forward or backward")
        if end_ns <= start_ns:
            return [], 0
        limit = limit or self.limit
        forward = direction == "forward"
        out: list[Entry] = []
        lo, hi = start_ns, end_ns
        boundary: int | None = None  # the timestamp the next page starts (forward) / ends (backward) at
        held: collections.Counter[Entry] = collections.Counter()  # entries at `boundary` already kept
        pages = 0
        while True:
            page = self._page(logql, lo, hi, limit, direction)
            pages += 1
            page.sort(key=lambda e: e[0], reverse=not forward)  # stable: keeps Loki's order within a stream
            full = len(page) >= limit
            if full and boundary is not None and all(e[0] == boundary for e in page):
                # one timestamp holds a page or more: fetch exactly that nanosecond, then step past it
                group = self._page(logql, boundary, boundary + 1, self.max_limit, direction)
                pages += 1
                if len(group) >= self.max_limit:
                    raise SourceError(
                        f"more than {self.max_limit} lines share the timestamp {boundary} ns; Loki cannot page "
                        "through them (raise max_entries_limit_per_query or narrow the query)"
                    )
                out.extend(_subtract(group, held))
                if forward:
                    lo = boundary + 1
                else:
                    hi = boundary
                boundary, held = None, collections.Counter()
                if lo >= hi:
                    break
                continue
            new = _subtract(page, held) if boundary is not None else page
            out.extend(new)
            if not full or not page:
                break
            last = page[-1][0]
            at_last = [e for e in page if e[0] == last]
            if last == boundary:
                held.update(e for e in new if e[0] == last)
            else:
                held = collections.Counter(at_last)
            boundary = last
            if forward:
                lo = last
            else:
                hi = last + 1
        return out, pages

    def query_range(
        self, logql: str, start: int, end: int, *, direction: str = "forward", limit: int | None = None
    ) -> pl.DataFrame:
        """Every log line with ``start <= t < end`` (ms) as ``ts_ns, stream, line``, each exactly once.

        The range is split into :attr:`window` pieces paged concurrently; rows are in
        ``direction`` order of time.
        """
        if end <= start:
            raise UsageError("end must be after start")
        spans = [(lo, min(end, lo + self.window) - 1) for lo in range(start, end, self.window)]
        rows_ts: list[int] = []
        rows_stream: list[str] = []
        rows_line: list[str] = []
        for w in sorted(self.iter_windows(logql, spans, direction=direction, limit=limit), key=lambda w: w.lo_ms):
            rows_ts += w.ts_ns
            rows_stream += w.streams
            rows_line += w.lines
        frame = pl.DataFrame({"ts_ns": rows_ts, "stream": rows_stream, "line": rows_line}, schema=LOG_FRAME_SCHEMA)
        if direction == "backward":
            frame = frame.reverse()
        return frame

    def iter_windows(
        self,
        logql: str,
        spans: Sequence[tuple[int, int]],
        *,
        direction: str = "forward",
        limit: int | None = None,
    ) -> Iterator[LogWindow]:
        """Complete windows ``[lo_ms, hi_ms]`` (ms, inclusive) of the given spans, as they finish.

        Forward windows hold their lines oldest first (backward ones are reversed to that order too).
        """
        jobs = []
        for a, b in spans:
            for lo in range(a, b + 1, self.window):
                jobs.append((lo, min(b, lo + self.window - 1)))
        if not jobs:
            return

        def run(lo: int, hi: int) -> LogWindow:
            entries, pages = self.entries(logql, lo * NS_PER_MS, (hi + 1) * NS_PER_MS, direction=direction, limit=limit)
            if direction == "backward":
                entries.reverse()
            w = LogWindow(lo, hi, pages=pages)
            w.ts_ns = [e[0] for e in entries]
            w.streams = [e[1] for e in entries]
            w.lines = [e[2] for e in entries]
            return w

        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs)))
        queue = list(reversed(jobs))
        pending: set[Future[LogWindow]] = set()
        try:
            while queue or pending:
                while queue and len(pending) < self.concurrency:
                    pending.add(pool.submit(run, *queue.pop()))
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    # -- metric queries ------------------------------------------------------------------------------
    def _metric_chunk(self, logql: str, lo: int, hi: int, step: int) -> Chunk:
        # end half a step late: Loki 2.4 loses the last point when end is on a split boundary
        params = [
            ("query", logql),
            ("start", str(lo * NS_PER_MS)),
            ("end", str((hi + step // 2) * NS_PER_MS)),
            ("step", f"{step / 1000:g}"),
        ]
        res = decode_query_response(self.http.get("/loki/api/v1/query_range", params).body)
        if res.result_type != "matrix":
            raise UsageError(f"not a metric query (Loki answered {res.result_type}); drop --step for log queries")
        samples = res.samples.filter(pl.col("ts").is_between(lo, hi))
        return Chunk(lo, hi, res.series, samples)

    def iter_metric_range(
        self, logql: str, start: int, end: int, step: int, *, windows: Sequence[tuple[int, int]] | None = None
    ) -> Iterator[Chunk]:
        """Chunks of a metric query evaluated at ``start, start+step, ... <= end`` (ms), as they finish."""
        spans = windows if windows is not None else [(start, end)]
        # ≤ 11,000 points and within Loki's default max_query_length (721 h) per request
        points = max(1, min(11_000, MAX_QUERY_LENGTH // step))
        jobs = [(a, b) for lo, hi in spans for a, b in split_steps(lo, hi, step, max_points=points)]
        if not jobs:
            return
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs)))
        try:
            futures = [pool.submit(self._metric_chunk, logql, a, b, step) for a, b in jobs]
            for fut in futures:
                yield fut.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def metric_range(self, logql: str, start: int, end: int, step: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        """A LogQL metric query as ``(series, samples)`` frames."""
        chunks = list(self.iter_metric_range(logql, start, end, step))
        series = pl.concat([c.series for c in chunks]).unique("series_id") if chunks else pl.DataFrame(schema=SERIES_SCHEMA)
        samples = pl.concat([c.samples for c in chunks]) if chunks else pl.DataFrame(schema=SAMPLE_SCHEMA)
        return series.sort("labels"), samples.unique(["series_id", "ts"]).sort("series_id", "ts")

    # -- metadata ------------------------------------------------------------------------------------
    def _range_params(self, start: int | None, end: int | None) -> list[tuple[str, str]]:
        params = []
        if start is not None:
            params.append(("start", str(start * NS_PER_MS)))
        if end is not None:
            params.append(("end", str(end * NS_PER_MS)))
        return params

    def labels(self, start: int | None = None, end: int | None = None) -> list[str]:
        """Label names (Loki 2.4 includes ``__name__``)."""
        return sorted(orjson.loads(self.http.get("/loki/api/v1/labels", self._range_params(start, end)).body)["data"])

    def label_values(self, name: str, start: int | None = None, end: int | None = None) -> list[str]:
        """Values of one label (Loki answers JSON even when it says text/plain)."""
        if not _LABEL_NAME.match(name):
            raise UsageError(f"not a label name: {name!r}")
        body = self.http.get(f"/loki/api/v1/label/{name}/values", self._range_params(start, end)).body
        return sorted(orjson.loads(body)["data"] or [])

    def series(self, match: str, start: int | None = None, end: int | None = None) -> pl.DataFrame:
        """Stream label sets matching a selector, as ``series_id, metric, labels``."""
        params = [("match[]", match), *self._range_params(start, end)]
        data = orjson.loads(self.http.get("/loki/api/v1/series", params).body)["data"] or []
        return labels_frame([dict(d) for d in data]).unique("series_id").sort("labels")


def _subtract(page: list[Entry], held: collections.Counter[Entry]) -> list[Entry]:
    """``page`` minus as many copies of each entry as ``held`` counts (the boundary re-delivery)."""
    if not held:
        return page
    left = collections.Counter(held)
    out = []
    for e in page:
        if left[e] > 0:
            left[e] -= 1
            continue
        out.append(e)
    return out
