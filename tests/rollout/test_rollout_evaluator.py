"""The evaluator: hashing against an independent loop transcription, flag files, isEnabled rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfanalytics.exceptions import FlagFileError, UsageError
from vfanalytics.rollout import (
    FeatureFlag,
    bucket,
    evaluate,
    flags_to_yaml,
    hash_user,
    is_enabled,
    java_string_hash,
    load_flags,
    load_flags_text,
    parse_percentages,
)


def js_loop_hash(user_id: str) -> int:
    """The TypeScript loop, step by step: int32 `<<`, float `-`/`+`, then ToInt32 (`& hash`)."""
    units = user_id.encode("utf-16-le", "surrogatepass")
    h = 0
    for i in range(0, len(units), 2):
        char = units[i] | (units[i + 1] << 8)
        shifted = ((h << 5) & 0xFFFFFFFF)
        shifted = shifted - 2**32 if shifted >= 2**31 else shifted  # `<<` yields an int32
        h = (shifted - h) + char  # exact in a double: |value| < 2**37
        h &= 0xFFFFFFFF
        h = h - 2**32 if h >= 2**31 else h  # `hash & hash` = ToInt32
    return h


def flag(**kw: object) -> FeatureFlag:
    base = dict(key="f", name="F", description="", enabled=True, rollout_percentage=100.0,
                user_segments=("all",), environments=("production",))
    base.update(kw)
    return FeatureFlag(**base)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(st.characters(exclude_categories=()), min_size=0, max_size=40), min_size=1, max_size=30))
def test_vectorised_hash_equals_loop_transcription(ids: list[str]) -> None:
    assert java_string_hash(ids).tolist() == [js_loop_hash(s) for s in ids]
    expected_bucket = [abs(js_loop_hash(s or "anonymous")) % 100 for s in ids]
    assert bucket(ids).tolist() == expected_bucket


def test_hash_edge_cases() -> None:
    ids = ["a\x00", "\x00", "\ud83d", "\ude00\ud83d", "😀", "é" * 300, "x" * 10_000]
    assert java_string_hash(ids).tolist() == [js_loop_hash(s) for s in ids]
    # astral = two code units; a lone surrogate pair written separately hashes the same
    assert java_string_hash("😀")[0] == java_string_hash("\ud83d\ude00")[0]
    assert hash_user([None]).dtype == np.int64


def test_accepts_numpy_polars_arrow_inputs() -> None:
    ids = ["user-00001", None, "ünï", "😀x"]
    want = bucket(ids).tolist()
    assert bucket(pl.Series(ids)).tolist() == want
    assert bucket(pa.array(ids)).tolist() == want
    assert bucket(pa.chunked_array([ids[:2], ids[2:]])).tolist() == want
    assert bucket(np.array(ids, dtype=object)).tolist() == want
    assert bucket("user-00001").tolist() == want[:1]
    assert bucket([]).tolist() == []
    with pytest.raises(UsageError, match="must be strings"):
        bucket(["a", 42])


def test_sequential_ids_land_in_consecutive_buckets() -> None:
    b = bucket([f"user-0004{i}" for i in range(10)])
    assert np.diff(b).tolist() == [1] * 9  # the unsalted hash's defining weakness


def test_default_flags_file() -> None:
    flags = load_flags()
    assert list(flags) == ["enable_claude_integration", "enable_realtime_collaboration",
                           "enable_advanced_analytics", "enable_container_scaling"]
    analytics = flags["enable_advanced_analytics"]
    assert (analytics.enabled, analytics.rollout_percentage, analytics.user_segments) == (False, 25.0, ("beta_testers",))
    assert analytics.origin is not None and analytics.origin.endswith("flags.yml:19")
    # round trip through the writer, YAML and JSON
    again = load_flags_text(flags_to_yaml(flags.values()))
    assert [f.to_dict() for f in again.values()] == [f.to_dict() for f in flags.values()]
    as_json = json.dumps([f.to_dict() for f in flags.values()], indent=1)
    assert [f.to_dict() for f in load_flags_text(as_json).values()] == [f.to_dict() for f in flags.values()]


GOOD = """flags:
  - key: a
    name: A
    description: d
    enabled: true
    rolloutPercentage: 10
    userSegments: [all]
    environments: [production]
