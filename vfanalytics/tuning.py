"""Threshold, ``for`` and ``keep_firing_for`` sweeps, incident scoring and recommendations.

An alert expression is split at its top-level comparison (``lhs OP threshold``, the
number on either side, :func:`split_threshold`). The lhs is evaluated once per rule
at the group's ticks; every grid point (threshold × ``for`` × ``keep_firing_for``) is
then run-length logic on arrays: one comparison per threshold gives presence runs,
and each (``for``, ``keep``) pair turns the same runs into episodes
(:func:`vfanalytics.backtest.episodes_from_runs`). No PromQL is re-evaluated per grid
point. A rule without a top-level threshold (``up == 0`` and ``==``/``!=`` comparisons
included) sweeps only the durations over its own result.

Scoring (:func:`score_episodes`): a fired episode *matches* an incident when its
alert labels satisfy the incident's matchers and it starts firing inside
``[start - lead, end + lag]``; matched episodes are true positives, the
others false positives (pages nobody needed); an incident no episode matches is
missed. Time to detect is ``first matching firing_at - start`` (negative when the
alert led). Pages are fired episodes; "outside working hours" is before 09:00, after
18:00 or on a weekend (UTC); a *flap* is a re-fire of the same label set within
``flap_window`` of its previous resolution.

Recommendation (:func:`recommend`): among grid points meeting the constraints
(``max_pages_per_week``, ``min_recall``, ``max_time_to_detect``) the Pareto front over
(recall ↑, pages/week ↓, median TTD ↓) and one chosen point (best F-beta, then fewest
pages, then nearest to the current rule, then fastest detection; near-ties count as ties)
with a one-line reason. A rule with no
relevant incidents keeps its threshold unless it breaks ``max_pages_per_week``, and
gets thresholds suggested from the lhs distribution over quiet periods.

Example
-------
>>> s = split_threshold('rate(errors_total{status=~"5.."}[5m]) > 0.1')
>>> s.lhs, s.op, s.threshold
('rate(errors_total{status=~"5.."}[5m])', '>', 0.1)
>>> replace_threshold('0.8 < mem / limit', 0.9)
'0.9 < mem / limit'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl
import promql_parser

from vfanalytics.backtest import ceil_ticks
from vfanalytics.timeutil import format_duration

__all__ = [
    "ThresholdSplit",
    "split_threshold",
    "replace_threshold",
    "format_threshold",
    "compare",
    "SweepGrid",
    "default_grid",
    "sweep",
    "score_episodes",
    "Recommendation",
    "recommend",
    "pareto_front",
    "quiet_thresholds",
    "SCORE_COLUMNS",
]

_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_FLIP = {">": "<", "<": ">", ">=": "<=", "<=": ">=", "==": "==", "!=": "!="}
WEEK_MS = 7 * 24 * 3600 * 1000


@dataclass
class ThresholdSplit:
    """``lhs OP threshold`` (normalised so the lhs is on the left) and where the number sits."""

    lhs: str
    op: str
    threshold: float
    number_on_left: bool
    op_pos: int  # index of the operator in the expression text
    number_text: str


def _top_level_comparisons(expr: str) -> list[tuple[int, str]]:
    """(position, operator) of comparison operators outside brackets and strings."""
    out: list[tuple[int, str]] = []
    depth = 0
    i = 0
    quote = ""
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = ""
            i += 1
            continue
        if c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "#":
            nl = expr.find("\n", i)
            i = len(expr) if nl < 0 else nl
            continue
        elif depth == 0:
            two = expr[i : i + 2]
            if two in ("==", "!=", ">=", "<="):
                out.append((i, two))
                i += 2
                continue
            if c in "<>":
                out.append((i, c))
            elif c == "=" and expr[i - 1 : i] not in "!<>=" and expr[i + 1 : i + 2] == "~":
                pass
        i += 1
    return out


def _number_of(node: Any) -> float | None:
    if isinstance(node, promql_parser.NumberLiteral):
        return float(node.val)
    if isinstance(node, promql_parser.ParenExpr):
        return _number_of(node.expr)
    if isinstance(node, promql_parser.UnaryExpr):
        v = _number_of(node.expr)
        return -v if v is not None else None
    return None


def split_threshold(expr: str) -> ThresholdSplit | None:
    """Split ``lhs OP number`` / ``number OP rhs`` at the top-level comparison, else None.

    ``bool`` comparisons and comparisons of two vectors are not thresholds.
    """
    try:
        ast = promql_parser.parse(expr)
    except Exception:
        return None
    if not isinstance(ast, promql_parser.BinaryExpr) or str(ast.op) not in _COMPARISONS:
        return None
    if ast.modifier is not None and ast.modifier.return_bool:
        return None
    lv, rv = _number_of(ast.lhs), _number_of(ast.rhs)
    if (lv is None) == (rv is None):
        return None
    comps = _top_level_comparisons(expr)
    if not comps:
        return None
    pos, op = comps[-1]
    if rv is not None:
        left = expr[:pos].rstrip()
        number_text = expr[pos + len(op) :].strip()
        return ThresholdSplit(left.strip(), op, rv, False, pos, number_text)
    right = expr[pos + len(op) :].strip()
    number_text = expr[:pos].strip()
    assert lv is not None
    return ThresholdSplit(right, _FLIP[op], lv, True, pos, number_text)


def format_threshold(value: float) -> str:
    """A threshold as it should appear in PromQL (shortest round-trip form)."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def replace_threshold(expr: str, value: float) -> str:
    """The expression with its threshold literal replaced, all other text unchanged."""
    s = split_threshold(expr)
    if s is None:
        raise ValueError(f"no top-level threshold in {expr!r}")
    new = format_threshold(value)
    if s.number_on_left:
        head = expr[: s.op_pos]
        lead = head[: len(head) - len(head.lstrip())]
        trail = head[len(head.rstrip()) :]
        return f"{lead}{new}{trail}{expr[s.op_pos:]}"
    op_end = s.op_pos + len(s.op)
    tail = expr[op_end:]
    lead = tail[: len(tail) - len(tail.lstrip())]
    trail = tail[len(tail.rstrip()) :]
    return f"{expr[:op_end]}{lead}{new}{trail}"


