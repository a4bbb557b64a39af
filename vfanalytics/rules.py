"""Prometheus rule files: load, validate like ``promtool check rules``, write back unchanged.

A rule file is YAML with ``groups``; each group has ``name``, optional ``interval``,
``query_offset``, ``limit``, ``labels`` and a list of ``rules``, each either an
alerting rule (``alert``, ``expr``, ``for``, ``keep_firing_for``, ``labels``,
``annotations``) or a recording rule (``record``, ``expr``, ``labels``).

Validation follows Prometheus' ``model/rulefmt`` checks and reports every problem
as ``FILE:LINE: group "g", rule N, "name": reason`` (the line of the offending key
or value), the same precision ``promtool check rules`` gives. Expressions are parsed
with promql-parser; label and annotation templates are checked by
:func:`vfanalytics.backtest.check_template`.

Writing goes through ruamel.yaml's round-trip mode on the document that was read,
so comments, key order, quoting and untouched formatting survive: change a value
with :meth:`RuleFile.set_rule_field` and :meth:`RuleFile.dumps` the result.

The global evaluation interval comes from a ``prometheus.yml``
(:func:`load_prometheus_config`, ``global.evaluation_interval``, Prometheus'
default 1m) or a flag.

Example
-------
>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "r.yml"
>>> _ = p.write_text('''groups:
...   - name: g  # main group
...     rules:
...       - alert: Down
...         expr: up == 0
...         for: 1m
... ''')
>>> rf = load_rule_file(p)
>>> r = rf.groups[0].rules[0]
>>> r.name, r.expr, r.for_ms, r.line
('Down', 'up == 0', 60000, 4)
>>> rf.set_rule_field(r, "for", "5m")
>>> "# main group" in rf.dumps() and "for: 5m" in rf.dumps()
True
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from vfanalytics.exceptions import RuleFileError, TimeParseError
from vfanalytics.timeutil import format_duration, parse_duration

__all__ = [
    "Rule",
    "RuleGroup",
    "RuleFile",
    "PrometheusConfig",
    "load_rule_file",
    "load_rule_files",
    "loads_rule_file",
    "check_rule_files",
    "load_prometheus_config",
    "parse_prom_duration",
    "DEFAULT_EVALUATION_INTERVAL_MS",
]

#: Prometheus' default ``global.evaluation_interval``
DEFAULT_EVALUATION_INTERVAL_MS = 60_000

_METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_PROM_DURATION_RE = re.compile(r"^(?:\d+y)?(?:\d+w)?(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?(?:\d+ms)?$")
_GROUP_KEYS = {"name", "interval", "query_offset", "limit", "labels", "rules"}
#: group fields Prometheus 2.x (promtool 2.42) does not know yet
_GROUP_KEYS_3X = {"query_offset", "labels"}
_RULE_KEYS = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


def parse_prom_duration(text: Any) -> int:
    """Parse a duration as Prometheus' ``model.ParseDuration`` does (no bare numbers except 0).

    >>> parse_prom_duration("1h30m"), parse_prom_duration("0")
    (5400000, 0)
    """
    s = str(text).strip()
    if s == "0":
        return 0
    if not s or not _PROM_DURATION_RE.match(s):
        raise TimeParseError(f'not a valid duration string: "{s}"')
    return parse_duration(s)


@dataclass
class Rule:
    """One alerting or recording rule, with where it was read from."""

    kind: str  # "alert" or "record"
    name: str
    expr: str
    for_ms: int = 0
    keep_firing_for_ms: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    group: str = ""
    index: int = 0  # 1-based position in its group, as promtool counts
    line: int = 0  # line of the rule's first key
    expr_line: int = 0
    has_for: bool = False
    node: Any = None  # the ruamel mapping, for round-trip edits

    @property
    def is_alert(self) -> bool:
        return self.kind == "alert"


@dataclass
class RuleGroup:
    """A rule group; ``interval_ms`` is None when it inherits the global evaluation interval."""

    name: str
    rules: list[Rule]
    interval_ms: int | None = None
    query_offset_ms: int = 0
    limit: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    line: int = 0
    path: str = ""

    def effective_interval(self, global_interval_ms: int) -> int:
        return self.interval_ms if self.interval_ms else global_interval_ms


@dataclass
class RuleFile:
    """A loaded rule file: the parsed groups plus the ruamel document for round-trip writing."""

    path: str
    groups: list[RuleGroup]
    document: Any
    text: str
    indent: tuple[int, int, int] = (2, 4, 2)

    def rules(self) -> Iterable[Rule]:
        for g in self.groups:
            yield from g.rules

    def find(self, name: str, group: str | None = None) -> Rule:
        for r in self.rules():
            if r.name == name and (group is None or r.group == group):
                return r
        raise KeyError(name)

    def set_rule_field(self, rule: Rule, key: str, value: Any) -> None:
        """Set ``expr``, ``for``, ``keep_firing_for`` (or any key) in the document.

        A new key is inserted right after ``expr`` (or ``for``) so the rule reads as
        people write it; an existing one keeps its position and its comments.
        """
        node: CommentedMap = rule.node
        if key in node:
            node[key] = value
        else:
            keys = list(node.keys())
            anchor = "for" if key == "keep_firing_for" and "for" in node else "expr"
            pos = keys.index(anchor) + 1 if anchor in keys else len(keys)
            node.insert(pos, key, value)
        if key == "expr":
            rule.expr = str(value)
        elif key == "for":
            rule.for_ms = parse_prom_duration(value)
            rule.has_for = True
        elif key == "keep_firing_for":
            rule.keep_firing_for_ms = parse_prom_duration(value)

    def dumps(self) -> str:
        """The document as YAML, byte-identical to the input where nothing was changed."""
        yaml = _yaml()
        yaml.indent(mapping=self.indent[0], sequence=self.indent[1], offset=self.indent[2])
        buf = io.StringIO()
        yaml.dump(self.document, buf)
        return buf.getvalue()

    def write(self, path: str | Path) -> None:
        """Write atomically (temp file then rename): a failure leaves no partial file."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.dumps())
        tmp.replace(path)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long expressions
    return yaml


