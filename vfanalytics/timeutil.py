"""Times and durations at the edges (CLI, notebook parameters, config files).

Inside vfanalytics every time is int64 milliseconds since the Unix epoch (UTC)
and every duration is int64 milliseconds. This module converts the forms
people type:

* times: RFC 3339 (``2026-11-01T00:00:00Z``, a bare date ``2026-11-01``),
  Unix seconds (``1793491200`` or ``1793491200.5``), and ``now`` with an
  optional offset (``now-7d``, ``now+1h30m``);
* durations: Prometheus syntax (``90s``, ``5m``, ``1h30m``, ``1d``, ``250ms``).

Example
-------
>>> parse_duration("1h30m")
5400000
>>> format_duration(5400000)
'1h30m'
>>> parse_time("2026-11-01T00:00:00Z")
1793491200000
>>> parse_time("1793491200")
1793491200000
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from vfanalytics.exceptions import TimeParseError

__all__ = ["parse_duration", "format_duration", "parse_time", "format_time", "now_ms"]

# Prometheus' model.ParseDuration units, largest first (the order it requires).
_UNITS_MS = {
    "y": 365 * 24 * 3600 * 1000,
    "w": 7 * 24 * 3600 * 1000,
    "d": 24 * 3600 * 1000,
    "h": 3600 * 1000,
    "m": 60 * 1000,
    "s": 1000,
    "ms": 1,
}
_DURATION_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")


def parse_duration(text: str | int | float) -> int:
    """Parse a Prometheus duration into milliseconds.

    Plain numbers are taken as seconds (as Prometheus' HTTP API does for
    ``step``).

    Raises
    ------
    TimeParseError
        If the text is not a duration.
    """
    if isinstance(text, int | float):
        return int(round(float(text) * 1000))
    s = str(text).strip()
    if not s:
        raise TimeParseError("empty duration")
    try:
        return int(round(float(s) * 1000))
    except ValueError:
        pass
    m = _DURATION_RE.match(s)
    if not m or not any(m.groups()):
        raise TimeParseError(f"not a valid duration: {text!r} (use Prometheus syntax such as 90s, 5m, 1h30m)")
    total = 0
    for value, unit in zip(m.groups(), _UNITS_MS, strict=True):
        if value:
            total += int(value) * _UNITS_MS[unit]
    return total


def format_duration(ms: int) -> str:
    """Format milliseconds as Prometheus does (``1h30m``, ``0s`` for zero)."""
    if ms == 0:
        return "0s"
    sign = "-" if ms < 0 else ""
    ms = abs(int(ms))
    out = []
    for unit, size in _UNITS_MS.items():
        if unit in ("y", "w"):
            # Prometheus prints weeks and years only when the value is an exact multiple.
            if ms % size == 0 and ms >= size:
                out.append(f"{ms // size}{unit}")
                ms = 0
                break
            continue
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    return sign + "".join(out)


def now_ms() -> int:
    """The current time in milliseconds."""
    return int(time.time() * 1000)


_NOW_RE = re.compile(r"^now(?:([+-])(.+))?$")


def parse_time(text: str | int | float | datetime, *, now: int | None = None) -> int:
    """Parse a time into int64 milliseconds since the epoch (UTC).

    Parameters
    ----------
    text:
        RFC 3339 / ISO 8601 (naive times are UTC), a date, Unix seconds, or
        ``now[+-duration]``. A :class:`~datetime.datetime` is accepted too.
    now:
        The reference for ``now`` in milliseconds (default: the clock).
    """
    if isinstance(text, datetime):
        dt = text if text.tzinfo else text.replace(tzinfo=UTC)
        return int(round(dt.timestamp() * 1000))
    if isinstance(text, int | float):
        return int(round(float(text) * 1000))
    s = str(text).strip()
    m = _NOW_RE.match(s)
    if m:
        base = now_ms() if now is None else now
        if m.group(1) is None:
            return base
        off = parse_duration(m.group(2))
        return base + off if m.group(1) == "+" else base - off
    try:
        return int(round(float(s) * 1000))
    except ValueError:
        pass
    iso = s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError:
        raise TimeParseError(
            f"not a valid time: {text!r} (use RFC 3339, Unix seconds or now-7d)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(round(dt.timestamp() * 1000))


def format_time(ms: int) -> str:
    """Format milliseconds as RFC 3339 UTC (``2026-11-01T00:00:00Z``, with ms when non-zero)."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if ms % 1000:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
