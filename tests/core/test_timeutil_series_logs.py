"""Edges: times and durations, series identity, log parsing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfanalytics.exceptions import TimeParseError
from vfanalytics.logs import parse_log_lines
from vfanalytics.series import STALE_NAN, canonical_labels, format_series, is_stale, series_id
from vfanalytics.timeutil import format_duration, format_time, parse_duration, parse_time


@pytest.mark.parametrize("text,ms", [("90s", 90_000), ("5m", 300_000), ("1h30m", 5_400_000), ("250ms", 250),
                                     ("1d", 86_400_000), ("2w", 1_209_600_000), ("15", 15_000), ("0.5", 500)])
def test_durations(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("bad", ["", "5x", "m5", "1m1h", "-", "five"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(TimeParseError):
        parse_duration(bad)


@given(st.integers(min_value=1, max_value=10**12))
def test_duration_round_trip(ms: int) -> None:
    assert parse_duration(format_duration(ms)) == ms


def test_times() -> None:
    assert parse_time("2026-11-01T00:00:00Z") == 1_793_491_200_000
    assert parse_time("2026-11-01T01:00:00+01:00") == 1_793_491_200_000
    assert parse_time("2026-11-01") == 1_793_491_200_000
    assert parse_time("1793491200.5") == 1_793_491_200_500
    assert parse_time("now-1h", now=10_000_000) == 10_000_000 - 3_600_000
    assert parse_time("now", now=5) == 5
    assert format_time(1_793_491_200_500) == "2026-11-01T00:00:00.500Z"
    with pytest.raises(TimeParseError):
        parse_time("yesterday")


def test_series_identity() -> None:
    a = {"__name__": "up", "job": "x", "empty": ""}
    assert canonical_labels(a) == '{"__name__":"up","job":"x"}'
    assert series_id(a) == series_id({"job": "x", "__name__": "up"})
    assert series_id(a) != series_id({"__name__": "up", "job": "y"})
    assert 0 <= series_id(a) < 2**64
    assert format_series({"__name__": "up", "b": 'q"\n', "a": "1"}) == 'up{a="1", b="q\\"\\n"}'
    assert is_stale(np.array([STALE_NAN, np.nan, 1.0])).tolist() == [True, False, False]


def test_log_parsing_keeps_every_line() -> None:
    lines = [
        '{"timestamp":"2026-11-01T10:00:00.123Z","level":"info","service":"backend","correlationId":"c",'
        '"message":"Claude interaction: chat","actionType":"claude_interaction","operation":"chat","projectId":"p",'
        '"duration":1234.5,"success":true,"tokens":900,"userId":"u","custom":{"a":1}}',
        "plain text, not JSON",
        '["a", "list"]',
        '{"tokens":"many","success":"yes"}',
    ]
    f = parse_log_lines([1, 2, 3, 4], ["{}"] * 4, lines)
    assert f.height == 4
    assert f["parse_error"].to_list() == [False, True, True, False]
    row = f.row(0, named=True)
    assert (row["tokens"], row["success"], row["duration"], row["extra"]) == (900, True, 1234.5, '{"custom":{"a":1}}')
    assert str(row["log_time"]) == "2026-11-01 10:00:00.123000"
    # fields of the wrong type are kept in extra rather than lost
    assert f.row(3, named=True)["extra"] == '{"tokens":"many","success":"yes"}'
    assert f["line"].to_list() == lines
