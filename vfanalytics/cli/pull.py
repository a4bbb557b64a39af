"""``vfa pull prometheus|series|loki|file``: pull remote data (or import files) into the store.

Credentials come from flags, the environment (``VFA_PROMETHEUS_TOKEN``,
``VFA_PROMETHEUS_PASSWORD``, ``VFA_LOKI_TOKEN``, ``VFA_LOKI_PASSWORD``) or files
(``--token-file``, ``--password-file``); they are sent to the server and nowhere
else: not printed, not in errors, not in the ``pulls`` table. Prefer the
environment or a file: a ``--token`` flag is visible to other local users in ``ps``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from vfanalytics.cli._common import StoreOption, open_store
from vfanalytics.exceptions import UsageError, VfaError
from vfanalytics.progress import progress_bar, stderr_console
from vfanalytics.timeutil import format_time, parse_duration, parse_time

__all__ = ["register"]

pull_app = typer.Typer(help="Pull Prometheus series and Loki logs into the store (incremental, resumable).",
                       no_args_is_help=True)

UrlOpt = Annotated[str | None, typer.Option("--url", help="Server base URL (default: $VFA_PROMETHEUS_URL / "
                                            "$VFA_LOKI_URL).", show_default=False)]
StartOpt = Annotated[str, typer.Option("--start", help="Range start: RFC 3339, unix seconds or now-7d.")]
EndOpt = Annotated[str, typer.Option("--end", help="Range end (inclusive).")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="Bearer token (prefer the environment or "
                                              "--token-file).", show_default=False)]
TokenFileOpt = Annotated[Path | None, typer.Option("--token-file", help="File holding the bearer token.",
                                                   show_default=False)]
UserOpt = Annotated[str | None, typer.Option("--user", help="Basic-auth user name.", show_default=False)]
PasswordFileOpt = Annotated[Path | None, typer.Option("--password-file", help="File holding the basic-auth "
                                                      "password.", show_default=False)]
HeaderOpt = Annotated[list[str] | None, typer.Option("--header", help="Extra header 'Name: value' (repeatable).",
                                                     show_default=False)]
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="Tenant id, sent as X-Scope-OrgID (Mimir, "
                                               "Cortex, Loki, Thanos).", show_default=False)]
CaOpt = Annotated[Path | None, typer.Option("--ca-file", help="CA bundle to verify the server.",
                                            show_default=False)]
InsecureOpt = Annotated[bool, typer.Option("--insecure", help="Do not verify the server's TLS certificate.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds per request.")]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", help="Requests in flight at once.")]
RetriesOpt = Annotated[int, typer.Option("--retries", help="Tries per request before giving up.")]
BackoffOpt = Annotated[float, typer.Option("--backoff", help="Base backoff in seconds (exponential, jittered).")]
MaxBackoffOpt = Annotated[float, typer.Option("--max-backoff", help="Cap of one wait, Retry-After included.")]
AsOpt = Annotated[str | None, typer.Option("--as", help="Store the results as series named NAME (like a "
                                           "recording rule); default: their labels plus __query__.",
                                           show_default=False)]


def _connection(
    kind: str,
    url: str | None,
    token: str | None,
    token_file: Path | None,
    user: str | None,
    password_file: Path | None,
    header: list[str] | None,
    tenant: str | None,
    ca_file: Path | None,
    insecure: bool,
    timeout: float,
    retries: int,
    backoff: float,
    max_backoff: float,
) -> dict[str, Any]:
    import os

    from vfanalytics.sources.http import RetryPolicy, read_secret

    env = "VFA_PROMETHEUS" if kind == "prometheus" else "VFA_LOKI"
    url = url or os.environ.get(f"{env}_URL")
    if not url:
        raise UsageError(f"--url is required (or set ${env}_URL)")
    headers: dict[str, str] = {}
    for h in header or []:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header wants 'Name: value', got {h.split(':')[0]!r}...")
        headers[name.strip()] = value.strip()
    if tenant:
        headers["X-Scope-OrgID"] = tenant
    if retries < 1:
        raise UsageError("--retries must be at least 1")
    return {
        "url": url,
        # flags beat the environment: --user means basic auth even when $..._TOKEN is set
        "token": read_secret(token, env=None if user else f"{env}_TOKEN", file=token_file),
        "username": user,
        "password": read_secret(None, env=f"{env}_PASSWORD", file=password_file) if user else None,
        "headers": headers,
        "ca_file": str(ca_file) if ca_file else None,
        "verify": not insecure,
        "timeout": timeout,
        "retry": RetryPolicy(attempts=retries, backoff=backoff, max_backoff=max_backoff),
    }


def _range(start: str, end: str) -> tuple[int, int]:
    lo, hi = parse_time(start), parse_time(end)
    if hi < lo:
        raise UsageError("--end is before --start")
    return lo, hi


def _report(report: Any, store_path: Any, what: str) -> None:
    if report.up_to_date:
        stderr_console.print(f"up to date: {what} over this range is already in {store_path} (no request sent)")
        return
    spans = ", ".join(f"{format_time(a)}..{format_time(b)}" for a, b in report.windows[:3])
    more = f" (+{len(report.windows) - 3} more)" if len(report.windows) > 3 else ""
    stderr_console.print(
        f"pulled {report.rows:,} new {what} in {report.chunks} chunk(s), {report.requests} request(s), "
        f"from {report.source} into {store_path}; fetched {spans}{more}",
        markup=False,
        highlight=False,
    )


def _run(redact: Callable[[str], str], fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except VfaError as exc:
        # belt and braces: the message is scrubbed of this pull's credentials whatever raised it
        exc.args = (redact(str(exc)),)
        raise


@pull_app.command("prometheus")
def prometheus_cmd(
    query: Annotated[str, typer.Option("--query", help="PromQL expression.")],
    start: StartOpt,
    end: EndOpt,
    step: Annotated[str, typer.Option("--step", help="Resolution (e.g. 15s, 1m); points at multiples of it.")],
    url: UrlOpt = None,
    name: AsOpt = None,
    store: StoreOption = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    user: UserOpt = None,
    password_file: PasswordFileOpt = None,
    header: HeaderOpt = None,
    tenant: TenantOpt = None,
    ca_file: CaOpt = None,
    insecure: InsecureOpt = False,
    timeout: TimeoutOpt = 60.0,
    concurrency: ConcurrencyOpt = 4,
    retries: RetriesOpt = 6,
    backoff: BackoffOpt = 0.25,
    max_backoff: MaxBackoffOpt = 10.0,
    max_points: Annotated[int, typer.Option("--max-points", help="Points per series per request (≤ 11000).")] = 11_000,
    max_samples: Annotated[int | None, typer.Option("--max-samples", help="Samples (series × points) per request.",
                                                    show_default=False)] = None,
) -> None:
    """Evaluate a PromQL expression over a range on the server (query_range) and store the result."""
    from vfanalytics.sources.prometheus import PrometheusSource
    from vfanalytics.sources.pull import pull_query_range

    conn = _connection("prometheus", url, token, token_file, user, password_file, header, tenant, ca_file, insecure,
                       timeout, retries, backoff, max_backoff)
    src = PrometheusSource(conn.pop("url"), concurrency=concurrency, max_points=max_points, max_samples=max_samples,
                           **conn)
    lo, hi = _range(start, end)
    step_ms = parse_duration(step)
    with open_store(store) as st, progress_bar("pull prometheus", total=hi - lo) as advance:
        report = _run(src.http.redact, lambda: pull_query_range(st, src, query, lo, hi, step_ms, name=name,
                                                                progress=advance))
        path = st.path
    _report(report, path, "samples")


@pull_app.command("series")
def series_cmd(
    match: Annotated[str, typer.Option("--match", help="Series selector, e.g. up{job=\"api\"}.")],
    start: StartOpt,
    end: EndOpt,
    url: UrlOpt = None,
    store: StoreOption = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    user: UserOpt = None,
    password_file: PasswordFileOpt = None,
    header: HeaderOpt = None,
    tenant: TenantOpt = None,
    ca_file: CaOpt = None,
    insecure: InsecureOpt = False,
    timeout: TimeoutOpt = 60.0,
    concurrency: ConcurrencyOpt = 4,
    retries: RetriesOpt = 6,
    backoff: BackoffOpt = 0.25,
    max_backoff: MaxBackoffOpt = 10.0,
    window: Annotated[str, typer.Option("--window", help="Time covered by one request.")] = "6h",
) -> None:
    """Pull the raw stored samples of the series matching a selector (the offline evaluator's input)."""
    from vfanalytics.sources.prometheus import PrometheusSource
    from vfanalytics.sources.pull import pull_series

    conn = _connection("prometheus", url, token, token_file, user, password_file, header, tenant, ca_file, insecure,
                       timeout, retries, backoff, max_backoff)
    src = PrometheusSource(conn.pop("url"), concurrency=concurrency, raw_window=parse_duration(window), **conn)
    lo, hi = _range(start, end)
    with open_store(store) as st, progress_bar("pull series", total=hi - lo) as advance:
        report = _run(src.http.redact, lambda: pull_series(st, src, match, lo, hi, progress=advance))
        path = st.path
    _report(report, path, "samples")


@pull_app.command("loki")
def loki_cmd(
    query: Annotated[str, typer.Option("--query", help="LogQL: a log query, or a metric query with --step.")],
    start: StartOpt,
    end: EndOpt,
    url: UrlOpt = None,
    step: Annotated[str | None, typer.Option("--step", help="Resolution of a metric query.",
                                             show_default=False)] = None,
    name: AsOpt = None,
    store: StoreOption = None,
    token: TokenOpt = None,
    token_file: TokenFileOpt = None,
    user: UserOpt = None,
    password_file: PasswordFileOpt = None,
    header: HeaderOpt = None,
    tenant: TenantOpt = None,
    ca_file: CaOpt = None,
    insecure: InsecureOpt = False,
    timeout: TimeoutOpt = 60.0,
    concurrency: ConcurrencyOpt = 4,
    retries: RetriesOpt = 6,
    backoff: BackoffOpt = 0.25,
    max_backoff: MaxBackoffOpt = 10.0,
    limit: Annotated[int, typer.Option("--limit", help="Entries per page (Loki's max_entries_limit_per_query).")]
    = 5000,
    window: Annotated[str, typer.Option("--window", help="A long range is split into windows this long.")] = "1h",
) -> None:
    """Pull Loki log lines (parsed into typed columns) or a LogQL metric query into the store."""
    from vfanalytics.sources.loki import LokiSource
    from vfanalytics.sources.pull import pull_loki

    conn = _connection("loki", url, token, token_file, user, password_file, header, tenant, ca_file, insecure,
                       timeout, retries, backoff, max_backoff)
    src = LokiSource(conn.pop("url"), concurrency=concurrency, limit=limit, max_limit=max(limit, 5000),
                     window=parse_duration(window), **conn)
    lo, hi = _range(start, end)
    step_ms = parse_duration(step) if step else None
    with open_store(store) as st, progress_bar("pull loki", total=hi - lo) as advance:
        report = _run(src.http.redact, lambda: pull_loki(st, src, query, lo, hi, step=step_ms, name=name,
                                                         progress=advance))
        path = st.path
    _report(report, path, "samples" if step_ms else "log lines")


@pull_app.command("file")
def file_cmd(
    paths: Annotated[list[Path], typer.Argument(help="OpenMetrics (.om/.txt/.prom), CSV or Parquet files.")],
    store: StoreOption = None,
) -> None:
    """Import sample files: OpenMetrics text, or long CSV / Parquet (labels or metric + label columns, ts, value)."""
    from vfanalytics.sources.files import import_file

    with open_store(store) as st:
        for p in paths:
            n_series, n_rows = import_file(st, p)
            stderr_console.print(f"{p}: {n_rows:,} new samples of {n_series:,} series into {st.path}",
                                 markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(pull_app, name="pull")
