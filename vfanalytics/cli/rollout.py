"""``vfa rollout``: the platform's feature-flag evaluator, rollout backtests and bucketing quality.

Example
-------
>>> import json
>>> from typer.testing import CliRunner
>>> from vfanalytics.cli import app
>>> r = CliRunner().invoke(app, ["rollout", "bucket", "user-00042", "anonymous", "--json"])
>>> r.exit_code, [row["bucket"] for row in json.loads(r.output)]
(0, [44, 75])
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import orjson
import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from vfanalytics.cli._common import StoreOption, open_store
from vfanalytics.exceptions import UsageError
from vfanalytics.exposure import (
    DEFAULT_MAX_TOKENS_PER_REQUEST,
    DEFAULT_RATE_LIMIT_PER_MINUTE,
    DEFAULT_USD_PER_MILLION_TOKENS,
    capacity_backtest,
    exposure_backtest,
    largest_safe_percentage,
    load_activity,
    store_user_ids,
)
from vfanalytics.progress import progress_bar
from vfanalytics.rollout import evaluate, hash_user, java_string_hash, load_flags, parse_percentages
from vfanalytics.timeutil import parse_time

__all__ = ["register"]

rollout_app = typer.Typer(
    help="Feature-flag rollouts: the platform's evaluator, exposure/capacity backtests, bucketing quality.",
    no_args_is_help=True,
)

FlagsOption = Annotated[
    Path | None,
    typer.Option("--flags", help="Flag file (YAML or JSON); default: the seed's flags in data/flags.yml.",
                 show_default=False),
]
OutOption = Annotated[Path | None, typer.Option("--out", help="Write CSV / JSON results into this directory.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _console() -> Console:
    return Console(width=160)


def _table(frame: pl.DataFrame, title: str) -> Table:
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(col, justify="right" if frame[col].dtype.is_numeric() else "left")
    for row in frame.iter_rows():
        table.add_row(*[_fmt(v) for v in row])
    return table


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:,.4g}" if abs(v) < 1 else f"{v:,.2f}".rstrip("0").rstrip(".")
    return str(v)


def _dump(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
                        default=_default).decode()


def _default(obj: Any) -> Any:
    if isinstance(obj, pl.DataFrame):
        return obj.to_dicts()
    raise TypeError(type(obj).__name__)


def _out_dir(out: Path | None) -> Path | None:
    if out is None:
        return None
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def parse_percentages_list(text: str) -> list[float]:
    """A comma list of percentages in the order given (duplicates kept)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--overlap-percentages {text!r}: expected a comma list of numbers") from None
    if not values or any(not 0 <= v <= 100 for v in values):
        raise UsageError(f"--overlap-percentages {text!r}: each must be from 0 to 100")
    return values


def _window(start: str | None, end: str | None) -> tuple[int | None, int | None]:
    return (parse_time(start) if start else None, parse_time(end) if end else None)


@rollout_app.command("flags")
def flags_cmd(flags: FlagsOption = None, as_json: JsonOption = False) -> None:
    """Validate a flag file and list its flags."""
    fs = load_flags(flags)
    if as_json:
        typer.echo(_dump([f.to_dict() for f in fs.values()]))
        return
    frame = pl.DataFrame([{**f.to_dict(), "userSegments": ",".join(f.user_segments),
                           "environments": ",".join(f.environments)} for f in fs.values()]).drop("description")
    _console().print(_table(frame, f"flags in {fs.source}"))


