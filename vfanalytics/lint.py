"""Lint alerting rules for the defects backtests keep finding.

Static checks walk the promql-parser AST of each expression; one check reads data:

========  ============================================================================
VFA001    ``histogram_quantile`` over raw cumulative ``_bucket`` counters (no ``rate`` /
          ``increase`` and no ``sum by (le)``): the quantile of lifetime totals, which
          barely moves. Proposes ``histogram_quantile(q, sum by (le) (rate(x_bucket[5m])))``.
VFA002    a per-second ``rate()`` compared with a threshold its annotations describe per
          hour or per minute. Proposes the rate scaled to the annotation's unit.
VFA003    an error *count* rate (``status=~"5.."``, ``success="false"`` …) compared with a
          fixed threshold, where a ratio to all requests is meant. Proposes the ratio.
VFA004    a selector that matches no series in the range (needs a source).
VFA005    ``rate(x[r]) > 0`` / ``increase(x[r]) > 0`` with a ``for`` shorter than the range:
          a single increment (one restart) pages.
VFA006    an alert without ``for``: one evaluation over the line pages.
VFA007    every selector matches data but the expression returns nothing (a binary
          operation whose sides' label sets never match); found by ``vfa tune``.
========  ============================================================================

:func:`confirm` turns backtest figures into a verdict per finding (does the data show the
defect?), which ``vfa tune`` prints next to each recommendation.

Example
-------
>>> from vfanalytics.rules import loads_rule_file
>>> rf, _ = loads_rule_file('''groups:
... - name: g
...   rules:
...   - alert: Slow
...     expr: histogram_quantile(0.95, http_duration_seconds_bucket) > 2
... ''')
>>> [(f.code, f.proposed_expr) for f in lint_rule_file(rf)]  # doctest: +NORMALIZE_WHITESPACE
[('VFA001', 'histogram_quantile(0.95, sum by (le) (rate(http_duration_seconds_bucket[5m]))) > 2'),
 ('VFA006', None)]
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import promql_parser

from vfanalytics.tuning import format_threshold, split_threshold

__all__ = ["Finding", "lint_rule", "lint_rule_file", "selectors", "selector_matchers", "confirm", "CODES"]

CODES = {
    "VFA001": "histogram_quantile over raw _bucket counters",
    "VFA002": "per-second rate compared with a per-hour/per-minute threshold",
    "VFA003": "error count where a ratio is meant",
    "VFA004": "selector matches no data in the range",
    "VFA005": "any increase pages (rate/increase > 0 with a short for)",
    "VFA006": "no for: a single evaluation pages",
    "VFA007": "expression returns nothing although its selectors match data",
}
_OPS = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}
_ERROR_LABELS = re.compile(r"^(status|code|status_code|response_code|success|error|outcome|result)$")


@dataclass
class Finding:
    """One lint finding on one rule."""

    file: str
    line: int
    group: str
    rule: str
    code: str
    severity: str
    message: str
    proposed_expr: str | None = None
    confirmed: bool | None = None
    evidence: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _children(node: Any) -> list[Any]:
    if isinstance(node, promql_parser.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, promql_parser.Call):
        return list(node.args)
    if isinstance(node, promql_parser.AggregateExpr):
        return [x for x in (node.param, node.expr) if x is not None]
    if isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr):
        return [node.expr]
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    return []


def _walk(node: Any, parents: tuple[Any, ...] = ()) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    yield node, parents
    for c in _children(node):
        yield from _walk(c, (*parents, node))


def selector_matchers(vs: Any) -> list[tuple[str, str, str]]:
    """A VectorSelector as (name, op, value) tuples, ``__name__`` first."""
    out = []
    if vs.name:
        out.append(("__name__", "=", vs.name))
    for m in vs.matchers.matchers:
        out.append((m.name, _OPS[str(m.op).split(".")[-1]], m.value))
    return out


def selectors(expr: str) -> list[list[tuple[str, str, str]]]:
    """The matchers of every vector selector in an expression."""
    ast = promql_parser.parse(expr)
    return [selector_matchers(n) for n, _ in _walk(ast) if isinstance(n, promql_parser.VectorSelector)]


def _call_args_text(text: str, func: str) -> list[str] | None:
    """Top-level argument texts of the first ``func(...)`` call in ``text``."""
    m = re.search(rf"\b{re.escape(func)}\s*\(", text)
    if not m:
        return None
    depth, args, cur, quote = 1, [], [], ""
    for c in text[m.end() :]:
        if quote:
            cur.append(c)
            if c == quote:
                quote = ""
            continue
        if c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                args.append("".join(cur).strip())
                return args
        elif c == "," and depth == 1:
            args.append("".join(cur).strip())
            cur = []
            continue
        cur.append(c)
    return None


def _fmt_selector(matchers: Sequence[tuple[str, str, str]]) -> str:
    name = next((v for n, op, v in matchers if n == "__name__" and op == "="), "")
    rest = [f'{n}{op}"{v}"' for n, op, v in matchers if not (n == "__name__" and op == "=")]
    return name + ("{" + ", ".join(rest) + "}" if rest else "")


def _unit_of(annotations: Mapping[str, str]) -> tuple[int, str] | None:
    text = " ".join(annotations.values()).lower()
    if re.search(r"per hour|/\s*h(ou)?r?\b|an hour|hourly|per hr\b", text):
        return 3600, "hour"
    if re.search(r"per minute|/\s*min\b|per min\b|a minute", text):
        return 60, "minute"
    return None


def lint_rule(rule: Any, path: str = "") -> list[Finding]:
    """Static findings for one rule (recording rules get none)."""
    if not rule.is_alert or not rule.expr:
        return []
    try:
        ast = promql_parser.parse(rule.expr)
    except Exception:
        return []
    out: list[Finding] = []

    def add(code: str, severity: str, message: str, proposed: str | None = None) -> None:
        out.append(Finding(path, rule.expr_line or rule.line, rule.group, rule.name, code, severity,
                           message, proposed))

    split = split_threshold(rule.expr)
    nodes = list(_walk(ast))
    # VFA001
    for node, _parents in nodes:
        if isinstance(node, promql_parser.Call) and node.func.name == "histogram_quantile":
            arg = list(node.args)[1]
            raw = [n for n, ps in _walk(arg) if isinstance(n, promql_parser.VectorSelector)
                   and (n.name or "").endswith("_bucket")
                   and not any(isinstance(p, promql_parser.MatrixSelector) for p in ps)]
            has_le_agg = any(isinstance(n, promql_parser.AggregateExpr) for n, _ in _walk(arg))
            if raw:
                args = _call_args_text(rule.expr, "histogram_quantile")
                proposed = None
                if args and len(args) == 2 and split is not None:
                    sel = args[1]
                    new_lhs = f"histogram_quantile({args[0]}, sum by (le) (rate({sel}[5m])))"
                    proposed = f"{new_lhs} {split.op} {format_threshold(split.threshold)}"
                what = "raw cumulative _bucket counters" + ("" if has_le_agg else " without sum by (le)")
                add("VFA001", "error", f"histogram_quantile over {what}: the quantile of lifetime "
                    "totals; use rate() over the buckets and sum by (le)", proposed)
    # rate-shaped lhs
    if split is not None:
        try:
            lhs_ast = promql_parser.parse(split.lhs)
        except Exception:
            lhs_ast = None
        inner = lhs_ast
        while isinstance(inner, promql_parser.AggregateExpr | promql_parser.ParenExpr):
            inner = inner.expr
        func = inner.func.name if isinstance(inner, promql_parser.Call) else None
        mat = list(inner.args)[0] if isinstance(inner, promql_parser.Call) and func in ("rate", "irate", "increase") else None
        unit = _unit_of(rule.annotations)
        if func in ("rate", "irate") and unit is not None:
            factor, name = unit
            add("VFA002", "error", f"per-second {func}() compared with {format_threshold(split.threshold)} while "
                f"the annotations describe the value per {name}: the threshold is {factor}x off",
                f"{split.lhs} * {factor} {split.op} {format_threshold(split.threshold)}")
        if isinstance(mat, promql_parser.MatrixSelector):
            ms = selector_matchers(mat.vector_selector)
            err = [m for m in ms if _ERROR_LABELS.match(m[0]) and (
                re.match(r"^5|^[45]\.\.|^false$|^error|^fail", m[2]) is not None)]
            if err and "/" not in rule.expr and func in ("rate", "increase", "irate"):
                total = [m for m in ms if m not in err]
                rng = _call_args_text(split.lhs, func)
                rng_text = re.search(r"\[([^\]]+)\]", rng[0]).group(1) if rng and "[" in rng[0] else "5m"  # type: ignore[union-attr]
                proposed = (f"sum(rate({_fmt_selector(ms)}[{rng_text}])) / sum(rate({_fmt_selector(total)}[{rng_text}]))"
                            f" > 0.05")
                add("VFA003", "warning", "an error count rate depends on traffic volume; alert on the "
                    "ratio of errors to all requests instead", proposed)
            range_ms = int(mat.range.total_seconds() * 1000)
            if split.threshold == 0 and split.op in (">", "!=") and rule.for_ms < range_ms:
                sel = _fmt_selector(ms)
                add("VFA005", "warning", f"{func}(...[{int(range_ms / 60000)}m]) > 0 with for "
                    f"{int(rule.for_ms / 1000)}s pages on a single increment",
                    f"increase({sel}[15m]) > 2")
    if not rule.has_for or rule.for_ms == 0:
        add("VFA006", "info", "no for: a single evaluation above the threshold pages")
    return out


def lint_rule_file(rf: Any, *, source: Any = None, start: int | None = None, end: int | None = None) -> list[Finding]:
    """Lint every alerting rule of a file; with ``source`` also check that selectors match data."""
    out: list[Finding] = []
    for rule in rf.rules():
        out.extend(lint_rule(rule, rf.path))
        if source is not None and rule.expr:
            try:
                sels = selectors(rule.expr)
            except Exception:
                continue
            for ms in sels:
                series, _ = source.select(ms, start, end)
                if series.height == 0:
                    out.append(Finding(rf.path, rule.expr_line or rule.line, rule.group, rule.name, "VFA004",
                                       "error", f"selector {_fmt_selector(ms)} matches no series in the range"))
    return out


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if v != v else v


def _show(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def confirm(finding: Finding, evidence: Mapping[str, Any]) -> Finding:
    """Judge a finding with backtest figures for its rule.

    ``evidence`` keys: ``result_series`` (label sets the expression returned), ``firing_fraction``
    (share of ticks with a firing alert), ``pages_per_week``, ``flaps``, ``pages``, and for a proposed
    expression ``tuned_f_beta`` / ``tuned_pages_per_week`` (the rule as written, at its best grid
    point) against ``proposed_f_beta`` / ``proposed_pages_per_week``.
    """
    e = evidence
    code = finding.code
    verdict: bool | None = None
    why = ""
    if code == "VFA004":
        verdict = e.get("result_series", 0) == 0
        why = f"the expression returned {e.get('result_series', 0)} series"
    elif code == "VFA006":
        verdict = e.get("flaps", 0) > 0
        why = f"{int(e.get('flaps', 0))} re-fires within 30m of a resolve"
    elif code == "VFA005":
        verdict = e.get("pages_per_week", 0) > 7
        why = f"{e.get('pages_per_week', 0):.1f} pages/week"
    elif code in ("VFA001", "VFA002", "VFA003"):
        frac = e.get("firing_fraction", 0.0)
        stuck = frac >= 0.9 or frac == 0.0
        fb, pfb = _num(e.get("tuned_f_beta")), _num(e.get("proposed_f_beta"))
        pp, tp = _num(e.get("proposed_pages_per_week")), _num(e.get("tuned_pages_per_week"))
        # the fix wins when, each tuned at its best grid point, it scores higher, or scores the
        # same with at most half the pages
        better = pfb is not None and (fb is None or pfb > fb + 0.01 or (
            abs(pfb - fb) <= 0.01 and pp is not None and tp is not None and pp <= 0.5 * tp))
        verdict = bool(stuck or better)
        why = f"as written it fires {frac:.0%} of the time"
        if pp is not None:
            why += (f"; tuned: F={_show(fb)}, {_show(tp)} pages/week; with the proposed expression tuned: "
                    f"F={_show(pfb)}, {_show(pp)} pages/week")
    finding.confirmed = verdict
    finding.evidence = why
    return finding
