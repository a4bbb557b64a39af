"""A runner for Prometheus' promqltest files (``promql/promqltest/testdata/*.test``).

Commands, as Prometheus' ``promqltest/test.go`` reads them (lines are trimmed,
``#`` comment lines count as blank, a blank line ends a block):

* ``load <interval>`` / ``load_with_nhcb <interval>`` and indented series lines
  in the :mod:`~vfanalytics.promql.notation` value notation;
* ``clear``;
* ``eval instant at <t> <expr>`` and ``eval range from <t0> to <t1> step <s> <expr>``
  (``eval_fail``, ``eval_warn``, ``eval_info``, ``eval_ordered`` are the older
  spellings), followed by ``expect fail|warn|info|no_warn|no_info|ordered|string``
  lines and the expected series (``{labels} values``) or a bare scalar.

Values compare with Prometheus' ``almost.Equal`` at relative 1e-6 (NaN equals
NaN), label sets exactly; ``expect ordered`` also checks the order. Expected
failures pass when evaluation fails (the message is not compared).

A case is *skipped*, with the reason, when it lies outside the evaluator's
subset: an :class:`UnsupportedQuery`, syntax ``promql-parser`` 0.12 cannot read,
a selector touching native-histogram series, or expected warn/info
annotations (the evaluator does not produce annotations; such cases still
fail if their values differ).

Example
-------
>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "t.test")
>>> _ = open(path, "w").write("load 5m\\n  up{job=\\"a\\"} 1 2 3\\n\\neval instant at 10m up\\n  up{job=\\"a\\"} 3\\n")
>>> res = run_file(path)
>>> res.passed, res.failed, res.skipped
(1, 0, 0)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vfanalytics.exceptions import PromQLSyntaxError, QueryError, UnsupportedQuery, VfaError
from vfanalytics.promql.engine import EvalOptions, Evaluator, parse
from vfanalytics.promql.histogram import almost_equal
from vfanalytics.promql.notation import STALE, expand_values, parse_number, parse_series_line
from vfanalytics.promql.source import FrameSource, label_matches
from vfanalytics.promql.values import Matrix, Scalar, String, Vector
from vfanalytics.series import STALE_NAN, series_id
from vfanalytics.timeutil import parse_duration

__all__ = ["CaseResult", "FileResult", "run_file", "run_files", "EPSILON"]

EPSILON = 1e-6

_LOAD = re.compile(r"^load(?:_(with_nhcb))?\s+(.+?)$")
_INSTANT = re.compile(r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$")
_RANGE = re.compile(r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$")
_EXPECT = re.compile(r"^expect\s+(ordered|fail|warn|no_warn|info|no_info|string)(?:\s+(.*))?$")


@dataclass
class CaseResult:
    """One ``eval`` command's outcome: ``passed``, ``failed`` or ``skipped`` and why."""

    path: str
    line: int
    expr: str
    status: str
    reason: str = ""


@dataclass
class FileResult:
    path: str
    cases: list[CaseResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for c in self.cases if c.status == status)

    @property
    def passed(self) -> int:
        return self.count("passed")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def skipped(self) -> int:
        return self.count("skipped")


class _Data:
    def __init__(self) -> None:
        self.labels: list[dict[str, str]] = []
        self.ts: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.histogram_series: list[dict[str, str]] = []
        self._source: FrameSource | None = None

    def add(self, labels: dict[str, str], ts: np.ndarray, vals: np.ndarray) -> None:
        self.labels.append(labels)
        self.ts.append(ts)
        self.vals.append(vals)
        self._source = None

    def source(self) -> FrameSource:
        if self._source is None:
            merged: dict[str, tuple[dict[str, str], list[np.ndarray], list[np.ndarray]]] = {}
            for ls, t, v in zip(self.labels, self.ts, self.vals, strict=True):
                key = str(sorted(ls.items()))
                merged.setdefault(key, (ls, [], []))
                merged[key][1].append(t)
                merged[key][2].append(v)
            label_sets, sids, ids, tss, vals = [], [], [], [], []
            for ls, t_parts, v_parts in merged.values():
                sid = series_id(ls)
                t = np.concatenate(t_parts)
                v = np.concatenate(v_parts)
                label_sets.append(ls)
                sids.append(sid)
                ids.append(np.full(len(t), sid, dtype=np.uint64))
                tss.append(t)
                vals.append(v)
            self._source = FrameSource.from_arrays(label_sets, sids, ids, tss, vals)
        return self._source


