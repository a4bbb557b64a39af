"""``vfa tune`` end to end: per rule, evaluate once, sweep, score, recommend, lint; then export.

:func:`tune` runs :func:`tune_rule` over every alerting rule (recording rules first, so
alert expressions can read their output). Per rule the lhs of its top-level comparison is
evaluated once (:mod:`vfanalytics.tuning` does the rest on arrays); the lint findings
(:mod:`vfanalytics.lint`) that propose a corrected expression get the same treatment, and
the backtest figures confirm or refute each finding. :func:`write_exports` writes:

* ``recommended-rules.yml`` — the input with thresholds and durations changed (and, where a
  confirmed lint finding's expression backtests at least as well, that expression, marked
  with a comment); comments, key order and untouched formatting are kept; it passes
  ``promtool check rules``;
* ``recommended-rules.diff`` — a unified diff against the input;
* ``recommended-rules.test.yml`` — promtool unit tests pinning the recommended alerts on
  windows of incident data (:func:`vfanalytics.promtool_tests.pinning_tests`);
* ``recommendations.{csv,json,md}``, ``sweep.csv``, ``pareto.{csv,json}``, ``lint.csv``.

Example
-------
>>> from vfanalytics.promql import FrameSource
>>> from vfanalytics.rules import loads_rule_file
>>> rf, _ = loads_rule_file("groups: [{name: g, rules: [{alert: Hi, expr: x > 1, for: 1m}]}]")
>>> src = FrameSource.from_series({"x": (list(range(0, 3_600_000, 60_000)), [0.0] * 30 + [5.0] * 30)})
>>> res = tune([rf], src, 0, 3_540_000, evaluation_interval_ms=60_000, prometheus_version=2)
>>> res.table()["rule"].to_list()
['Hi']
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from vfanalytics.timeutil import format_duration
from vfanalytics.tuning import (
    Recommendation,
    SweepGrid,
    ThresholdSplit,
    _atomic_write,
    _fmt_ms,
    _md_table,
    compare,
    default_grid,
    quiet_thresholds,
    recommend,
    replace_threshold,
    split_threshold,
    sweep,
    when,
)

__all__ = ["RuleTuning", "TuneOptions", "TuneResult", "tune_rule", "tune", "recommended_document", "write_exports"]


# --------------------------------------------------------------------------- one rule, end to end


@dataclass
class RuleTuning:
    """A rule's sweep, recommendation, lint findings and current-config backtest."""

    rule: Any
    group: str
    file: str
    interval_ms: int
    split: ThresholdSplit | None
    scores: pl.DataFrame
    recommendation: Recommendation
    current: Any  # backtest.RuleResult of the rule as written
    findings: list[Any] = field(default_factory=list)
    proposed: RuleTuning | None = None
    adopt_proposed: bool = False
    evidence: dict[str, Any] = field(default_factory=dict)
    result_series: int = 0

    @property
    def final(self) -> RuleTuning:
        return self.proposed if self.adopt_proposed and self.proposed is not None else self


@dataclass
class TuneOptions:
    """Constraints and scoring parameters of ``vfa tune``."""

    max_pages_per_week: float | None = None
    min_recall: float | None = None
    max_time_to_detect_ms: int | None = None
    lead_ms: int = 300_000
    lag_ms: int = 0
    beta: float = 1.0
    flap_window_ms: int = 1_800_000
    n_thresholds: int = 40
    fors_ms: Sequence[int] | None = None
    keeps_ms: Sequence[int] | None = None