def _detect_indent(text: str) -> tuple[int, int, int]:
    """Guess ruamel's (mapping, sequence, offset) indents from the first nested list."""
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        stripped = line.rstrip()
        if stripped.endswith(":") and not stripped.lstrip().startswith("#"):
            base = len(line) - len(line.lstrip())
            for nxt in lines[i + 1 :]:
                if not nxt.strip() or nxt.lstrip().startswith("#"):
                    continue
                ind = len(nxt) - len(nxt.lstrip())
                if nxt.lstrip().startswith("- "):
                    offset = ind - base
                    rest = nxt.lstrip()[2:]
                    extra = len(rest) - len(rest.lstrip())
                    seq = offset + 2 + extra
                    mapping = 2
                    return (mapping, seq, offset)
                break
    return (2, 4, 2)


def _line(node: Any, key: Any = None, *, value: bool = False) -> int:
    """1-based line of a mapping (or of one of its keys / values)."""
    try:
        if key is None:
            return int(node.lc.line) + 1
        pos = node.lc.value(key) if value else node.lc.key(key)
        return int(pos[0]) + 1
    except (AttributeError, KeyError, TypeError):
        return 0


class _Errors:
    def __init__(self, path: str) -> None:
        self.path = path
        self.items: list[RuleFileError] = []

    def add(self, line: int, message: str) -> None:
        self.items.append(RuleFileError(message, self.path, line or None))


def _str_map(node: Any, what: str, where: str, errs: _Errors, line: int) -> dict[str, str]:
    if node is None:
        return {}
    if not isinstance(node, dict):
        errs.add(line, f"{where}: {what} must be a mapping")
        return {}
    out: dict[str, str] = {}
    for k, v in node.items():
        if isinstance(v, dict | list):
            errs.add(_line(node, k), f"{where}: {what} {k!s} must be a string")
            continue
        out[str(k)] = "" if v is None else str(v)
    return out


def _parse_expr_error(expr: str) -> str | None:
    try:
        promql_parser.parse(expr)
    except Exception as exc:  # promql-parser raises ValueError / its own errors
        return " ".join(str(exc).split())
    return None