def _duration_ms(text: str) -> int:
    t = text.strip()
    if t.startswith("-"):
        return -parse_duration(t[1:])
    return parse_duration(t)


def _load_line(data: _Data, line: str, interval: int, *, nhcb: bool = False) -> None:
    if "{{" in line:
        data.histogram_series.append(parse_series_line(line[: line.index("{{")].strip() + " 0")[0])
        return
    labels, values = parse_series_line(line)
    name = labels.get("__name__", "")
    if nhcb and name.endswith(("_bucket", "_count", "_sum")):
        # load_with_nhcb also stores the classic histogram as a native one under the base name
        base = {k: v for k, v in labels.items() if k != "le"}
        base["__name__"] = name.rsplit("_", 1)[0]
        data.histogram_series.append(base)
    ts, vals = [], []
    for i, v in enumerate(values):
        if v is None:
            continue
        ts.append(i * interval)
        vals.append(STALE_NAN if v == STALE else v)
    data.add(labels, np.asarray(ts, dtype=np.int64), np.asarray(vals, dtype=np.float64))


def _touches_histograms(expr_node: Any, data: _Data, ev: Evaluator) -> bool:
    if not data.histogram_series:
        return False
    import promql_parser as pp

    hit = False

    def visit(node: object) -> bool:
        nonlocal hit
        vs = node.vector_selector if isinstance(node, pp.MatrixSelector) else node
        if isinstance(vs, pp.VectorSelector):
            ms = ev.matchers(vs)
            for ls in data.histogram_series:
                if all(label_matches(op, val, ls.get(name, "")) for name, op, val in ms):
                    hit = True
                    return False
        return True

    pp.walk(expr_node, visit)
    return hit


def _compare(
    result: object, expected: list[tuple[dict[str, str] | None, list]], *, times: np.ndarray, ordered: bool
) -> str:
    """Empty string when the result matches, else what differs."""
    if isinstance(result, String):
        return "" if expected and expected[0][0] is None and expected[0][1] == [result.value] else f"got string {result.value!r}"
    if isinstance(result, Scalar):
        if len(expected) != 1 or expected[0][0] is not None:
            return f"got scalar {result.values.tolist()}, expected {expected}"
        exp = np.array([float(x) for x in expected[0][1]])
        got_s = result.values
        if len(exp) != len(got_s) or not almost_equal(exp, got_s, EPSILON).all():
            return f"scalar {got_s.tolist()} != {exp.tolist()}"
        return ""
    if isinstance(result, Matrix):
        return "range-vector results are not compared"
    assert isinstance(result, Vector)
    got: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
    order: list[str] = []
    for i, ls in enumerate(result.labels):
        if not result.present[i].any():
            continue
        key = str(sorted(ls.items()))
        got[key] = (i, result.values[i], result.present[i])
        order.append(key)
    exp_keys = []
    for labels, values in expected:
        if labels is None:
            return f"expected a scalar, got a vector of {len(got)} series"
        key = str(sorted(labels.items()))
        exp_keys.append(key)
        if key not in got:
            return f"missing series {labels}; got {[result.labels[g[0]] for g in got.values()]}"
        _, vals, pres = got[key]
        exp_present = np.array([v is not None for v in values] + [False] * (len(times) - len(values)))[: len(times)]
        exp_vals = np.array(
            [np.nan if (v is None or v == STALE) else float(v) for v in values] + [np.nan] * (len(times) - len(values))
        )[: len(times)]
        if len(values) > len(times):
            return f"series {labels}: {len(values)} expected values for {len(times)} steps"
        if not np.array_equal(exp_present, pres):
            return f"series {labels}: points at steps {np.flatnonzero(pres).tolist()}, expected {np.flatnonzero(exp_present).tolist()}"
        if not almost_equal(exp_vals[pres], vals[pres], EPSILON).all():
            return f"series {labels}: values {vals[pres].tolist()} != expected {exp_vals[pres].tolist()}"
    if len(exp_keys) != len(got):
        extra = [result.labels[g[0]] for k, g in got.items() if k not in exp_keys]
        return f"unexpected series {extra}"
    if ordered and exp_keys != order:
        return f"order {order} != expected {exp_keys}"
    return ""


def _expected_line(line: str) -> tuple[dict[str, str] | None, list]:
    try:
        return None, [parse_number(line)]
    except (PromQLSyntaxError, ValueError):
        pass
    try:
        labels, values = parse_series_line(line)
        return labels, values
    except (PromQLSyntaxError, UnsupportedQuery):
        vals = expand_values(line)
        return None, vals