def tune_rule(rule: Any, group: Any, path: str, evaluator: Any, start: int, end: int, *,
              evaluation_interval_ms: int, incidents: pl.DataFrame | None,
              options: TuneOptions | None = None, external_labels: Mapping[str, str] | None = None,
              lint: bool = True) -> RuleTuning:
    """Evaluate a rule's lhs once, sweep the grid, score, recommend, and try a lint-proposed fix."""
    from vfanalytics.backtest import (
        _alert_identity,
        evaluate_alert,
        evaluate_alert_matrix,
        frame_to_matrix,
        ticks_for,
    )
    from vfanalytics.incidents import matcher_mask, relevant_to

    opt = options or TuneOptions()
    ext = dict(external_labels or {})
    interval = group.effective_interval(evaluation_interval_ms)
    ticks = ticks_for(start, end, interval)
    qoff = group.query_offset_ms
    split = split_threshold(rule.expr)
    rule_for_identity = rule
    if group.labels:
        import copy

        rule_for_identity = copy.copy(rule)
        rule_for_identity.labels = {**group.labels, **rule.labels}
    if split is not None and split.op not in ("==", "!="):
        frame = evaluator.query_range(split.lhs, int(ticks[0]) - qoff, int(ticks[-1]) - qoff, interval)
        if qoff:
            frame = frame.with_columns(pl.col("ts") + qoff)
        keys, values = frame_to_matrix(frame, ticks)
        mask = compare(values, split.op, split.threshold)
        current = evaluate_alert_matrix(rule, group.name, keys, np.where(mask, values, np.nan), mask, ticks,
                                        interval, group.limit, ext, group.labels)
        presence = None
        op: str | None = split.op
        threshold: float | None = split.threshold
        result_series = int(mask.any(axis=1).sum())
    else:
        frame = evaluator.query_range(rule.expr, int(ticks[0]) - qoff, int(ticks[-1]) - qoff, interval)
        if qoff:
            frame = frame.with_columns(pl.col("ts") + qoff)
        current = evaluate_alert(rule, group.name, frame, ticks, interval, group.limit, ext, group.labels)
        keys = []
        values = current.values
        presence = current.present
        op, threshold = None, (split.threshold if split is not None else None)
        result_series = int(presence.any(axis=1).sum())
    if presence is None:
        label_sets, row_map = _alert_identity(keys, rule_for_identity, ext, values)
        row_labels = [label_sets[i] for i in row_map]
    else:
        row_labels = current.alert_labels
    inc = relevant_to(incidents, rule.name) if incidents is not None and incidents.height else None
    inc_s: np.ndarray | None
    inc_e: np.ndarray | None
    lm: np.ndarray | None
    if inc is not None and inc.height:
        inc_s = inc["start_ms"].to_numpy()
        inc_e = inc["end_ms"].to_numpy()
        lm = matcher_mask(inc["matchers"].fill_null("").to_list(), row_labels)
        busy = list(zip(inc_s.tolist(), inc_e.tolist(), strict=True))
    else:
        inc_s = inc_e = lm = None
        busy = []
    grid = default_grid(values if op else None, op, threshold, rule.for_ms, rule.keep_firing_for_ms,
                        n_thresholds=opt.n_thresholds, fors=opt.fors_ms, keeps=opt.keeps_ms)
    if op is None:
        grid = SweepGrid([math.nan], grid.fors, grid.keeps)
    scores = sweep(values, ticks, grid, op, interval_ms=interval, incident_start=inc_s, incident_end=inc_e,
                   label_match=lm, lead_ms=opt.lead_ms, lag_ms=opt.lag_ms, beta=opt.beta,
                   flap_window_ms=opt.flap_window_ms, presence=presence)
    cur = {"threshold": threshold if op else math.nan, "for_ms": rule.for_ms,
           "keep_firing_for_ms": rule.keep_firing_for_ms}
    rec = recommend(rule.name, group.name, scores, cur, max_pages_per_week=opt.max_pages_per_week,
                    min_recall=opt.min_recall, max_time_to_detect_ms=opt.max_time_to_detect_ms,
                    has_threshold=op is not None, suggested=quiet_thresholds(values, ticks, op, busy))
    firing_ticks = np.zeros(len(ticks), dtype=bool)
    ep = current.episodes
    for i in np.flatnonzero(ep["firing_idx"] >= 0):
        firing_ticks[ep["firing_idx"][i]: ep["end_idx"][i]] = True
    cur_row = rec.current
    evidence = {
        "result_series": result_series,
        "lhs_series": int(values.shape[0]),
        "firing_fraction": float(firing_ticks.mean()) if len(ticks) else 0.0,
        "pages_per_week": float(cur_row.get("pages_per_week", 0.0) or 0.0),
        "pages": float(cur_row.get("pages", 0.0) or 0.0),
        "flaps": float(cur_row.get("flaps", 0.0) or 0.0),
        "recall": cur_row.get("recall"),
    }
    rt = RuleTuning(rule=rule, group=group.name, file=path, interval_ms=interval, split=split, scores=scores,
                    recommendation=rec, current=current, evidence=evidence, result_series=result_series)
    if lint:
        from vfanalytics.lint import lint_rule

        rt.findings = lint_rule(rule, path)
        fix = next((f for f in sorted(rt.findings, key=lambda f: f.code) if f.proposed_expr), None)
        if fix is not None:
            import copy

            alt = copy.copy(rule)
            alt.expr = fix.proposed_expr
            try:
                rt.proposed = tune_rule(alt, group, path, evaluator, start, end,
                                        evaluation_interval_ms=evaluation_interval_ms, incidents=incidents,
                                        options=opt, external_labels=ext, lint=False)
            except Exception as exc:  # a proposal the evaluator cannot run stays a finding only
                fix.evidence = f"proposed expression not backtested: {exc}"
                rt.proposed = None
            if rt.proposed is not None:
                p = rt.proposed.recommendation.chosen
                evidence["proposed_pages_per_week"] = float(p["pages_per_week"])
                evidence["proposed_recall"] = p.get("recall")
                evidence["proposed_f_beta"] = p.get("f_beta")
                evidence["tuned_f_beta"] = rec.chosen.get("f_beta")
                evidence["tuned_pages_per_week"] = float(rec.chosen["pages_per_week"])
        from vfanalytics.lint import confirm

        for f in rt.findings:
            confirm(f, evidence)
        if fix is not None and rt.proposed is not None and fix.confirmed:
            o, p = rec.chosen, rt.proposed.recommendation.chosen
            o_rec = o.get("recall") if o.get("recall") is not None and not _isnan(o.get("recall")) else None
            p_rec = p.get("recall") if p.get("recall") is not None and not _isnan(p.get("recall")) else None
            rt.adopt_proposed = rt.proposed.result_series > 0 and (o_rec is None or p_rec is None or p_rec >= o_rec)
    return rt


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


