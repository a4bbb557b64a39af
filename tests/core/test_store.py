"""The DuckDB store: schema, values, transactions, locking, corruption, migrations, pull bookkeeping."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from vfanalytics import store as store_mod
from vfanalytics.exceptions import SchemaVersionError, StoreCorruptError, StoreError, StoreLockedError
from vfanalytics.series import STALE_NAN, is_stale, series_id
from vfanalytics.store import SAMPLE_SCHEMA, Store, resolve_store_path


def _samples(sid: int, ts: list[int], values: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"series_id": [sid] * len(ts), "ts": ts, "value": values}, schema=SAMPLE_SCHEMA)


def test_special_values_and_staleness_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with Store(path) as st:
        (sid,) = st.add_series([{"__name__": "m", "a": "1"}])
        st.insert_samples(_samples(sid, [1, 2, 3, 4, 5, 6], [1.5, math.nan, math.inf, -math.inf, STALE_NAN, 1e308]))
    with Store(path, read_only=True) as st:
        v = st.samples(metric="m")["value"].to_numpy()
    assert v[0] == 1.5 and math.isnan(v[1]) and v[2] == math.inf and v[3] == -math.inf and v[5] == 1e308
    assert is_stale(v).tolist() == [False, False, False, False, True, False]


def test_series_ids_are_stable_and_matchers_follow_prometheus(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as st:
        ids = st.add_series([
            {"__name__": "http", "status": "500", "route": "/a"},
            {"__name__": "http", "status": "200", "route": "/b"},
            {"__name__": "http", "status": "503"},
        ])
        assert ids[0] == series_id({"route": "/a", "status": "500", "__name__": "http"})
        assert st.add_series([{"__name__": "http", "status": "503"}]) == [ids[2]]  # idempotent
        assert st.series().height == 3
        got = lambda ms: set(st.series(matchers=ms)["series_id"].to_list())  # noqa: E731
        assert got([("status", "=~", "5..")]) == {ids[0], ids[2]}
        assert got([("status", "=~", "5")]) == set()  # regexes are fully anchored
        assert got([("route", "=", "")]) == {ids[2]}  # a missing label equals ""
        assert got([("route", "!~", "/a|")]) == {ids[1]}
        assert got([("__name__", "=~", "ht.*"), ("status", "!=", "200")]) == {ids[0], ids[2]}


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as st:
        (sid,) = st.add_series([{"__name__": "m"}])
        st.insert_samples(_samples(sid, [1], [1.0]))
        with pytest.raises(RuntimeError), st.transaction():
            st.insert_samples(_samples(sid, [2, 3], [2.0, 3.0]))
            st.record_pull(source="http://x", kind="range", query="m", step_ms=1, start_ms=0, end_ms=9, rows=2)
            raise RuntimeError("boom")
        assert st.samples()["ts"].to_list() == [1]
        assert st.pulls().is_empty()


_KILLED_WRITER = """
import sys, time, polars as pl, numpy as np
from vfanalytics.store import Store, SAMPLE_SCHEMA
st = Store(sys.argv[1])
with st.transaction():
    n = 2_000_000
    for k in range(1000):
        st.insert_samples(pl.DataFrame({"series_id": np.full(n, 7, dtype=np.uint64), "ts": np.arange(n) + k * n,
                                        "value": np.ones(n)}, schema=SAMPLE_SCHEMA))
        print("batch", k, flush=True)