def run_file(path: str | Path, *, options: EvalOptions | None = None) -> FileResult:
    """Run every ``eval`` of one promqltest file."""
    text = Path(path).read_text()
    lines = ["" if ln.strip().startswith("#") else ln.strip() for ln in text.splitlines()]
    res = FileResult(str(path))
    data = _Data()
    opts = options or EvalOptions(delayed_name_removal=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line:
            i += 1
            continue
        start_line = i + 1
        if line == "clear":
            data = _Data()
            i += 1
            continue
        block = []
        j = i + 1
        while j < len(lines) and lines[j]:
            block.append(lines[j])
            j += 1
        i = j
        m = _LOAD.match(line)
        if m:
            interval = _duration_ms(m.group(2))
            for b in block:
                _load_line(data, b, interval, nhcb=m.group(1) is not None)
            continue
        if line.startswith("eval"):
            res.cases.append(_run_eval(str(path), start_line, line, block, data, opts))
            continue
        res.cases.append(CaseResult(str(path), start_line, line, "failed", "unknown command"))
    return res


def _run_eval(path: str, lineno: int, line: str, block: list[str], data: _Data, opts: EvalOptions) -> CaseResult:
    mi = _INSTANT.match(line)
    mr = _RANGE.match(line) if mi is None else None
    if mi is None and mr is None:
        return CaseResult(path, lineno, line, "failed", "cannot parse eval command")
    if mi is not None:
        mod, at, expr = mi.group(1), mi.group(2), mi.group(3)
        times = np.array([_duration_ms(at or "0")], dtype=np.int64)
    else:
        assert mr is not None
        mod, expr = mr.group(1), mr.group(5)
        t0, t1, step = _duration_ms(mr.group(2)), _duration_ms(mr.group(3)), _duration_ms(mr.group(4))
        times = np.arange(t0, t1 + 1, step, dtype=np.int64)
    expect_fail = mod == "fail"
    ordered = mod == "ordered"
    annotations = mod in ("warn", "info")
    expected: list[tuple[dict[str, str] | None, list]] = []
    for b in block:
        em = _EXPECT.match(b)
        if em:
            kind = em.group(1)
            if kind == "fail":
                expect_fail = True
            elif kind == "ordered":
                ordered = True
            elif kind in ("warn", "info"):
                annotations = True
            elif kind == "string":
                arg = (em.group(2) or "").strip()
                expected.append((None, [arg[1:-1] if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "\"`'" else arg]))
            continue
        try:
            expected.append(_expected_line(b))
        except VfaError as exc:
            return CaseResult(path, lineno, expr, "skipped" if "histogram" in str(exc) else "failed", f"expected line: {exc}")
    ev = Evaluator(data.source(), start=int(times[0]), end=int(times[-1]), options=opts)
    ev.query_text = expr
    try:
        node = parse(expr)
    except QueryError as exc:
        if expect_fail:
            return CaseResult(path, lineno, expr, "passed")
        return CaseResult(path, lineno, expr, "skipped", f"syntax promql-parser 0.12 cannot parse: {exc}")
    try:
        if _touches_histograms(node, data, ev):
            return CaseResult(path, lineno, expr, "skipped", "native histograms")
        result = ev.evaluate(node, times)
        if mi is None and isinstance(result, Scalar):
            result = Vector([{}], result.values[None, :], np.ones((1, len(times)), dtype=bool))
        if mi is None and isinstance(result, String | Matrix):
            raise QueryError("invalid expression type for range query, must be Scalar or instant Vector")
    except UnsupportedQuery as exc:
        return CaseResult(path, lineno, expr, "skipped", str(exc))
    except (QueryError, ValueError) as exc:
        if expect_fail:
            return CaseResult(path, lineno, expr, "passed")
        return CaseResult(path, lineno, expr, "failed", f"error: {exc}")
    if expect_fail:
        return CaseResult(path, lineno, expr, "failed", "expected an error, got a result")
    diff = _compare(result, expected, times=times, ordered=ordered)
    if diff:
        return CaseResult(path, lineno, expr, "failed", diff)
    if annotations:
        return CaseResult(path, lineno, expr, "skipped", "expects warn/info annotations, which the evaluator does not produce (values match)")
    return CaseResult(path, lineno, expr, "passed")


def run_files(paths: list[str | Path], *, options: EvalOptions | None = None) -> list[FileResult]:
    """:func:`run_file` for several files."""
    return [run_file(p, options=options) for p in paths]
