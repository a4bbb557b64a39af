"""The series-value notation of promqltest ``load`` blocks and promtool ``input_series``.

Both Prometheus' conformance files and promtool's rule unit tests describe
samples with the same small language (``series_item`` in Prometheus'
``promql/parser/generated_parser.y``), one item per space-separated word:

========== =====================================================================
``7``      one sample of value 7 (also ``-2``, ``1.5e3``, ``Inf``, ``NaN``)
``stale``  one staleness marker (:data:`vfanalytics.series.STALE_NAN`)
``_``      one omitted sample (the step passes with no sample)
``_x3``    three omitted samples
``1x4``    the value 1, *five* times (the ``x n`` forms give n + 1 values)
``1+2x3``  1, 3, 5, 7 (start, then add the increment n times)
``5-1x2``  5, 4, 3
========== =====================================================================

The increment is added step by step in float64, exactly as the Go parser does,
so ``0.1+0.1x9`` gives the same rounding as Prometheus. Native-histogram
descriptions (``{{schema:0 sum:5 ...}}``) are outside the supported subset.

Example
-------
>>> expand_values("1+2x3 _ stale _x2 4x1")
[1.0, 3.0, 5.0, 7.0, None, 'stale', None, None, 4.0, 4.0]
>>> ts, vals = series_samples("0+10x2 _ 5", start_ms=0, interval_ms=60_000)
>>> ts.tolist(), vals.tolist()
([0, 60000, 120000, 240000], [0.0, 10.0, 20.0, 5.0])
>>> labels, values = parse_series_line('http_requests{job="api", group="canary"} 0+10x2')
>>> labels, values
({'__name__': 'http_requests', 'group': 'canary', 'job': 'api'}, [0.0, 10.0, 20.0])
"""

from __future__ import annotations

import re

import numpy as np

from vfanalytics.exceptions import PromQLSyntaxError, UnsupportedQuery
from vfanalytics.series import STALE_NAN

__all__ = [
    "STALE",
    "SeriesValue",
    "expand_values",
    "expand_values_array",
    "series_samples",
    "parse_series_line",
    "parse_number",
]

#: marker that :func:`expand_values` returns for a staleness marker
STALE = "stale"

#: one expanded item: a float, :data:`STALE`, or ``None`` for an omitted sample
SeriesValue = float | str | None

# no hex here: in series values `0x5` is "0, five more times"
_NUM = r"(?:[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN]|(?:\d+(?:_\d+)*\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
_ITEM_RE = re.compile(
    rf"^(?:(?P<blank>_)(?:x(?P<blank_n>\d+))?"
    rf"|(?P<first>stale|[+-]?{_NUM})(?:(?P<inc>[+-]{_NUM})?x(?P<n>\d+))?)$"
)


def parse_number(text: str) -> float:
    """Parse a PromQL number literal: decimal, ``0x`` hex, ``Inf``/``NaN`` (any case), signed.

    >>> parse_number("-Inf"), parse_number("0x1F"), parse_number("1e3")
    (-inf, 31.0, 1000.0)
    """
    s = text.strip()
    sign = 1.0
    if s[:1] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    low = s.lower()
    if low.startswith("0x"):
        return sign * float(int(low, 16))
    if low in ("inf", "infinity"):
        return sign * float("inf")
    if low == "nan":
        return float("nan")
    try:
        return sign * float(s.replace("_", ""))
    except ValueError:
        raise PromQLSyntaxError(f"bad number {text!r} in series values") from None


def _first_value(token: str) -> float | str:
    return STALE if token == "stale" else parse_number(token)


