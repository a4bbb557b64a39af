"""The embedded DuckDB store: one file that every part of vfanalytics reads and writes.

Tables
------
``series``     (series_id UBIGINT, metric, labels JSON): one row per label set
``samples``    (series_id, ts BIGINT ms, value DOUBLE): NaN, ±Inf and Prometheus'
               staleness marker (:data:`vfanalytics.series.STALE_NAN`, kept bit-exact)
``logs``       Loki log lines: ts_ns, stream labels, raw line, parsed StructuredLogger
               fields as typed columns, the other fields as JSON in ``extra``, and
               ``parse_error`` for lines that are not JSON objects (kept, never dropped)
``incidents``  ground truth for scoring: id, start_ms, end_ms, severity, matchers, title,
               kind, alerts (rule names expected to fire, comma-separated)
``near_misses`` the same shape: episodes a good rule should not page on
``pulls``      which query from which source over which [start_ms, end_ms] is stored
``meta``       key/value: schema_version, demo parameters, content hash

Writes are transactions: each public write method is atomic on its own, and
:meth:`Store.transaction` groups several into one (a pulled chunk and its ``pulls``
row, say). A process killed mid-write leaves the store as it was: DuckDB discards
an uncommitted transaction when it replays its write-ahead log. DuckDB allows one
writing process per file; a second one gets :class:`StoreLockedError`.

Example
-------
>>> import tempfile, os, polars as pl
>>> path = os.path.join(tempfile.mkdtemp(), "s.duckdb")
>>> with Store(path) as st:
...     sid = st.add_series([{"__name__": "up", "job": "api"}])[0]
...     n = st.insert_samples(pl.DataFrame({"series_id": [sid] * 2, "ts": [0, 15000], "value": [1.0, 0.0]},
...                                     schema={"series_id": pl.UInt64, "ts": pl.Int64, "value": pl.Float64}))
...     st.samples(metric="up")["value"].to_list()
[1.0, 0.0]
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from vfanalytics.exceptions import (
    SchemaVersionError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    UsageError,
)
from vfanalytics.series import SAMPLE_SCHEMA, labels_frame

__all__ = [
    "Store",
    "SCHEMA_VERSION",
    "DEFAULT_STORE_PATH",
    "LOG_FIELDS",
    "SAMPLE_SCHEMA",
    "resolve_store_path",
    "Matcher",
]

#: current schema version; bump it and append to ``_MIGRATIONS`` when the schema changes
SCHEMA_VERSION = 1
DEFAULT_STORE_PATH = Path("data") / "vfanalytics.duckdb"

#: the long sample frame every module exchanges

#: StructuredLogger JSON keys -> (logs column, DuckDB type); every other key goes to ``extra``
LOG_FIELDS: dict[str, tuple[str, str]] = {
    "timestamp": ("log_time", "TIMESTAMP"),
    "level": ("level", "VARCHAR"),
    "service": ("service", "VARCHAR"),
    "correlationId": ("correlation_id", "VARCHAR"),
    "message": ("message", "VARCHAR"),
    "actionType": ("action_type", "VARCHAR"),
    "userId": ("user_id", "VARCHAR"),
    "projectId": ("project_id", "VARCHAR"),
    "action": ("action", "VARCHAR"),
    "operation": ("operation", "VARCHAR"),
    "duration": ("duration", "DOUBLE"),
    "success": ("success", "BOOLEAN"),
    "tokens": ("tokens", "BIGINT"),
    "event": ("event", "VARCHAR"),
    "containerId": ("container_id", "VARCHAR"),
    "severity": ("severity", "VARCHAR"),
    "metric": ("metric", "VARCHAR"),
    "value": ("value", "DOUBLE"),
    "unit": ("unit", "VARCHAR"),
    "userTier": ("user_tier", "VARCHAR"),
    "userSegment": ("user_segment", "VARCHAR"),
    "environment": ("environment", "VARCHAR"),
}

_LOG_COLUMNS_SQL = ",\n    ".join(f"{col} {typ}" for col, typ in LOG_FIELDS.values())

# incidents (ground truth) and near_misses (what should not page) share one shape
_INCIDENT_TABLES = "\n".join(
    f"""CREATE TABLE IF NOT EXISTS {name} (
    id VARCHAR PRIMARY KEY,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT NOT NULL,
    severity VARCHAR,
    matchers VARCHAR,
    title VARCHAR,
    kind VARCHAR,
    alerts VARCHAR,
    CHECK (end_ms >= start_ms)
);"""
    for name in ("incidents", "near_misses")
)

_SCHEMA_V1 = f"""
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS series (
    series_id UBIGINT PRIMARY KEY,
    metric VARCHAR NOT NULL,
    labels VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    series_id UBIGINT NOT NULL,
    ts BIGINT NOT NULL,
    value DOUBLE NOT NULL
);
CREATE TABLE IF NOT EXISTS logs (
    ts_ns BIGINT NOT NULL,
    stream VARCHAR NOT NULL,
    line VARCHAR NOT NULL,
    parse_error BOOLEAN NOT NULL,
    {_LOG_COLUMNS_SQL},
    extra VARCHAR
);
{_INCIDENT_TABLES}
CREATE TABLE IF NOT EXISTS pulls (
    source VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    query VARCHAR NOT NULL,
    step_ms BIGINT NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT NOT NULL,
    rows BIGINT NOT NULL,
    pulled_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
"""

# _MIGRATIONS[n] upgrades a store at schema version n to n + 1.
_MIGRATIONS: dict[int, str] = {}

INCIDENT_COLUMNS = ["id", "start_ms", "end_ms", "severity", "matchers", "title", "kind", "alerts"]

#: a label matcher: (label name, op, value) with op one of ``=``, ``!=``, ``=~``, ``!~``
Matcher = tuple[str, str, str]


def resolve_store_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The store file: the argument, else ``$VFA_STORE``, else ``data/vfanalytics.duckdb``."""
    if path is not None and str(path) != "":
        return Path(path)
    env = os.environ.get("VFA_STORE")
    if env:
        return Path(env)
    return DEFAULT_STORE_PATH


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _label_expr(name: str) -> str:
    if name == "__name__":
        return "s.metric"
    # Prometheus treats an absent label as the empty string.
    path = _sql_str('$."' + name.replace('"', '\\"') + '"')
    return f"coalesce(json_extract_string(s.labels, {path}), '')"


def matchers_sql(matchers: Sequence[Matcher]) -> str:
    """SQL predicate over ``series s`` for Prometheus label matchers (regexes fully anchored, RE2)."""
    preds = []
    for name, op, value in matchers:
        lhs = _label_expr(name)
        if op == "=":
            preds.append(f"{lhs} = {_sql_str(value)}")
        elif op == "!=":
            preds.append(f"{lhs} <> {_sql_str(value)}")
        elif op == "=~":
            preds.append(f"regexp_full_match({lhs}, {_sql_str(value)})")
        elif op == "!~":
            preds.append(f"NOT regexp_full_match({lhs}, {_sql_str(value)})")
        else:
            raise UsageError(f"unknown label matcher operator {op!r}")
    return " AND ".join(preds) if preds else "TRUE"


class Store:
    """A vfanalytics store (one DuckDB file).

    Parameters
    ----------
    path:
        The file; default from :func:`resolve_store_path`. ``":memory:"`` gives a
        throw-away in-memory store.
    read_only:
        Open without the write lock (fails if another process is writing).
    create:
        Create the file and schema when missing (default true for writers).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        read_only: bool = False,
        create: bool | None = None,
    ) -> None:
        self.path = resolve_store_path(path) if str(path) != ":memory:" else Path(":memory:")
        self.read_only = read_only
        self._txn_depth = 0
        in_memory = str(self.path) == ":memory:"
        if create is None:
            create = not read_only
        if not in_memory and not self.path.exists():
            if not create:
                raise StoreError(f"{self.path}: no store here (run `vfa demo generate` or a pull first)")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only and not in_memory)
        except duckdb.IOException as exc:
            msg = str(exc)
            if "lock" in msg.lower():
                holder = msg.split("Conflicting lock is held in", 1)[-1].split(". See")[0].strip()
                raise StoreLockedError(
                    f"{self.path}: the store is in use by another process ({holder}); "
                    "wait for it to finish or use another --store"
                ) from None
            raise StoreCorruptError(f"{self.path}: not a readable DuckDB store ({msg.splitlines()[0]})") from None
        except duckdb.Error as exc:
            raise StoreCorruptError(
                f"{self.path}: not a readable DuckDB store ({str(exc).splitlines()[0]})"
            ) from None
        self._init_schema()

    # -- lifecycle -----------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (releases the write lock)."""
        with contextlib.suppress(Exception):
            self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _init_schema(self) -> None:
        try:
            tables = {r[0] for r in self.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        except duckdb.Error as exc:
            raise StoreCorruptError(f"{self.path}: cannot read the catalog ({exc})") from None
        if "meta" not in tables:
            if tables:
                raise StoreCorruptError(f"{self.path}: a DuckDB file, but not a vfanalytics store")
            if self.read_only:
                raise StoreError(f"{self.path}: empty store")
            with self.transaction():
                self.con.execute(_SCHEMA_V1)
                self.con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
            return
        version = int(self.get_meta("schema_version") or 0)
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.path}: schema version {version} is newer than this vfanalytics ({SCHEMA_VERSION}); upgrade"
            )
        if version < SCHEMA_VERSION:
            if self.read_only:
                raise SchemaVersionError(
                    f"{self.path}: schema version {version} needs a migration; open it once for writing"
                )
            self.migrate(version)

    def migrate(self, from_version: int) -> None:
        """Upgrade the schema from ``from_version`` to :data:`SCHEMA_VERSION`, in one transaction."""
        with self.transaction():
            for v in range(from_version, SCHEMA_VERSION):
                if v not in _MIGRATIONS:
                    raise SchemaVersionError(f"{self.path}: no migration from schema version {v}")
                self.con.execute(_MIGRATIONS[v])
            self.set_meta("schema_version", str(SCHEMA_VERSION))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Store]:
        """Group writes into one atomic transaction (nesting joins the outer one)."""
        if self._txn_depth:
            self._txn_depth += 1
            try:
                yield self
            finally:
                self._txn_depth -= 1
            return
        self.con.execute("BEGIN TRANSACTION")
        self._txn_depth = 1
        try:
            yield self
        except BaseException:
            self._txn_depth = 0
            with contextlib.suppress(Exception):
                self.con.execute("ROLLBACK")
            raise
        else:
            self._txn_depth = 0
            self.con.execute("COMMIT")

    def _one(self, query: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        # fetch everything: DuckDB refuses new work while a result is only partly read
        rows = self.con.execute(query, params or []).fetchall()
        return rows[0] if rows else None

    # -- meta ----------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", [key])
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    # -- writes --------------------------------------------------------------------
    def add_series(self, label_sets: Sequence[Mapping[str, str]]) -> list[int]:
        """Register label sets (idempotent); returns their series ids in order."""
        frame = labels_frame(label_sets)
        ids: list[int] = frame["series_id"].to_list()
        self.insert_series(frame)
        return ids

    def insert_series(self, frame: pl.DataFrame) -> None:
        """Insert ``series_id, metric, labels`` rows, skipping ids already present."""
        if frame.is_empty():
            return
        frame = frame.select("series_id", "metric", "labels").unique("series_id")
        with self.transaction():
            self.con.register("_new_series", frame.to_arrow())
            try:
                self.con.execute(
                    "INSERT INTO series SELECT n.* FROM _new_series n "
                    "ANTI JOIN series s ON s.series_id = n.series_id"
                )
            finally:
                self.con.unregister("_new_series")

    def insert_samples(self, frame: pl.DataFrame, *, dedupe: bool = False) -> int:
        """Append a long ``series_id, ts, value`` frame; returns rows written.

        With ``dedupe`` a sample whose (series_id, ts) is already stored, or repeated in
        the frame, is skipped, so overlapping pulls never duplicate samples.
        """
        frame = frame.select(
            pl.col("series_id").cast(pl.UInt64), pl.col("ts").cast(pl.Int64), pl.col("value").cast(pl.Float64)
        )
        return self._append("samples", frame, ["series_id", "ts"] if dedupe else None, distinct_batch=True)

    def insert_logs(self, frame: pl.DataFrame, *, dedupe: bool = False) -> int:
        """Append parsed log rows (see :func:`vfanalytics.logs.parse_log_lines`).

        With ``dedupe`` a line already stored with the same (ts_ns, stream, line) is skipped.
        A line repeated inside one frame is legitimate (the same text logged twice at one
        instant) and every copy is kept.
        """
        frame = frame.select(self.log_columns())
        return self._append("logs", frame, ["ts_ns", "stream", "line"] if dedupe else None, distinct_batch=False)

    def _append(self, table: str, frame: pl.DataFrame, keys: list[str] | None, *, distinct_batch: bool) -> int:
        """Insert ``frame`` into ``table``; with ``keys``, skip rows whose keys are already stored.

        The anti-join reads only the stored rows inside the frame's time range (``ts`` or
        the first key), so deduplicating a pulled chunk does not scan the whole table.
        """
        if frame.is_empty():
            return 0
        with self.transaction():
            self.con.register("_new_rows", frame.to_arrow())
            try:
                if keys:
                    ts_col = "ts" if "ts" in keys else keys[0]
                    lo, hi = frame[ts_col].min(), frame[ts_col].max()
                    cols = ", ".join(keys)
                    src = f"(SELECT DISTINCT ON ({cols}) * FROM _new_rows)" if distinct_batch else "_new_rows"
                    on = " AND ".join(f"o.{k} = n.{k}" for k in keys)
                    n = self._one(
                        f"INSERT INTO {table} SELECT n.* FROM {src} n ANTI JOIN "
                        f"(SELECT DISTINCT {cols} FROM {table} WHERE {ts_col} BETWEEN ? AND ?) o ON {on}",
                        [lo, hi],
                    )
                else:
                    n = self._one(f"INSERT INTO {table} SELECT * FROM _new_rows")
            finally:
                self.con.unregister("_new_rows")
        return int(n[0]) if n else 0

    def replace_incidents(self, frame: pl.DataFrame, *, table: str = "incidents") -> None:
        """Replace the incident (or ``near_misses``) table with ``frame``."""
        if table not in ("incidents", "near_misses"):
            raise UsageError(f"unknown incident table {table!r}")
        frame = frame.select(INCIDENT_COLUMNS)
        with self.transaction():
            self.con.execute(f"DELETE FROM {table}")
            if not frame.is_empty():
                self.con.register("_new_incidents", frame.to_arrow())
                try:
                    self.con.execute(f"INSERT INTO {table} SELECT * FROM _new_incidents")
                finally:
                    self.con.unregister("_new_incidents")

    def record_pull(
        self, *, source: str, kind: str, query: str, step_ms: int, start_ms: int, end_ms: int, rows: int
    ) -> None:
        """Record that ``query`` from ``source`` over [start_ms, end_ms] is stored.

        ``source`` must not carry credentials (pass the URL without user info).
        """
        with self.transaction():
            self.con.execute(
                "INSERT INTO pulls (source, kind, query, step_ms, start_ms, end_ms, rows) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [source, kind, query, step_ms, start_ms, end_ms, rows],
            )

    def clear(self) -> None:
        """Delete every row of every data table (schema and meta version stay)."""
        with self.transaction():
            for table in ("samples", "series", "logs", "incidents", "near_misses", "pulls"):
                self.con.execute(f"DELETE FROM {table}")
            self.con.execute("DELETE FROM meta WHERE key <> 'schema_version'")

    # -- reads ---------------------------------------------------------------------
    def sql(self, query: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """Run a read query and return a Polars frame (through Arrow)."""
        rel = self.con.sql(query, params=list(params) if params else None)
        if rel is None:
            raise StoreError(f"not a read query: {query[:60]}")
        return pl.from_arrow(rel.to_arrow_table())  # type: ignore[return-value]

    def log_columns(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT column_name FROM (DESCRIBE logs)").fetchall()]

    def series(
        self, metric: str | None = None, matchers: Sequence[Matcher] = ()
    ) -> pl.DataFrame:
        """Series rows (``series_id, metric, labels``) matching a metric name and label matchers."""
        ms = list(matchers)
        if metric is not None:
            ms.insert(0, ("__name__", "=", metric))
        return self.sql(f"SELECT series_id, metric, labels FROM series s WHERE {matchers_sql(ms)} ORDER BY labels")

    def samples(
        self,
        *,
        metric: str | None = None,
        matchers: Sequence[Matcher] = (),
        series_ids: Sequence[int] | None = None,
        start: int | None = None,
        end: int | None = None,
    ) -> pl.DataFrame:
        """Long ``series_id, ts, value`` frame, sorted by series then time; ``start``/``end`` inclusive."""
        ms = list(matchers)
        if metric is not None:
            ms.insert(0, ("__name__", "=", metric))
        where = [f"x.series_id IN (SELECT series_id FROM series s WHERE {matchers_sql(ms)})"] if ms else []
        params: list[Any] = []
        if series_ids is not None:
            self.con.register("_ids", pl.DataFrame({"id": list(series_ids)}, schema={"id": pl.UInt64}).to_arrow())
            where.append("x.series_id IN (SELECT id FROM _ids)")
        if start is not None:
            where.append("x.ts >= ?")
            params.append(int(start))
        if end is not None:
            where.append("x.ts <= ?")
            params.append(int(end))
        cond = " AND ".join(where) if where else "TRUE"
        try:
            return self.sql(f"SELECT x.series_id, x.ts, x.value FROM samples x WHERE {cond} ORDER BY 1, 2", params)
        finally:
            if series_ids is not None:
                self.con.unregister("_ids")

    def select(
        self, matchers: Sequence[Matcher], start: int | None = None, end: int | None = None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Series and samples matching Prometheus label matchers: ``(series, samples)``.

        Samples come in storage order (each write's rows grouped by series, in time order),
        not sorted: sorting millions of rows in SQL costs more than most evaluations, so
        readers that need an order sort (the PromQL engine reorders whole blocks).
        """
        series = self.series(matchers=matchers)
        return series, self._samples_of(series["series_id"], start, end)

    def select_many(
        self, matcher_sets: Sequence[Sequence[Matcher]], start: int | None = None, end: int | None = None,
        *, max_series: int | None = None,
    ) -> tuple[list[pl.DataFrame], pl.DataFrame]:
        """:meth:`select` for several matcher sets in one scan of the samples table.

        Returns the series frame of each matcher set and the samples of all of them
        (storage order). On a large store the scan, not the rows returned, is what a
        selective read costs, so a replay of many rules reads its inputs this way.
        With more than ``max_series`` series in all, no samples are read (an empty frame).
        """
        series = [self.series(matchers=m) for m in matcher_sets]
        ids = pl.concat([s["series_id"] for s in series]).unique() if series else pl.Series([], dtype=pl.UInt64)
        if max_series is not None and len(ids) > max_series:
            return series, pl.DataFrame(schema=SAMPLE_SCHEMA)
        return series, self._samples_of(ids, start, end)

    def _samples_of(self, ids: pl.Series, start: int | None, end: int | None) -> pl.DataFrame:
        if ids.is_empty():
            return pl.DataFrame(schema=SAMPLE_SCHEMA)
        lo = -(2**63) if start is None else int(start)
        hi = 2**63 - 1 if end is None else int(end)
        if len(ids) <= 20_000:
            cond = f"series_id IN ({','.join(str(int(v)) for v in ids.to_list())})"
            return self.sql(f"SELECT series_id, ts, value FROM samples WHERE {cond} AND ts BETWEEN ? AND ?", [lo, hi])
        # too long for a literal list: let DuckDB join
        self.con.register("_select_ids", pl.DataFrame({"id": ids.cast(pl.UInt64)}).to_arrow())
        try:
            return self.sql("SELECT series_id, ts, value FROM samples WHERE series_id IN (SELECT id FROM _select_ids) "
                            "AND ts BETWEEN ? AND ?", [lo, hi])
        finally:
            self.con.unregister("_select_ids")

    def logs(
        self, start_ns: int | None = None, end_ns: int | None = None, where: str = "TRUE"
    ) -> pl.DataFrame:
        """Log rows in [start_ns, end_ns) (all when omitted), ordered by time."""
        conds = [f"({where})"]
        params: list[Any] = []
        if start_ns is not None:
            conds.append("ts_ns >= ?")
            params.append(int(start_ns))
        if end_ns is not None:
            conds.append("ts_ns < ?")
            params.append(int(end_ns))
        return self.sql(f"SELECT * FROM logs WHERE {' AND '.join(conds)} ORDER BY ts_ns, stream", params)

    def incidents(self, table: str = "incidents") -> pl.DataFrame:
        if table not in ("incidents", "near_misses"):
            raise UsageError(f"unknown incident table {table!r}")
        return self.sql(f"SELECT * FROM {table} ORDER BY start_ms, id")

    def pulls(self) -> pl.DataFrame:
        return self.sql("SELECT * FROM pulls ORDER BY source, kind, query, start_ms")

    def covered(self, *, source: str, kind: str, query: str, step_ms: int) -> list[tuple[int, int]]:
        """Merged [start, end] intervals already pulled for this source/kind/query/step."""
        rows = self.con.execute(
            "SELECT start_ms, end_ms FROM pulls WHERE source = ? AND kind = ? AND query = ? AND step_ms = ? "
            "ORDER BY start_ms",
            [source, kind, query, step_ms],
        ).fetchall()
        merged: list[tuple[int, int]] = []
        for s, e in rows:
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        return merged

    def missing(
        self, *, source: str, kind: str, query: str, step_ms: int, start_ms: int, end_ms: int
    ) -> list[tuple[int, int]]:
        """The parts of [start_ms, end_ms] not yet covered by earlier pulls (touching intervals merge)."""
        gaps: list[tuple[int, int]] = []
        cur = start_ms
        for s, e in self.covered(source=source, kind=kind, query=query, step_ms=step_ms):
            if e < cur:
                continue
            if s > end_ms:
                break
            if s > cur:
                gaps.append((cur, min(s, end_ms)))
            cur = max(cur, e)
        if cur < end_ms:
            gaps.append((cur, end_ms))
        return gaps

    def info(self) -> dict[str, Any]:
        """What the store holds: counts, time ranges, size and metadata."""
        def q(sql: str) -> tuple[Any, ...]:
            row = self._one(sql)
            assert row is not None  # aggregates always return one row
            return row

        (n_series,) = q("SELECT count(*) FROM series")
        n_samples, t0, t1 = q("SELECT count(*), min(ts), max(ts) FROM samples")
        n_logs, l0, l1 = q("SELECT count(*), min(ts_ns), max(ts_ns) FROM logs")
        (n_metrics,) = q("SELECT count(DISTINCT metric) FROM series")
        (n_inc,) = q("SELECT count(*) FROM incidents")
        (n_near,) = q("SELECT count(*) FROM near_misses")
        (n_pulls,) = q("SELECT count(*) FROM pulls")
        meta = dict(self.con.execute("SELECT key, value FROM meta ORDER BY key").fetchall())
        size = 0 if str(self.path) == ":memory:" else self.path.stat().st_size
        return {
            "path": str(self.path),
            "bytes": size,
            "schema_version": int(meta.get("schema_version", 0)),
            "metrics": n_metrics,
            "series": n_series,
            "samples": n_samples,
            "samples_start_ms": t0,
            "samples_end_ms": t1,
            "logs": n_logs,
            "logs_start_ns": l0,
            "logs_end_ns": l1,
            "incidents": n_inc,
            "near_misses": n_near,
            "pulls": n_pulls,
            "meta": {k: v for k, v in meta.items() if k != "schema_version"},
        }

    def checkpoint(self) -> None:
        """Flush the write-ahead log into the main file (compacts after large writes)."""
        self.con.execute("CHECKPOINT")