"""


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (GOOD.replace("rolloutPercentage: 10", "rolloutPercentage: 101"), 6, "from 0 to 100"),
        (GOOD.replace("rolloutPercentage: 10", "rolloutPercentage: -1"), 6, "from 0 to 100"),
        (GOOD.replace("rolloutPercentage: 10", "rolloutPercentage: .nan"), 6, "from 0 to 100"),
        (GOOD.replace("rolloutPercentage: 10", "rolloutPercentage: '10'"), 6, "from 0 to 100"),
        (GOOD.replace("rolloutPercentage: 10", "rolloutPercentage: true"), 6, "from 0 to 100"),
        (GOOD + "    owner: me\n", 9, "unknown flag field 'owner'"),
        (GOOD.replace("    name: A\n", ""), 2, "missing field(s) name"),
        (GOOD.replace("enabled: true", "enabled: 'yes'"), 5, "true or false"),
        (GOOD.replace("[all]", "all"), 7, "list of strings"),
        (GOOD.replace("[production]", "[production, 3]"), 8, "list of strings"),
        (GOOD + GOOD.replace("flags:\n", ""), 9, "duplicate flag key 'a'"),
        ("flags:\n  - [1, 2]\n", 2, "must be a mapping"),
        ("flagz: []\n", 1, "top level"),
        ("flags: [\n  {key: a\n", 3, "malformed YAML"),
        ("key: a\nkey: b\n", 2, "malformed YAML"),
    ],
)
def test_flag_file_errors_name_file_and_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = tmp_path / "flags.yml"
    path.write_text(text)
    with pytest.raises(FlagFileError) as info:
        load_flags(path)
    assert info.value.line == line, str(info.value)
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert info.value.exit_code == 2


def test_malformed_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text('[\n {"key": "a",\n }\n]')
    with pytest.raises(FlagFileError, match=r"flags\.json:3: malformed JSON"):
        load_flags(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(FlagFileError, match="not UTF-8"):
        load_flags(path)
    with pytest.raises(FlagFileError, match="cannot read"):
        load_flags(tmp_path / "missing.yml")


def test_unknown_flag_key_lists_known_ones() -> None:
    with pytest.raises(UsageError, match="unknown flag key 'nope'.*enable_claude_integration"):
        load_flags().require("nope")
    assert is_enabled(None, {"userId": "u", "environment": "production"}) is False


def test_is_enabled_rules_as_written() -> None:
    ctx = {"userId": "user-00001", "userSegment": "free", "environment": "production"}  # bucket 19
    assert is_enabled(flag(), ctx)
    assert not is_enabled(flag(environments=("staging",)), ctx)
    assert not is_enabled(flag(), {**ctx, "environment": None})
    assert not is_enabled(flag(enabled=False), ctx)
    # segments: [] and 'all' admit everyone, even without a segment
    assert is_enabled(flag(user_segments=()), {"userId": "x", "environment": "production"})
    assert is_enabled(flag(user_segments=("premium", "all")), ctx)
    assert not is_enabled(flag(user_segments=("premium",)), ctx)
    assert not is_enabled(flag(user_segments=("",)), {**ctx, "userSegment": ""})  # '' is falsy in JS
    # percentage: bucket 19 < p
    assert not is_enabled(flag(rollout_percentage=19), ctx)
    assert is_enabled(flag(rollout_percentage=19.5), ctx)
    assert is_enabled(flag(rollout_percentage=20), ctx)
    assert not is_enabled(flag(rollout_percentage=0), ctx)
    # missing and empty ids are 'anonymous' (bucket 75)
    assert bucket("anonymous")[0] == 75
    for uid in (None, ""):
        assert is_enabled(flag(rollout_percentage=76), {**ctx, "userId": uid})
        assert not is_enabled(flag(rollout_percentage=75), {**ctx, "userId": uid})


def test_evaluate_matches_scalar_and_broadcasts() -> None:
    rng = np.random.default_rng(3)
    ids = [f"user-{i:05d}" for i in range(400)] + [None, ""]
    segs = rng.choice(["free", "premium", "beta_testers", "", None], size=len(ids)).tolist()
    envs = rng.choice(["production", "staging", "development", None], size=len(ids)).tolist()
    for f in [flag(rollout_percentage=37.5, user_segments=("premium", "beta_testers"),
                   environments=("production", "staging")),
              flag(rollout_percentage=0), flag(enabled=False), flag(user_segments=())]:
        got = evaluate(f, ids, segs, envs)
        want = [is_enabled(f, {"userId": i, "userSegment": s, "environment": e}) for i, s, e in zip(ids, segs, envs,
                                                                                                      strict=True)]
        assert got.tolist() == want
    scalar_ctx = evaluate(flag(rollout_percentage=50), ids, None, "production")
    assert scalar_ctx.tolist() == (bucket(ids) < 50).tolist()
    with pytest.raises(UsageError, match="3 values for 402"):
        evaluate(flag(), ids, None, ["production"] * 3)


def test_parse_percentages() -> None:
    assert parse_percentages("0:100:5")[:3] == [0.0, 5.0, 10.0]
    assert parse_percentages("0:100:5")[-1] == 100.0
    assert len(parse_percentages("0:100:5")) == 21
    assert parse_percentages("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_percentages("50, 10,10") == [10.0, 50.0]
    for bad in ("0:120:10", "-5,10", "x", "10:0:5", "0:100:0", "", "1:2:3:4", "nan"):
        with pytest.raises(UsageError):
            parse_percentages(bad)
    with pytest.raises(UsageError):
        flag(rollout_percentage=100.5)