# --------------------------------------------------------------------------- all rules and exports


@dataclass
class TuneResult:
    """Every alerting rule's tuning, plus what is needed to write the exports."""

    items: list[RuleTuning]
    rule_files: list[Any]
    start: int
    end: int
    evaluation_interval_ms: int
    external_labels: dict[str, str]
    incidents: pl.DataFrame | None
    source: Any = None

    def table(self) -> pl.DataFrame:
        """One row per rule: current and recommended settings and scores, lint verdicts."""
        rows = []
        for it in self.items:
            fin = it.final
            c, ch = it.recommendation.current, fin.recommendation.chosen
            rows.append({
                "file": it.file, "group": it.group, "rule": it.rule.name,
                "expr": it.rule.expr, "recommended_expr": _recommended_expr(it),
                "threshold": _f(c.get("threshold")), "recommended_threshold": _f(ch.get("threshold")),
                "for": _fmt_ms(c["for_ms"]), "recommended_for": _fmt_ms(ch["for_ms"]),
                "keep_firing_for": _fmt_ms(c["keep_firing_for_ms"]),
                "recommended_keep_firing_for": _fmt_ms(ch["keep_firing_for_ms"]),
                "pages_per_week": _f(c.get("pages_per_week")),
                "recommended_pages_per_week": _f(ch.get("pages_per_week")),
                "recall": _f(c.get("recall")), "recommended_recall": _f(ch.get("recall")),
                "precision": _f(c.get("precision")), "recommended_precision": _f(ch.get("precision")),
                "ttd_median": _fmt_ms(_f(ch.get("ttd_median_ms")) or math.nan),
                "pages_outside_hours": _f(ch.get("pages_outside_hours")), "flaps": _f(ch.get("flaps")),
                "incidents": _f(ch.get("incidents")),
                "suggested_thresholds": ", ".join(f"{k}={v:.4g}" for k, v in
                                                  fin.recommendation.suggested_thresholds.items()),
                "lint": ";".join(f"{f.code}{'' if f.confirmed is None else ('+' if f.confirmed else '-')}"
                                 for f in it.findings),
                "reason": ("expression replaced (lint " + ",".join(f.code for f in it.findings if f.proposed_expr)
                           + " confirmed); " if it.adopt_proposed else "") + fin.recommendation.reason,
            })
        return pl.DataFrame(rows)

    def findings(self) -> pl.DataFrame:
        rows = [f.as_dict() for it in self.items for f in it.findings]
        cols = ["file", "line", "group", "rule", "code", "severity", "message", "proposed_expr", "confirmed",
                "evidence"]
        return pl.DataFrame(rows, schema={c: (pl.Int64 if c == "line" else pl.Boolean if c == "confirmed"
                                              else pl.Utf8) for c in cols})

    def sweep_table(self) -> pl.DataFrame:
        parts = []
        for it in self.items:
            for tag, t in (("current_expr", it), ("proposed_expr", it.proposed)):
                if t is not None:
                    parts.append(t.scores.with_columns(pl.lit(it.rule.name).alias("rule"),
                                                       pl.lit(tag).alias("expression")))
        return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()

    def pareto_table(self) -> pl.DataFrame:
        parts = [it.final.recommendation.front.with_columns(pl.lit(it.rule.name).alias("rule"))
                 for it in self.items if it.final.recommendation.front.height]
        return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()