def compare(values: np.ndarray, op: str, threshold: float) -> np.ndarray:
    """``values OP threshold`` as a presence mask (NaN compares false, as in PromQL)."""
    with np.errstate(invalid="ignore"):
        if op == ">":
            return values > threshold
        if op == "<":
            return values < threshold
        if op == ">=":
            return values >= threshold
        if op == "<=":
            return values <= threshold
        if op == "==":
            return values == threshold
        if op == "!=":
            return (values != threshold) & ~np.isnan(values)
    raise ValueError(f"not a comparison: {op}")


@dataclass
class SweepGrid:
    """The three axes of a sweep (durations in ms)."""

    thresholds: list[float]
    fors: list[int]
    keeps: list[int]

    @property
    def size(self) -> int:
        return len(self.thresholds) * len(self.fors) * len(self.keeps)


DEFAULT_FORS_MS = [0, 60_000, 120_000, 300_000, 600_000, 900_000]
DEFAULT_KEEPS_MS = [0, 300_000, 900_000]


def _pick(values: Sequence[int], current: int, n: int) -> list[int]:
    vals = sorted(set(values) | {current})
    while len(vals) > max(n, 1) and len(vals) > 1:
        # drop the value farthest from the current one (never the current)
        far = max((v for v in vals if v != current), key=lambda v: abs(v - current))
        vals.remove(far)
    return vals