def expand_values(text: str) -> list[SeriesValue]:
    """Expand a series-value string into one entry per step.

    Parameters
    ----------
    text:
        Space-separated items (see the module docstring).

    Returns
    -------
    list
        Floats for samples, :data:`STALE` for staleness markers, ``None`` for
        omitted steps.

    Raises
    ------
    PromQLSyntaxError
        For a word that is not a series item (the message names it and its position).
    UnsupportedQuery
        For native-histogram descriptions ``{{...}}``.
    """
    out: list[SeriesValue] = []
    if "{{" in text:
        raise UnsupportedQuery("native histogram series values ({{...}}) are not supported")
    pos = 0
    for word in text.split():
        pos = text.index(word, pos)
        m = _ITEM_RE.match(word)
        if m is None:
            raise PromQLSyntaxError(
                f"bad series value {word!r} at character {pos + 1}: expected a number, "
                "'stale', '_', or a form like 1+2x3 / 1x3 / _x3"
            )
        if m.group("blank"):
            count = int(m.group("blank_n")) if m.group("blank_n") is not None else 1
            out.extend([None] * count)
        else:
            first = _first_value(m.group("first"))
            n = m.group("n")
            if n is None:
                out.append(first)
            elif m.group("inc") is None or first == STALE:
                if m.group("inc") is not None:
                    # stale + increment stays stale in Go (NaN + x is NaN, but not the marker bits)
                    out.append(first)
                    out.extend([float("nan")] * int(n))
                else:
                    out.extend([first] * (int(n) + 1))
            else:
                assert isinstance(first, float)
                inc = parse_number(m.group("inc"))
                # sequential float64 accumulation, as the Go grammar's `$1 += $2`
                steps = np.full(int(n) + 1, inc, dtype=np.float64)
                steps[0] = first
                out.extend(np.add.accumulate(steps).tolist())
        pos += len(word)
    return out


def expand_values_array(text: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`expand_values` as arrays: ``(values float64, present bool)``.

    Staleness markers keep their exact bit pattern; omitted steps are NaN with
    ``present`` False.
    """
    items = expand_values(text)
    values = np.array(
        [STALE_NAN if v == STALE else (np.nan if v is None else v) for v in items], dtype=np.float64
    )
    present = np.array([v is not None for v in items], dtype=bool)
    return values, present


def series_samples(
    text: str, *, start_ms: int = 0, interval_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps and values of the samples a series-value string describes.

    The i-th item lands at ``start_ms + i * interval_ms``; omitted items are
    dropped, staleness markers are kept bit-exact.
    """
    values, present = expand_values_array(text)
    ts = start_ms + np.arange(len(values), dtype=np.int64) * np.int64(interval_ms)
    return ts[present], values[present]


_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*|"(?:[^"\\]|\\.)*")\s*=\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`)\s*(,|\})')
_NAME_RE = re.compile(r'\s*([a-zA-Z_:][a-zA-Z0-9_:]*|"(?:[^"\\]|\\.)*")?\s*')


def _unquote(s: str) -> str:
    if s.startswith("`"):
        return s[1:-1]
    body = s[1:-1]
    # Go string escapes; label values in test files use \\, \", \n, \t and \u forms
    return body.encode("latin-1", "backslashreplace").decode("unicode_escape") if "\\" in body else body


def parse_series_line(line: str) -> tuple[dict[str, str], list[SeriesValue]]:
    """Split a ``metric{label="value", ...} values`` line into labels and expanded values.

    The metric part follows PromQL's metric syntax (``name{a="b"}``,
    ``{__name__="name", a="b"}``, quoted UTF-8 names such as
    ``{"my.metric", a="b"}``). Labels with empty values are dropped, as Prometheus does.
    """
    text = line.strip()
    m = _NAME_RE.match(text)
    assert m is not None
    labels: dict[str, str] = {}
    name = m.group(1)
    pos = m.end()
    if name:
        labels["__name__"] = _unquote(name) if name.startswith('"') else name
    braces = pos < len(text) and text[pos] == "{"
    if braces:
        pos += 1
        close = re.match(r"\s*\}", text[pos:])
        if close:
            pos += close.end()
        while not close:
            bare = re.match(r'\s*("(?:[^"\\]|\\.)*")\s*(,|\})', text[pos:])
            if bare:  # a quoted metric name inside the braces
                labels["__name__"] = _unquote(bare.group(1))
                pos += bare.end()
                if bare.group(2) == "}":
                    break
                continue
            lm = _LABEL_RE.match(text, pos)
            if lm is None:
                # allow a trailing comma before the closing brace
                tail = re.match(r"\s*\}", text[pos:])
                if tail:
                    pos += tail.end()
                    break
                raise PromQLSyntaxError(f"bad label set at character {pos + 1} in series line {line!r}")
            key = lm.group(1)
            key = _unquote(key) if key.startswith('"') else key
            labels[key] = _unquote(lm.group(2))
            pos = lm.end()
            if lm.group(3) == "}":
                break
    if not labels and not braces:
        raise PromQLSyntaxError(f"series line {line!r} names no metric or labels")
    values = expand_values(text[pos:])
    return {k: v for k, v in sorted(labels.items()) if v != ""}, values
