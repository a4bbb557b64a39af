"""Pull series from a Prometheus-API server (Prometheus, Thanos, Mimir, Cortex, VictoriaMetrics).

:class:`PrometheusSource` speaks the HTTP API (``/api/v1/query_range``,
``/query``, ``/series``, ``/label/<name>/values``) through
:class:`~vfanalytics.sources.http.HttpClient` (auth, TLS, retries) and returns long
Polars frames decoded by :mod:`vfanalytics.sources.promjson`.

* :meth:`~PrometheusSource.query_range` splits ``[start, end]`` so that no request
  exceeds ``max_points`` (Prometheus' 11,000 points per series), runs the chunks on
  ``concurrency`` threads and concatenates them; chunks partition the evaluation
  steps, so no boundary point is fetched twice.
* :meth:`~PrometheusSource.raw_samples` returns the samples as stored, through
  instant queries of ``selector[window]`` over consecutive windows: the input of the
  offline PromQL evaluator. Each window keeps only ``(lo, hi]``, which makes the result
  the same under Prometheus 2.x (closed range windows) and 3.x (left-open).
* An answer "too many samples" / "exceeded maximum resolution" splits the window in two
  and tries again; other 400/422 answers raise at once with the server's message.

It serves both shared protocols: the pushdown *Evaluator* (``query_range`` and
``query`` return ``series_id, labels, ts, value`` frames like the offline engine)
and the offline engine's *Source* (``select(matchers, start, end)`` returns raw
``(series, samples)``).

Evaluation times of :meth:`query_range` are ``start + k * step`` as Prometheus does;
the store pull (:mod:`vfanalytics.sources.pull`) aligns ``start`` to a multiple of the
step so that incremental pulls land on one grid.

Example
-------
>>> src = PrometheusSource("http://127.0.0.1:9090", concurrency=4)
>>> selector("up", job='say "hi"')
'up{job="say \\\\"hi\\\\""}'
>>> split_steps(0, 10_000, 1_000, max_points=4)
[(0, 3000), (4000, 7000), (8000, 10000)]
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import polars as pl
import promql_parser

from vfanalytics.exceptions import SourceError, SourceHTTPError, UsageError
from vfanalytics.sources.http import HttpClient, RetryPolicy
from vfanalytics.sources.promjson import (
    SAMPLE_SCHEMA,
    SERIES_SCHEMA,
    QueryResult,
    decode_query_response,
    labels_frame,
)

__all__ = [
    "PrometheusSource",
    "Chunk",
    "split_steps",
    "split_range",
    "promql_string",
    "promql_regex",
    "selector",
    "parse_selector",
    "MAX_POINTS",
]

#: Prometheus refuses a range query with more points per series than this
MAX_POINTS = 11_000

_TOO_BIG = re.compile(
    r"too many samples|exceeded maximum resolution|too many points|maxSamplesPerQuery|"
    r"maxPointsPerTimeseries|maxSamplesPerSeries|max-samples",
    re.IGNORECASE,
)

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


# -- escaping -----------------------------------------------------------------------------------------


def promql_string(value: str) -> str:
    """A PromQL / LogQL double-quoted string literal holding exactly ``value``.

    Both languages unquote with Go's rules, which accept JSON's escapes
    (``\\"``, ``\\\\``, ``\\n``, ``\\uXXXX``); other characters stay as UTF-8.
    """
    return orjson.dumps(value).decode()


def promql_regex(value: str) -> str:
    """A string literal for ``=~`` matching ``value`` literally (RE2 metacharacters escaped)."""
    return promql_string(re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", value))


def selector(metric: str | None = None, /, **labels: str) -> str:
    """A vector selector with exact matchers, every value escaped.

    >>> selector("http_requests_total", route="/api/\\"x\\"")
    'http_requests_total{route="/api/\\\\"x\\\\""}'
    """
    if metric is not None and not _METRIC_NAME.match(metric):
        raise UsageError(f"not a metric name: {metric!r}")
    parts = []
    for name, value in labels.items():
        if not _LABEL_NAME.match(name):
            raise UsageError(f"not a label name: {name!r}")
        parts.append(f"{name}={promql_string(value)}")
    inner = ",".join(parts)
    if metric is None:
        if not parts:
            raise UsageError("a selector needs a metric name or a label matcher")
        return "{" + inner + "}"
    return f"{metric}{{{inner}}}" if inner else metric


def parse_selector(text: str) -> list[tuple[str, str, str]]:
    """Label matchers ``(name, op, value)`` of a plain vector selector (no offset, no ``@``)."""
    try:
        expr = promql_parser.parse(text)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"not a PromQL selector: {text!r} ({exc})") from None
    if not isinstance(expr, promql_parser.VectorSelector):
        raise UsageError(f"expected a series selector such as up{{job=\"api\"}}, got {text!r}")
    if expr.offset is not None or expr.at is not None:
        raise UsageError(f"a series selector cannot use offset or @: {text!r}")
    out = []
    if expr.name:
        out.append(("__name__", "=", expr.name))
    for m in expr.matchers.matchers:
        out.append((m.name, _OPS[str(m.op)], m.value))
    return out


def _matchers_to_selector(matchers: Sequence[tuple[str, str, str]]) -> str:
    parts = []
    for name, op, value in matchers:
        if op not in ("=", "!=", "=~", "!~"):
            raise UsageError(f"unknown label matcher operator {op!r}")
        if not _LABEL_NAME.match(name):
            raise UsageError(f"not a label name: {name!r}")
        parts.append(f"{name}{op}{promql_string(value)}")
    if not parts:
        raise UsageError("a selector needs at least one matcher")
    return "{" + ",".join(parts) + "}"


# -- splitting ----------------------------------------------------------------------------------------


def split_steps(start: int, end: int, step: int, *, max_points: int = MAX_POINTS) -> list[tuple[int, int]]:
    """Split the evaluation times ``start, start+step, ... <= end`` into chunks of ≤ ``max_points``.

    Each chunk is ``(first_time, last_time)``; chunks share no time.
    """
    if step <= 0:
        raise UsageError("step must be positive")
    if end < start:
        raise UsageError("end is before start")
    n = (end - start) // step + 1
    out = []
    for first in range(0, n, max_points):
        last = min(n - 1, first + max_points - 1)
        out.append((start + first * step, start + last * step))
    return out


def split_range(start: int, end: int, window: int) -> list[tuple[int, int]]:
    """Split ``[start, end]`` into windows ``(lo, hi]`` of at most ``window`` ms; the first has lo = start - 1."""
    if end < start:
        raise UsageError("end is before start")
    out = []
    lo = start - 1
    while lo < end:
        hi = min(end, lo + window)
        out.append((lo, hi))
        lo = hi
    return out


def _seconds(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}" if ms >= 0 else f"{ms / 1000:.3f}"


def _ms_duration(ms: int) -> str:
    return f"{ms}ms"


@dataclass(frozen=True)
class Chunk:
    """One finished piece of a pull: what was asked and what came back.

    For ``query_range`` chunks ``lo``/``hi`` are the first and last evaluation times;
    for raw chunks the window is ``(lo, hi]``.
    """

    lo: int
    hi: int
    series: pl.DataFrame
    samples: pl.DataFrame


class PrometheusSource:
    """A Prometheus-API server.

    Parameters
    ----------
    url:
        Base URL, e.g. ``http://prometheus:9090`` or ``https://mimir/prometheus``.
    token, username, password, headers, ca_file, verify, timeout, retry:
        See :class:`~vfanalytics.sources.http.HttpClient`.
    concurrency:
        Requests in flight at once.
    max_points:
        Points per series per ``query_range`` request (Prometheus refuses more than 11,000).
    max_samples:
        Optional budget of samples (series × points) per ``query_range`` request; the
        number of series is learnt from instant queries at both ends of the range.
    raw_window:
        Window of one raw-samples request, in ms (default 6 h).
    min_window:
        Smallest window a too-large answer may be split to, in ms.
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
        concurrency: int = 4,
        max_points: int = MAX_POINTS,
        max_samples: int | None = None,
        raw_window: int = 6 * 3600 * 1000,
        min_window: int = 1000,
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
        if concurrency < 1:
            raise UsageError("concurrency must be at least 1")
        if not 1 <= max_points <= MAX_POINTS:
            raise UsageError(f"max_points must be in 1..{MAX_POINTS}")
        self.concurrency = concurrency
        self.max_points = max_points
        if max_samples is not None and max_samples < 1:
            raise UsageError("max_samples must be positive")
        self.max_samples = max_samples
        self.raw_window = raw_window
        self.min_window = min_window

    @property
    def url(self) -> str:
        """The base URL without credentials (what the ``pulls`` table records)."""
        return self.http.base_url

    @classmethod
    def from_environment(cls, url: str, **options: Any) -> PrometheusSource:
        """A source whose bearer token comes from ``$VFA_PROMETHEUS_TOKEN`` (when set).

        For callers that take only a URL (``vfa backtest/tune --prometheus-url``, notebooks):
        credentials never travel as an argument that could be logged or written to a report.
        """
        from vfanalytics.sources.http import read_secret

        return cls(url, token=read_secret(env="VFA_PROMETHEUS_TOKEN"), **options)

    def __repr__(self) -> str:
        return f"PrometheusSource({self.url!r})"

    def close(self) -> None:
        self.http.close()

    # -- single requests -----------------------------------------------------------------------------
    def _post(self, path: str, form: list[tuple[str, Any]]) -> QueryResult:
        # POST keeps long selectors out of URLs (and out of proxies' access logs)
        resp = self.http.post_form(path, form)
        return decode_query_response(resp.body)

    def query_result(self, expr: str, time: int) -> QueryResult:
        """Instant query at ``time`` (ms), keeping the result type (matrix, vector, scalar)."""
        return self._post("/api/v1/query", [("query", expr), ("time", _seconds(time))])

    def query(self, expr: str, time: int) -> pl.DataFrame:
        """Instant query at ``time`` (ms): ``series_id, labels, ts, value``, like the offline evaluator."""
        res = self.query_result(expr, time)
        return _long(res.series, res.samples)

    def _range_once(self, expr: str, lo: int, hi: int, step: int) -> QueryResult:
        return self._post(
            "/api/v1/query_range",
            [("query", expr), ("start", _seconds(lo)), ("end", _seconds(hi)), ("step", _seconds(step))],
        )

    def _range_chunk(self, expr: str, lo: int, hi: int, step: int) -> list[Chunk]:
        try:
            res = self._range_once(expr, lo, hi, step)
        except SourceHTTPError as exc:
            if not _TOO_BIG.search(str(exc)) or hi - lo < step:
                raise
            n = (hi - lo) // step + 1
            mid = lo + (n // 2 - 1) * step
            return self._range_chunk(expr, lo, mid, step) + self._range_chunk(expr, mid + step, hi, step)
        return [Chunk(lo, hi, res.series, res.samples)]

    def _raw_chunk(self, sel: str, lo: int, hi: int) -> list[Chunk]:
        try:
            res = self.query_result(f"{sel}[{_ms_duration(hi - lo)}]", hi)
        except SourceHTTPError as exc:
            if not _TOO_BIG.search(str(exc)) or hi - lo <= self.min_window:
                raise
            mid = lo + (hi - lo) // 2
            return self._raw_chunk(sel, lo, mid) + self._raw_chunk(sel, mid, hi)
        if res.result_type != "matrix":
            raise UsageError(f"{sel!r} is not a series selector (the server answered a {res.result_type})")
        samples = res.samples.filter((pl.col("ts") > lo) & (pl.col("ts") <= hi))
        return [Chunk(lo, hi, res.series, samples)]

    # -- chunked, concurrent -------------------------------------------------------------------------
    def _run(self, jobs: list[tuple[Callable[..., list[Chunk]], tuple[Any, ...]]]) -> Iterator[Chunk]:
        """Run jobs on the pool; yield chunks as they finish (the first error cancels the rest)."""
        if not jobs:
            return
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs)))
        pending: set[Future[list[Chunk]]] = set()
        queue = list(reversed(jobs))
        try:
            while queue or pending:
                while queue and len(pending) < self.concurrency:
                    fn, args = queue.pop()
                    pending.add(pool.submit(fn, *args))
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield from fut.result()
        finally:
            # on an error, report it now: requests still in flight end on their own
            pool.shutdown(wait=False, cancel_futures=True)

    def iter_query_range(
        self, expr: str, start: int, end: int, step: int, *, windows: Sequence[tuple[int, int]] | None = None
    ) -> Iterator[Chunk]:
        """The chunks of a range query as they finish (any order); ``windows`` restricts to (first, last) times."""
        spans = windows if windows is not None else [(start, end)]
        points = self.max_points
        if self.max_samples is not None and spans:
            # series come and go: count them at both ends of the range
            n_series = max(self.query_result(expr, t).series.height for t in (spans[0][0], spans[-1][1]))
            points = max(1, min(points, self.max_samples // max(n_series, 1)))
        jobs = []
        for lo, hi in spans:
            for a, b in split_steps(lo, hi, step, max_points=points):
                jobs.append((self._range_chunk, (expr, a, b, step)))
        return self._run(jobs)

    def query_range(self, expr: str, start: int, end: int, step: int) -> pl.DataFrame:
        """Evaluate ``expr`` at ``start, start+step, ..., <= end`` (ms): a long frame.

        Columns ``series_id`` (u64), ``labels`` (canonical JSON), ``ts`` (ms), ``value``,
        sorted by labels then time.
        """
        series, samples = self.query_range_frames(expr, start, end, step)
        return _long(series, samples)

    def query_range_frames(self, expr: str, start: int, end: int, step: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        """:meth:`query_range` as ``(series, samples)`` frames, the store's shapes."""
        return _merge(self.iter_query_range(expr, start, end, step))

    def iter_raw_samples(
        self, sel: str, start: int, end: int, *, windows: Sequence[tuple[int, int]] | None = None
    ) -> Iterator[Chunk]:
        """Raw chunks ``(lo, hi]`` of ``[start, end]`` as they finish; ``windows`` gives inclusive spans."""
        parse_selector(sel)
        spans = windows if windows is not None else [(start, end)]
        jobs = []
        for a, b in spans:
            for lo, hi in split_range(a, b, self.raw_window):
                jobs.append((self._raw_chunk, (sel, lo, hi)))
        return self._run(jobs)

    def raw_samples(self, sel: str, start: int, end: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The stored samples of the series matching ``sel`` with ``start <= ts <= end``.

        Returns ``(series, samples)``. Staleness markers are not returned by the API.
        """
        return _merge(self.iter_raw_samples(sel, start, end))

    def select(
        self, matchers: Sequence[tuple[str, str, str]], start: int, end: int
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The ``Source`` protocol of the offline evaluator: raw samples by label matchers."""
        return self.raw_samples(_matchers_to_selector(matchers), start, end)

    # -- metadata ------------------------------------------------------------------------------------
    def series(self, match: str | Sequence[str], start: int | None = None, end: int | None = None) -> pl.DataFrame:
        """Label sets of the series matching ``match`` (one selector or several) as ``series_id, metric, labels``."""
        matches = [match] if isinstance(match, str) else list(match)
        form: list[tuple[str, Any]] = [("match[]", m) for m in matches]
        if start is not None:
            form.append(("start", _seconds(start)))
        if end is not None:
            form.append(("end", _seconds(end)))
        doc = self.http.post_form("/api/v1/series", form).json()
        data = _data(doc)
        frame = labels_frame([dict(d) for d in data or []])
        return frame.unique("series_id").sort("labels")

    def label_values(
        self, name: str, match: str | None = None, start: int | None = None, end: int | None = None
    ) -> list[str]:
        """The values of label ``name`` (optionally among series matching ``match``), sorted."""
        if not _LABEL_NAME.match(name):
            raise UsageError(f"not a label name: {name!r}")
        params: list[tuple[str, Any]] = []
        if match:
            params.append(("match[]", match))
        if start is not None:
            params.append(("start", _seconds(start)))
        if end is not None:
            params.append(("end", _seconds(end)))
        doc = self.http.get(f"/api/v1/label/{name}/values", params).json()
        return sorted(str(v) for v in _data(doc) or [])


def _data(doc: Any) -> Any:
    if not isinstance(doc, dict) or doc.get("status") != "success":
        raise SourceError(f"unexpected answer: {str(doc)[:200]}")
    return doc.get("data")


def _merge(chunks: Iterator[Chunk]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One ``(series, samples)`` pair from chunks, samples ordered by series id then time.

    Chunks partition the time range, so no (series, ts) repeats. Instead of
    concatenating and sorting (which holds the data three times), each chunk's
    samples are scattered straight into preallocated output columns: a series'
    runs from consecutive time windows land one after the other. Peak memory is
    the chunks plus the output, and each chunk is dropped once copied.
    """
    got = sorted(chunks, key=lambda c: c.lo)
    if not got:
        return pl.DataFrame(schema=SERIES_SCHEMA), pl.DataFrame(schema=SAMPLE_SCHEMA)
    series = pl.concat([c.series for c in got]).unique("series_id").sort("labels")
    ids_sorted = np.sort(series["series_id"].to_numpy())
    runs = []
    counts = np.zeros(len(ids_sorted), dtype=np.int64)
    for c in got:
        ids = c.samples["series_id"].to_numpy()
        if len(ids) and (ids[1:] != ids[:-1]).sum() + 1 != len(np.unique(ids)):
            # a server that interleaves series within one answer: group it first
            c = Chunk(c.lo, c.hi, c.series, c.samples.sort("series_id", maintain_order=True))
            ids = c.samples["series_id"].to_numpy()
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, dtype=np.int64)
        lengths = np.diff(np.r_[starts, len(ids)])
        codes = np.searchsorted(ids_sorted, ids[starts])
        np.add.at(counts, codes, lengths)
        runs.append((c, starts, lengths, codes))
    total = int(counts.sum())
    cursor = np.cumsum(counts) - counts
    out_ts = np.empty(total, dtype=np.int64)
    out_value = np.empty(total, dtype=np.float64)
    got.clear()
    for i, (c, starts, lengths, codes) in enumerate(runs):
        n = c.samples.height
        if n:
            dest = np.repeat(cursor[codes] - starts, lengths) + np.arange(n)
            out_ts[dest] = c.samples["ts"].to_numpy()
            out_value[dest] = c.samples["value"].to_numpy()
            cursor[codes] += lengths
        runs[i] = None  # type: ignore[call-overload]
        del c
    samples = pl.DataFrame(
        {"series_id": np.repeat(ids_sorted, counts), "ts": out_ts, "value": out_value}, schema=SAMPLE_SCHEMA
    )
    return series, samples


def _long(series: pl.DataFrame, samples: pl.DataFrame) -> pl.DataFrame:
    return (
        samples.join(series.select("series_id", "labels"), on="series_id", how="left")
        .select("series_id", "labels", "ts", "value")
        .sort("labels", "ts")
    )
