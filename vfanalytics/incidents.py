"""Incidents: the ground truth alert rules are scored against.

An incident has ``id, start, end, severity, matchers, title`` and, optionally,
``kind`` and ``alerts`` (comma-separated rule names expected to fire for it; see
:func:`relevant_to`). ``matchers`` is a PromQL selector body such as
``{job="vaporform-backend", instance=~"api-.*"}`` (braces optional) that an alert's
labels must satisfy; a matcher on a label the alert does not carry (aggregated away) is
ignored, so ``sum by (le)`` alerts still match per-route incidents.

Files are CSV (a header row naming the columns) or YAML (a list of mappings, or a
mapping with an ``incidents`` list). Times take RFC 3339, Unix seconds or ``now-2d``.
Bad rows raise :class:`~vfanalytics.exceptions.IncidentFileError` naming the file and
the row's line, e.g. ``incidents.csv:4: row 3: end 2026-11-01T10:00:00Z is before
start 2026-11-01T11:00:00Z``. Loading is all-or-nothing: nothing is written to the
store unless every row is valid.

Example
-------
>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "inc.csv"
>>> _ = p.write_text('id,start,end,severity,matchers,title\\n'
...                  'i1,2026-11-01T10:00:00Z,2026-11-01T11:00:00Z,critical,"{job=""api""}",API down\\n')
>>> df = load_incidents(p)
>>> df.select("id", "start_ms", "matchers").rows()
[('i1', 1793527200000, '{job="api"}')]
>>> parse_matchers('{job="api", instance=~"a.*"}')
[('job', '=', 'api'), ('instance', '=~', 'a.*')]
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import promql_parser
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from vfanalytics.exceptions import IncidentFileError, TimeParseError
from vfanalytics.timeutil import format_time, parse_time

__all__ = [
    "INCIDENT_SCHEMA",
    "load_incidents",
    "parse_matchers",
    "matches",
    "matcher_mask",
    "store_incidents",
    "relevant_to",
]

INCIDENT_SCHEMA = {
    "id": pl.Utf8, "start_ms": pl.Int64, "end_ms": pl.Int64, "severity": pl.Utf8,
    "matchers": pl.Utf8, "title": pl.Utf8, "kind": pl.Utf8, "alerts": pl.Utf8,
}
_ALIASES = {"start_ms": "start", "end_ms": "end", "starts_at": "start", "ends_at": "end", "name": "title"}
_OPS = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}


def parse_matchers(text: str | None) -> list[tuple[str, str, str]]:
    """Parse ``{a="b", c=~"d.*"}`` (braces optional) into (name, op, value) tuples."""
    s = (text or "").strip()
    if not s or s == "{}":
        return []
    body = s if s.startswith("{") else "{" + s + "}"
    try:
        expr = promql_parser.parse(body)
    except Exception as exc:
        raise ValueError(f"invalid matchers {s!r}: {' '.join(str(exc).split())}") from None
    out = []
    if not isinstance(expr, promql_parser.VectorSelector):
        raise ValueError(f"invalid matchers {s!r}: not a label selector")
    for m in expr.matchers.matchers:
        op = _OPS.get(str(m.op).split(".")[-1])
        if op is None:
            raise ValueError(f"invalid matcher operator in {s!r}")
        out.append((m.name, op, m.value))
    return out


def matches(matchers: Sequence[tuple[str, str, str]], labels: Mapping[str, str], *, strict: bool = False) -> bool:
    """Whether a label set satisfies the matchers.

    By default a matcher on a label the alert does not carry is ignored: an alert that
    aggregated ``route`` away still matches an incident on one route. ``strict`` treats absent
    labels as "" (PromQL's rule).
    """
    from vfanalytics.promql.source import label_matches

    return all(label_matches(op, v, labels.get(n, "")) for n, op, v in matchers if strict or n in labels)


def matcher_mask(matchers_text: Sequence[str | None], label_sets: Sequence[Mapping[str, str]]) -> np.ndarray:
    """Boolean matrix ``[label_set, incident]``: which alert label sets each incident's matchers accept."""
    out = np.zeros((len(label_sets), len(matchers_text)), dtype=bool)
    for j, text in enumerate(matchers_text):
        ms = parse_matchers(text)
        for i, lab in enumerate(label_sets):
            out[i, j] = matches(ms, lab)
    return out


def _time(value: Any, what: str, where: str, path: str, line: int | None) -> int:
    if value is None or str(value).strip() == "":
        raise IncidentFileError(f"{where}: missing {what}", path, line)
    try:
        return parse_time(value if not hasattr(value, "isoformat") else str(value))
    except TimeParseError as exc:
        raise IncidentFileError(f"{where}: {what}: {exc}", path, line) from None


def _rows_from_file(path: Path) -> list[tuple[int, dict[str, Any]]]:
    text = path.read_text()
    if path.suffix.lower() in (".yml", ".yaml", ".json"):
        try:
            doc = YAML(typ="rt").load(text)
        except MarkedYAMLError as exc:
            mark = exc.problem_mark
            raise IncidentFileError(f"invalid YAML: {exc.problem}", str(path), mark.line + 1 if mark else None) from None
        if isinstance(doc, Mapping):
            doc = doc.get("incidents")
        if doc is None:
            return []
        if not isinstance(doc, list):
            raise IncidentFileError("expected a list of incidents", str(path), 1)
        rows = []
        for item in doc:
            line = int(item.lc.line) + 1 if hasattr(item, "lc") else None
            if not isinstance(item, Mapping):
                raise IncidentFileError("an incident must be a mapping", str(path), line)
            rows.append((line or 0, dict(item)))
        return rows
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        return []
    rows = []
    for rec in reader:
        if None in rec:
            raise IncidentFileError(f"row {reader.line_num - 1}: more fields than the header", str(path), reader.line_num)
        rows.append((reader.line_num, dict(rec)))
    return rows


def load_incidents(path: str | Path, *, default_matchers: str = "") -> pl.DataFrame:
    """Read an incident CSV / YAML file into the store's incident frame (``INCIDENT_SCHEMA``).

    Raises
    ------
    IncidentFileError
        For the first bad row (missing or unparsable times, end before start, bad matchers,
        duplicate id), with the file, its line and the row number.
    """
    p = Path(path)
    try:
        raw = _rows_from_file(p)
    except OSError as exc:
        raise IncidentFileError(f"cannot read: {exc.strerror}", str(p)) from None
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n, (line, rec) in enumerate(raw, start=1):
        for key in ("start_ms", "end_ms"):  # integer milliseconds, the store's own columns
            if rec.get(key) not in (None, "") and key[:-3] not in rec:
                try:
                    rec[key[:-3]] = int(rec[key]) / 1000
                except (TypeError, ValueError):
                    pass
        rec = {_ALIASES.get(str(k).strip(), str(k).strip()): v for k, v in rec.items()
               if str(k).strip() not in ("start_ms", "end_ms") or _ALIASES[str(k).strip()] not in rec}
        where = f"row {n}"
        start = _time(rec.get("start"), "start", where, str(p), line)
        end = _time(rec.get("end"), "end", where, str(p), line)
        if end < start:
            raise IncidentFileError(
                f"{where}: end {format_time(end)} is before start {format_time(start)}", str(p), line
            )
        iid = str(rec.get("id") or f"incident-{n}")
        if iid in seen:
            raise IncidentFileError(f"{where}: duplicate id {iid!r}", str(p), line)
        seen.add(iid)
        matchers = str(rec.get("matchers") or default_matchers or "")
        try:
            parse_matchers(matchers)
        except ValueError as exc:
            raise IncidentFileError(f"{where}: {exc}", str(p), line) from None
        alerts = rec.get("alerts") or ""
        if isinstance(alerts, list):
            alerts = ",".join(str(a) for a in alerts)
        out.append({
            "id": iid, "start_ms": start, "end_ms": end, "severity": str(rec.get("severity") or ""),
            "matchers": matchers, "title": str(rec.get("title") or ""), "kind": str(rec.get("kind") or ""),
            "alerts": str(alerts),
        })
    return pl.DataFrame(out, schema=INCIDENT_SCHEMA)


def store_incidents(store: Any, frame: pl.DataFrame, *, table: str = "incidents") -> None:
    """Replace the store's incident table in one transaction."""
    store.replace_incidents(frame.select(list(INCIDENT_SCHEMA)), table=table)


def relevant_to(incidents: pl.DataFrame, rule_name: str) -> pl.DataFrame:
    """Incidents a rule is expected to catch.

    When the table names rules (``alerts``), an incident is relevant to the rules it names; one
    naming none (a build regression, say) is expected to page no rule. When no incident names
    any rule, every incident is relevant to every rule (matchers still apply).
    """
    if incidents is None or incidents.height == 0 or "alerts" not in incidents.columns:
        return incidents
    names = incidents["alerts"].fill_null("").to_list()
    if not any(a.strip() for a in names):
        return incidents
    keep = [rule_name in [x.strip() for x in a.split(",")] for a in names]
    return incidents.filter(pl.Series(keep, dtype=pl.Boolean))