def default_grid(lhs_values: np.ndarray | None, op: str | None, threshold: float | None,
                 current_for: int, current_keep: int, *, n_thresholds: int = 40,
                 fors: Sequence[int] | None = None, keeps: Sequence[int] | None = None) -> SweepGrid:
    """Quantiles of the lhs plus the current threshold × 6 ``for`` × 3 ``keep_firing_for`` values."""
    f = _pick(fors if fors is not None else DEFAULT_FORS_MS, current_for, 6)
    k = _pick(keeps if keeps is not None else DEFAULT_KEEPS_MS, current_keep, 3)
    if threshold is None or op in ("==", "!=") or lhs_values is None:
        return SweepGrid([threshold if threshold is not None else math.nan], f, k)
    finite = lhs_values[np.isfinite(lhs_values)]
    ths: set[float] = {float(threshold)}
    if finite.size:
        tail = np.geomspace(0.5, 0.0005, n_thresholds - 1)
        levels = tail if op in ("<", "<=") else 1.0 - tail
        for q in np.quantile(finite, levels):
            ths.add(float(f"{q:.4g}"))
    out = sorted(ths)
    return SweepGrid(out, f, k)


SCORE_COLUMNS = [
    "threshold", "for_ms", "keep_firing_for_ms", "pages", "pages_per_week", "pages_outside_hours",
    "true_positives", "false_positives", "incidents", "detected", "missed", "precision", "recall",
    "f_beta", "ttd_median_ms", "ttd_p90_ms", "flaps", "firing_ms",
]


def _outside_hours(ts_ms: np.ndarray, day_start: int = 9, day_end: int = 18) -> np.ndarray:
    secs = ts_ms // 1000
    days = secs // 86400
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday (weekday 3, Monday = 0)
    hour = (secs % 86400) // 3600
    return (weekday >= 5) | (hour < day_start) | (hour >= day_end)


def score_episodes(
    rows: np.ndarray, firing_at: np.ndarray, resolved_at: np.ndarray, *,
    incident_start: np.ndarray, incident_end: np.ndarray, label_match: np.ndarray,
    range_ms: int, lead_ms: int = 300_000, lag_ms: int = 0, beta: float = 1.0,
    flap_window_ms: int = 1_800_000,
) -> dict[str, float]:
    """Score fired episodes (label-set row, firing and resolution times) against incidents.

    ``label_match[row, incident]`` says which incidents an alert label set may catch;
    ``resolved_at`` is the end of the range for alerts still firing.
    """
    n = len(rows)
    n_inc = len(incident_start)
    out: dict[str, float] = {"pages": float(n), "pages_per_week": n / max(range_ms, 1) * WEEK_MS}
    out["pages_outside_hours"] = float(_outside_hours(firing_at).sum()) if n else 0.0
    out["firing_ms"] = float((resolved_at - firing_at).sum()) if n else 0.0
    if n > 1:
        order = np.lexsort((firing_at, rows))
        r, f, e = rows[order], firing_at[order], resolved_at[order]
        same = r[1:] == r[:-1]
        out["flaps"] = float((same & (f[1:] - e[:-1] <= flap_window_ms)).sum())
    else:
        out["flaps"] = 0.0
    if n_inc:
        lo = incident_start - lead_ms
        hi = incident_end + lag_ms
        # an episode detects an incident when it starts firing inside [start - lead, end + lag]:
        # an alert already firing for hours before the incident did not detect it
        hit = (label_match[rows] if n else np.zeros((0, n_inc), dtype=bool)) & (
            firing_at[:, None] <= hi[None, :]) & (firing_at[:, None] >= lo[None, :])
        out.update(_incident_scores(n, hit, firing_at, incident_start, beta))
    else:
        out.update(_no_incident_scores(n))
    return out


