"""Replaying rule groups: ticks, recording rules feeding alerts, query_offset, ALERTS series, pushdown."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from vfanalytics.backtest import replay, ticks_for
from vfanalytics.promql import FrameSource
from vfanalytics.rules import loads_rule_file
from vfanalytics.series import is_stale

MIN = 60_000


def src_from(values: dict[str, list[float | None]], step: int = MIN) -> FrameSource:
    data = {}
    for k, vals in values.items():
        ts = [i * step for i, v in enumerate(vals) if v is not None]
        data[k] = (ts, [v for v in vals if v is not None])
    return FrameSource.from_series(data)


def rules(text: str):
    rf, errors = loads_rule_file(text, "r.yml")
    assert not errors, errors
    return rf


def test_ticks_align_to_interval() -> None:
    assert ticks_for(10_000, 200_000, 60_000).tolist() == [60_000, 120_000, 180_000]
    assert ticks_for(10_000, 200_000, 60_000, offset_ms=15_000).tolist() == [15_000, 75_000, 135_000, 195_000]


def test_recording_rule_output_feeds_later_alert() -> None:
    src = src_from({'req_total{job="a"}': [0, 60, 120, 600, 1200, 1800, 1860, 1920, 1980, 2040, 2100]})
    rf = rules("""
groups:
  - name: g
    rules:
      - record: job:req:rate2m
        expr: sum by (job) (rate(req_total[2m]))
      - alert: Busy
        expr: job:req:rate2m > 5
        for: 1m
        labels: {severity: page}
        annotations: {summary: "{{ $labels.job }} at {{ $value }}/s"}
""")
    res = replay([rf], src, 0, 10 * MIN, evaluation_interval_ms=MIN, prometheus_version=2)
    rec_series, rec_samples = res.recorded
    assert rec_series["metric"].to_list() == ["job:req:rate2m"]
    ep = res.episodes()
    assert ep.height == 1
    row = ep.row(0, named=True)
    assert row["rule"] == "Busy" and row["labels"] == '{"alertname":"Busy","job":"a","severity":"page"}'
    # the same alert on the inlined expression: the recorded series is what the alert read
    inline = rules("""groups: [{name: g, rules: [{alert: Busy, expr: 'sum by (job) (rate(req_total[2m])) > 5',
      for: 1m, labels: {severity: page}}]}]""")
    ref = replay([inline], src, 0, 10 * MIN, evaluation_interval_ms=MIN, prometheus_version=2).episodes().row(0, named=True)
    assert (row["pending_at"], row["firing_at"], row["resolved_at"]) == (ref["pending_at"], ref["firing_at"], ref["resolved_at"])
    assert row["firing_at"] == row["pending_at"] + MIN
    assert row["peak_value"] == pytest.approx(ref["peak_value"])
    assert row["annotations"].startswith('{"summary":"a at ')


def test_alerting_rules_side_by_side_see_only_earlier_recordings() -> None:
    src = src_from({'x{i="1"}': [0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0] * 3, 'x{i="2"}': [5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5] * 3})
    rf = rules("""
groups:
  - name: g
    rules:
      - alert: Early
        expr: rec:x:double > 3
      - record: rec:x:double
        expr: x * 2
      - alert: Late
        expr: rec:x:double > 3
        for: 1m
      - alert: Raw
        expr: x > 3
      - record: rec:x:sum
        expr: sum(rec:x:double)
      - alert: Summed
        expr: rec:x:sum > 9
""")
    runs = {n: replay([rf], src, 0, 32 * MIN, evaluation_interval_ms=MIN, prometheus_version=2, concurrency=n)
            for n in (1, 4)}
    assert runs[1].episodes().equals(runs[4].episodes())
    per_rule = runs[4].episodes().group_by("rule").len()
    counts = dict(zip(per_rule["rule"].to_list(), per_rule["len"].to_list(), strict=True))
    # rules run in order: an alert listed before the recording rule never sees its output
    assert "Early" not in counts and counts["Late"] >= 3 and counts["Raw"] >= 3 and counts["Summed"] >= 1


def test_query_offset_shifts_queries_not_alert_times() -> None:
    src = src_from({"x": [0, 0, 5, 5, 5, 0, 0, 0, 0, 0]})
    plain = rules("groups: [{name: g, rules: [{alert: A, expr: x > 1}]}]")
    offset = rules("groups: [{name: g, query_offset: 2m, rules: [{alert: A, expr: x > 1}]}]")
    a = replay([plain], src, 0, 9 * MIN, evaluation_interval_ms=MIN, prometheus_version=2).episodes()
    b = replay([offset], src, 0, 9 * MIN, evaluation_interval_ms=MIN, prometheus_version=2).episodes()
    assert a["pending_at"].to_list() == [2 * MIN] and b["pending_at"].to_list() == [4 * MIN]


def test_group_interval_and_labels_and_limit() -> None:
    src = src_from({'x{i="1"}': [5] * 10, 'x{i="2"}': [5] * 10, 'x{i="3"}': [0, 0, 0, 0, 5, 5, 5, 5, 5, 5]})
    rf = rules("""
