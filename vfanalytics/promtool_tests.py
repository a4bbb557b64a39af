"""promtool's rule unit-test format: run it (``vfa rules test``) and write it.

A test file names ``rule_files`` (relative to the test file, globs allowed),
``evaluation_interval`` (default 1m), ``group_eval_order`` and ``tests``; each test
has ``interval`` (default: the evaluation interval), ``input_series`` (``series`` in
PromQL notation, ``values`` in the expanding notation ``1+2x3 _ stale``, see
:mod:`vfanalytics.promql.notation`), ``alert_rule_test`` (``eval_time``,
``alertname``, ``exp_alerts`` of ``exp_labels`` / ``exp_annotations``),
``promql_expr_test`` (``expr``, ``eval_time``, ``exp_samples``) and
``external_labels``.

Evaluation follows cmd/promtool/unittest.go: samples start at time 0; every group
is evaluated at ``0, I, 2I, … ≤ max eval_time`` with ``I = evaluation_interval``
(whatever the group's own interval); an ``alert_rule_test`` at ``eval_time`` compares
the *firing* alerts (labels plus ``alertname``, and annotations) after the evaluation
at the last tick ``≤ eval_time``, as unordered lists. The expressions run in the
evaluator's Prometheus 2.x mode by default, matching promtool 2.42.

:func:`write_test_file` builds such files from predictions (the differential tests
and ``vfa tune``'s pinning tests use it).

Example
-------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "r.yml").write_text("groups: [{name: g, rules: [{alert: Hi, expr: x > 1, for: 2m}]}]")
>>> _ = (d / "t.yml").write_text('''rule_files: [r.yml]
... tests:
...   - input_series: [{series: 'x{a="1"}', values: '0 5 5 5 5'}]
...     alert_rule_test:
...       - {eval_time: 2m, alertname: Hi}
...       - {eval_time: 3m, alertname: Hi, exp_alerts: [{exp_labels: {a: "1"}}]}
... ''')
>>> [r.passed for r in run_test_file(d / "t.yml")]
[True]
"""

from __future__ import annotations

import glob
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from vfanalytics.backtest import alert_state_at, replay
from vfanalytics.exceptions import RuleFileError, TimeParseError, VfaError
from vfanalytics.rules import RuleFile, load_rule_file, parse_prom_duration
from vfanalytics.series import SAMPLE_SCHEMA, SERIES_SCHEMA, canonical_labels, parse_labels_json, series_id

__all__ = ["TestResult", "run_test_file", "load_input_series", "predict_alerts", "write_test_file",
           "format_labels", "series_values_text"]


@dataclass
class TestResult:
    """The verdict of one test group of a file."""

    file: str
    name: str
    passed: bool
    failures: list[str] = field(default_factory=list)


def _yaml_load(path: Path) -> Any:
    try:
        return YAML(typ="rt").load(path.read_text())
    except OSError as exc:
        raise RuleFileError(f"cannot read: {exc.strerror}", str(path)) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise RuleFileError(f"invalid YAML: {exc.problem}", str(path), mark.line + 1 if mark else None) from None


def _dur(value: Any, what: str, path: Path, node: Any, key: str) -> int:
    try:
        return parse_prom_duration(value)
    except TimeParseError as exc:
        line = node.lc.value(key)[0] + 1 if hasattr(node, "lc") else None
        raise RuleFileError(f"{what}: {exc}", str(path), line) from None


