"""``vfa rules check|test|lint|import-incidents``, ``vfa backtest`` and ``vfa tune``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from vfanalytics.cli._common import StoreOption, open_store
from vfanalytics.exceptions import UsageError
from vfanalytics.progress import progress_bar, stderr_console

__all__ = ["register"]

rules_app = typer.Typer(help="Prometheus rule files: check, unit-test (promtool format), lint.", no_args_is_help=True)

FilesArg = Annotated[list[Path], typer.Argument(help="Rule files.", show_default=False)]
PromConfigOption = Annotated[
    Path | None,
    typer.Option("--prometheus-config", help="prometheus.yml whose global.evaluation_interval and "
                 "external_labels apply (the seed's: 15s).", show_default=False),
]
IntervalOption = Annotated[
    str | None, typer.Option("--evaluation-interval", help="Global evaluation interval when no prometheus.yml "
                             "is given (default 1m, Prometheus' default).", show_default=False)]
StartOption = Annotated[str | None, typer.Option("--start", help="Range start (RFC 3339, unix s, now-7d); "
                                                  "default: the store's first sample.", show_default=False)]
EndOption = Annotated[str | None, typer.Option("--end", help="Range end; default: the store's last sample.",
                                              show_default=False)]
IncidentsOption = Annotated[
    Path | None, typer.Option("--incidents", help="Incident CSV/YAML (default: the store's incidents table).",
                              show_default=False)]
OutOption = Annotated[Path, typer.Option("--out", help="Directory for the exports.")]
VersionOption = Annotated[int, typer.Option("--prometheus-version", help="PromQL semantics: 3 (default) or 2.")]
JobsOption = Annotated[
    int | None,
    typer.Option("--jobs", min=1, show_default=False,
                 help="Rules evaluated at once (default: offline one a core up to 4; with --prometheus-url 1)."),
]
UrlOption = Annotated[
    str | None, typer.Option("--prometheus-url", help="Push queries down to this Prometheus-API server "
                             "(one query_range per rule expression) instead of the offline evaluator.",
                             show_default=False)]


def _interval_and_labels(cfg: Path | None, interval: str | None) -> tuple[int, dict[str, str]]:
    from vfanalytics.rules import DEFAULT_EVALUATION_INTERVAL_MS, load_prometheus_config, parse_prom_duration

    if cfg is not None:
        pc = load_prometheus_config(cfg)
        return pc.evaluation_interval_ms, pc.external_labels
    if interval is not None:
        try:
            return parse_prom_duration(interval), {}
        except Exception as exc:
            raise UsageError(f"--evaluation-interval: {exc}") from None
    return DEFAULT_EVALUATION_INTERVAL_MS, {}


@rules_app.command("check")
def check_cmd(
    files: FilesArg,
    prometheus_version: Annotated[int, typer.Option("--prometheus-version",
                                                    help="3, or 2 to reject fields 2.x lacks.")] = 3,
) -> None:
    """Validate rule files like `promtool check rules` (file:line, group, rule, reason)."""
    from vfanalytics.rules import check_rule_files

    failed = False
    for path, (n, errors) in check_rule_files(files, prometheus_version=prometheus_version).items():
        typer.echo(f"Checking {path}")
        if errors:
            failed = True
            typer.echo(f"  FAILED:\n{len(errors)} error(s)" if len(errors) > 1 else "  FAILED:")
            for e in errors:
                typer.echo(str(e))
        else:
            typer.echo(f"  SUCCESS: {n} rules found")
        typer.echo("")
    if failed:
        raise typer.Exit(1)


@rules_app.command("test")
def test_cmd(
    files: Annotated[list[Path], typer.Argument(help="promtool unit-test files.", show_default=False)],
    prometheus_version: Annotated[int, typer.Option("--prometheus-version", help="2 matches promtool 2.x.")] = 2,
) -> None:
    """Run promtool-format rule unit tests with the offline evaluator; same verdicts as `promtool test rules`."""
    from vfanalytics.promtool_tests import run_test_file

    failed = False
    for f in files:
        typer.echo(f"Unit Testing:  {f}")
        results = run_test_file(f, prometheus_version=prometheus_version)
        bad = [r for r in results if not r.passed]
        if bad:
            failed = True
            typer.echo("  FAILED:")
            for r in bad:
                for msg in r.failures:
                    typer.echo(f"    {msg}")
        else:
            typer.echo("  SUCCESS")
        typer.echo("")
    if failed:
        raise typer.Exit(1)


@rules_app.command("lint")
def lint_cmd(
    files: FilesArg,
    store: StoreOption = None,
    start: StartOption = None,
    end: EndOption = None,
    with_data: Annotated[bool, typer.Option("--with-data/--static", help="Also check selectors against the store.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Find defects: raw-bucket quantiles, unit mismatches, count-vs-ratio, dead selectors, any-increase, no for."""
    from vfanalytics.lint import lint_rule_file
    from vfanalytics.rules import load_rule_files

    rfs = load_rule_files(files)
    findings = []
    if with_data:
        with open_store(store, read_only=True) as st:
            t0, t1 = _range(st, start, end)
            for rf in rfs:
                findings += lint_rule_file(rf, source=st, start=t0, end=t1)
    else:
        for rf in rfs:
            findings += lint_rule_file(rf)
    if as_json:
        typer.echo(json.dumps([f.as_dict() for f in findings], indent=2))
    else:
        for f in findings:
            typer.echo(f"{f.file}:{f.line}: {f.rule}: {f.code} {f.severity}: {f.message}")
            if f.proposed_expr:
                typer.echo(f"    proposed: {f.proposed_expr}")
    if any(f.severity == "error" for f in findings):
        raise typer.Exit(1)


