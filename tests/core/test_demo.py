"""The demo fleet against the seed's own files, determinism and log/metric agreement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest

from tests.core.seedfiles import alert_rules, metrics_collector, selectors
from vfanalytics.demo import DemoConfig, content_hash, generate_demo
from vfanalytics.exceptions import UsageError
from vfanalytics.logs import parse_log_lines
from vfanalytics.series import is_stale
from vfanalytics.store import Store


@pytest.fixture(scope="module")
def demo(small_demo_store: Path):
    with Store(small_demo_store, read_only=True) as st:
        yield st


def _label_names(st: Store, metric: str) -> set[str]:
    labels = st.series(metric=metric)["labels"].to_list()
    return set().union(*(orjson.loads(x).keys() for x in labels)) if labels else set()


def test_every_metrics_collector_metric_with_labels_and_buckets(demo: Store, seed_dir: Path) -> None:
    declared = metrics_collector(seed_dir / "monitoring" / "MetricsCollector.ts")
    assert len(declared) == 10
    for m in declared:
        if m["type"] == "histogram":
            names = [m["name"] + s for s in ("_bucket", "_sum", "_count")]
        else:
            names = [m["name"]]
        for name in names:
            got = _label_names(demo, name)
            assert got, f"{name} has no series"
            expected = set(m["labels"]) | {"__name__", "job", "instance"} | ({"le"} if name.endswith("_bucket") else set())
            assert got == expected, f"{name}: labels {sorted(got)} != {sorted(expected)}"
        if m["type"] == "histogram":
            les = set(demo.sql(
                "SELECT DISTINCT json_extract_string(labels, '$.le') AS le FROM series WHERE metric = ?",
                [m["name"] + "_bucket"],
            )["le"].to_list())
            assert les == {*(repr(b).removesuffix(".0") for b in m["buckets"]), "+Inf"}, m["name"]


def test_every_series_a_seed_rule_selects_has_data(demo: Store, seed_dir: Path) -> None:
    rules = alert_rules(seed_dir / "monitoring" / "alerts" / "vaporform-alerts.yml")
    assert len(rules) == 14
    for rule in rules:
        for matchers in selectors(rule["expr"]):
            series, samples = demo.select(matchers)
            assert samples.height > 100, f"{rule['alert']}: no data for {matchers}"
            # the label names a rule matches on exist on those series
            names = set().union(*(orjson.loads(x).keys() for x in series["labels"].to_list()))
            assert {m[0] for m in matchers} <= names


def test_counters_reset_and_histograms_are_cumulative(demo: Store) -> None:
    s = demo.samples(metric="vaporform_http_requests_total").filter(~pl.Series(is_stale(
        demo.samples(metric="vaporform_http_requests_total")["value"].to_numpy())))
    diffs = s.with_columns(pl.col("value").diff().over("series_id").alias("d"))
    resets = diffs.filter(pl.col("d") < 0).height
    assert resets >= 3 * 4  # the 6-hourly deploys restart every pod
    # bucket counts grow with le within each scrape
    b = demo.sql("""
        SELECT x.ts, json_extract_string(s.labels, '$.instance') i, json_extract_string(s.labels, '$.route') r,
               json_extract_string(s.labels, '$.le') le, x.value
        FROM samples x JOIN series s USING (series_id)
        WHERE s.metric = 'vaporform_http_request_duration_seconds_bucket' AND NOT isnan(x.value)""")
    b = b.with_columns(pl.col("le").replace("+Inf", "inf").cast(pl.Float64).alias("lef")).sort("i", "r", "ts", "lef")
    mono = b.with_columns(pl.col("value").diff().over("i", "r", "ts").alias("d")).filter(pl.col("d") < 0)
    assert mono.height == 0


def test_staleness_markers_and_scrape_gaps(demo: Store) -> None:
    up = demo.samples(metric="up", matchers=[("instance", "=", "vaporform-backend-1:4000")])
    assert (up["value"] == 0).sum() >= 5  # the service-down incident
    http = demo.samples(metric="vaporform_http_requests_total", matchers=[("instance", "=", "vaporform-backend-1:4000")])
    assert is_stale(http["value"].to_numpy()).sum() >= 16  # every series goes stale when the pod stops
    ts = np.unique(demo.samples(metric="up", matchers=[("job", "=", "redis")])["ts"].to_numpy())
    assert (np.diff(ts) > 60_000).sum() >= 1  # Prometheus' own restart left a gap


def test_incidents_and_near_misses(demo: Store, seed_dir: Path) -> None:
    inc = demo.incidents()
    kinds = set(inc["kind"].to_list())
    for kind in ("service_down", "http_5xx_spike", "latency_regression", "memory_pressure", "crash_loop",
                 "postgres_down", "redis_down", "claude_api_errors", "claude_latency", "build_regression"):
        assert kind in kinds
    rule_names = {r["alert"] for r in alert_rules(seed_dir / "monitoring" / "alerts" / "vaporform-alerts.yml")}
    for alerts in inc["alerts"].to_list():
        assert set(filter(None, alerts.split(","))) <= rule_names
    assert (inc["end_ms"] >= inc["start_ms"]).all()
    assert demo.incidents("near_misses").height >= 5


def test_log_lines_parse_to_the_stored_columns(demo: Store) -> None:
    logs = demo.logs().head(3000)
    parsed = parse_log_lines(logs["ts_ns"].to_list(), logs["stream"].to_list(), logs["line"].to_list())
    assert parsed.drop("extra").equals(logs.drop("extra"), null_equal=True)
    assert [orjson.loads(e) if e else None for e in parsed["extra"]] == [orjson.loads(e) if e else None for e in logs["extra"]]
    first = orjson.loads(logs["line"][0])
    assert list(first)[:5] == ["timestamp", "level", "service", "correlationId", "message"]
    kinds = set(demo.sql("SELECT DISTINCT action_type FROM logs WHERE action_type IS NOT NULL")["action_type"])
    assert kinds == {"user_action", "claude_interaction", "container_event", "security_event", "performance_metric"}


def test_tokens_from_logs_equal_counter_increases(demo: Store) -> None:
    logs = demo.sql("""SELECT user_id, project_id, operation, sum(tokens) AS tokens FROM logs
                       WHERE action_type = 'claude_interaction' GROUP BY ALL""")
    s = demo.sql("""
        SELECT json_extract_string(labels, '$.user_id') user_id, json_extract_string(labels, '$.project_id') project_id,
               json_extract_string(labels, '$.operation_type') operation, series_id, ts, value
        FROM samples JOIN series USING (series_id) WHERE metric = 'vaporform_claude_tokens_used_total'""")
    # a staleness marker ends a process's series: what follows is a new counter from zero
    s = s.sort("series_id", "ts").with_columns(pl.Series("stale", is_stale(s.sort("series_id", "ts")["value"].to_numpy())))
    s = s.with_columns(pl.col("stale").cast(pl.Int32).cum_sum().over("series_id").alias("segment")).filter(~pl.col("stale"))
    inc = s.with_columns(pl.col("value").diff().over("series_id", "segment").alias("d")).with_columns(
        pl.when(pl.col("d").is_null() | (pl.col("d") < 0)).then(pl.col("value")).otherwise(pl.col("d")).alias("inc"))
    per_key = inc.group_by("user_id", "project_id", "operation").agg(pl.col("inc").sum())
    joined = logs.join(per_key, on=["user_id", "project_id", "operation"], how="full", coalesce=True).fill_null(0)
    assert joined.height > 20
    assert (joined["tokens"] == joined["inc"]).all(), joined.filter(pl.col("tokens") != pl.col("inc"))


def test_user_fields_tiers_segments_and_teams(demo: Store) -> None:
    users = demo.sql("""SELECT DISTINCT user_id, user_tier, user_segment, environment FROM logs
                        WHERE user_id IS NOT NULL AND user_tier IS NOT NULL ORDER BY user_id""")
    assert set(users["user_tier"]) <= {"free", "premium", "enterprise"}
    assert set(users["user_segment"]) <= {"free", "premium", "enterprise", "beta_testers"}
    assert users["user_id"].n_unique() == users.height  # one tier per user


def test_same_arguments_same_content(tmp_path: Path) -> None:
    cfg = DemoConfig(days=0.5, users=12, seed=5)
    hashes = []
    for name in ("a", "b"):
        with Store(tmp_path / f"{name}.duckdb") as st:
            summary = generate_demo(st, cfg)
            assert content_hash(st) == summary["content_hash"] == st.get_meta("content_hash")
            hashes.append(summary["content_hash"])
    assert hashes[0] == hashes[1]
    with Store(tmp_path / "c.duckdb") as st:
        assert generate_demo(st, DemoConfig(days=0.5, users=12, seed=6))["content_hash"] != hashes[0]


def test_bad_parameters_are_usage_errors() -> None:
    for kwargs in ({"days": 0}, {"users": 0}, {"step_ms": 1500}, {"seed": -1}):
        with pytest.raises(UsageError):
            DemoConfig(**kwargs)


def test_demo_flag_file_carries_the_experiment_flag() -> None:
    from tests.conftest import REPO
    from vfanalytics.demo_logs import EXPERIMENT_FLAG
    from vfanalytics.rollout import load_flags

    flags = load_flags(REPO / "data" / "flags_demo.yml")
    seed = load_flags(REPO / "data" / "flags.yml")
    exp = flags.require(EXPERIMENT_FLAG["key"])
    assert (exp.enabled, exp.rollout_percentage, list(exp.user_segments), list(exp.environments)) == (
        EXPERIMENT_FLAG["enabled"], EXPERIMENT_FLAG["rolloutPercentage"], EXPERIMENT_FLAG["userSegments"],
        EXPERIMENT_FLAG["environments"])
    for key, flag in seed.items():
        assert flags.require(key) == flag