"""


def test_a_writer_killed_midway_leaves_the_store_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with Store(path) as st:
        (sid,) = st.add_series([{"__name__": "before"}])
        st.insert_samples(_samples(sid, [1, 2], [1.0, 2.0]))
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for _ in range(3):  # several batches are inside the open transaction
        assert proc.stdout.readline().startswith("batch")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Store(path, read_only=True) as st:
        assert st.samples()["ts"].to_list() == [1, 2]
        assert st.series()["metric"].to_list() == ["before"]


def test_a_second_writer_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    Store(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from vfanalytics.store import Store; s=Store(sys.argv[1]); "
         "print('ready', flush=True); time.sleep(60)", str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError, match="in use by another process"):
            Store(path)
    finally:
        holder.kill()
        holder.wait()
    with Store(path) as st:  # usable again once the writer is gone
        assert st.info()["series"] == 0


def test_corrupt_and_foreign_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.duckdb"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreCorruptError, match="not a readable DuckDB store"):
        Store(bad)
    import duckdb

    foreign = tmp_path / "foreign.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE t (x INT)")
    con.close()
    with pytest.raises(StoreCorruptError, match="not a vfanalytics store"):
        Store(foreign)
    with pytest.raises(StoreError, match="no store here"):
        Store(tmp_path / "missing.duckdb", read_only=True)


def test_schema_versions_migrate_forward_and_refuse_newer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.duckdb"
    with Store(path) as st:
        st.set_meta("schema_version", "99")
    with pytest.raises(SchemaVersionError, match="newer"):
        Store(path)
    with _raw(path) as con:
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    # a future version 2 adds a column: the migration runs once, atomically
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(store_mod._MIGRATIONS, 1, "ALTER TABLE incidents ADD COLUMN owner VARCHAR")
    with Store(path) as st:
        assert st.get_meta("schema_version") == "2"
        assert "owner" in st.incidents().columns


class _raw:
    def __init__(self, path: Path) -> None:
        import duckdb

        self.con = duckdb.connect(str(path))

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self.con

    def __exit__(self, *exc: object) -> None:
        self.con.close()


def test_pull_bookkeeping_finds_missing_windows(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as st:
        key = {"source": "http://prom:9090", "kind": "range", "query": "up", "step_ms": 15_000}
        assert st.missing(**key, start_ms=0, end_ms=100) == [(0, 100)]
        st.record_pull(**key, start_ms=10, end_ms=30, rows=5)
        st.record_pull(**key, start_ms=30, end_ms=50, rows=5)
        st.record_pull(**key, start_ms=70, end_ms=80, rows=5)
        assert st.covered(**key) == [(10, 50), (70, 80)]
        assert st.missing(**key, start_ms=0, end_ms=100) == [(0, 10), (50, 70), (80, 100)]
        assert st.missing(**key, start_ms=20, end_ms=45) == []
        assert st.missing(**{**key, "step_ms": 60_000}, start_ms=20, end_ms=45) == [(20, 45)]


def test_dedupe_skips_samples_already_stored(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as st:
        (sid,) = st.add_series([{"__name__": "m"}])
        assert st.insert_samples(_samples(sid, [1, 2, 3], [1.0, 2.0, 3.0]), dedupe=True) == 3
        assert st.insert_samples(_samples(sid, [3, 4, 4], [3.0, 4.0, 4.0]), dedupe=True) == 1
        assert st.samples()["ts"].to_list() == [1, 2, 3, 4]


def test_store_path_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VFA_STORE", raising=False)
    assert resolve_store_path(None) == Path("data/vfanalytics.duckdb")
    monkeypatch.setenv("VFA_STORE", str(tmp_path / "env.duckdb"))
    assert resolve_store_path(None) == tmp_path / "env.duckdb"
    assert resolve_store_path(tmp_path / "flag.duckdb") == tmp_path / "flag.duckdb"


def test_reads_are_vectorised_frames(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as st:
        ids = st.add_series([{"__name__": "m", "i": str(i)} for i in range(50)])
        frame = pl.DataFrame({"series_id": np.repeat(np.array(ids, dtype=np.uint64), 1000),
                              "ts": np.tile(np.arange(1000), 50), "value": np.random.default_rng(0).random(50_000)},
                             schema=SAMPLE_SCHEMA)
        st.insert_samples(frame)
        out = st.samples(start=100, end=199)
        assert out.schema == pl.Schema(SAMPLE_SCHEMA) and out.height == 50 * 100
        series, samples = st.select([("__name__", "=", "m"), ("i", "=~", "1.")])
        assert series.height == 10 and samples.height == 10_000
        assert st.info()["samples"] == 50_000
