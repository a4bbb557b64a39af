"""LokiSource against the Loki test server (which reproduces real Loki 2.4.2 recordings)."""

from __future__ import annotations

import collections
import json

import polars as pl
import pytest

from tests.sources.loki_server import LOKI_DIR, LokiData, load_streams, loki_server
from vfanalytics.exceptions import SourceError, SourceHTTPError
from vfanalytics.series import canonical_labels
from vfanalytics.sources.loki import LokiSource, stream_selector
from vfanalytics.sources.pull import pull_loki
from vfanalytics.store import Store

pytestmark = pytest.mark.skipif(not (LOKI_DIR / "dataset_push.json").exists(), reason=f"no Loki dataset in {LOKI_DIR}")

START_MS = 1_793_527_200_000  # 10:00Z
END_MS = 1_793_534_400_000  # 12:00Z (exclusive)


def _stored(selector_service: str | None = None) -> collections.Counter:
    out: collections.Counter = collections.Counter()
    for labels, values in load_streams():
        if selector_service is None or labels.get("service") == selector_service:
            out.update((ts, canonical_labels(labels), line) for ts, line in values)
    return out


@pytest.fixture(scope="module")
def loki():
    with loki_server() as (url, log):
        yield url, log


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("limit", [100, 37, 5])
def test_every_line_exactly_once(loki, direction, limit):
    url, log = loki
    src = LokiSource(url, limit=limit, window=2 * 3600_000)
    frame = src.query_range('{service="backend"}', START_MS, END_MS, direction=direction)
    got = collections.Counter(frame.select("ts_ns", "stream", "line").iter_rows())
    assert got == _stored("backend")
    assert frame.height == 2166
    order = frame["ts_ns"].to_list()
    assert order == sorted(order, reverse=direction == "backward")


def test_pages_restart_at_the_last_timestamp(loki):
    url, log = loki
    before = len(log)
    LokiSource(url, limit=100, window=2 * 3600_000).query_range('{service="backend"}', START_MS, END_MS)
    pages = log[before:]
    # exactly the recorded forward pagination: 22 pages, each next start = the previous page's newest timestamp
    recorded = [json.loads((LOKI_DIR / "recordings" / f"fwd_page_{i:03d}.json").read_text())["request"]["params"]
                for i in range(1, 23)]
    assert [p["start"] for _, p in pages] == [r["start"] for r in recorded]


def test_same_timestamp_group_larger_than_page(loki):
    url, log = loki
    # G6 holds 7 lines at one nanosecond; G5 8: a page of 3 cannot move past them without the single-ns fetch
    src = LokiSource(url, limit=3, window=3600_000)
    frame = src.query_range("{service=~\".+\"}", START_MS, END_MS)
    assert collections.Counter(frame.iter_rows()) == _stored()


def test_group_larger_than_server_limit_fails_clearly(loki):
    url, _ = loki
    src = LokiSource(url, limit=3, max_limit=5, window=2 * 3600_000)
    with pytest.raises(SourceError, match="share the timestamp"):
        src.query_range('{service="backend"}', START_MS, END_MS)


@pytest.mark.parametrize(
    ("kwargs", "query", "message"),
    [
        ({}, '{service="backend"', "parse error at line 1, col 19: syntax error: unexpected $end, expecting } or ,"),
        ({"limit": 10000, "max_limit": 10000}, '{service="backend"}', "max entries limit per query exceeded, limit > max_entries_limit (10000 > 5000)"),
        ({"window": 722 * 3600_000}, '{service="backend"}', "the query time range exceeds the limit (query length: 722h0m0s, limit: 721h0m0s)"),
    ],
)
def test_errors_carry_lokis_message(loki, kwargs, query, message):
    url, _ = loki
    src = LokiSource(url, **kwargs)
    with pytest.raises(SourceHTTPError) as err:
        src.query_range(query, START_MS, START_MS + 722 * 3600_000 if "window" in kwargs else END_MS)
    assert err.value.status == 400
    assert message in str(err.value)


