"""Readers of the seed's own files, so tests check the demo against them (no hand-copied lists)."""

from __future__ import annotations

import re
from pathlib import Path

import promql_parser
from ruamel.yaml import YAML

_METRIC_RE = re.compile(
    r"new\s+(Counter|Gauge|Histogram)\(\{\s*name:\s*'([^']+)'.*?labelNames:\s*\[([^\]]*)\](.*?)\}\);", re.S
)
_BUCKETS_RE = re.compile(r"buckets:\s*\[([^\]]*)\]")
_MATCH_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


def metrics_collector(path: Path) -> list[dict]:
    """Every metric MetricsCollector.ts declares: type, name, label names, buckets."""
    out = []
    for kind, name, labels, rest in _METRIC_RE.findall(path.read_text()):
        buckets = _BUCKETS_RE.search(rest)
        out.append(
            {
                "type": kind.lower(),
                "name": name,
                "labels": [x.strip().strip("'\"") for x in labels.split(",") if x.strip()],
                "buckets": [float(b) for b in buckets.group(1).split(",")] if buckets else [],
            }
        )
    return out


def alert_rules(path: Path) -> list[dict]:
    doc = YAML(typ="safe").load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def selectors(expr: str) -> list[list[tuple[str, str, str]]]:
    """Label matchers of every vector selector in a PromQL expression (name as __name__)."""
    found: list[list[tuple[str, str, str]]] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            ms = [(m.name, _MATCH_OPS[str(m.op)], m.value) for m in node.matchers.matchers]
            if node.name:
                ms.insert(0, ("__name__", "=", node.name))
            found.append(ms)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found