def load_input_series(items: Sequence[Any], interval_ms: int, path: Path | None = None) -> Any:
    """``input_series`` entries as a FrameSource (samples from time 0)."""
    from vfanalytics.promql.notation import parse_series_line, series_samples
    from vfanalytics.promql.source import FrameSource

    series_rows, sids, tss, vals = [], [], [], []
    for item in items or []:
        try:
            labels, _ = parse_series_line(str(item["series"]) + " 0")
            ts, v = series_samples(str(item.get("values", "") or ""), start_ms=0, interval_ms=interval_ms)
        except (VfaError, KeyError, ValueError) as exc:
            line = item.lc.line + 1 if hasattr(item, "lc") else None
            raise RuleFileError(f"input_series: {exc}", str(path) if path else None, line) from None
        sid = series_id(labels)
        series_rows.append({"series_id": sid, "metric": labels.get("__name__", ""), "labels": canonical_labels(labels)})
        sids.append(np.full(len(ts), sid, dtype=np.uint64))
        tss.append(ts)
        vals.append(v)
    series = pl.DataFrame(series_rows, schema=SERIES_SCHEMA).unique("series_id", keep="last")
    samples = pl.DataFrame(
        {"series_id": np.concatenate(sids) if sids else np.zeros(0, np.uint64),
         "ts": np.concatenate(tss) if tss else np.zeros(0, np.int64),
         "value": np.concatenate(vals) if vals else np.zeros(0)}, schema=SAMPLE_SCHEMA)
    return FrameSource(series, samples)


def _ordered(rule_files: list[RuleFile], order: Sequence[str]) -> list[RuleFile]:
    if not order:
        return rule_files
    groups = [g for rf in rule_files for g in rf.groups]
    pos = {n: i for i, n in enumerate(order)}
    groups.sort(key=lambda g: pos.get(g.name, len(pos)))
    return [RuleFile(path="<ordered>", groups=groups, document=None, text="")]