def _f(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _recommended_expr(it: RuleTuning) -> str:
    fin = it.final
    ch = fin.recommendation.chosen
    expr = fin.rule.expr
    if fin.split is not None and fin.split.op not in ("==", "!=") and _f(ch.get("threshold")) is not None:
        expr = replace_threshold(expr, float(ch["threshold"]))
    return expr


def tune(rule_files: Sequence[Any], source: Any, start: int, end: int, *,
         incidents: pl.DataFrame | None = None, evaluation_interval_ms: int = 60_000,
         external_labels: Mapping[str, str] | None = None, evaluator: Any = None,
         prometheus_version: int = 3, options: TuneOptions | None = None,
         progress: Any = None, concurrency: int | None = None) -> TuneResult:
    """Tune every alerting rule of ``rule_files`` over ``[start, end]``.

    Recording rules run first (offline) so alert expressions can read their output.
    ``concurrency``: rules tuned at once (default: offline, one a core up to 4; pushed down, 1).
    """
    from vfanalytics.backtest import OfflineEvaluator, _OverlaySource, prefetch_rules, replay
    from vfanalytics.promql.prefetch import PrefetchedSource

    ev = evaluator
    # every rule's lhs and expression read the same selectors: one read of the store for all (the
    # recording rules' replay and the lint's dead-selector check read them too, also when the
    # queries are pushed down)
    src = prefetch_rules(source, [r.expr for rf in rule_files for r in rf.rules()],
                         [(start - max((g.query_offset_ms for rf in rule_files for g in rf.groups), default=0), end)])
    if ev is None:
        has_records = any(not r.is_alert for rf in rule_files for r in rf.rules())
        if has_records:
            res = replay(list(rule_files), src, start, end, evaluation_interval_ms=evaluation_interval_ms,
                         external_labels=external_labels, prometheus_version=prometheus_version, only_rules=[])
            src = _OverlaySource(src)
            if res.recorded is not None:
                src.add(*res.recorded)
        ev = OfflineEvaluator(src, prometheus_version=prometheus_version)

    def tune_one(rf: Any, g: Any, r: Any) -> RuleTuning:
        it = tune_rule(r, g, rf.path, ev, start, end, evaluation_interval_ms=evaluation_interval_ms,
                       incidents=incidents, options=options, external_labels=external_labels)
        if source is not None:
            _dead_selectors(it, src, start, end)
        return it

    jobs = [(rf, g, r) for rf in rule_files for g in rf.groups for r in g.rules if r.is_alert]
    # rules are tuned side by side (the array work runs outside the GIL) when the source takes calls
    # from several threads: the prefetched one serialises what it passes on to the store's connection
    workers = 1
    if src is None or isinstance(src, PrefetchedSource | _OverlaySource):
        workers = concurrency or (1 if evaluator is not None else min(4, os.cpu_count() or 1))
    items = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(tune_one, *job) for job in jobs]
        try:
            for fut in futures:
                items.append(fut.result())
                if progress is not None:
                    progress(1)
        finally:
            for fut in futures:
                fut.cancel()
    return TuneResult(items, list(rule_files), start, end, evaluation_interval_ms, dict(external_labels or {}),
                      incidents, source)