def test_metric_query_sends_end_half_a_step_late(loki):
    url, _ = loki
    series, samples = LokiSource(url).metric_range('rate({service="worker"}[1m])', START_MS, END_MS, 60_000)
    rec = json.loads((LOKI_DIR / "recordings" / "metric_rate_worker_end_unaligned.json").read_text())
    want = rec["body"]["data"]["result"][0]
    assert series["labels"].to_list() == [canonical_labels(want["metric"])]
    assert samples["ts"].to_list() == [int(t) * 1000 for t, _ in want["values"]]
    assert samples["ts"][-1] == END_MS  # the point Loki loses when end sits on its 30 min split
    assert samples["value"].to_list() == [float(v) for _, v in want["values"]]


def test_metadata(loki):
    url, _ = loki
    src = LokiSource(url)
    assert src.labels(START_MS, END_MS) == ["__name__", "env", "level", "service"]
    assert src.label_values("service", START_MS, END_MS) == ["backend", "worker"]
    assert src.series('{service="backend"}', START_MS, END_MS).height == 3


def test_escaped_selector_values():
    tricky = ['a "quoted" value', "back\\slash", "new\nline", "ünïcødé 日本 🚀", "} or {x=\"y\""]
    streams = [({"app": v, "n": str(i)}, [(1_793_527_200_000_000_000 + i, f"line {i}")]) for i, v in enumerate(tricky)]
    with loki_server(LokiData(streams, replay=False)) as (url, _):
        src = LokiSource(url)
        for i, v in enumerate(tricky):
            frame = src.query_range(stream_selector(app=v), START_MS, START_MS + 1000)
            assert frame["line"].to_list() == [f"line {i}"]


def test_pull_loki_into_store_incremental(loki, tmp_path):
    url, log = loki
    src = LokiSource(url, limit=100, window=30 * 60_000)
    with Store(tmp_path / "s.duckdb") as st:
        first = pull_loki(st, src, '{env=~".+"}', START_MS, START_MS + 3600_000 - 1)
        assert first.chunks == 2
        again = pull_loki(st, src, '{env=~".+"}', START_MS, START_MS + 3600_000 - 1)
        assert again.requests == 0 and again.up_to_date
        wider = pull_loki(st, src, '{env=~".+"}', START_MS, END_MS - 1)
        assert wider.windows == [(START_MS + 3600_000, END_MS - 1)]
        logs = st.logs()
    stored = _stored()
    assert collections.Counter(logs.select("ts_ns", "stream", "line").iter_rows()) == stored
    # StructuredLogger fields are typed columns; malformed lines are kept, flagged, never dropped
    def is_object(line: str) -> bool:
        try:
            return isinstance(json.loads(line), dict)
        except json.JSONDecodeError:
            return False

    malformed = sum(n for (_, _, line), n in stored.items() if not is_object(line))
    assert malformed >= 31  # the manifest's 31 malformed lines plus the plain-text X2 pair
    assert logs.filter(pl.col("parse_error")).height == malformed
    claude = logs.filter(pl.col("action_type") == "claude_interaction")
    assert claude["tokens"].dtype == pl.Int64 and claude["tokens"].sum() > 0
    assert claude.filter(~pl.col("success"))["tokens"].max() == 0


def test_pull_loki_metric_query_into_series(loki, tmp_path):
    url, log = loki
    src = LokiSource(url)
    expr = 'rate({service="worker"}[1m])'
    with Store(tmp_path / "m.duckdb") as st:
        first = pull_loki(st, src, expr, START_MS, END_MS, step=60_000)
        assert first.rows == 121
        assert pull_loki(st, src, expr, START_MS, END_MS, step=60_000).requests == 0
        series = st.series(matchers=[("__query__", "=", expr)])
        samples = st.samples(series_ids=series["series_id"].to_list())
    assert series["labels"].to_list() == [
        canonical_labels({"__query__": expr, "env": "production", "level": "info", "service": "worker"})
    ]
    rec = json.loads((LOKI_DIR / "recordings" / "metric_rate_worker_end_unaligned.json").read_text())
    assert samples["value"].to_list() == [float(v) for _, v in rec["body"]["data"]["result"][0]["values"]]