def predict_alerts(rule_files: Sequence[RuleFile], source: Any, eval_times_ms: Sequence[int], *,
                   evaluation_interval_ms: int = 60_000, external_labels: Mapping[str, str] | None = None,
                   prometheus_version: int = 2) -> tuple[dict[int, dict[str, list[tuple[dict[str, str], dict[str, str]]]]], Any]:
    """Firing alerts per eval_time and alert name, as promtool would see them."""
    max_t = max(eval_times_ms) if eval_times_ms else 0
    res = replay(list(rule_files), source, 0, max_t, evaluation_interval_ms=evaluation_interval_ms,
                 external_labels=external_labels, prometheus_version=prometheus_version,
                 force_interval_ms=evaluation_interval_ms)
    out: dict[int, dict[str, list[tuple[dict[str, str], dict[str, str]]]]] = {}
    for t in eval_times_ms:
        idx = int(t // evaluation_interval_ms)
        per: dict[str, list[tuple[dict[str, str], dict[str, str]]]] = {}
        for rr in res.rules:
            if idx >= len(rr.ticks):
                continue
            got = [(lab, ann) for state, lab, ann in alert_state_at(rr, idx, external_labels) if state == "firing"]
            per.setdefault(rr.rule.name, []).extend(got)
        out[t] = per
    return out, res


def _key(lab: Mapping[str, str], ann: Mapping[str, str]) -> str:
    return canonical_labels(lab) + "|" + orjson.dumps(dict(sorted(ann.items()))).decode()


def format_labels(labels: Mapping[str, str]) -> str:
    """``{a="b", c="d"}`` as promtool prints label sets."""
    return "{" + ", ".join(f"{k}={orjson.dumps(v).decode()}" for k, v in sorted(labels.items())) + "}"


def _run_group(tg: Any, idx: int, rule_files: list[RuleFile], eval_ms: int, path: Path,
               order: Sequence[str], prometheus_version: int) -> TestResult:
    from vfanalytics import promql

    interval = _dur(tg.get("interval"), "interval", path, tg, "interval") if tg.get("interval") else eval_ms
    ext = {str(k): str(v) for k, v in (tg.get("external_labels") or {}).items()}
    source = load_input_series(tg.get("input_series") or [], interval, path)
    alert_tests = tg.get("alert_rule_test") or []
    expr_tests = tg.get("promql_expr_test") or []
    times = [_dur(a.get("eval_time", 0), "eval_time", path, a, "eval_time") for a in alert_tests]
    etimes = [_dur(e.get("eval_time", 0), "eval_time", path, e, "eval_time") for e in expr_tests]
    name = str(tg.get("name") or f"test {idx}")
    failures: list[str] = []
    predicted, res = predict_alerts(_ordered(rule_files, order), source, times + etimes or [0],
                                    evaluation_interval_ms=eval_ms, external_labels=ext,
                                    prometheus_version=prometheus_version)
    for at, t in zip(alert_tests, times, strict=True):
        alertname = str(at.get("alertname", ""))
        exp = []
        for ea in at.get("exp_alerts") or []:
            lab = {str(k): str(v) for k, v in (ea.get("exp_labels") or {}).items()}
            lab["alertname"] = alertname
            exp.append(({k: v for k, v in lab.items() if v != ""},
                        {str(k): str(v) for k, v in (ea.get("exp_annotations") or {}).items()}))
        got = predicted.get(t, {}).get(alertname, [])
        if sorted(_key(*x) for x in exp) != sorted(_key(*x) for x in got):
            failures.append(
                f"alertname: {alertname}, time: {_fmt(t)}, \n        exp:{_fmt_alerts(exp)}, \n        got:{_fmt_alerts(got)}"
            )
    if expr_tests:
        recorded = res.recorded
        src = source
        if recorded is not None:
            from vfanalytics.backtest import _OverlaySource

            src = _OverlaySource(source)
            src.add(*recorded)
        for et, t in zip(expr_tests, etimes, strict=True):
            expr = str(et.get("expr", ""))
            try:
                frame = promql.query(expr, t, source=src, prometheus_version=prometheus_version)
            except VfaError as exc:
                failures.append(f"    expr: {expr!r}, time: {_fmt(t)}, err: {exc}")
                continue
            got_s = sorted((parse_labels_json(lj), float(v)) for lj, v in zip(frame["labels"].to_list(), frame["value"].to_list(), strict=True))
            exp_s = []
            for s in et.get("exp_samples") or []:
                from vfanalytics.promql.notation import parse_series_line

                lab, _ = parse_series_line(str(s.get("labels", "{}")) + " 0")
                exp_s.append((lab, float(s.get("value", 0))))
            if not _same_samples(sorted(exp_s, key=lambda x: canonical_labels(x[0])),
                                 sorted(got_s, key=lambda x: canonical_labels(x[0]))):
                failures.append(f"    expr: {expr!r}, time: {_fmt(t)},\n        exp: {exp_s}\n        got: {got_s}")
    return TestResult(str(path), name, not failures, failures)


def _same_samples(a: list[tuple[dict[str, str], float]], b: list[tuple[dict[str, str], float]]) -> bool:
    if len(a) != len(b):
        return False
    for (la, va), (lb, vb) in zip(a, b, strict=True):
        if la != lb:
            return False
        if not (va == vb or (math.isnan(va) and math.isnan(vb)) or math.isclose(va, vb, rel_tol=1e-12)):
            return False
    return True


def _fmt(ms: int) -> str:
    from vfanalytics.timeutil import format_duration

    return format_duration(ms)


def _fmt_alerts(alerts: list[tuple[dict[str, str], dict[str, str]]]) -> str:
    items = sorted(alerts, key=lambda x: _key(*x))
    return "[" + " ".join(f"{{Labels:{format_labels(lab)} Annotations:{format_labels(ann)}}}" for lab, ann in items) + "]"


def run_test_file(path: str | Path, *, prometheus_version: int = 2) -> list[TestResult]:
    """Run every test group of a promtool unit-test file."""
    p = Path(path)
    doc = _yaml_load(p)
    if not isinstance(doc, Mapping):
        raise RuleFileError("a test file must be a mapping", str(p), 1)
    eval_ms = _dur(doc.get("evaluation_interval"), "evaluation_interval", p, doc, "evaluation_interval") \
        if doc.get("evaluation_interval") else 60_000
    files: list[str] = []
    for rf in doc.get("rule_files") or []:
        pattern = str(rf) if Path(str(rf)).is_absolute() else str(p.parent / str(rf))
        files.extend(sorted(glob.glob(pattern)))
    rule_files = [load_rule_file(f) for f in files]
    order = [str(x) for x in (doc.get("group_eval_order") or [])]
    return [_run_group(tg, i, rule_files, eval_ms, p, order, prometheus_version)
            for i, tg in enumerate(doc.get("tests") or [], start=1)]


def series_values_text(values: np.ndarray, present: np.ndarray) -> str:
    """Samples at consecutive steps as promtool ``values`` text (``_`` gaps, ``stale``, ``axN`` runs)."""
    from vfanalytics.series import is_stale

    stale = is_stale(values)
    out: list[str] = []
    i, n = 0, len(values)
    while i < n:
        if not present[i]:
            j = i
            while j + 1 < n and not present[j + 1]:
                j += 1
            out.append("_" if j == i else f"_x{j - i + 1}")
            i = j + 1
            continue
        if stale[i]:
            out.append("stale")
            i += 1
            continue
        v = float(values[i])
        j = i
        while j + 1 < n and present[j + 1] and not stale[j + 1] and values[j + 1] == v:
            j += 1
        txt = _num(v)
        out.append(txt if j == i else f"{txt}x{j - i}" if j - i > 1 else f"{txt} {txt}")
        i = j + 1
    return " ".join(out)


def _num(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Inf" if v > 0 else "-Inf"
    return repr(v) if v != int(v) or abs(v) >= 1e16 else str(int(v))


def _dump_yaml(doc: Any, fh: Any) -> None:
    try:  # libyaml's emitter (PyYAML, installed with papermill) is ~50x faster on big input_series
        import yaml as pyyaml

        pyyaml.dump(doc, fh, Dumper=pyyaml.CSafeDumper, sort_keys=False, default_flow_style=False, width=4096)
    except (ImportError, AttributeError):
        y = YAML(typ="safe", pure=True)
        y.default_flow_style = False
        y.width = 4096
        y.dump(doc, fh)


def write_test_file(path: str | Path, rule_files: Sequence[str], tests: Sequence[Mapping[str, Any]],
                    *, evaluation_interval_ms: int = 60_000, header: str = "") -> None:
    """Write a promtool unit-test file (``tests`` entries in promtool's own shape)."""
    from vfanalytics.timeutil import format_duration

    doc = {"rule_files": list(rule_files), "evaluation_interval": format_duration(evaluation_interval_ms),
           "tests": list(tests)}
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    with tmp.open("w") as fh:
        if header:
            fh.write("".join(f"# {line}\n" for line in header.splitlines()))
        _dump_yaml(doc, fh)
    tmp.replace(p)


def _series_text(labels: Mapping[str, str]) -> str:
    name = labels.get("__name__", "")
    rest = ", ".join(f"{k}={orjson.dumps(v).decode()}" for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}"


def window_input_series(expr: str, source: Any, w0: int, w1: int, step_ms: int) -> list[dict[str, str]]:
    """``input_series`` for every series ``expr`` reads in ``[w0, w1]``, shifted so ``w0`` is time 0.

    Samples are snapped to the ``step_ms`` grid (the test notation has one sample per step).
    """
    from vfanalytics.lint import selectors

    n = (w1 - w0) // step_ms + 1
    seen: set[int] = set()
    items: list[dict[str, str]] = []
    for ms in selectors(expr):
        series, samples = source.select(ms, w0, w1)
        if series.height == 0:
            continue
        sids = series["series_id"].to_numpy()
        samples = samples.filter(pl.col("series_id").is_in(sids.tolist()))
        idx_all = np.rint((samples["ts"].to_numpy() - w0) / step_ms).astype(np.int64)
        sid_all = samples["series_id"].to_numpy()
        val_all = samples["value"].to_numpy()
        for sid, lj in zip(sids.tolist(), series["labels"].to_list(), strict=True):
            if sid in seen:
                continue
            seen.add(sid)
            sel = (sid_all == sid) & (idx_all >= 0) & (idx_all < n)
            vals = np.full(n, np.nan)
            present = np.zeros(n, dtype=bool)
            vals[idx_all[sel]] = val_all[sel]
            present[idx_all[sel]] = True
            if not present.any():
                continue
            last = int(np.flatnonzero(present)[-1]) + 1
            items.append({"series": _series_text(parse_labels_json(lj)),
                          "values": series_values_text(vals[:last], present[:last])})
    # promtool's storage returns series in creation order (the order of input_series) and 2.x sums
    # in that order: writing them sorted by label set makes it the order this engine sums in
    items.sort(key=lambda it: _label_order_key(it["series"]))
    return items


def _label_order_key(series_text: str) -> list[tuple[str, str]]:
    from vfanalytics.promql.notation import parse_series_line

    labels, _ = parse_series_line(series_text + " 0")
    return sorted(labels.items())


def pinning_tests(rec_file: RuleFile, result: Any, source: Any, *, max_per_rule: int = 2,
                  step_ms: int = 15_000, check_every_ms: int = 300_000) -> list[dict[str, Any]]:
    """promtool tests that pin the recommended rules' alerts on windows around incidents.

    For each tuned rule with relevant incidents (or, without any, around its busiest firing),
    the series its expression reads are copied from ``source`` into ``input_series`` and the
    expected firing alerts every ``check_every_ms`` come from this engine in 2.x mode.
    """
    from vfanalytics.incidents import relevant_to
    from vfanalytics.timeutil import format_duration

    eval_ms = result.evaluation_interval_ms
    tests: list[dict[str, Any]] = []
    for it in result.items:
        try:
            rule = rec_file.find(it.rule.name, it.group)
        except KeyError:
            continue
        windows: list[tuple[int, int, str]] = []
        inc = relevant_to(result.incidents, rule.name) if result.incidents is not None else None
        if inc is not None and inc.height:
            for row in inc.head(max_per_rule).iter_rows(named=True):
                windows.append((int(row["start_ms"]), int(row["end_ms"]), f"incident {row['id']}"))
        else:
            ep = it.final.current.episodes
            fired = np.flatnonzero(ep["firing_idx"] >= 0)
            if len(fired):
                t = it.final.current.ticks
                i = int(fired[0])
                windows.append((int(t[ep["pending_idx"][i]]), int(t[min(ep["end_idx"][i], len(t) - 1)]), "first page"))
        for s, e, what in windows:
            w0 = ((s - 30 * 60_000) // eval_ms) * eval_ms
            w1 = min(e + 15 * 60_000, w0 + 3 * 3600_000)
            items = window_input_series(rule.expr, source, w0 - 0, w1, step_ms)
            if not items:
                continue
            src = load_input_series([_Item(x) for x in items], step_ms)
            span = w1 - w0
            times = list(range(check_every_ms, span + 1, check_every_ms))
            predicted, _ = predict_alerts([rec_file], src, times, evaluation_interval_ms=eval_ms,
                                          external_labels=result.external_labels, prometheus_version=2)
            art = []
            for t in times:
                got = predicted[t].get(rule.name, [])
                exp = [{"exp_labels": {k: v for k, v in lab.items() if k != "alertname"},
                        **({"exp_annotations": dict(ann)} if ann else {})} for lab, ann in got]
                art.append({"eval_time": format_duration(t), "alertname": rule.name, "exp_alerts": exp})
            tests.append({"name": f"{rule.name}: {what} (data from {_iso(w0)})", "interval": format_duration(step_ms),
                          "external_labels": dict(result.external_labels), "input_series": items,
                          "alert_rule_test": art})
    return tests


class _Item(dict):
    """A plain dict standing in for a ruamel node in :func:`load_input_series`."""


def _iso(ms: int) -> str:
    from vfanalytics.timeutil import format_time

    return format_time(ms)