def _incident_scores(n: int, hit: np.ndarray, firing_at: np.ndarray, incident_start: np.ndarray,
                     beta: float) -> dict[str, float]:
    """The incident half of a score from ``hit[episode, incident]`` (episodes firing at ``firing_at``;
    episodes with no hit may be left out of both, ``n`` counts them all)."""
    n_inc = len(incident_start)
    tp = int(hit.any(axis=1).sum())
    detected_mask = hit.any(axis=0)
    detected = int(detected_mask.sum())
    big = np.iinfo(np.int64).max
    ttd = np.where(hit, firing_at[:, None] - incident_start[None, :], big).min(axis=0, initial=big)[detected_mask]
    precision = tp / n if n else math.nan
    recall = detected / n_inc
    b2 = beta * beta
    fb = ((1 + b2) * precision * recall / (b2 * precision + recall) if n and (precision + recall) > 0 else 0.0)
    return {
        "true_positives": float(tp), "false_positives": float(n - tp), "incidents": float(n_inc),
        "detected": float(detected), "missed": float(n_inc - detected), "precision": precision,
        "recall": recall, "f_beta": fb,
        "ttd_median_ms": float(np.median(ttd)) if ttd.size else math.nan,
        "ttd_p90_ms": float(np.quantile(ttd, 0.9)) if ttd.size else math.nan,
    }


def _no_incident_scores(n: int) -> dict[str, float]:
    """Without incidents every page is a false positive and the rest is undefined."""
    return {"true_positives": math.nan, "false_positives": float(n), "incidents": 0.0,
            "detected": math.nan, "missed": math.nan, "precision": math.nan, "recall": math.nan,
            "f_beta": math.nan, "ttd_median_ms": math.nan, "ttd_p90_ms": math.nan}


