"""PrefetchedSource: one read for many selectors, answers equal to the base source's, else passed on."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from vfanalytics.backtest import replay
from vfanalytics.promql import FrameSource
from vfanalytics.promql.prefetch import PrefetchedSource, selector_reads
from vfanalytics.rules import load_rule_file, loads_rule_file
from vfanalytics.store import Store

REPO = Path(__file__).resolve().parents[2]
SEED_RULES = REPO / "data" / "rules" / "vaporform-alerts.yml"


class CountingSource:
    """The base source with only ``select`` (no ``select_many``), counting its calls."""

    def __init__(self, base: object) -> None:
        self.base = base
        self.calls: list[tuple] = []

    def select(self, matchers, start=None, end=None):  # noqa: ANN001, ANN201 - the Source protocol
        self.calls.append((tuple(matchers), start, end))
        return self.base.select(matchers, start, end)  # type: ignore[attr-defined]


class CountingManySource(CountingSource):
    def __init__(self, base: object) -> None:
        super().__init__(base)
        self.many_calls = 0

    def select_many(self, matcher_sets, start=None, end=None, *, max_series=None):  # noqa: ANN001, ANN201
        self.many_calls += 1
        return self.base.select_many(matcher_sets, start, end, max_series=max_series)  # type: ignore[attr-defined]


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort("series_id", "ts")


def test_selector_reads_cover_offsets_ranges_and_subqueries() -> None:
    reads = selector_reads('rate(a{x="1"}[5m] offset 1m) + b offset -30s + max_over_time(c[10m:1m]) + d @ 100', 300_000)
    got = {k[0][2]: (back, ahead) for k, back, ahead in reads}
    assert got["a"] == (360_000, -60_000)
    assert got["b"] == (300_000 - 30_000, 30_000)
    assert got["c"] == (600_000 + 60_000 + 300_000, 0)
    assert "d" not in got  # @ reads a fixed time: left to the base source
    # a metric several selectors read is keyed by name only, as the evaluator asks for it
    assert {k for k, _, _ in selector_reads('x{a="1"} / x{a="2"}', 300_000)} == {(("__name__", "=", "x"),)}


def test_store_select_many_equals_select_and_scans_once(small_demo_store: Path) -> None:
    sets = [[("__name__", "=", "up")], [("__name__", "=", "up"), ("job", "=", "vaporform-backend")],
            [("__name__", "=", "pg_up")], [("__name__", "=", "no_such_metric")]]
    with Store(small_demo_store, read_only=True) as st:
        info = st.info()
        lo, hi = info["samples_start_ms"] + 3_600_000, info["samples_end_ms"] - 3_600_000
        series, samples = st.select_many(sets, lo, hi)
        pre = PrefetchedSource(CountingManySource(st), sets, lo, hi)
        for ms, s in zip(sets, series, strict=True):
            want_s, want_x = st.select(ms, lo, hi)
            assert s.equals(want_s)
            got_s, got_x = pre.select(ms, lo + 60_000, hi - 60_000)
            assert got_s.equals(want_s)
            assert _sorted(got_x).equals(_sorted(want_x.filter(pl.col("ts").is_between(lo + 60_000, hi - 60_000))))
        assert pre.base.many_calls == 1 and pre.base.calls == []  # type: ignore[attr-defined]
        # the union, each series once (every `up{job=...}` series is an `up` series)
        assert samples.height == st.select(sets[0], lo, hi)[1].height + st.select(sets[2], lo, hi)[1].height
        # too many series: nothing held, every call passed on
        few = PrefetchedSource(CountingManySource(st), sets, lo, hi, max_series=1)
        assert few.prefetched_series == 0
        few.select(sets[0], lo, hi)
        assert len(few.base.calls) == 1  # type: ignore[attr-defined]


def test_calls_it_does_not_hold_go_to_the_base() -> None:
    src = FrameSource.from_series({'up{job="a"}': ([0, 60_000, 120_000], [1.0, 0.0, 1.0]), "x": ([0], [5.0])})
    base = CountingManySource(src)
    pre = PrefetchedSource(base, [[("__name__", "=", "up")]], 0, 60_000)
    assert pre.select([("__name__", "=", "up")], 0, 60_000)[1]["value"].to_list() == [1.0, 0.0]
    assert base.calls == []
    # a window it did not read, a selector it was not given
    assert pre.select([("__name__", "=", "up")], 0, 120_000)[1]["value"].to_list() == [1.0, 0.0, 1.0]
    assert pre.select([("__name__", "=", "x")], 0, 60_000)[1]["value"].to_list() == [5.0]
    assert [c[0][0][2] for c in base.calls] == ["up", "x"]
    # a source that cannot read many selectors at once: nothing held
    only_select = CountingSource(src)
    assert PrefetchedSource(only_select, [[("__name__", "=", "up")]], 0, 60_000).prefetched_series == 0


@pytest.mark.parametrize("version", [2, 3])
def test_replay_with_one_read_equals_rule_by_rule(small_demo_store: Path, version: int) -> None:
    rf = load_rule_file(SEED_RULES)
    extra, _ = loads_rule_file(
        "groups:\n- name: extra\n  interval: 1m\n  query_offset: 30s\n  rules:\n"
        "  - record: job:up:min\n    expr: min by (job) (up)\n"
        "  - alert: Shifted\n    expr: max_over_time(job:up:min[10m] offset 2m) < 1 and on() vector(1)\n"
        "  - alert: Sub\n    expr: max_over_time(rate(vaporform_http_requests_total[5m])[30m:1m]) > 0.5\n"
        "  - alert: Pinned\n    expr: up @ end() == 0\n")
    with Store(small_demo_store, read_only=True) as st:
        info = st.info()
        start = (info["samples_start_ms"] // 60_000 + 20) * 60_000
        end = start + 18 * 3_600_000
        base = CountingManySource(st)
        one = replay([rf, extra], base, start, end, evaluation_interval_ms=15_000, prometheus_version=version)
        assert base.many_calls == 1
        # rule by rule: the same store without select_many
        plain = CountingSource(st)
        each = replay([rf, extra], plain, start, end, evaluation_interval_ms=15_000, prometheus_version=version)
        assert len(plain.calls) >= 14
    assert one.episodes().equals(each.episodes())
    assert one.episodes(fired_only=True).height > 20
    for a, b in zip(one.rules, each.rules, strict=True):
        assert a.alert_labels == b.alert_labels
        assert (a.present == b.present).all()
