"""The evaluator: walks a ``promql_parser`` AST and evaluates it at all steps at once.

:class:`Evaluator` evaluates a node over an array of evaluation times and
returns a :mod:`~vfanalytics.promql.values` value. Selectors read their
samples once per query (cached, widened to the whole query range so chunked
range queries do not re-read), subqueries evaluate their inner expression on
the step-aligned grid Prometheus uses, and ``__name__`` is dropped either at
once (Prometheus' default) or at the end (``delayed_name_removal``, the
behaviour Prometheus' own conformance tests run with).

Example
-------
>>> import numpy as np
>>> from vfanalytics.promql.source import FrameSource
>>> src = FrameSource.from_series({'c{a="1"}': (np.arange(0, 600_001, 15_000), np.arange(41) * 30.0)})
>>> ev = Evaluator(src, start=600_000, end=600_000)
>>> out = ev.evaluate("rate(c[5m])", np.array([600_000]))
>>> out.labels, round(float(out.values[0, 0]), 9)
([{'a': '1'}], 2.0)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import promql_parser as pp

from vfanalytics.exceptions import PromQLSyntaxError, QueryError, UnsupportedQuery
from vfanalytics.promql import aggregations as agg
from vfanalytics.promql.binary import Matching, binary_op
from vfanalytics.promql.source import Matcher, Source, compile_regex, label_matches
from vfanalytics.promql.values import Matrix, Scalar, String, Value, Vector, drop_name_now, merge_duplicates
from vfanalytics.promql.vector_selectors import RawSeries, instant_vector, load_series, range_matrix

__all__ = ["EvalOptions", "Evaluator", "parse", "finish_names"]

_RAW_BYTE_ESCAPE = re.compile(r"\\x[89a-fA-F][0-9a-fA-F]")
_MATCH_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


@dataclass
class EvalOptions:
    """Per-query evaluation settings."""

    #: 3 (left-open windows) or 2 (windows closed on the left)
    prometheus_version: int = 3
    #: lookback delta of instant selectors
    lookback_ms: int = 300_000
    #: keep ``__name__`` until the end of the query (Prometheus' conformance-test setting)
    delayed_name_removal: bool = False
    #: step of subqueries written without one (Prometheus: the global evaluation interval)
    subquery_step_ms: int = 60_000


def _ms(td: timedelta | None) -> int:
    if td is None:
        return 0
    return int(td // timedelta(milliseconds=1)) if td >= timedelta(0) else -int((-td) // timedelta(milliseconds=1))


def shared_metric_names(node: Any) -> set[str]:
    """Metric names several selectors of an expression read: the evaluator reads such a
    metric once by name only (``[("__name__", "=", name)]``), then filters in memory."""
    counts: dict[str, int] = {}

    def visit(n: Any) -> bool:
        # a matrix selector's own vector selector is visited as a child of it
        if isinstance(n, pp.VectorSelector) and n.name:
            counts[n.name] = counts.get(n.name, 0) + 1
        return True

    pp.walk(node, visit)
    return {name for name, c in counts.items() if c > 1}


def _position(expr: str, msg: str) -> int:
    """Best guess of the 1-based character where a PromQL expression stops being valid.

    ``promql_parser`` reports no positions, so: the end of the input for
    "end of input" errors, the unmatched bracket for "unclosed" ones, else the
    first character after the longest prefix that parses on its own.
    """
    if "end of input" in msg:
        return len(expr) + 1
    if "unclosed left" in msg:
        opener = {"parenthesis": "(", "bracket": "[", "brace": "{"}
        want = next((c for k, c in opener.items() if k in msg), "(")
        closer = {"(": ")", "[": "]", "{": "}"}[want]
        stack = []
        for i, ch in enumerate(expr):
            if ch == want:
                stack.append(i)
            elif ch == closer and stack:
                stack.pop()
        if stack:
            return stack[-1] + 1
    best = 0
    for k in range(1, min(len(expr), 2000) + 1):
        if expr[k - 1].isspace():
            continue
        try:
            pp.parse(expr[:k])
        except BaseException as exc:  # noqa: BLE001 - the Rust parser may panic
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            continue
        best = k
    pos = best
    while pos < len(expr) and expr[pos].isspace():
        pos += 1
    return pos + 1


def parse(expr: str) -> Any:
    """Parse PromQL with ``promql_parser``; errors become :class:`PromQLSyntaxError` with a position."""
    try:
        return pp.parse(expr)
    except ValueError as exc:
        msg = str(exc)
        if "regex" in msg.lower():
            raise QueryError(f"invalid regular expression: {msg}") from None
        pos = _position(expr, msg)
        raise PromQLSyntaxError(f"parse error at char {pos}: {msg} (in {expr!r})") from None
    except BaseException as exc:  # the Rust parser panics on a few inputs
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise PromQLSyntaxError(f"parse error: {exc} (in {expr!r})") from None


def finish_names(v: Vector) -> Vector:
    """Drop ``__name__`` from series flagged for it, then check label sets are unique."""
    if not v.drop_name.any():
        return merge_duplicates(v)
    flagged = np.flatnonzero(v.drop_name)
    labels = list(v.labels)
    for i, ls in zip(flagged, drop_name_now([v.labels[i] for i in flagged]), strict=True):
        labels[i] = ls
    out = Vector(labels, v.values, v.present, np.zeros(v.n_series, dtype=bool), v.sample_ts)
    return merge_duplicates(out)


def _go_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


class Evaluator:
    """Evaluates PromQL over a source.

    Parameters
    ----------
    source:
        Where samples come from.
    start, end:
        The query's own range (what ``@ start()`` and ``@ end()`` mean), ms.
    options:
        :class:`EvalOptions`.
    """

    def __init__(self, source: Source, *, start: int, end: int, options: EvalOptions | None = None) -> None:
        self.source = source
        self.start = int(start)
        self.end = int(end)
        self.opts = options or EvalOptions()
        self._cache: dict[tuple[Matcher, ...], tuple[int, int, RawSeries]] = {}
        #: the query text, when known: Go strings may hold invalid UTF-8 (``"\\xff"``)
        self.query_text = ""
        #: how much further (ms) later chunks of the same range query will read: the first
        #: read of a selector covers them too, so each selector hits the source once
        self.read_ahead_ms = 0

    def check_label_name(self, name: str, what: str = "label name") -> None:
        """Reject label names Prometheus rejects: empty, or invalid UTF-8 (``\\x80``-``\\xff`` escapes)."""
        bad = not name
        if not bad and _RAW_BYTE_ESCAPE.search(self.query_text):
            bad = any(0x80 <= ord(ch) <= 0xFF for ch in name)
        if bad:
            raise QueryError(f"invalid {what} {name!r}")

    @property
    def closed_left(self) -> bool:
        return self.opts.prometheus_version < 3

    # -- entry points ---------------------------------------------------------------
    def evaluate(self, expr: str | Any, times: np.ndarray) -> Value:
        """Evaluate an expression (text or parsed) at the given times; names settled at the end."""
        if isinstance(expr, str):
            self.query_text = expr
        node = parse(expr) if isinstance(expr, str) else expr
        self._plan_shared_reads(node)
        out = self.eval(node, np.asarray(times, dtype=np.int64))
        if isinstance(out, Vector):
            out = finish_names(out)
        elif isinstance(out, Matrix) and out.drop_name.any():
            out.labels = [
                {k: v for k, v in ls.items() if k != "__name__"} if d else ls
                for ls, d in zip(out.labels, out.drop_name, strict=True)
            ]
        return out

    def eval(self, node: Any, times: np.ndarray) -> Value:
        out = self._eval(node, times)
        if isinstance(out, Vector) and not self.opts.delayed_name_removal and out.drop_name.any():
            out = finish_names(out)
        return out

    # -- dispatch -------------------------------------------------------------------
    def _eval(self, node: Any, times: np.ndarray) -> Value:
        if isinstance(node, pp.NumberLiteral):
            return Scalar(np.full(len(times), float(node.val)))
        if isinstance(node, pp.StringLiteral):
            return String(node.val)
        if isinstance(node, pp.ParenExpr):
            return self._eval(node.expr, times)
        if isinstance(node, pp.UnaryExpr):
            inner = self.eval(node.expr, times)
            if isinstance(inner, Scalar):
                return Scalar(-inner.values)
            if isinstance(inner, Vector):
                return Vector(list(inner.labels), np.where(inner.present, -inner.values, 0.0), inner.present,
                              np.ones(inner.n_series, dtype=bool))
            raise QueryError("unary minus needs a scalar or an instant vector")
        if isinstance(node, pp.VectorSelector):
            return self._vector_selector(node, times)
        if isinstance(node, pp.MatrixSelector | pp.SubqueryExpr):
            return self.matrix(node, times)
        if isinstance(node, pp.Call):
            return self._call(node, times)
        if isinstance(node, pp.AggregateExpr):
            return self._aggregate(node, times)
        if isinstance(node, pp.BinaryExpr):
            return self._binary(node, times)
        raise UnsupportedQuery(f"unsupported expression type {type(node).__name__}")

    # -- selectors ------------------------------------------------------------------
    @staticmethod
    def matchers(vs: Any) -> list[Matcher]:
        if vs.matchers.or_matchers:
            raise UnsupportedQuery("'or' inside a label matcher set")
        out: list[Matcher] = []
        if vs.name:
            out.append(("__name__", "=", vs.name))
        for m in vs.matchers.matchers:
            op = _MATCH_OPS[str(m.op)]
            if op in ("=~", "!~"):
                compile_regex(m.value)
            out.append((m.name, op, m.value))
        return out

    def _at_times(self, at: Any, times: np.ndarray) -> np.ndarray:
        if at is None:
            return times
        kind = str(at.type)
        if kind.endswith("Start"):
            t = self.start
        elif kind.endswith("End"):
            t = self.end
        else:
            t = int(round(at.at.timestamp() * 1000))
        return np.full(len(times), t, dtype=np.int64)

    def _plan_shared_reads(self, node: Any) -> None:
        self._shared_names = shared_metric_names(node)

    def _load(self, matchers: list[Matcher], lo: int, hi: int) -> RawSeries:
        name = matchers[0][2] if matchers and matchers[0][:2] == ("__name__", "=") else None
        if name is not None and len(matchers) > 1 and name in getattr(self, "_shared_names", ()):
            return self._filter(self._load(matchers[:1], lo, hi), matchers[1:])
        key = tuple(matchers)
        hit = self._cache.get(key)
        # samples outside [lo, hi] are left in: every reader picks its samples per step by binary
        # search (lookback and range windows), so they are never seen, and copying them out of
        # every chunk's read would cost a pass over all of them
        if hit is not None and hit[0] <= lo and hi <= hit[1]:
            return hit[2]
        ahead = hi + max(self.read_ahead_ms, 0)
        raw = load_series(self.source, matchers, lo, ahead)
        self._cache[key] = (lo, ahead, raw)
        return raw

    @staticmethod
    def _filter(raw: RawSeries, matchers: list[Matcher]) -> RawSeries:
        keep = [
            i for i, ls in enumerate(raw.labels)
            if all(label_matches(op, value, ls.get(lname, "")) for lname, op, value in matchers)
        ]
        new_index = np.full(len(raw.labels) + 1, -1, dtype=np.int64)
        new_index[keep] = np.arange(len(keep))
        mapped = new_index[raw.sid]
        mask = mapped >= 0
        return RawSeries([raw.labels[i] for i in keep], mapped[mask], raw.ts[mask], raw.val[mask])

    def _vector_selector(self, vs: Any, times: np.ndarray) -> Vector:
        t = self._at_times(vs.at, times) - _ms(vs.offset)
        lb = self.opts.lookback_ms
        raw = self._load(self.matchers(vs), int(t.min()) - lb, int(t.max()))
        return instant_vector(raw, t, lookback_ms=lb, closed_left=self.closed_left).compact()

    def matrix(self, node: Any, times: np.ndarray) -> Matrix:
        """A range vector for a matrix selector or a subquery."""
        if isinstance(node, pp.ParenExpr):
            return self.matrix(node.expr, times)
        if isinstance(node, pp.MatrixSelector):
            vs = node.vector_selector
            offset = _ms(vs.offset)
            end = self._at_times(vs.at, times) - offset
            rng = _ms(node.range)
            raw = self._load(self.matchers(vs), int(end.min()) - rng, int(end.max()))
            mat = range_matrix(raw, end, range_ms=rng, closed_left=self.closed_left, offset_ms=offset)
            mat.eval_ts = times
            return mat
        if isinstance(node, pp.SubqueryExpr):
            return self._subquery(node, times)
        raise QueryError(f"expected a range vector, got {type(node).__name__}")

    def _subquery(self, node: Any, times: np.ndarray) -> Matrix:
        offset = _ms(node.offset)
        end = self._at_times(node.at, times) - offset
        rng = _ms(node.range)
        step = _ms(node.step) if node.step is not None and _ms(node.step) > 0 else self.opts.subquery_step_ms
        first = int(end.min()) - rng
        start = step * _go_div(first, step)
        if (start <= first) if not self.closed_left else (start < first):
            start += step
        last = int(end.max())
        if last < start:
            grid = np.zeros(0, dtype=np.int64)
        else:
            grid = np.arange(start, last + 1, step, dtype=np.int64)
            if len(end) > 1 and len(grid) > 4 * len(end) * max(1, rng // step + 1):
                # sparse outer steps: evaluate only the grid points some window needs
                need = np.zeros(len(grid), dtype=bool)
                lo_i = np.searchsorted(grid, end - rng, side="left")
                hi_i = np.searchsorted(grid, end, side="right")
                for a, b in zip(lo_i, hi_i, strict=True):
                    need[a:b] = True
                grid = grid[need]
        if len(grid) == 0:
            z = np.zeros(0, dtype=np.int64)
            return Matrix([], z, z, np.zeros(0), end, rng, self.closed_left)
        inner = self.eval(node.expr, grid)
        if isinstance(inner, Scalar):
            raise QueryError("subquery is only allowed on instant vector")
        if not isinstance(inner, Vector):
            raise QueryError("subquery is only allowed on instant vector")
        rows, cols = np.nonzero(inner.present)
        return Matrix(
            list(inner.labels),
            rows.astype(np.int64),
            grid[cols],
            inner.values[rows, cols],
            end,
            rng,
            self.closed_left,
            inner.drop_name.copy(),
            offset_ms=offset,
            eval_ts=times,
        )

    # -- functions ------------------------------------------------------------------
    def _scalar_arg(self, node: Any, times: np.ndarray) -> np.ndarray:
        v = self.eval(node, times)
        if isinstance(v, Scalar):
            return v.values
        raise QueryError("expected a scalar argument")

    def _vector_arg(self, node: Any, times: np.ndarray) -> Vector:
        v = self.eval(node, times)
        if isinstance(v, Vector):
            return v
        raise QueryError("expected an instant vector argument")

    def _string_arg(self, node: Any, times: np.ndarray) -> str:
        v = self.eval(node, times)
        if isinstance(v, String):
            return v.value
        raise QueryError("expected a string argument")

    def _call(self, node: Any, times: np.ndarray) -> Value:
        from vfanalytics.promql.functions import call_function

        return call_function(self, node.func.name, list(node.args), times)

    # -- aggregations ---------------------------------------------------------------
    def _aggregate(self, node: Any, times: np.ndarray) -> Vector:
        op = str(node.op).lower()
        if op not in agg.AGGREGATIONS:
            raise UnsupportedQuery(f"aggregation {op}()")
        without = False
        labels: list[str] = []
        if node.modifier is not None:
            without = str(node.modifier.type).endswith("Without")
            labels = list(node.modifier.labels)
        param: np.ndarray | str | None = None
        if op == "count_values":
            param = self._string_arg(node.param, times)
            self.check_label_name(param)
        elif op in ("topk", "bottomk", "quantile"):
            param = self._scalar_arg(node.param, times)
        v = self._vector_arg(node.expr, times)
        return agg.aggregate(op, v, by=labels, without=without, param=param, version=self.opts.prometheus_version)

    # -- binary operators -----------------------------------------------------------
    def _binary(self, node: Any, times: np.ndarray) -> Value:
        op = str(node.op).lower()
        lhs = self.eval(node.lhs, times)
        rhs = self.eval(node.rhs, times)
        mod = node.modifier
        matching = Matching()
        return_bool = False
        if mod is not None:
            return_bool = bool(mod.return_bool)
            card = str(mod.card)
            matching.card = {
                "VectorMatchCardinality.OneToOne": "one-to-one",
                "VectorMatchCardinality.ManyToOne": "many-to-one",
                "VectorMatchCardinality.OneToMany": "one-to-many",
                "VectorMatchCardinality.ManyToMany": "many-to-many",
            }[card]
            if mod.matching is not None:
                matching.on = str(mod.matching.type).endswith("Include")
                matching.labels = list(mod.matching.labels)
            matching.include = list(mod.group_labels or [])
            fill = getattr(mod, "fill_values", None)
            if fill is not None and (fill.lhs is not None or fill.rhs is not None):
                raise UnsupportedQuery("fill() vector matching modifiers")
        if op in ("and", "or", "unless") and matching.card == "one-to-one":
            matching.card = "many-to-many"
        if not isinstance(lhs, Vector | Scalar) or not isinstance(rhs, Vector | Scalar):
            raise QueryError(f"binary operator {op} needs scalars or instant vectors")
        out = binary_op(op, lhs, rhs, return_bool=return_bool, matching=matching, version=self.opts.prometheus_version)
        return out

    def names_for_absent(self, node: Any) -> dict[str, str]:
        """Label set ``absent()`` reports: the equality matchers of a plain selector."""
        while isinstance(node, pp.ParenExpr):
            node = node.expr
        if isinstance(node, pp.MatrixSelector):
            node = node.vector_selector
        if not isinstance(node, pp.VectorSelector):
            return {}
        out: dict[str, str] = {}
        repeated: set[str] = set()
        for name, op, value in self.matchers(node):
            if name == "__name__":
                continue
            if op == "=" and name not in out:
                out[name] = value
            elif name in out:
                repeated.add(name)
        return {k: v for k, v in out.items() if k not in repeated}