def _dead_selectors(it: RuleTuning, source: Any, start: int, end: int) -> None:
    """VFA004 (needs data): selectors of the rule that match no series in the range."""
    from vfanalytics.lint import Finding, _fmt_selector, confirm, selectors

    try:
        sels = selectors(it.rule.expr)
    except Exception:
        return
    dead = 0
    for ms in sels:
        series, _ = source.select(ms, start, end)
        if series.height == 0:
            dead += 1
            f = Finding(it.file, it.rule.expr_line or it.rule.line, it.group, it.rule.name, "VFA004", "error",
                        f"selector {_fmt_selector(ms)} matches no series in the range")
            it.findings.append(confirm(f, it.evidence))
    if not dead and sels and it.evidence.get("lhs_series", 0) == 0:
        f = Finding(it.file, it.rule.expr_line or it.rule.line, it.group, it.rule.name, "VFA007", "error",
                    "every selector matches data but the expression returns nothing: the label sets of a "
                    "binary operation do not match (use on(...) / ignoring(...))", confirmed=True,
                    evidence="the expression returned no series over the whole range")
        it.findings.append(f)


def recommended_document(result: TuneResult, rf: Any) -> str:
    """The rule file with recommended thresholds and durations (and adopted expressions)."""
    from vfanalytics.rules import loads_rule_file

    fresh, _ = loads_rule_file(rf.text, rf.path)
    by_key = {(it.group, it.rule.name): it for it in result.items if it.file == rf.path}
    for g in fresh.groups:
        for r in g.rules:
            it = by_key.get((g.name, r.name))
            if it is None:
                continue
            fin = it.final
            ch = fin.recommendation.chosen
            new_expr = _recommended_expr(it)
            if new_expr != r.expr:
                _set_scalar(fresh, r, "expr", new_expr)
                if it.adopt_proposed:
                    codes = ",".join(f.code for f in it.findings if f.proposed_expr and f.confirmed)
                    r.node.yaml_add_eol_comment(f"vfa: expression replaced ({codes}), backtested", "expr")
            if int(ch["for_ms"]) != r.for_ms or (r.has_for and int(ch["for_ms"]) != r.for_ms):
                fresh.set_rule_field(r, "for", format_duration(int(ch["for_ms"])))
            if int(ch["keep_firing_for_ms"]) != r.keep_firing_for_ms:
                fresh.set_rule_field(r, "keep_firing_for", format_duration(int(ch["keep_firing_for_ms"])))
    return fresh.dumps()


def _set_scalar(rf: Any, rule: Any, key: str, value: str) -> None:
    old = rule.node.get(key)
    from ruamel.yaml.scalarstring import ScalarString

    if isinstance(old, ScalarString):
        value = type(old)(value)
    rf.set_rule_field(rule, key, value)