def _validate_rule(node: Any, gname: str, idx: int, errs: _Errors) -> Rule | None:
    from vfanalytics.alert_templates import check_template

    line = _line(node)
    if not isinstance(node, dict):
        errs.add(line, f'group "{gname}", rule {idx}: a rule must be a mapping')
        return None
    name = str(node.get("alert") or node.get("record") or "")
    where = f'group "{gname}", rule {idx}, "{name}"'
    for k in node:
        if k not in _RULE_KEYS:
            errs.add(_line(node, k), f"{where}: field {k} not found in type rulefmt.RuleNode")
    has_alert, has_record = "alert" in node, "record" in node
    if has_alert and has_record:
        errs.add(line, f"{where}: only one of 'record' and 'alert' must be set")
    elif not has_alert and not has_record:
        errs.add(line, f"{where}: one of 'record' or 'alert' must be set")
    kind = "alert" if has_alert else "record"
    expr = node.get("expr")
    expr_line = _line(node, "expr", value=True) if "expr" in node else line
    if expr is None or str(expr).strip() == "":
        errs.add(expr_line, f"{where}: field 'expr' must be set in rule")
        expr = ""
    else:
        expr = str(expr)
        msg = _parse_expr_error(expr)
        if msg is not None:
            errs.add(expr_line, f"{where}: could not parse expression: {msg}")
    if kind == "record":
        if not _METRIC_NAME_RE.match(name):
            errs.add(_line(node, "record", value=True), f"{where}: invalid recording rule name: {name}")
        for bad in ("annotations", "for", "keep_firing_for"):
            if bad in node:
                errs.add(_line(node, bad), f"{where}: invalid field '{bad}' in recording rule")
    elif not name.strip():
        errs.add(_line(node, "alert", value=True), f"{where}: invalid alert name: {name}")
    durations: dict[str, int] = {}
    for key in ("for", "keep_firing_for"):
        if key in node and node[key] is not None:
            try:
                durations[key] = parse_prom_duration(node[key])
            except TimeParseError as exc:
                errs.add(_line(node, key, value=True), f"{where}: {key}: {exc}")
    labels = _str_map(node.get("labels"), "label", where, errs, _line(node, "labels"))
    annotations = _str_map(node.get("annotations"), "annotation", where, errs, _line(node, "annotations"))
    for k in labels:
        if not _LABEL_NAME_RE.match(k) or k == "__name__":
            errs.add(_line(node["labels"], k), f"{where}: invalid label name: {k}")
    for k in annotations:
        if not _LABEL_NAME_RE.match(k):
            errs.add(_line(node["annotations"], k), f"{where}: invalid annotation name: {k}")
    if kind == "alert":
        for what, mapping, parent in (("label", labels, "labels"), ("annotation", annotations, "annotations")):
            for k, v in mapping.items():
                problem = check_template(v)
                if problem is not None:
                    errs.add(_line(node[parent], k, value=True), f"{where}: {what} {k!r}: template: {problem}")
    return Rule(
        kind=kind,
        name=name,
        expr=expr,
        for_ms=durations.get("for", 0),
        keep_firing_for_ms=durations.get("keep_firing_for", 0),
        labels=labels,
        annotations=annotations,
        group=gname,
        index=idx,
        line=line,
        expr_line=expr_line,
        has_for="for" in node,
        node=node,
    )


def _validate(doc: Any, path: str, version: int = 3) -> tuple[list[RuleGroup], list[RuleFileError]]:
    errs = _Errors(path)
    group_keys = _GROUP_KEYS if version >= 3 else _GROUP_KEYS - _GROUP_KEYS_3X
    groups: list[RuleGroup] = []
    if doc is None:
        return groups, errs.items
    if not isinstance(doc, dict):
        errs.add(1, "a rule file must be a mapping with a 'groups' list")
        return groups, errs.items
    for k in doc:
        if k != "groups":
            errs.add(_line(doc, k), f"field {k} not found in type rulefmt.RuleGroups")
    gnodes = doc.get("groups") or []
    if not isinstance(gnodes, list):
        errs.add(_line(doc, "groups", value=True), "'groups' must be a list")
        return groups, errs.items
    seen: set[str] = set()
    for gnode in gnodes:
        gline = _line(gnode)
        if not isinstance(gnode, dict):
            errs.add(gline, "a group must be a mapping")
            continue
        gname = str(gnode.get("name") or "")
        for k in gnode:
            if k not in group_keys:
                errs.add(_line(gnode, k), f'group "{gname}": field {k} not found in type rulefmt.RuleGroup')
        if not gname.strip():
            errs.add(gline, "Groupname must not be empty")
        elif gname in seen:
            errs.add(_line(gnode, "name", value=True), f'groupname: "{gname}" is repeated in the same file')
        seen.add(gname)
        group = RuleGroup(name=gname, rules=[], line=gline, path=path)
        for key, attr in (("interval", "interval_ms"), ("query_offset", "query_offset_ms")):
            if gnode.get(key) is not None:
                try:
                    setattr(group, attr, parse_prom_duration(gnode[key]))
                except TimeParseError as exc:
                    errs.add(_line(gnode, key, value=True), f'group "{gname}": {key}: {exc}')
        if gnode.get("limit") is not None:
            try:
                group.limit = int(gnode["limit"])
                if group.limit < 0:
                    raise ValueError
            except (TypeError, ValueError):
                errs.add(_line(gnode, "limit", value=True), f'group "{gname}": limit must be a non-negative integer')
        group.labels = _str_map(gnode.get("labels"), "label", f'group "{gname}"', errs, _line(gnode, "labels"))
        rnodes = gnode.get("rules") or []
        if not isinstance(rnodes, list):
            errs.add(_line(gnode, "rules", value=True), f'group "{gname}": rules must be a list')
            rnodes = []
        for i, rnode in enumerate(rnodes, start=1):
            rule = _validate_rule(rnode, gname, i, errs)
            if rule is not None:
                group.rules.append(rule)
        groups.append(group)
    return groups, errs.items