def sweep(
    values: np.ndarray,
    ticks: np.ndarray,
    grid: SweepGrid,
    op: str | None,
    *,
    interval_ms: int,
    incident_start: np.ndarray | None = None,
    incident_end: np.ndarray | None = None,
    label_match: np.ndarray | None = None,
    lead_ms: int = 300_000,
    lag_ms: int = 0,
    beta: float = 1.0,
    flap_window_ms: int = 1_800_000,
    presence: np.ndarray | None = None,
) -> pl.DataFrame:
    """Score every grid point; ``values`` is the lhs matrix (label sets × ticks, NaN = absent).

    With ``op`` None (no threshold) ``presence`` is the rule's own result and only the
    durations are swept.

    Example
    -------
    >>> import numpy as np
    >>> v = np.array([[0, 5, 5, 5, 0, 5, 0, 0.0]])
    >>> t = np.arange(8) * 60_000
    >>> df = sweep(v, t, SweepGrid([1.0, 6.0], [0, 120_000], [0]), ">", interval_ms=60_000)
    >>> df.select("threshold", "for_ms", "pages").rows()
    [(1.0, 0, 2.0), (1.0, 120000, 1.0), (6.0, 0, 0.0), (6.0, 120000, 0.0)]
    """
    n_t = len(ticks)
    scorer = _TickScorer(ticks, interval_ms, incident_start, incident_end, label_match, values.shape[0],
                         lead_ms=lead_ms, lag_ms=lag_ms, beta=beta, flap_window_ms=flap_window_ms)
    f_ticks = [ceil_ticks(f, interval_ms) for f in grid.fors]
    records: list[dict[str, float]] = []
    for th in grid.thresholds:
        mask = presence if op is None or presence is not None and math.isnan(th) else compare(values, op, th)
        assert mask is not None
        row, start, end = _runs(mask)
        length = end - start
        for k in grid.keeps:
            kt = ceil_ticks(k, interval_ms)
            if kt == 0 or len(row) < 2:
                chain_first = None
            else:
                # chains: runs of one label set separated by at most kt missing ticks
                link = (row[1:] == row[:-1]) & (start[1:] - end[:-1] <= kt)
                chain_first = np.flatnonzero(np.concatenate([[True], ~link]))
            for f, ft in zip(grid.fors, f_ticks, strict=True):
                if chain_first is None:
                    # without keep_firing_for every run is its own alert; it fires if longer than for
                    fire = np.flatnonzero(length > ft)
                    rows, fi, ei = row[fire], start[fire] + ft, np.minimum(end[fire], n_t)
                else:
                    # a chain fires at its first run longer than `for`; from there one alert lasts
                    # to the chain's end plus keep_firing_for (runs before it were pending only)
                    big = np.iinfo(np.int64).max
                    cand = np.where(length > ft, np.arange(len(row)), big)
                    first_fire = np.minimum.reduceat(cand, chain_first)
                    chain_last = np.concatenate([chain_first[1:] - 1, [len(row) - 1]])
                    ok = first_fire < big
                    ff = first_fire[ok]
                    rows, fi = row[ff], start[ff] + ft
                    ei = np.minimum(end[chain_last[ok]] + kt, n_t)
                rec = scorer.score(rows, fi, ei)
                rec.update({"threshold": th, "for_ms": float(f), "keep_firing_for_ms": float(k)})
                records.append(rec)
    df = pl.DataFrame(records).select(SCORE_COLUMNS)
    df = df.with_columns(pl.col("for_ms").cast(pl.Int64), pl.col("keep_firing_for_ms").cast(pl.Int64))
    return df.sort(["threshold", "for_ms", "keep_firing_for_ms"], maintain_order=True, nulls_last=True)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`runs_from_mask` with fewer passes: rows laid end to end, separated by one False."""
    n, m = mask.shape
    if n == 0 or m == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e, e
    flat = np.zeros(n * (m + 1) + 1, dtype=bool)
    flat[1:].reshape(n, m + 1)[:, :m] = mask
    idx = np.flatnonzero(flat[1:] != flat[:-1])
    starts, ends = idx[0::2], idx[1::2]
    row = starts // (m + 1)
    return row, starts - row * (m + 1), ends - row * (m + 1)


class _TickScorer:
    """:func:`score_episodes` on tick indices with per-tick lookups precomputed (the sweep's hot path)."""

    def __init__(self, ticks: np.ndarray, interval_ms: int, inc_s: np.ndarray | None, inc_e: np.ndarray | None,
                 label_match: np.ndarray | None, n_rows: int, *, lead_ms: int, lag_ms: int, beta: float,
                 flap_window_ms: int) -> None:
        self.ticks = ticks
        self.end_time = np.append(ticks, ticks[-1] + interval_ms) if len(ticks) else ticks
        self.range_ms = int(ticks[-1] - ticks[0] + interval_ms) if len(ticks) else 0
        self.outside = _outside_hours(ticks)
        self.inc_s = inc_s if inc_s is not None else np.zeros(0, dtype=np.int64)
        self.inc_e = inc_e if inc_e is not None else np.zeros(0, dtype=np.int64)
        self.lm = label_match if label_match is not None else np.ones((n_rows, len(self.inc_s)), dtype=bool)
        self.beta = beta
        self.flap_window_ms = flap_window_ms
        lo, hi = self.inc_s - lead_ms, self.inc_e + lag_ms
        self.win = (ticks[:, None] >= lo[None, :]) & (ticks[:, None] <= hi[None, :])
        self.any_win: np.ndarray = np.asarray(self.win.any(axis=1))

    def score(self, rows: np.ndarray, fi: np.ndarray, ei: np.ndarray) -> dict[str, float]:
        n = len(rows)
        n_inc = len(self.inc_s)
        fa = self.ticks[fi]
        ra = self.end_time[ei]
        out: dict[str, float] = {"pages": float(n), "pages_per_week": n / max(self.range_ms, 1) * WEEK_MS,
                                 "pages_outside_hours": float(self.outside[fi].sum()),
                                 "firing_ms": float((ra - fa).sum())}
        # episodes come ordered by label set, then time: a flap is a re-fire of the same one
        out["flaps"] = float(((rows[1:] == rows[:-1]) & (fa[1:] - ra[:-1] <= self.flap_window_ms)).sum()) if n > 1 else 0.0
        if not n_inc:
            out.update(_no_incident_scores(n))
            return out
        near = np.flatnonzero(self.any_win[fi])
        hit = self.win[fi[near]] & self.lm[rows[near]]
        out.update(_incident_scores(n, hit, fa[near], self.inc_s, self.beta))
        return out


def pareto_front(scores: pl.DataFrame) -> pl.DataFrame:
    """Grid points no other point beats on recall (↑), pages per week (↓) and median TTD (↓)."""
    if scores.height == 0:
        return scores
    rec = scores["recall"].fill_nan(0.0).fill_null(0.0).to_numpy()
    pages = scores["pages_per_week"].to_numpy()
    ttd = scores["ttd_median_ms"].fill_nan(np.inf).fill_null(np.inf).to_numpy()
    a = np.stack([-rec, pages, ttd], axis=1)
    le = (a[:, None, :] <= a[None, :, :]).all(axis=2)
    lt = (a[:, None, :] < a[None, :, :]).any(axis=2)
    dominated = (le & lt).any(axis=0)
    return scores.filter(pl.Series(~dominated))


def quiet_thresholds(values: np.ndarray, ticks: np.ndarray, op: str | None,
                     busy: Sequence[tuple[int, int]] = ()) -> dict[str, float]:
    """Thresholds from the lhs distribution outside incidents: p99, p99.9 and the max (min for ``<``)."""
    if op is None or values.size == 0:
        return {}
    quiet = np.ones(len(ticks), dtype=bool)
    for s, e in busy:
        quiet &= ~((ticks >= s) & (ticks <= e))
    v = values[:, quiet]
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {}
    if op in ("<", "<="):
        return {"p1": float(np.quantile(v, 0.01)), "p0.1": float(np.quantile(v, 0.001)), "min": float(v.min())}
    return {"p99": float(np.quantile(v, 0.99)), "p99.9": float(np.quantile(v, 0.999)), "max": float(v.max())}


@dataclass
class Recommendation:
    """The chosen grid point of one rule and why."""

    rule: str
    group: str
    current: dict[str, Any]
    chosen: dict[str, Any]
    reason: str
    front: pl.DataFrame
    feasible: int
    suggested_thresholds: dict[str, float] = field(default_factory=dict)
    changed: bool = False
    proposed_expr: str | None = None


def _fmt_ms(ms: float) -> str:
    if ms is None or (isinstance(ms, float) and math.isnan(ms)):
        return "n/a"
    sign = "-" if ms < 0 else ""
    return sign + format_duration(int(round(abs(ms) / 1000.0)) * 1000)


def _describe(p: Mapping[str, Any], has_threshold: bool) -> str:
    parts = []
    if has_threshold:
        parts.append(f"threshold {format_threshold(float(p['threshold']))}")
    parts.append(f"for {_fmt_ms(p['for_ms'])}")
    if p["keep_firing_for_ms"]:
        parts.append(f"keep_firing_for {_fmt_ms(p['keep_firing_for_ms'])}")
    return ", ".join(parts)


def recommend(
    rule_name: str,
    group: str,
    scores: pl.DataFrame,
    current: Mapping[str, Any],
    *,
    max_pages_per_week: float | None = None,
    min_recall: float | None = None,
    max_time_to_detect_ms: int | None = None,
    has_threshold: bool = True,
    suggested: Mapping[str, float] | None = None,
) -> Recommendation:
    """Pick a grid point under the constraints (see the module docstring)."""
    cur_row = scores.filter(
        (pl.col("threshold").is_nan() if current["threshold"] is None or math.isnan(current["threshold"])
         else pl.col("threshold") == current["threshold"])
        & (pl.col("for_ms") == current["for_ms"]) & (pl.col("keep_firing_for_ms") == current["keep_firing_for_ms"])
    )
    cur = cur_row.row(0, named=True) if cur_row.height else dict(current)
    max_inc = scores["incidents"].max() if scores.height else None
    has_incidents = isinstance(max_inc, int | float) and max_inc > 0
    cond = pl.lit(True)
    if max_pages_per_week is not None:
        cond &= pl.col("pages_per_week") <= max_pages_per_week
    if has_incidents and min_recall is not None:
        cond &= pl.col("recall").fill_nan(0.0) >= min_recall
    if has_incidents and max_time_to_detect_ms is not None:
        cond &= pl.col("ttd_median_ms").fill_nan(math.inf) <= max_time_to_detect_ms
    feasible = scores.filter(cond)
    front = pareto_front(feasible if feasible.height else scores)
    cur_th = cur.get("threshold")
    th_scale = max(abs(float(cur_th)), 1e-9) if cur_th is not None and not math.isnan(float(cur_th)) else 1.0

    def distance(df: pl.DataFrame) -> pl.Expr:
        d = (pl.col("for_ms") - cur["for_ms"]).abs() / 60_000 + (pl.col("keep_firing_for_ms") - cur["keep_firing_for_ms"]).abs() / 60_000
        if cur_th is not None and not math.isnan(float(cur_th)):
            d = d + ((pl.col("threshold") - float(cur_th)).abs() / th_scale).fill_nan(0.0)
        return d

    pool = feasible if feasible.height else scores
    pool = pool.with_columns(distance(pool).alias("_dist"))
    if has_incidents:
        # near-ties (F-beta to 2 decimals, pages/week to 0.5) go to the point nearest the rule as
        # written, so a recommendation never churns a rule for a few seconds of detection time
        pool = pool.with_columns((pl.col("f_beta").fill_nan(0.0) * 100).round(0).alias("_fb"),
                                 (pl.col("pages_per_week") * 2).round(0).alias("_pp"))
        chosen = pool.sort(["_fb", "_pp", "_dist", "ttd_median_ms"],
                           descending=[True, False, False, False], nulls_last=True).row(0, named=True)
        chosen.pop("_fb", None)
        chosen.pop("_pp", None)
    else:
        chosen = pool.sort(["_dist", "pages_per_week"]).row(0, named=True)
    chosen.pop("_dist", None)
    changed = any(
        not _same(chosen[k], cur.get(k)) for k in ("threshold", "for_ms", "keep_firing_for_ms")
    )
    what = _describe(chosen, has_threshold)
    if has_incidents:
        stats = (f"recall {int(chosen['detected'])}/{int(chosen['incidents'])}, "
                 f"{chosen['pages_per_week']:.1f} pages/week (now {cur.get('pages_per_week', math.nan):.1f}), "
                 f"median time to detect {_fmt_ms(chosen['ttd_median_ms'])}")
    else:
        stats = (f"no incidents to score against; {chosen['pages_per_week']:.1f} pages/week "
                 f"(now {cur.get('pages_per_week', math.nan):.1f})")
    if not feasible.height:
        reason = f"no grid point meets the constraints; closest: {what}: {stats}"
    elif changed:
        reason = f"{what}: {stats}"
    else:
        reason = f"keep {what}: {stats}"
    return Recommendation(rule=rule_name, group=group, current=cur, chosen=chosen, reason=reason,
                          front=front, feasible=feasible.height, suggested_thresholds=dict(suggested or {}),
                          changed=changed)


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    fa, fb = float(a), float(b)
    if math.isnan(fa) and math.isnan(fb):
        return True
    return fa == fb


def when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _md_table(df: pl.DataFrame) -> str:
    if df.height == 0:
        return "_(none)_\n"
    cols = df.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.iter_rows():
        cells = []
        for v in row:
            if isinstance(v, float):
                v = f"{v:.4g}"
            cells.append(str("" if v is None else v).replace("|", "\\|").replace("\n", " "))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _atomic_write(path: Any, text: str) -> None:
    from pathlib import Path

    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(text)
    tmp.replace(p)