def _without_value_annotations(text: str) -> str:
    """The rule file with every annotation that renders ``$value`` removed (comments and order kept)."""
    import io

    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    doc = yaml.load(text)
    for group in doc.get("groups") or []:
        for rule in group.get("rules") or []:
            ann = rule.get("annotations")
            if not ann:
                continue
            for key in [k for k, v in ann.items() if "$value" in str(v) or ".Value" in str(v)]:
                del ann[key]
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return buf.getvalue()


def write_exports(result: TuneResult, out_dir: Any, *, pin_tests: bool = True) -> list[Any]:
    """Write recommended rules, diff, promtool pinning tests, and CSV/JSON/Markdown tables."""
    import difflib
    import json
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    many = len(result.rule_files) > 1
    for rf in result.rule_files:
        stem = f"recommended-{Path(rf.path).stem}" if many else "recommended-rules"
        text = recommended_document(result, rf)
        target = out / f"{stem}.yml"
        _atomic_write(target, text)
        diff = "".join(difflib.unified_diff(rf.text.splitlines(True), text.splitlines(True),
                                            fromfile=rf.path, tofile=str(target)))
        _atomic_write(out / f"{stem}.diff", diff)
        written += [target, out / f"{stem}.diff"]
        if pin_tests and result.source is not None:
            from vfanalytics.promtool_tests import pinning_tests, write_test_file
            from vfanalytics.rules import loads_rule_file

            # promtool 2.42 loads input_series in Go map order, so a sum over three or more series
            # is added in a different order on each run and $value differs in its last digit from
            # run to run: the pinned copy leaves out annotations that render $value
            pin_path = out / f"{stem}.pinned.yml"
            _atomic_write(pin_path, _without_value_annotations(text))
            rec_file, errors = loads_rule_file(pin_path.read_text(), str(pin_path))
            if errors:
                raise errors[0]
            tests = pinning_tests(rec_file, result, result.source)
            test_path = out / f"{stem}.test.yml"
            write_test_file(test_path, [pin_path.name], tests, evaluation_interval_ms=result.evaluation_interval_ms,
                            header="Generated by vfa tune: pins the recommended rules' behaviour on incident data\n"
                                   f"({pin_path.name} is {target.name} without the annotations that render $value,\n"
                                   "which promtool 2.42 computes in a run-dependent summation order).\n"
                                   "Run: promtool test rules " + test_path.name)
            written += [pin_path, test_path]
    table = result.table()
    findings = result.findings()
    table.write_csv(out / "recommendations.csv")
    (out / "recommendations.json").write_text(json.dumps(table.to_dicts(), indent=2, default=str))
    findings.write_csv(out / "lint.csv")
    sweep_df = result.sweep_table()
    if sweep_df.height:
        sweep_df.write_csv(out / "sweep.csv")
        written.append(out / "sweep.csv")
    pareto = result.pareto_table()
    if pareto.height:
        pareto.write_csv(out / "pareto.csv")
        (out / "pareto.json").write_text(json.dumps(pareto.to_dicts(), indent=2, default=str))
        written += [out / "pareto.csv", out / "pareto.json"]
    md = ["# Alert tuning", "",
          f"Range {when(result.start)} – {when(result.end)} UTC, evaluation interval "
          f"{format_duration(result.evaluation_interval_ms)}, "
          f"{0 if result.incidents is None else result.incidents.height} incidents.", "",
          "## Recommendations", "",
          _md_table(table.select("group", "rule", "recommended_threshold", "recommended_for",
                                 "recommended_keep_firing_for", "pages_per_week", "recommended_pages_per_week",
                                 "recall", "recommended_recall", "lint", "reason")),
          "## Lint findings (+ confirmed by the backtest, - not confirmed)", "",
          _md_table(findings.select("rule", "code", "confirmed", "evidence", "message")) if findings.height
          else "_(none)_\n"]
    _atomic_write(out / "recommendations.md", "\n".join(md))
    written += [out / "recommendations.csv", out / "recommendations.json", out / "lint.csv", out / "recommendations.md"]
    return written
