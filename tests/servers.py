"""Real Prometheus-API servers for integration tests.

Context managers that start a real program on 127.0.0.1 on a free port in a
temporary directory, wait until it answers, yield its base URL and stop it:

* :func:`prometheus_server` — Debian's ``/usr/bin/prometheus`` (2.42) over a TSDB
  backfilled with ``promtool tsdb create-blocks-from openmetrics`` (retention 100y);
* :func:`victoria_metrics_server` — ``/usr/bin/victoria-metrics`` (single node),
  loaded through its ``/api/v1/import/prometheus`` endpoint.

Both take either the path of an OpenMetrics file (e.g. ``metrics.om`` from
``vfa demo export``) or a ``(series_df, samples_df)`` pair of frames (the store's
shapes: ``series_id, metric, labels`` and ``series_id, ts, value``).

A test that uses them is marked ``@pytest.mark.integration`` and skips (with the
reason) only when the binary is absent::

    @pytest.mark.integration
    def test_up(tmp_path):
        with prometheus_server(frames, tmp_path) as url:
            ...

Backfilling feeds promtool one 2 h block at a time (:func:`backfill`): promtool
2.42 re-parses its whole input for every block it writes, which makes a 30-day
file hundreds of times slower. ``prometheus_server(..., tsdb=DIR)`` keeps the TSDB
in ``DIR`` and reuses it when it already holds blocks (benchmarks cache this way).

VictoriaMetrics differs from Prometheus in ways tests must allow for: it drops
NaN samples, stores floats with ~12 significant digits (integers exactly), sums
in parallel (last bits vary), and its range windows are left-open like
Prometheus 3.

Caveat: text formats cannot carry Prometheus' staleness marker; a STALE_NAN
sample is written as ``NaN`` (or left out with ``drop_stale=True``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest

from vfanalytics.series import STALE_NAN_BITS

__all__ = [
    "PROMETHEUS",
    "PROMTOOL",
    "VICTORIA_METRICS",
    "Frames",
    "free_port",
    "require_binary",
    "frames_to_text",
    "write_openmetrics_text",
    "prometheus_server",
    "backfill",
    "split_openmetrics",
    "victoria_metrics_server",
]

PROMETHEUS = os.environ.get("VFA_TEST_PROMETHEUS", "/usr/bin/prometheus")
PROMTOOL = os.environ.get("VFA_TEST_PROMTOOL", "/usr/bin/promtool")
VICTORIA_METRICS = os.environ.get("VFA_TEST_VICTORIA_METRICS", "/usr/bin/victoria-metrics")

#: (series_df, samples_df) as the store returns them
Frames = tuple[pl.DataFrame, pl.DataFrame]


def require_binary(path: str) -> str:
    """Return ``path`` if it is an executable, else skip the test saying which binary is absent."""
    found = shutil.which(path)
    if found is None:
        pytest.skip(f"{path} is not installed (apt-get install {Path(path).name})")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- frames -> exposition text -----------------------------------------------------------------------


def _series_text(series_df: pl.DataFrame) -> pl.DataFrame:
    """``series_id -> name{a="b",...}`` with label values escaped as the text formats require."""
    rows = []
    for sid, labels_json in zip(series_df["series_id"].to_list(), series_df["labels"].to_list(), strict=True):
        labels = dict(orjson.loads(labels_json))
        name = labels.pop("__name__", "")
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        rows.append((sid, f"{name}{{{inner}}}" if inner else name))
    return pl.DataFrame(rows, schema={"series_id": pl.UInt64, "text": pl.Utf8}, orient="row")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value_text(values: pl.Expr) -> pl.Expr:
    return (
        pl.when(values.is_nan())
        .then(pl.lit("NaN"))
        .when(values == float("inf"))
        .then(pl.lit("+Inf"))
        .when(values == float("-inf"))
        .then(pl.lit("-Inf"))
        .otherwise(values.cast(pl.Utf8))
    )


def frames_to_text(frames: Frames, *, timestamps: str = "ms", drop_stale: bool = False) -> list[str]:
    """Sample lines ``name{labels} value ts`` (ordered by series, then time).

    ``timestamps="ms"`` gives the Prometheus text format (VictoriaMetrics' import),
    ``"s"`` OpenMetrics' seconds with millisecond decimals.
    """
    series_df, samples_df = frames
    samples = samples_df.select(
        pl.col("series_id").cast(pl.UInt64), pl.col("ts").cast(pl.Int64), pl.col("value").cast(pl.Float64)
    )
    if drop_stale:
        bits = samples["value"].to_numpy().view(np.uint64)
        samples = samples.filter(pl.Series(bits != np.uint64(STALE_NAN_BITS)))
    joined = samples.join(_series_text(series_df), on="series_id", how="inner").sort("series_id", "ts")
    if timestamps == "ms":
        ts = pl.col("ts").cast(pl.Utf8)
    else:
        ts = (pl.col("ts") // 1000).cast(pl.Utf8) + "." + (pl.col("ts") % 1000).cast(pl.Utf8).str.zfill(3)
    out = joined.select(pl.concat_str([pl.col("text"), pl.lit(" "), _value_text(pl.col("value")), pl.lit(" "), ts]))
    return out.to_series().to_list()


def write_openmetrics_text(frames: Frames, path: Path, *, drop_stale: bool = False) -> Path:
    """Write frames as an OpenMetrics file promtool can backfill (type ``unknown``, ``# EOF``)."""
    series_df = frames[0]
    lines = frames_to_text(frames, timestamps="s", drop_stale=drop_stale)
    # OpenMetrics wants each metric family in one contiguous block.
    names = [ln.split("{", 1)[0].split(" ", 1)[0] for ln in lines]
    order = np.argsort(np.array(names, dtype=object), kind="stable")
    del series_df
    with open(path, "w", encoding="utf-8") as fh:
        current = None
        for i in order:
            if names[i] != current:
                current = names[i]
                fh.write(f"# TYPE {current} unknown\n")
            fh.write(lines[i] + "\n")
        fh.write("# EOF\n")
    return path


def _openmetrics_to_prometheus_text(path: Path) -> bytes:
    """OpenMetrics sample lines (seconds) -> Prometheus text lines (milliseconds)."""
    frame = pl.read_csv(
        path, has_header=False, separator="\x01", quote_char=None, new_columns=["line"], schema={"line": pl.Utf8}
    )
    samples = frame.filter(~pl.col("line").str.starts_with("#")).with_columns(
        pl.col("line").str.extract(r"^(.*) (\S+) (\S+)$", 1).alias("head"),
        pl.col("line").str.extract(r"^(.*) (\S+) (\S+)$", 2).alias("value"),
        pl.col("line").str.extract(r"^(.*) (\S+) (\S+)$", 3).alias("ts"),
    )
    if samples["ts"].null_count():
        bad = samples.filter(pl.col("ts").is_null())["line"][0]
        raise ValueError(f"{path}: sample line without a timestamp: {bad[:80]!r}")
    secs = samples["ts"].str.split_exact(".", 1).struct.rename_fields(["s", "f"]).struct.unnest()
    ms = secs["s"].cast(pl.Int64) * 1000 + secs["f"].fill_null("0").str.slice(0, 3).str.pad_end(3, "0").cast(pl.Int64)
    text = samples.select(
        pl.concat_str([pl.col("head"), pl.lit(" "), pl.col("value"), pl.lit(" "), pl.Series(ms).cast(pl.Utf8)])
    ).to_series()
    return ("\n".join(text.to_list()) + "\n").encode()


# -- process management ------------------------------------------------------------------------------


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    import ssl

    # readiness only: the certificate is the test's business
    context = ssl._create_unverified_context() if url.startswith("https") else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.args[0]} not ready after {timeout}s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def _running(argv: list[str], ready_path: str, port: int, log: Path, scheme: str = "http") -> Iterator[str]:
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"{scheme}://127.0.0.1:{port}"
    try:
        _wait_ready(base + ready_path, proc, log)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


#: promtool 2.42 writes 2 h blocks and re-parses the whole input for each one
BLOCK_MS = 2 * 3600 * 1000


def split_openmetrics(path: Path, out_dir: Path) -> list[Path]:
    """Split an OpenMetrics file into one file per 2 h block (sample order kept, ``# EOF`` each).

    promtool 2.42 parses its whole input once per 2 h block, so a 30-day file costs
    360 passes; fed block by block, each sample is parsed once.
    """
    lines = pl.read_csv(
        path, has_header=False, separator="\x01", quote_char=None, new_columns=["line"], schema={"line": pl.Utf8}
    ).filter(~pl.col("line").str.starts_with("#"))
    secs = lines["line"].str.extract(r" (\S+)$", 1).str.split_exact(".", 1).struct.field("field_0").cast(pl.Int64)
    if secs.null_count():
        raise ValueError(f"{path}: every sample needs a timestamp for backfilling")
    lines = lines.with_columns(((secs * 1000) // BLOCK_MS).alias("block"))
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for (block,), part in lines.group_by("block", maintain_order=True):
        f = out_dir / f"block-{block}.om"
        with open(f, "a", encoding="utf-8") as fh:
            fh.write("\n".join(part["line"].to_list()))
            fh.write("\n")
        files.append(f)
    files = sorted(set(files))
    for f in files:
        with open(f, "a", encoding="utf-8") as fh:
            fh.write("# EOF\n")
    return files


def backfill(om: Path, tsdb: Path, *, promtool: str = PROMTOOL, jobs: int = 2) -> None:
    """Create TSDB blocks in ``tsdb`` from an OpenMetrics file with promtool, one 2 h block per run."""
    from concurrent.futures import ThreadPoolExecutor

    pieces = split_openmetrics(om, tsdb.parent / (tsdb.name + "-pieces"))

    def run(piece: Path) -> None:
        done = subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(piece), str(tsdb)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"promtool backfill of {om} ({piece.name}) failed: {done.stderr.strip()[-2000:]}")
        piece.unlink()

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(run, pieces))
    shutil.rmtree(pieces[0].parent if pieces else tsdb.parent / (tsdb.name + "-pieces"), ignore_errors=True)


def _as_openmetrics(data: Path | str | Frames, tmp: Path, drop_stale: bool) -> Path:
    if isinstance(data, str | os.PathLike):
        return Path(data)
    return write_openmetrics_text(data, tmp / "input.om", drop_stale=drop_stale)


@contextlib.contextmanager
def prometheus_server(
    data: Path | str | Frames | None,
    tmp_path: Path,
    *,
    extra_args: Sequence[str] = (),
    drop_stale: bool = False,
    tsdb: Path | None = None,
    web_config: Path | None = None,
) -> Iterator[str]:
    """Start Debian's Prometheus over ``data`` backfilled with promtool; yield its base URL.

    Parameters
    ----------
    data:
        An OpenMetrics file, or ``(series_df, samples_df)`` frames.
    tmp_path:
        A scratch directory (pytest's ``tmp_path``); the TSDB and logs go below it.
    extra_args:
        More prometheus flags, e.g. ``["--query.max-samples=1000"]``.
    tsdb:
        Keep the TSDB in this directory; when it already holds blocks, ``data`` is not
        backfilled again (benchmarks cache a large TSDB this way).
    web_config:
        A ``--web.config.file`` (TLS, basic auth); with ``tls_server_config`` the URL is https.
    """
    prometheus = require_binary(PROMETHEUS)
    promtool = require_binary(PROMTOOL)
    work = Path(tmp_path) / f"prometheus-{free_port()}"
    work.mkdir(parents=True)
    if tsdb is None:
        tsdb = work / "data"
    if data is not None and not (tsdb.is_dir() and any(tsdb.glob("01*"))):
        tsdb.mkdir(parents=True, exist_ok=True)
        backfill(_as_openmetrics(data, work, drop_stale), tsdb, promtool=promtool)
    config = work / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\n")
    port = free_port()
    argv = [
        prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={tsdb}",
        "--storage.tsdb.retention.time=100y",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.console.templates=",
        "--web.console.libraries=",
        "--log.level=warn",
        *extra_args,
    ]
    scheme = "http"
    if web_config is not None:
        argv.append(f"--web.config.file={web_config}")
        scheme = "https" if "tls_server_config" in Path(web_config).read_text() else "http"
    with _running(argv, "/-/ready", port, work / "prometheus.log", scheme) as url:
        yield url


@contextlib.contextmanager
def victoria_metrics_server(
    data: Path | str | Frames | None,
    tmp_path: Path,
    *,
    extra_args: Sequence[str] = (),
    drop_stale: bool = False,
) -> Iterator[str]:
    """Start VictoriaMetrics, import ``data`` through ``/api/v1/import/prometheus``; yield its base URL.

    ``data`` is an OpenMetrics file, ``(series_df, samples_df)`` frames, or None (empty).
    Queries see the imported data at once (cache off, latency offset 0, forced flush).
    """
    vm = require_binary(VICTORIA_METRICS)
    port = free_port()
    work = Path(tmp_path) / f"victoria-metrics-{port}"
    work.mkdir(parents=True)
    argv = [
        vm,
        f"-storageDataPath={work / 'data'}",
        f"-httpListenAddr=127.0.0.1:{port}",
        "-retentionPeriod=100y",
        "-search.latencyOffset=0s",
        "-search.disableCache",
        "-loggerLevel=WARN",
        *extra_args,
    ]
    with _running(argv, "/health", port, work / "victoria-metrics.log") as url:
        if data is not None:
            if isinstance(data, str | os.PathLike):
                body = _openmetrics_to_prometheus_text(Path(data))
            else:
                body = ("\n".join(frames_to_text(data, timestamps="ms", drop_stale=drop_stale)) + "\n").encode()
            req = urllib.request.Request(url + "/api/v1/import/prometheus", data=body, method="POST")
            with urllib.request.urlopen(req, timeout=120) as r:
                if r.status not in (200, 204):
                    raise RuntimeError(f"victoria-metrics import answered {r.status}")
            with urllib.request.urlopen(url + "/internal/force_flush", timeout=60):
                pass
        yield url