@rollout_app.command("bucket")
def bucket_cmd(
    user_ids: Annotated[list[str] | None, typer.Argument(help="User ids ('' = missing: hashes as 'anonymous').")] = None,
    ids_file: Annotated[Path | None, typer.Option("--ids-file", help="One user id per line.")] = None,
    flag: Annotated[str | None, typer.Option("--flag", help="Also evaluate this flag for each id.")] = None,
    segment: Annotated[str | None, typer.Option("--segment", help="userSegment of the context.")] = None,
    environment: Annotated[str, typer.Option("--environment", help="environment of the context.")] = "production",
    flags: FlagsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Hash, bucket (and flag answer) of user ids, exactly as the platform computes them."""
    from vfanalytics.bucketing import salted_bucket  # scipy: imported only when needed

    ids = list(user_ids or [])
    if ids_file is not None:
        try:
            ids += ids_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--ids-file {ids_file}: {exc}") from None
    if not ids:
        raise UsageError("give user ids as arguments or with --ids-file")
    frame = pl.DataFrame({
        "user_id": ids,
        "java_hash": java_string_hash([s or "anonymous" for s in ids]),
        "hash_user": hash_user(ids),
    }).with_columns((pl.col("hash_user") % 100).alias("bucket"))
    if flag is not None:
        f = load_flags(flags).require(flag)
        frame = frame.with_columns(
            pl.Series("enabled", evaluate(f, ids, segment, environment)),
            pl.Series("salted_bucket", salted_bucket(f.key, ids)),
        )
    if as_json:
        typer.echo(_dump(frame.to_dicts()))
    else:
        _console().print(_table(frame, "platform bucketing (hashUser % 100)"))


@rollout_app.command("backtest")
def backtest_cmd(
    flag: Annotated[str, typer.Option("--flag", help="Flag key to replay.")],
    percentages: Annotated[str, typer.Option("--percentages", help="START:STOP[:STEP] or a comma list.")] = "0:100:5",
    flags: FlagsOption = None,
    store: StoreOption = None,
    rate_limit: Annotated[float, typer.Option("--rate-limit", help="claude.rateLimitPerMinute.")] = float(
        DEFAULT_RATE_LIMIT_PER_MINUTE),
    max_tokens: Annotated[float, typer.Option("--max-tokens", help="claude.maxTokensPerRequest.")] = float(
        DEFAULT_MAX_TOKENS_PER_REQUEST),
    tolerance: Annotated[float, typer.Option("--tolerance", help="Allowed share (0-1) of minutes over the limit.")] = 0.0,
    usd_per_million: Annotated[float, typer.Option("--usd-per-million-tokens", help="Assumed token price.")] = (
        DEFAULT_USD_PER_MILLION_TOKENS),
    start: Annotated[str | None, typer.Option("--start", help="History from (RFC 3339, unix s, now-7d).")] = None,
    end: Annotated[str | None, typer.Option("--end", help="History to.")] = None,
    as_configured: Annotated[bool, typer.Option("--as-configured", help="Keep a disabled flag disabled.")] = False,
    include_token_limit: Annotated[bool, typer.Option(
        "--include-token-limit", help="A safe percentage must also keep requests over --max-tokens within "
                                      "the tolerance.")] = False,
    out: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Exposure and capacity backtest of a flag over the store's history, per rollout percentage."""
    pcts = parse_percentages(percentages)
    if not 0 <= tolerance <= 1:
        raise UsageError(f"--tolerance must be a share from 0 to 1, got {tolerance}")
    if rate_limit <= 0 or max_tokens <= 0:
        raise UsageError("--rate-limit and --max-tokens must be positive")
    f = load_flags(flags).require(flag)
    out_dir = _out_dir(out)
    t0, t1 = _window(start, end)
    with progress_bar("rollout backtest", total=3) as advance:
        with open_store(store, read_only=True) as st:
            activity = load_activity(st, t0, t1)
        advance(1)
        if activity.requests.is_empty() and activity.sessions.is_empty():
            raise UsageError("the store holds no user activity (claude_interaction / session lines) to replay")
        exposure = exposure_backtest(activity, f, pcts, usd_per_million_tokens=usd_per_million,
                                     as_configured=as_configured)
        advance(1)
        capacity = capacity_backtest(activity, f, pcts, rate_limit_per_minute=rate_limit,
                                     max_tokens_per_request=max_tokens, as_configured=as_configured)
        advance(1)
    safe = largest_safe_percentage(capacity, tolerance, include_token_limit=include_token_limit)
    summary = {
        "flag": f.key, "flag_enabled": f.enabled, "evaluated_as_enabled": f.enabled or not as_configured,
        "percentages": pcts, "rate_limit_per_minute": rate_limit, "max_tokens_per_request": max_tokens,
        "tolerance": tolerance, "include_token_limit": include_token_limit,
        "largest_safe_percentage": safe, "exposure_monotonic": True,
        "usd_per_million_tokens": usd_per_million,
    }
    if out_dir is not None:
        exposure.write_csv(out_dir / "exposure.csv")
        capacity.write_csv(out_dir / "capacity.csv")
        (out_dir / "summary.json").write_text(_dump(summary) + "\n")
    if as_json:
        typer.echo(_dump({**summary, "exposure": exposure, "capacity": capacity}))
        return
    con = _console()
    con.print(_table(exposure.filter(pl.col("segment") == "*").drop("segment", "environment"),
                     f"exposure of {f.key} (all segments and environments)"))
    con.print(_table(capacity.select("percentage", "requests", "peak_requests_per_minute", "p99_requests_per_minute",
                                     "minutes_over_limit", "share_minutes_over_limit",
                                     "share_requests_over_max_tokens"),
                     f"capacity against {rate_limit:g} requests/min"))
    shown = "none" if safe is None else f"{safe:g} %"
    limits = f"share of minutes over {rate_limit:g}/min" + (
        f" and of requests over {max_tokens:g} tokens" if include_token_limit else "")
    con.print(f"largest safe percentage ({limits} <= {tolerance:g}): {shown}")
    if out_dir is not None:
        con.print(f"wrote {out_dir}/exposure.csv, capacity.csv, summary.json")


@rollout_app.command("quality")
def quality_cmd(
    store: StoreOption = None,
    ids_file: Annotated[Path | None, typer.Option("--ids-file", help="Ids to assess instead of the store's.")] = None,
    percentage: Annotated[float, typer.Option("--percentage", help="Rollout percentage for window figures.")] = 30.0,
    window: Annotated[int, typer.Option("--window", help="Block of consecutive ids (a team).")] = 10,
    salt_key: Annotated[str, typer.Option("--salt-key", help="Flag key salting the murmur3 alternative.")] = (
        "enable_smart_context"),
    overlap_percentages: Annotated[str, typer.Option(
        "--overlap-percentages",
        help="Rollout percentages given to the file's flags, in order, for the overlap matrix "
             "(concurrent rollouts); 'configured' uses each flag's rolloutPercentage.")] = "10,20,30,50,75,90",
    flags: FlagsOption = None,
    out: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Bucketing quality of the platform's hash vs a salted murmur3 hash, and flag overlap."""
    from vfanalytics.bucketing import bucketing_quality, overlap_matrix  # scipy: imported only when needed

    if not 0 <= percentage <= 100:
        raise UsageError(f"--percentage must be from 0 to 100, got {percentage}")
    if ids_file is not None:
        try:
            ids = [s for s in ids_file.read_text(encoding="utf-8").splitlines() if s]
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--ids-file {ids_file}: {exc}") from None
    else:
        with open_store(store, read_only=True) as st:
            ids = store_user_ids(st)
    platform = bucketing_quality(ids, percentage=percentage, window=window)
    salted = bucketing_quality(ids, percentage=percentage, window=window, salt_key=salt_key)
    fs = load_flags(flags)
    if overlap_percentages.strip() == "configured":
        pcts = {k: f.rollout_percentage for k, f in fs.items()}
    else:
        # staggered percentages, the way teams run concurrent experiments
        given = [float(p) for p in parse_percentages_list(overlap_percentages)]
        pcts = {k: p for k, p in zip(fs, given, strict=False)}
    ov = {"platform": overlap_matrix(pcts, ids), "salted": overlap_matrix(pcts, ids, salted=True)}
    result = {"platform": platform, "salted": salted, "overlap": ov, "overlap_percentages": pcts}
    out_dir = _out_dir(out)
    if out_dir is not None:
        (out_dir / "quality.json").write_text(_dump(result) + "\n")
    if as_json:
        typer.echo(_dump(result))
        return
    keys = [k for k in platform if k not in ("method", "special_ids")]
    frame = pl.DataFrame({"figure": keys, "platform": [_fmt(platform.get(k)) for k in keys],
                          "salted murmur3": [_fmt(salted.get(k)) for k in keys]})
    con = _console()
    con.print(_table(frame, f"bucketing quality of {len(ids)} ids"))
    con.print("special ids -> bucket: platform "
              + ", ".join(f"{k!r}: {v}" for k, v in platform["special_ids"].items())
              + "; salted " + ", ".join(f"{k!r}: {v}" for k, v in salted["special_ids"].items()))
    for name, m in ov.items():
        con.print(_table(m.drop("independent"), f"overlap P(B | A), {name} hash"))
    if platform["not_random"]:
        con.print("[yellow]warning:[/] the platform's bucketing is not random for these ids "
                  "(neighbouring ids share exposure); prefer a salted hash such as murmur3(flagKey:userId)")


@rollout_app.command("impact")
def impact_cmd(
    flag: Annotated[str, typer.Option("--flag", help="Flag whose exposure the platform logged (flagExposures).")],
    flags: FlagsOption = None,
    store: StoreOption = None,
    start: Annotated[str | None, typer.Option("--start")] = None,
    end: Annotated[str | None, typer.Option("--end")] = None,
    resamples: Annotated[int, typer.Option("--resamples", help="Bootstrap resamples.")] = 2000,
    out: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sample-ratio mismatch and exposed-vs-unexposed differences from logged exposure."""
    from vfanalytics.bucketing import impact  # scipy: imported only when needed

    if resamples < 100:
        raise UsageError("--resamples must be at least 100")
    f = load_flags(flags).require(flag)
    t0, t1 = _window(start, end)
    with open_store(store, read_only=True) as st:
        activity = load_activity(st, t0, t1)
    result = impact(activity, f, n_resamples=resamples)
    out_dir = _out_dir(out)
    if out_dir is not None:
        result["metrics"].write_csv(out_dir / "impact.csv")
        (out_dir / "impact.json").write_text(_dump(result) + "\n")
    if as_json:
        typer.echo(_dump(result))
        return
    con = _console()
    srm = pl.DataFrame([{"test": k, **{c: v for c, v in result[k].items()}}
                        for k in ("srm_users", "srm_sessions", "srm_nominal")])
    con.print(_table(srm, f"sample ratio mismatch, {f.key}"))
    con.print(_table(result["metrics"], "per-user differences (exposed - unexposed), 95 % CIs"))
    con.print(f"users whose logged exposure disagrees with the evaluator: {result['prediction_mismatches']}")
    for w in result["warnings"]:
        con.print(f"[yellow]warning:[/] {w}")


def register(app: typer.Typer) -> None:
    app.add_typer(rollout_app, name="rollout")