def loads_rule_file(text: str, path: str = "<string>", *, prometheus_version: int = 3
                    ) -> tuple[RuleFile, list[RuleFileError]]:
    """Parse and validate rule-file text; returns the file and every problem found.

    ``prometheus_version=2`` rejects the group fields 2.x does not know (``query_offset``,
    ``labels``), as promtool 2.42 does.
    """
    try:
        doc = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise RuleFileError(f"invalid YAML: {reason}", path, line) from None
    except Exception as exc:  # ruamel's other scanner errors
        raise RuleFileError(f"invalid YAML: {' '.join(str(exc).split())}", path) from None
    groups, errors = _validate(doc, path, prometheus_version)
    return RuleFile(path=path, groups=groups, document=doc, text=text, indent=_detect_indent(text)), errors


def load_rule_file(path: str | Path) -> RuleFile:
    """Load and validate one rule file; raise :class:`RuleFileError` (first problem) if invalid."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise RuleFileError(f"cannot read: {exc.strerror}", str(p)) from None
    rf, errors = loads_rule_file(text, str(p))
    if errors:
        raise errors[0]
    return rf


def load_rule_files(paths: Sequence[str | Path]) -> list[RuleFile]:
    """Load several files (shell globs already expanded by the caller)."""
    return [load_rule_file(p) for p in paths]


def check_rule_files(paths: Sequence[str | Path], *, prometheus_version: int = 3
                     ) -> dict[str, tuple[int, list[RuleFileError]]]:
    """``promtool check rules``: per file, (number of rules, problems)."""
    out: dict[str, tuple[int, list[RuleFileError]]] = {}
    for p in paths:
        try:
            text = Path(p).read_text()
            rf, errors = loads_rule_file(text, str(p), prometheus_version=prometheus_version)
            out[str(p)] = (sum(len(g.rules) for g in rf.groups), errors)
        except RuleFileError as exc:
            out[str(p)] = (0, [exc])
        except OSError as exc:
            out[str(p)] = (0, [RuleFileError(f"cannot read: {exc.strerror}", str(p))])
    return out


@dataclass
class PrometheusConfig:
    """The parts of ``prometheus.yml`` that rule evaluation needs."""

    evaluation_interval_ms: int = DEFAULT_EVALUATION_INTERVAL_MS
    external_labels: dict[str, str] = field(default_factory=dict)
    rule_files: list[str] = field(default_factory=list)


def load_prometheus_config(path: str | Path) -> PrometheusConfig:
    """Read ``global.evaluation_interval`` and ``external_labels`` from a prometheus.yml.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "prometheus.yml"
    >>> _ = p.write_text("global:\\n  evaluation_interval: 15s\\n")
    >>> load_prometheus_config(p).evaluation_interval_ms
    15000
    """
    p = Path(path)
    try:
        doc = _yaml().load(p.read_text())
    except OSError as exc:
        raise RuleFileError(f"cannot read: {exc.strerror}", str(p)) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise RuleFileError(f"invalid YAML: {exc.problem}", str(p), mark.line + 1 if mark else None) from None
    cfg = PrometheusConfig()
    glob = (doc or {}).get("global") or {}
    if glob.get("evaluation_interval") is not None:
        try:
            cfg.evaluation_interval_ms = parse_prom_duration(glob["evaluation_interval"])
        except TimeParseError as exc:
            raise RuleFileError(f"global.evaluation_interval: {exc}", str(p), _line(glob, "evaluation_interval")) from None
    cfg.external_labels = {str(k): str(v) for k, v in (glob.get("external_labels") or {}).items()}
    cfg.rule_files = [str(x) for x in ((doc or {}).get("rule_files") or [])]
    return cfg


def duration_text(ms: int) -> str:
    """A duration as it should be written in a rule file."""
    return format_duration(ms)


def new_map(**items: Any) -> CommentedMap:
    """A ruamel mapping (for tests and generated files)."""
    m = CommentedMap()
    for k, v in items.items():
        m[k] = v
    return m


def new_seq(items: Iterable[Any]) -> CommentedSeq:
    return CommentedSeq(list(items))