@rules_app.command("import-incidents")
def import_incidents_cmd(
    file: Annotated[Path, typer.Argument(help="Incident CSV or YAML.")],
    store: StoreOption = None,
    near_misses: Annotated[bool, typer.Option("--near-misses", help="Load into near_misses instead.")] = False,
) -> None:
    """Replace the store's incidents with a file's (all rows valid, or nothing is written)."""
    from vfanalytics.incidents import load_incidents, store_incidents

    frame = load_incidents(file)
    with open_store(store) as st:
        store_incidents(st, frame, table="near_misses" if near_misses else "incidents")
    typer.echo(f"{frame.height} incidents imported")


def _range(st: Any, start: str | None, end: str | None) -> tuple[int, int]:
    from vfanalytics.timeutil import parse_time

    info = st.info()
    t0 = parse_time(start) if start else info.get("samples_start_ms")
    t1 = parse_time(end) if end else info.get("samples_end_ms")
    if t0 is None or t1 is None:
        raise UsageError("the store holds no samples; give --start and --end")
    if t1 <= t0:
        raise UsageError("--end must be after --start")
    return int(t0), int(t1)


def _incidents(st: Any, path: Path | None) -> Any:
    from vfanalytics.incidents import load_incidents

    if path is not None:
        return load_incidents(path)
    return st.incidents().select("id", "start_ms", "end_ms", "severity", "matchers", "title", "kind", "alerts")


def _pushdown(url: str | None) -> Any:
    """The server to push queries down to (token from ``VFA_PROMETHEUS_TOKEN``), or None: offline."""
    if not url:
        return None
    from vfanalytics.sources.prometheus import PrometheusSource

    return PrometheusSource.from_environment(url)


