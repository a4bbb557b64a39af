"""Replay rule groups over history with Prometheus' alert state machine.

Evaluation ticks
----------------
A group with interval ``I`` is evaluated at every multiple of ``I`` (Unix epoch
aligned) inside ``[start, end]``. Prometheus itself shifts each group by a fixed
offset derived from a hash of the group name and file (rules/group.go
``EvalTimestamp``); a backtest cannot know a future server's offset, so it uses
offset 0 (``tick_offset_ms`` shifts it). A group's ``query_offset`` makes every
query run at ``tick - query_offset`` while the alert keeps ``tick`` as its time, as
in rules/group.go. The first tick starts with no alert state (as a server started
at ``start`` without restored ``for`` state).

Rule order
----------
Groups, and the rules of a group, run in file order, each over the whole range: a
rule reads the output of every recording rule before it (at the same tick, as in a
group evaluation), and nothing of those after it, where Prometheus would show it
their previous tick's output. Order recording rules before the rules that read
them, as one does for a server. Offline, alerting rules between two recording rules
are evaluated side by side (``concurrency``); a recording rule waits for all before
it, so the order above holds whatever the concurrency.

Alert state machine (rules/alerting.go ``Eval``)
------------------------------------------------
Per alert label set (result labels without ``__name__`` plus the rule's templated
labels plus ``alertname``): a label set that appears starts *pending* with
``activeAt = tick``; it *fires* at the first tick with ``tick - activeAt >= for``
(so ``for: 0`` fires on its first tick); a pending alert whose label set is missing
at a tick is dropped; a firing one resolves there, unless ``keep_firing_for`` K is
set: then it keeps firing at missing ticks ``t`` with ``t - first_missing < K`` and a
label set that returns in that window continues the same alert. A label set that
returns after resolution is a new alert. With the regular ticks of a group this is
exactly run-length logic on the per-tick presence matrix, which is how it is
computed here (:func:`episodes_from_mask`): ``for`` becomes ``ceil(for / I)`` ticks
and ``keep_firing_for`` bridges gaps of at most ``ceil(K / I)`` missing ticks.
``limit``: a tick where more than ``limit`` alerts would be active fails, and all
alert state of the rule is dropped (exact without ``keep_firing_for``).

Templates
---------
Labels and annotations are expanded per alert by :mod:`vfanalytics.alert_templates`
(``$labels``, ``$value``, ``$externalLabels``, ``humanize`` and friends), with the value
of the evaluation, as rules/alerting.go does; ``render_template`` / ``check_template`` are
re-exported here. A *label* template that uses ``$value`` is rendered once per series with
its first value (Prometheus re-renders it every tick, splitting the alert whenever the
value changes: a rule-design defect the backtest does not reproduce).

Example
-------
>>> import numpy as np
>>> mask = np.array([[1, 1, 1, 0, 1, 1, 1, 1]], dtype=bool)
>>> ep = episodes_from_mask(mask, for_ticks=2, keep_ticks=0)
>>> ep["pending_idx"].tolist(), ep["firing_idx"].tolist(), ep["end_idx"].tolist()
([0, 4], [2, 6], [3, 8])
>>> render_template("{{ $labels.pod }} at {{ $value | humanize }}", {"pod": "p1"}, 1234567.0)
'p1 at 1.235M'
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson
import polars as pl

from vfanalytics.alert_templates import check_template, go_float, humanize, render_template
from vfanalytics.exceptions import QueryError, RuleFileError
from vfanalytics.promql import OfflineEvaluator
from vfanalytics.series import (
    SAMPLE_SCHEMA,
    SERIES_SCHEMA,
    STALE_NAN,
    canonical_labels,
    parse_labels_json,
    series_id,
)

__all__ = [
    "Evaluator",
    "AlertEpisode",
    "BacktestResult",
    "RuleResult",
    "replay",
    "evaluate_alert",
    "evaluate_alert_matrix",
    "OfflineEvaluator",
    "ticks_for",
    "episodes_from_mask",
    "episodes_from_runs",
    "runs_from_mask",
    "frame_to_matrix",
    "alert_state_at",
    "alerts_series",
    "render_template",
    "check_template",
    "go_float",
    "humanize",
    "EPISODE_SCHEMA",
]



# --------------------------------------------------------------------------- state machine


def frame_to_matrix(frame: pl.DataFrame, ticks: np.ndarray, *, with_presence: bool = False) -> Any:
    """Pivot a long ``labels, ts, value`` frame onto ``ticks``: (label sets, values[n, len(ticks)]).

    Missing points are NaN. With ``with_presence`` a third item is the boolean matrix of the
    points that exist (a NaN *result* is a present point: it still makes an alert).
    """
    n_t = len(ticks)
    if frame.height == 0 or n_t == 0:
        empty = np.full((0, n_t), np.nan)
        return ([], empty, np.zeros((0, n_t), dtype=bool)) if with_presence else ([], empty)
    step = int(ticks[1] - ticks[0]) if n_t > 1 else 1
    f = frame.select("labels", "ts", "value").with_columns(
        ((pl.col("ts") - int(ticks[0])) // step).alias("ti"),
        pl.col("labels").rank("dense").cast(pl.Int64).alias("si") - 1,
    ).filter((pl.col("ti") >= 0) & (pl.col("ti") < n_t))
    keys = f.select("si", "labels").unique("si").sort("si")["labels"].to_list()
    si, ti = f["si"].to_numpy(), f["ti"].to_numpy()
    mat = np.full((len(keys), n_t), np.nan)
    mat[si, ti] = f["value"].to_numpy()
    if not with_presence:
        return keys, mat
    present = np.zeros((len(keys), n_t), dtype=bool)
    present[si, ti] = True
    return keys, mat, present


def runs_from_mask(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of True per row: (row, start, end-exclusive), ordered by row then start."""
    n, m = mask.shape
    if n == 0 or m == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e, e
    padded = np.zeros((n, m + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    rows_s, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)
    return rows_s.astype(np.int64), starts.astype(np.int64), ends.astype(np.int64)


def episodes_from_runs(
    row: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    n_ticks: int,
    for_ticks: int,
    keep_ticks: int = 0,
    unbridgeable: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Alert episodes from presence runs (see the module docstring for the semantics).

    Returns arrays ``row, pending_idx, firing_idx (-1: never fired), end_idx`` where
    ``end_idx`` is the tick the alert resolved or was dropped (``n_ticks``: still
    active at the end), plus ``last_present_end`` (first missing tick after the last run)
    and ``first_run`` / ``last_run`` (run indices).
    """
    nr = len(row)
    fires_alone = (end - start) > for_ticks
    if keep_ticks > 0 and nr > 1:
        same = np.zeros(nr, dtype=bool)
        same[1:] = (row[1:] == row[:-1]) & (start[1:] - end[:-1] <= keep_ticks)
        if unbridgeable is not None:
            same[1:] &= ~unbridgeable[1:]
        seg_start_flag = ~same
        seg_id = np.cumsum(seg_start_flag) - 1
        seg_first = np.flatnonzero(seg_start_flag)
        fa_cum = np.concatenate([[0], np.cumsum(fires_alone)])
        # fired runs in [segment start, i-1]
        prior = fa_cum[np.arange(nr)] - fa_cum[seg_first[seg_id]]
        cont = same & (prior > 0)
    else:
        cont = np.zeros(nr, dtype=bool)
    first = np.flatnonzero(~cont)
    last = np.concatenate([first[1:] - 1, [nr - 1]]) if nr else first
    fired = fires_alone[first]
    pending_idx = start[first]
    firing_idx = np.where(fired, pending_idx + for_ticks, -1)
    last_end = end[last]
    end_idx = np.where(fired, last_end + keep_ticks, last_end)
    end_idx = np.minimum(end_idx, n_ticks)
    return {
        "row": row[first],
        "pending_idx": pending_idx,
        "firing_idx": firing_idx,
        "end_idx": end_idx,
        "last_present_end": last_end,
        "first_run": first,
        "last_run": last,
    }


def episodes_from_mask(mask: np.ndarray, for_ticks: int, keep_ticks: int = 0) -> dict[str, np.ndarray]:
    """:func:`episodes_from_runs` over a presence matrix (rows = alert label sets, columns = ticks)."""
    row, start, end = runs_from_mask(mask)
    return episodes_from_runs(row, start, end, mask.shape[1], for_ticks, keep_ticks)


def ceil_ticks(duration_ms: int, interval_ms: int) -> int:
    """Number of ticks a duration spans for ``for`` / ``keep_firing_for`` (``ceil``)."""
    return -(-int(duration_ms) // int(interval_ms)) if duration_ms > 0 else 0


def ticks_for(start_ms: int, end_ms: int, interval_ms: int, offset_ms: int = 0) -> np.ndarray:
    """Evaluation ticks ``k * interval + offset`` inside ``[start, end]``."""
    first = -(-(start_ms - offset_ms) // interval_ms) * interval_ms + offset_ms
    if first > end_ms:
        return np.zeros(0, dtype=np.int64)
    return np.arange(first, end_ms + 1, interval_ms, dtype=np.int64)


# --------------------------------------------------------------------------- replay


class Evaluator(Protocol):
    """What the replay needs: one range query per expression (offline engine or a Prometheus API)."""

    def query_range(self, expr: str, start: int, end: int, step: int) -> pl.DataFrame: ...


class _OverlaySource:
    """A source plus the series recording rules produced so far (visible to later rules)."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.series: list[pl.DataFrame] = []
        self.samples: list[pl.DataFrame] = []
        self._frames: Any = None
        # rules evaluated side by side read through here; a store's connection takes one query at a time
        self._lock = threading.Lock()

    def add(self, series: pl.DataFrame, samples: pl.DataFrame) -> None:
        self.series.append(series)
        self.samples.append(samples)
        self._frames = None

    def select(self, matchers: Sequence[Any], start: int | None = None, end: int | None = None) -> Any:
        with self._lock:
            s, x = self.base.select(matchers, start, end)
            if not self.series:
                return s, x
            if self._frames is None:
                from vfanalytics.promql.source import FrameSource

                self._frames = FrameSource(pl.concat(self.series), pl.concat(self.samples))
            frames = self._frames
        s2, x2 = frames.select(matchers, start, end)
        if s2.height == 0:
            return s, x
        return pl.concat([s.select(s2.columns), s2]), pl.concat([x.select(x2.columns), x2])


def prefetch_rules(source: Any, exprs: Sequence[str], windows: Sequence[tuple[int, int]]) -> Any:
    """``source`` holding in memory, from one read, what evaluating ``exprs`` over ``windows`` reads
    (:class:`~vfanalytics.promql.prefetch.PrefetchedSource`); ``source`` itself when it cannot read
    many selectors at once."""
    if not hasattr(source, "select_many"):
        return source
    from vfanalytics.promql.prefetch import PrefetchedSource

    try:
        return PrefetchedSource.for_expressions(source, exprs, min((w[0] for w in windows), default=0),
                                                max((w[1] for w in windows), default=0))
    except QueryError:
        return source  # a malformed expression: let its own evaluation report it, with file and line


EPISODE_SCHEMA = {
    "rule": pl.Utf8, "group": pl.Utf8, "series_id": pl.UInt64, "labels": pl.Utf8,
    "pending_at": pl.Int64, "firing_at": pl.Int64, "resolved_at": pl.Int64,
    "peak_value": pl.Float64, "value_at_firing": pl.Float64, "annotations": pl.Utf8,
}


@dataclass
class AlertEpisode:
    """One alert from pending to resolved/dropped (``firing_at`` None: never fired;
    ``resolved_at`` None: still active at the end of the range)."""

    rule: str
    group: str
    labels: dict[str, str]
    pending_at: int
    firing_at: int | None
    resolved_at: int | None
    peak_value: float
    annotations: dict[str, str]


@dataclass
class RuleResult:
    """Per alerting rule: the per-tick presence/value matrix of its alert label sets and the episodes."""

    rule: Any
    group: str
    ticks: np.ndarray
    interval_ms: int
    alert_labels: list[dict[str, str]]
    values: np.ndarray  # (n_label_sets, n_ticks), NaN where absent
    present: np.ndarray
    episodes: dict[str, np.ndarray]
    limit_breaches: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass
class BacktestResult:
    """Everything a replay produced."""

    rules: list[RuleResult]
    recorded: tuple[pl.DataFrame, pl.DataFrame] | None
    external_labels: dict[str, str]
    start: int
    end: int
    warnings: list[str] = field(default_factory=list)

    def episodes(self, *, fired_only: bool = False) -> pl.DataFrame:
        """The AlertEpisode table (one row per episode, times in ms)."""
        rows: list[dict[str, Any]] = []
        for rr in self.rules:
            rows.extend(_episode_rows(rr, self.external_labels))
        df = pl.DataFrame(rows, schema=EPISODE_SCHEMA)
        if fired_only:
            df = df.filter(pl.col("firing_at").is_not_null())
        return df.sort(["rule", "pending_at", "labels"])

    def alert_episodes(self) -> list[AlertEpisode]:
        """The episodes as :class:`AlertEpisode` objects."""
        return [AlertEpisode(rule=r["rule"], group=r["group"], labels=parse_labels_json(r["labels"]),
                             pending_at=r["pending_at"], firing_at=r["firing_at"], resolved_at=r["resolved_at"],
                             peak_value=r["peak_value"], annotations=orjson.loads(r["annotations"]))
                for r in self.episodes().iter_rows(named=True)]

    def alerts_series(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """``ALERTS`` and ``ALERTS_FOR_STATE`` as (series_df, samples_df), ready for OpenMetrics export."""
        parts = [alerts_series(rr) for rr in self.rules]
        if not parts:
            return _empty_series(), _empty_samples()
        return pl.concat([p[0] for p in parts]).unique("series_id", keep="first"), pl.concat([p[1] for p in parts])


def _empty_series() -> pl.DataFrame:
    return pl.DataFrame(schema=SERIES_SCHEMA)


def _empty_samples() -> pl.DataFrame:
    return pl.DataFrame(schema=SAMPLE_SCHEMA)


def _render_map(tmpls: Mapping[str, str], labels: Mapping[str, str], value: float,
                ext: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for k, t in tmpls.items():
        try:
            out[k] = render_template(t, labels, value, ext)
        except QueryError as exc:
            out[k] = f"<{exc}>"  # Prometheus puts the error text in place of the expansion
    return out


def _episode_rows(rr: RuleResult, ext: Mapping[str, str]) -> list[dict[str, Any]]:
    ep = rr.episodes
    n_t = len(rr.ticks)
    if len(ep["row"]) == 0:
        return []
    vals = rr.values
    padded = np.concatenate([vals, np.full((vals.shape[0], 1), np.nan)], axis=1).ravel()
    width = n_t + 1
    lo = ep["row"] * width + ep["pending_idx"]
    hi = ep["row"] * width + np.maximum(ep["last_present_end"], ep["pending_idx"] + 1)
    idx = np.stack([lo, hi], axis=1).ravel()
    with np.errstate(invalid="ignore"):
        peaks = np.fmax.reduceat(padded, idx)[::2]
    rows = []
    for i in range(len(ep["row"])):
        r = int(ep["row"][i])
        labels = rr.alert_labels[r]
        fi = int(ep["firing_idx"][i])
        at = fi if fi >= 0 else int(ep["pending_idx"][i])
        v = float(vals[r, at])
        src_labels = {k: v2 for k, v2 in labels.items() if k != "alertname"}
        ann = _render_map(rr.rule.annotations, src_labels, v, ext)
        end = int(ep["end_idx"][i])
        rows.append({
            "rule": rr.rule.name, "group": rr.group, "series_id": series_id(labels),
            "labels": canonical_labels(labels),
            "pending_at": int(rr.ticks[int(ep["pending_idx"][i])]),
            "firing_at": int(rr.ticks[fi]) if fi >= 0 else None,
            "resolved_at": int(rr.ticks[end]) if end < n_t else None,
            "peak_value": float(peaks[i]), "value_at_firing": v if fi >= 0 else None,
            "annotations": orjson.dumps(ann, option=orjson.OPT_SORT_KEYS).decode(),
        })
    return rows


def alert_state_at(rr: RuleResult, tick_index: int, external_labels: Mapping[str, str] | None = None
                   ) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """Active alerts at one tick: (state, labels, annotations rendered with the last value)."""
    ep = rr.episodes
    out = []
    sel = np.flatnonzero((ep["pending_idx"] <= tick_index) & (ep["end_idx"] > tick_index))
    for i in sel:
        r = int(ep["row"][i])
        fi = int(ep["firing_idx"][i])
        state = "firing" if 0 <= fi <= tick_index else "pending"
        row_vals = rr.present[r, : tick_index + 1]
        last = int(np.flatnonzero(row_vals)[-1])
        labels = rr.alert_labels[r]
        src = {k: v for k, v in labels.items() if k != "alertname"}
        out.append((state, labels, _render_map(rr.rule.annotations, src, float(rr.values[r, last]),
                                               external_labels or {})))
    return out


def alerts_series(rr: RuleResult) -> tuple[pl.DataFrame, pl.DataFrame]:
    """ALERTS{alertstate} = 1 and ALERTS_FOR_STATE = activeAt (s) at every active tick, plus
    staleness markers where a series stops, as a rule group writes them."""
    ep = rr.episodes
    n_t = len(rr.ticks)
    series_rows: list[dict[str, Any]] = []
    sid_l, ts_l, val_l = [], [], []
    for i in range(len(ep["row"])):
        labels = rr.alert_labels[int(ep["row"][i])]
        p, f, e = int(ep["pending_idx"][i]), int(ep["firing_idx"][i]), int(ep["end_idx"][i])
        pend_end = f if f >= 0 else e
        spans = [("pending", p, pend_end)]
        if f >= 0:
            spans.append(("firing", f, e))
        for state, a, b in spans + [("__for_state__", p, e)]:
            if b <= a:
                continue
            if state == "__for_state__":
                lab = {**labels, "__name__": "ALERTS_FOR_STATE"}
                value = float(rr.ticks[p] // 1000)
            else:
                lab = {**labels, "__name__": "ALERTS", "alertstate": state}
                value = 1.0
            sid = series_id(lab)
            series_rows.append({"series_id": sid, "metric": lab["__name__"], "labels": canonical_labels(lab)})
            idx = np.arange(a, b)
            sid_l.append(np.full(len(idx), sid, dtype=np.uint64))
            ts_l.append(rr.ticks[idx])
            val_l.append(np.full(len(idx), value))
            if b < n_t:
                sid_l.append(np.array([sid], dtype=np.uint64))
                ts_l.append(rr.ticks[[b]])
                val_l.append(np.array([STALE_NAN]))
    if not series_rows:
        return _empty_series(), _empty_samples()
    samples = pl.DataFrame({"series_id": np.concatenate(sid_l), "ts": np.concatenate(ts_l),
                            "value": np.concatenate(val_l)},
                           schema=SAMPLE_SCHEMA)
    # a label set can have several episodes: keep the last write per (series, ts)
    samples = samples.unique(["series_id", "ts"], keep="last", maintain_order=True).sort(["series_id", "ts"])
    return pl.DataFrame(series_rows, schema=SERIES_SCHEMA).unique("series_id"), samples


def _alert_identity(result_labels: list[str], rule: Any, ext: Mapping[str, str],
                    values: np.ndarray) -> tuple[list[dict[str, str]], np.ndarray]:
    """Alert label sets for each result series (templated rule labels + alertname) and the row map."""
    out: list[dict[str, str]] = []
    for i, lj in enumerate(result_labels):
        lab = parse_labels_json(lj)
        lab.pop("__name__", None)
        present = np.flatnonzero(~np.isnan(values[i]))
        v = float(values[i, present[0]]) if len(present) else math.nan
        for k, t in rule.labels.items():
            try:
                lab[k] = render_template(t, {k2: v2 for k2, v2 in lab.items()}, v, ext)
            except QueryError as exc:
                lab[k] = f"<{exc}>"
        lab = {k: v2 for k, v2 in lab.items() if v2 != ""}
        lab["alertname"] = rule.name
        out.append(lab)
    keys = [canonical_labels(x) for x in out]
    uniq: dict[str, int] = {}
    row_map = np.empty(len(keys), dtype=np.int64)
    merged: list[dict[str, str]] = []
    for i, k in enumerate(keys):
        if k not in uniq:
            uniq[k] = len(merged)
            merged.append(out[i])
        row_map[i] = uniq[k]
    return merged, row_map


def evaluate_alert(rule: Any, group: str, frame: pl.DataFrame, ticks: np.ndarray, interval_ms: int,
                   limit: int = 0, external_labels: Mapping[str, str] | None = None,
                   group_labels: Mapping[str, str] | None = None) -> RuleResult:
    """Run the state machine for one alerting rule over its per-tick query result."""
    keys, vals, present_raw = frame_to_matrix(frame, ticks, with_presence=True)
    return evaluate_alert_matrix(rule, group, keys, vals, present_raw, ticks, interval_ms, limit,
                                 external_labels, group_labels)


def evaluate_alert_matrix(rule: Any, group: str, keys: list[str], vals: np.ndarray, present_raw: np.ndarray,
                          ticks: np.ndarray, interval_ms: int, limit: int = 0,
                          external_labels: Mapping[str, str] | None = None,
                          group_labels: Mapping[str, str] | None = None) -> RuleResult:
    """The state machine over a result matrix (result label sets ``keys`` × ticks)."""
    ext = dict(external_labels or {})
    if group_labels:
        rule = _with_group_labels(rule, group_labels)
    labels, row_map = _alert_identity(keys, rule, ext, vals)
    n = len(labels)
    if n == len(keys) and np.array_equal(row_map, np.arange(n)):
        present, values = present_raw.copy(), vals.copy()
    else:
        present = np.zeros((n, len(ticks)), dtype=bool)
        values = np.full((n, len(ticks)), np.nan)
        for src_row in range(len(keys)):  # per series, not per sample; duplicates keep the first
            dst = row_map[src_row]
            take = present_raw[src_row] & ~present[dst]
            present[dst] |= take
            values[dst, take] = vals[src_row, take]
    breaches = np.zeros(0, dtype=np.int64)
    unbridgeable = None
    if limit > 0 and n:
        breaches = np.flatnonzero(present.sum(axis=0) > limit)
        present[:, breaches] = False
    row, start, end = runs_from_mask(present)
    if len(breaches):
        # a failed tick drops all state: keep_firing_for cannot carry an alert across it
        cum = np.concatenate([[0], np.cumsum(np.isin(np.arange(len(ticks)), breaches))])
        unbridgeable = np.zeros(len(row), dtype=bool)
        unbridgeable[1:] = cum[start[1:]] - cum[end[:-1]] > 0
    ft = ceil_ticks(rule.for_ms, interval_ms)
    kt = ceil_ticks(rule.keep_firing_for_ms, interval_ms)
    ep = episodes_from_runs(row, start, end, len(ticks), ft, kt, unbridgeable)
    if len(breaches) and kt:
        # an alert kept firing into a failed tick is dropped there
        nxt = np.searchsorted(breaches, ep["last_present_end"])
        cap = np.where(nxt < len(breaches), breaches[np.minimum(nxt, len(breaches) - 1)], len(ticks))
        ep["end_idx"] = np.minimum(ep["end_idx"], np.maximum(cap, ep["last_present_end"]))
    return RuleResult(rule=rule, group=group, ticks=ticks, interval_ms=interval_ms, alert_labels=labels,
                      values=values, present=present, episodes=ep, limit_breaches=breaches)


def _with_group_labels(rule: Any, group_labels: Mapping[str, str]) -> Any:
    import copy

    r = copy.copy(rule)
    r.labels = {**dict(group_labels), **rule.labels}
    return r


def _record_frames(rule: Any, frame: pl.DataFrame, ticks: np.ndarray,
                   group_labels: Mapping[str, str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Recording-rule output as stored series (``__name__`` = record, rule labels), with
    staleness markers at the tick after a series disappears."""
    if frame.height == 0:
        return _empty_series(), _empty_samples()
    keys, vals, present = frame_to_matrix(frame, ticks, with_presence=True)
    series_rows, sids = [], []
    for lj in keys:
        lab = parse_labels_json(lj)
        lab.update(group_labels)
        lab.update(rule.labels)
        lab["__name__"] = rule.name
        sid = series_id(lab)
        sids.append(sid)
        series_rows.append({"series_id": sid, "metric": rule.name, "labels": canonical_labels(lab)})
    stale = np.zeros_like(present)
    stale[:, 1:] = present[:, :-1] & ~present[:, 1:]
    out = np.where(stale, STALE_NAN, vals)
    keep = present | stale
    r, c = np.nonzero(keep)
    sid_arr = np.array(sids, dtype=np.uint64)[r]
    samples = pl.DataFrame({"series_id": sid_arr, "ts": ticks[c], "value": out[r, c]},
                           schema=SAMPLE_SCHEMA)
    return pl.DataFrame(series_rows, schema=SERIES_SCHEMA).unique("series_id"), samples


def replay(
    rule_files: Sequence[Any],
    source: Any,
    start: int,
    end: int,
    *,
    evaluation_interval_ms: int = 60_000,
    external_labels: Mapping[str, str] | None = None,
    evaluator: Evaluator | None = None,
    prometheus_version: int = 3,
    tick_offset_ms: int = 0,
    only_rules: Sequence[str] | None = None,
    force_interval_ms: int | None = None,
    concurrency: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> BacktestResult:
    """Evaluate every group of ``rule_files`` at its ticks over ``[start, end]``.

    Parameters
    ----------
    rule_files:
        :class:`vfanalytics.rules.RuleFile` objects.
    source:
        A Source (the store, a FrameSource) for the offline evaluator.
    evaluator:
        Push the queries down instead (anything with ``query_range(expr, start, end, step)``,
        one call per rule expression with step = the group interval). Recorded series are then
        the server's own (a Prometheus running these rules already stores them).
    only_rules:
        Restrict to these rule names (recording rules they need still run).
    force_interval_ms:
        Evaluate every group at this interval whatever its own (promtool unit tests do).
    concurrency:
        Rule expressions evaluated at once. Default: offline, one a core (at most 4: the
        engine's array work runs outside the GIL); pushed down, 1 (one after another, which
        measured fastest against a local server on a busy 2-core machine).

    Example
    -------
    >>> from vfanalytics.promql.source import FrameSource
    >>> from vfanalytics.rules import loads_rule_file
    >>> rf, _ = loads_rule_file("groups: [{name: g, rules: [{alert: Hi, expr: x > 1, for: 1m}]}]")
    >>> src = FrameSource.from_series({"x": (list(range(0, 600_000, 60_000)), [0, 2, 2, 2, 0, 2, 0, 0, 0, 0])})
    >>> res = replay([rf], src, 0, 540_000, evaluation_interval_ms=60_000, prometheus_version=2)
    >>> res.episodes()[["pending_at", "firing_at", "resolved_at"]].rows()
    [(60000, 120000, 240000), (300000, None, 360000)]
    """
    ext = dict(external_labels or {})
    results: list[RuleResult] = []
    rec_series: list[pl.DataFrame] = []
    rec_samples: list[pl.DataFrame] = []
    jobs = []
    for rf in rule_files:
        for g in rf.groups:
            interval = force_interval_ms or g.effective_interval(evaluation_interval_ms)
            ticks = ticks_for(start, end, interval, tick_offset_ms)
            if len(ticks) == 0:
                continue
            for rule in g.rules:
                if only_rules is not None and rule.is_alert and rule.name not in only_rules:
                    continue
                jobs.append((rf, g, rule, interval, ticks))

    overlay = None
    if evaluator is None:
        windows = [(int(j[4][0]) - j[1].query_offset_ms, int(j[4][-1]) - j[1].query_offset_ms) for j in jobs]
        overlay = _OverlaySource(prefetch_rules(source, [j[2].expr for j in jobs], windows))
    ev: Evaluator = evaluator or OfflineEvaluator(overlay, prometheus_version=prometheus_version)

    def run_query(job: tuple[Any, Any, Any, int, np.ndarray]) -> pl.DataFrame:
        rf, g, rule, interval, ticks = job
        qoff = g.query_offset_ms
        try:
            return ev.query_range(rule.expr, int(ticks[0]) - qoff, int(ticks[-1]) - qoff, interval)
        except QueryError as exc:
            raise type(exc)(f"{rf.path}:{rule.expr_line}: rule {rule.name!r}: {exc}") from None

    workers = concurrency if concurrency is not None else 1 if evaluator is not None else min(4, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 and len(jobs) > 1 else None
    pending: dict[int, Future[pl.DataFrame]] = {}

    def submit_from(first: int) -> None:
        # Pushed down, every query is independent (the server stores recorded series itself).
        # Offline, a recording rule's output must be in the overlay before any later rule runs
        # and after every earlier one has: alerting rules run side by side up to the next
        # recording rule, which runs alone, in order.
        for k in range(first, len(jobs)):
            if evaluator is None and not jobs[k][2].is_alert:
                break
            pending[k] = pool.submit(run_query, jobs[k])  # type: ignore[union-attr]

    try:
        if pool is not None:
            submit_from(0)
        for i, job in enumerate(jobs):
            rf, g, rule, interval, ticks = job
            fut = pending.pop(i, None)
            frame = fut.result() if fut is not None else run_query(job)
            if g.query_offset_ms:
                frame = frame.with_columns(pl.col("ts") + g.query_offset_ms)
            if rule.is_alert:
                results.append(evaluate_alert(rule, g.name, frame, ticks, interval, g.limit, ext, g.labels))
            else:
                s, x = _record_frames(rule, frame, ticks, g.labels)
                rec_series.append(s)
                rec_samples.append(x)
                if overlay is not None:
                    if s.height:
                        overlay.add(s, x)
                    if pool is not None:
                        submit_from(i + 1)
            if progress is not None:
                progress(1)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    recorded = (pl.concat(rec_series), pl.concat(rec_samples)) if rec_series else None
    return BacktestResult(rules=results, recorded=recorded, external_labels=ext, start=start, end=end)


def check_rule_file_templates(rf: Any) -> None:
    """Raise :class:`RuleFileError` for the first template that cannot be expanded."""
    for r in rf.rules():
        for mapping in (r.labels, r.annotations):
            for k, t in mapping.items():
                problem = check_template(t)
                if problem:
                    raise RuleFileError(f"rule {r.name!r}: {k}: template: {problem}", rf.path, r.line)


def summary_table(result: BacktestResult, incidents: pl.DataFrame | None = None, *,
                  lead_ms: int = 300_000, lag_ms: int = 0) -> pl.DataFrame:
    """Per alerting rule: episodes, pages, time firing, and incident scores when incidents are given."""
    from vfanalytics.incidents import matcher_mask, relevant_to
    from vfanalytics.tuning import score_episodes

    rows = []
    for rr in result.rules:
        ep = rr.episodes
        fired = ep["firing_idx"] >= 0
        end_time = np.append(rr.ticks, rr.ticks[-1] + rr.interval_ms) if len(rr.ticks) else rr.ticks
        fa = rr.ticks[ep["firing_idx"][fired]] if len(rr.ticks) else np.zeros(0, np.int64)
        ra = end_time[ep["end_idx"][fired]] if len(rr.ticks) else np.zeros(0, np.int64)
        inc = relevant_to(incidents, rr.rule.name) if incidents is not None and incidents.height else None
        kw: dict[str, Any] = {}
        if inc is not None and inc.height:
            kw = {"incident_start": inc["start_ms"].to_numpy(), "incident_end": inc["end_ms"].to_numpy(),
                  "label_match": matcher_mask(inc["matchers"].fill_null("").to_list(), rr.alert_labels)}
        else:
            kw = {"incident_start": np.zeros(0, np.int64), "incident_end": np.zeros(0, np.int64),
                  "label_match": np.zeros((len(rr.alert_labels), 0), bool)}
        s = score_episodes(ep["row"][fired], fa, ra, range_ms=int(result.end - result.start) or 1,
                           lead_ms=lead_ms, lag_ms=lag_ms, **kw)
        rows.append({"group": rr.group, "rule": rr.rule.name, "label_sets": len(rr.alert_labels),
                     "episodes": int(len(ep["row"])), "pending_only": int((~fired).sum()), **s})
    return pl.DataFrame(rows)


def write_backtest_exports(result: BacktestResult, out_dir: Any, *, incidents: pl.DataFrame | None = None) -> list[Any]:
    """Write episodes and the per-rule summary as CSV / JSON / Markdown, and ALERTS as OpenMetrics."""
    import json
    from pathlib import Path

    from vfanalytics.openmetrics import write_openmetrics
    from vfanalytics.tuning import _atomic_write, _md_table

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eps = result.episodes()
    summary = summary_table(result, incidents)
    eps.write_csv(out / "episodes.csv")
    (out / "episodes.json").write_text(json.dumps(eps.to_dicts(), indent=2, default=str))
    summary.write_csv(out / "summary.csv")
    (out / "summary.json").write_text(json.dumps(summary.to_dicts(), indent=2, default=str))
    md = ["# Backtest", "", "## Rules", "", _md_table(summary), "## Fired episodes", "",
          _md_table(eps.filter(pl.col("firing_at").is_not_null()).select(
              "rule", "labels", "pending_at", "firing_at", "resolved_at", "peak_value"))]
    _atomic_write(out / "backtest.md", "\n".join(md))
    series, samples = result.alerts_series()
    tmp = out / ".alerts.om.tmp"
    write_openmetrics(series, samples, tmp)
    tmp.replace(out / "alerts.om")
    return [out / n for n in ("episodes.csv", "episodes.json", "summary.csv", "summary.json", "backtest.md",
                              "alerts.om")]