groups:
  - name: g
    interval: 2m
    limit: 2
    labels: {team: core}
    rules:
      - alert: A
        expr: x > 1
""")
    res = replay([rf], src, 0, 9 * MIN, evaluation_interval_ms=MIN, prometheus_version=2)
    rr = res.rules[0]
    assert rr.ticks.tolist() == [0, 2 * MIN, 4 * MIN, 6 * MIN, 8 * MIN]
    assert all(lab["team"] == "core" for lab in rr.alert_labels)
    # from 4m three alerts would be active: the limit drops all state at each such tick
    assert rr.limit_breaches.tolist() == [2, 3, 4]
    ep = res.episodes()
    assert sorted(ep["resolved_at"].to_list()) == [4 * MIN, 4 * MIN]


def test_alerts_series_and_staleness() -> None:
    src = src_from({"x": [0, 5, 5, 5, 0, 0]})
    rf = rules("groups: [{name: g, rules: [{alert: A, expr: x > 1, for: 1m}]}]")
    res = replay([rf], src, 0, 5 * MIN, evaluation_interval_ms=MIN, prometheus_version=2)
    series, samples = res.alerts_series()
    rows = samples.join(series, on="series_id").sort("labels", "ts")
    pend = rows.filter(pl.col("labels").str.contains('"alertstate":"pending"'))
    fire = rows.filter(pl.col("labels").str.contains('"alertstate":"firing"'))
    state = rows.filter(pl.col("metric") == "ALERTS_FOR_STATE")
    assert pend["ts"].to_list() == [MIN, 2 * MIN] and is_stale(pend["value"].to_numpy()).tolist() == [False, True]
    assert fire["ts"].to_list() == [2 * MIN, 3 * MIN, 4 * MIN]
    assert is_stale(fire["value"].to_numpy()).tolist() == [False, False, True]
    assert state["value"].to_list()[:3] == [60.0, 60.0, 60.0]


def test_value_templated_labels_and_external_labels() -> None:
    src = src_from({'x{pod="p1"}': [5, 5, 5]})
    rf = rules("""groups: [{name: g, rules: [{alert: A, expr: x > 1, labels: {where: "{{ $labels.pod }}"},
      annotations: {s: "{{ $externalLabels.cluster }}/{{ $labels.pod }}={{ $value }}"}}]}]""")
    res = replay([rf], src, 0, 2 * MIN, evaluation_interval_ms=MIN, external_labels={"cluster": "prod"},
                 prometheus_version=2)
    row = res.episodes().row(0, named=True)
    assert '"where":"p1"' in row["labels"] and row["annotations"] == '{"s":"prod/p1=5"}'


@pytest.mark.integration
def test_pushdown_to_prometheus_equals_offline(tmp_path) -> None:
    from tests.servers import prometheus_server
    from vfanalytics.sources.prometheus import PrometheusSource

    rng = np.random.default_rng(2)
    n = 240
    vals = {f'load{{host="h{i}"}}': list(np.round(rng.gamma(2.0, 0.5, n), 3)) for i in range(3)}
    src = src_from(vals, step=15_000)
    t0 = 1_790_000_000_000
    series, samples = src.series, src.samples.with_columns(pl.col("ts") + t0)
    src = FrameSource(series, samples)
    rf = rules("groups: [{name: g, rules: [{alert: Hot, expr: 'avg_over_time(load[2m]) > 1.2', for: 1m}]}]")
    start, end = t0 + 5 * MIN, t0 + 55 * MIN
    offline = replay([rf], src, start, end, evaluation_interval_ms=15_000, prometheus_version=2).episodes()
    with prometheus_server((series, samples), tmp_path) as url:
        ev = PrometheusSource(url)
        pushed = replay([rf], src, start, end, evaluation_interval_ms=15_000, evaluator=ev).episodes()
        ev.close()
    cols = ["labels", "pending_at", "firing_at", "resolved_at"]
    assert offline.height > 0
    assert offline.select(cols).rows() == pushed.select(cols).rows()