def backtest_cmd(
    files: FilesArg,
    store: StoreOption = None,
    start: StartOption = None,
    end: EndOption = None,
    prometheus_config: PromConfigOption = None,
    evaluation_interval: IntervalOption = None,
    incidents: IncidentsOption = None,
    out: OutOption = Path("backtest"),
    prometheus_version: VersionOption = 3,
    prometheus_url: UrlOption = None,
    jobs: JobsOption = None,
) -> None:
    """Replay rule files over history: AlertEpisode table, ALERTS series, scores against incidents."""
    from vfanalytics.backtest import replay, write_backtest_exports
    from vfanalytics.rules import load_rule_files

    rfs = load_rule_files(files)
    interval, ext = _interval_and_labels(prometheus_config, evaluation_interval)
    with open_store(store, read_only=True) as st:
        t0, t1 = _range(st, start, end)
        inc = _incidents(st, incidents)
        evaluator = _pushdown(prometheus_url)
        n = sum(len(g.rules) for rf in rfs for g in rf.groups)
        with progress_bar("backtest", n) as advance:
            res = replay(rfs, st, t0, t1, evaluation_interval_ms=interval, external_labels=ext,
                         evaluator=evaluator, prometheus_version=prometheus_version, progress=advance,
                         concurrency=jobs)
        written = write_backtest_exports(res, out, incidents=inc)
    eps = res.episodes(fired_only=True)
    stderr_console.print(f"{eps.height} fired alert episodes from {len(res.rules)} alerting rules")
    for p in written:
        typer.echo(str(p))


def tune_cmd(
    files: FilesArg,
    store: StoreOption = None,
    start: StartOption = None,
    end: EndOption = None,
    prometheus_config: PromConfigOption = None,
    evaluation_interval: IntervalOption = None,
    incidents: IncidentsOption = None,
    out: OutOption = Path("tune"),
    max_pages_per_week: Annotated[float | None, typer.Option("--max-pages-per-week", show_default=False)] = None,
    min_recall: Annotated[float | None, typer.Option("--min-recall", show_default=False)] = None,
    max_time_to_detect: Annotated[str | None, typer.Option("--max-time-to-detect", show_default=False)] = None,
    lead: Annotated[str, typer.Option("--lead", help="An alert this early still counts.")] = "5m",
    lag: Annotated[str, typer.Option("--lag", help="An alert this long after the incident end still counts.")] = "0s",
    beta: Annotated[float, typer.Option("--beta", help="F-beta weight of recall.")] = 1.0,
    prometheus_version: VersionOption = 3,
    prometheus_url: UrlOption = None,
    pin_tests: Annotated[bool, typer.Option("--pin-tests/--no-pin-tests",
                                            help="Write promtool tests pinning the recommendation.")] = True,
    jobs: JobsOption = None,
) -> None:
    """Sweep thresholds × for × keep_firing_for per rule, score against incidents, recommend and export."""
    from vfanalytics.rules import load_rule_files
    from vfanalytics.timeutil import parse_duration
    from vfanalytics.tuning_pipeline import TuneOptions, tune, write_exports

    rfs = load_rule_files(files)
    interval, ext = _interval_and_labels(prometheus_config, evaluation_interval)
    opts = TuneOptions(max_pages_per_week=max_pages_per_week, min_recall=min_recall,
                       max_time_to_detect_ms=parse_duration(max_time_to_detect) if max_time_to_detect else None,
                       lead_ms=parse_duration(lead), lag_ms=parse_duration(lag), beta=beta)
    with open_store(store, read_only=True) as st:
        t0, t1 = _range(st, start, end)
        inc = _incidents(st, incidents)
        evaluator = _pushdown(prometheus_url)
        n = sum(1 for rf in rfs for r in rf.rules() if r.is_alert)
        with progress_bar("tune", n) as advance:
            res = tune(rfs, st, t0, t1, incidents=inc, evaluation_interval_ms=interval, external_labels=ext,
                       evaluator=evaluator, prometheus_version=prometheus_version, options=opts, progress=advance,
                       concurrency=jobs)
            written = write_exports(res, out, pin_tests=pin_tests)
    table = res.table()
    for row in table.iter_rows(named=True):
        stderr_console.print(f"{row['rule']}: {row['reason']}", markup=False, highlight=False)
    for p in written:
        typer.echo(str(p))


def register(app: typer.Typer) -> None:
    app.add_typer(rules_app, name="rules")
    app.command("backtest")(backtest_cmd)
    app.command("tune")(tune_cmd)
