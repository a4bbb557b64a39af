"""The series-value notation shared by promqltest ``load`` and promtool ``input_series``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vfanalytics.exceptions import PromQLSyntaxError, UnsupportedQuery
from vfanalytics.promql.notation import (
    STALE,
    expand_values,
    expand_values_array,
    parse_series_line,
    series_samples,
)
from vfanalytics.series import is_stale


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1+2x3", [1.0, 3.0, 5.0, 7.0]),
        ("5-1x2", [5.0, 4.0, 3.0]),
        ("1x4", [1.0] * 5),
        ("_", [None]),
        ("_x3", [None, None, None]),
        ("stale", [STALE]),
        ("-2-1x1", [-2.0, -3.0]),
        ("0x3 7", [0.0, 0.0, 0.0, 0.0, 7.0]),  # 0x3 is "0 four times", never hex
        ("1e3 .5 +Inf -inf", [1000.0, 0.5, math.inf, -math.inf]),
        ("", []),
    ],
)
def test_expand(text: str, expected: list) -> None:
    assert expand_values(text) == expected


def test_nan_and_sequential_rounding() -> None:
    assert math.isnan(expand_values("NaN")[0])
    # the Go grammar adds the increment step by step
    vals = expand_values("0.1+0.1x9")
    acc = 0.1
    for v in vals[1:]:
        acc += 0.1
        assert v == acc


def test_arrays_keep_stale_bits() -> None:
    values, present = expand_values_array("1 stale _ 2")
    assert present.tolist() == [True, True, False, True]
    assert is_stale(values).tolist() == [False, True, False, False]
    ts, vals = series_samples("1 stale _ 2", start_ms=1000, interval_ms=10_000)
    assert ts.tolist() == [1000, 11000, 31000]
    assert bool(is_stale(vals)[1]) and vals[2] == 2.0


def test_series_line() -> None:
    labels, vals = parse_series_line('http_requests{job="api", path="/a\\"b", empty=""} 0+10x2')
    assert labels == {"__name__": "http_requests", "job": "api", "path": '/a"b'}
    assert vals == [0.0, 10.0, 20.0]
    assert parse_series_line("{} 1")[0] == {}
    assert parse_series_line('{__name__="m", a="b",} 1')[0] == {"__name__": "m", "a": "b"}
    assert parse_series_line('{"my.metric", a="b"} 1')[0] == {"__name__": "my.metric", "a": "b"}


def test_errors_name_the_word() -> None:
    with pytest.raises(PromQLSyntaxError, match="1y2"):
        expand_values("1 1y2")
    with pytest.raises(UnsupportedQuery, match="native histogram"):
        expand_values("{{schema:0 sum:1 count:1}}")
    with pytest.raises(PromQLSyntaxError, match="names no metric"):
        parse_series_line("1 2 3")


def test_matches_samples_used_by_sources() -> None:
    ts, vals = series_samples("0+1x3", interval_ms=60_000)
    assert np.array_equal(ts, [0, 60_000, 120_000, 180_000]) and vals.tolist() == [0.0, 1.0, 2.0, 3.0]
