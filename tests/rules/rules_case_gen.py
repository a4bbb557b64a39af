"""Seeded random alerting cases for the differential tests against the real promtool.

Each case is one metric (1-3 series with gaps, staleness markers and, for counters, resets),
one alerting rule on it (threshold, ``for``, ``keep_firing_for``, labels and annotation
templates) and a few random eval times. Cases are batched: one rule file and one test group
per batch, so promtool runs a few hundred cases in one process.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfanalytics.promtool_tests import load_input_series, predict_alerts, write_test_file
from vfanalytics.rules import loads_rule_file
from vfanalytics.timeutil import format_duration


@dataclass
class Case:
    name: str
    rule: dict[str, Any]
    series: list[dict[str, str]]
    eval_times: list[int]
    predicted: dict[int, list[tuple[dict[str, str], dict[str, str]]]] = field(default_factory=dict)


def _values(rng: random.Random, n: int, counter: bool) -> str:
    out: list[str] = []
    v = float(rng.randint(0, 5))
    i = 0
    while i < n:
        r = rng.random()
        if r < 0.08:
            k = rng.randint(1, 4)
            out.append("_" if k == 1 else f"_x{k}")
            i += k
            continue
        if r < 0.12:
            out.append("stale")
            i += 1
            continue
        if counter:
            if rng.random() < 0.06:
                v = float(rng.randint(0, 3))  # counter reset
            else:
                v += rng.choice([0, 0, 1, 2, 3, 5, 8, 13, 0.5])
        else:
            v = rng.choice([v, v + 1, v - 1, float(rng.randint(-2, 12)), v * 2.5, 1234567.0 if rng.random() < 0.02 else v])
        if rng.random() < 0.15 and i + 3 < n and not counter:
            k = rng.randint(2, 5)
            out.append(f"{_num(v)}x{k}")
            i += k + 1
            continue
        out.append(_num(v))
        i += 1
    return " ".join(out)


def _num(v: float) -> str:
    return str(int(v)) if v == int(v) else repr(v)


ANNOTATIONS = [
    {"summary": "value {{ $value }}"},
    {"summary": "{{ $labels.inst }} is at {{ $value | humanize }}", "description": "static text"},
    {"summary": "{{ printf \"%.3f\" $value }} on {{ $labels.inst }}"},
    {},
]


def make_case(rng: random.Random, idx: int, interval_s: int) -> Case:
    metric = f"m{idx}"
    counter = rng.random() < 0.4
    n = rng.randint(15, 40)
    series = []
    for inst in rng.sample(["a", "b", "c"], rng.randint(1, 3)):
        series.append({"series": f'{metric}{{inst="{inst}", job="j"}}', "values": _values(rng, n, counter)})
    if counter:
        rng_m = rng.choice([2, 3, 5])
        lhs = rng.choice([f"rate({metric}[{rng_m}m])", f"increase({metric}[{rng_m}m])",
                          f"sum by (inst) (rate({metric}[{rng_m}m]))"])
        thr = rng.choice([0, 0.01, 0.05, 0.1, 0.5, 1, 3])
    else:
        lhs = rng.choice([metric, f"max by (inst) ({metric})", f"{metric} * 2", f"abs({metric})"])
        thr = rng.choice([0, 1, 2, 3.5, 5, 8])
    op = rng.choice([">", ">", ">=", "<", "!="])
    if rng.random() < 0.2:
        expr = f"{thr} {dict((('>', '<'), ('>=', '<='), ('<', '>'), ('!=', '!=')))[op]} {lhs}"
    else:
        expr = f"{lhs} {op} {thr}"
    rule: dict[str, Any] = {"alert": f"A{idx}", "expr": expr}
    f = rng.choice([0, 0, 60, 120, 180, 300, 90])
    if f:
        rule["for"] = format_duration(f * 1000)
    k = rng.choice([0, 0, 0, 60, 120, 180])
    if k:
        rule["keep_firing_for"] = format_duration(k * 1000)
    rule["labels"] = {"severity": rng.choice(["warning", "critical"])}
    if rng.random() < 0.2:
        rule["labels"]["where"] = "{{ $labels.inst }}"
    ann = rng.choice(ANNOTATIONS)
    if ann:
        rule["annotations"] = dict(ann)
    span = n * interval_s
    times = sorted({rng.randrange(0, span, 10) for _ in range(rng.randint(3, 6))})
    return Case(metric, rule, series, [t * 1000 for t in times])


def write_batch(directory: Path, batch: int, cases: list[Case], *, interval_s: int, eval_s: int,
                rng: random.Random) -> tuple[Path, Path, set[str]]:
    """Predict every case with our engine once and write the rule file and two test files: the
    predictions, and a copy with one deliberately wrong expectation per case. Returns (right file,
    wrong file, names of the falsified alerts)."""
    import orjson

    rules_doc = {"groups": [{"name": f"batch{batch}", "rules": [c.rule for c in cases]}]}
    rule_path = directory / f"rules{batch}.yml"
    rule_path.write_text(orjson.dumps(rules_doc).decode())  # JSON is YAML
    rf, errors = loads_rule_file(rule_path.read_text(), str(rule_path))
    assert not errors, errors
    items = [s for c in cases for s in c.series]
    source = load_input_series(items, interval_s * 1000)
    times = sorted({t for c in cases for t in c.eval_times})
    predicted, _ = predict_alerts([rf], source, times, evaluation_interval_ms=eval_s * 1000, prometheus_version=2)
    falsified: set[str] = set()
    paths = []
    for wrong in (False, True):
        art = []
        for c in cases:
            name = c.rule["alert"]
            bad_time = rng.choice(c.eval_times) if wrong else None
            for t in c.eval_times:
                got = predicted[t].get(name, [])
                c.predicted[t] = got
                exp = [{"exp_labels": {k: v for k, v in lab.items() if k != "alertname"},
                        "exp_annotations": dict(ann)} for lab, ann in got]
                if t == bad_time:
                    falsified.add(name)
                    if exp and rng.random() < 0.5:
                        exp = exp[1:]  # a missing alert
                    elif exp:
                        exp[0]["exp_labels"] = {**exp[0]["exp_labels"], "inst": "zz"}  # a wrong label
                    else:
                        exp = [{"exp_labels": {"inst": "a", "job": "j", "severity": "warning"}}]  # a spurious one
                art.append({"eval_time": format_duration(t), "alertname": name, "exp_alerts": exp})
        test = {"interval": format_duration(interval_s * 1000), "input_series": items, "alert_rule_test": art}
        test_path = directory / f"test{batch}{'_wrong' if wrong else ''}.yml"
        write_test_file(test_path, [rule_path.name], [test], evaluation_interval_ms=eval_s * 1000)
        paths.append(test_path)
    return paths[0], paths[1], falsified


def make_batches(seed: int, n_batches: int, per_batch: int) -> list[tuple[list[Case], int, int]]:
    rng = random.Random(seed)
    out = []
    idx = 0
    for _ in range(n_batches):
        interval_s = rng.choice([15, 30, 60])
        eval_s = rng.choice([30, 60])
        cases = []
        for _ in range(per_batch):
            cases.append(make_case(rng, idx, interval_s))
            idx += 1
        out.append((cases, interval_s, eval_s))
    return out
