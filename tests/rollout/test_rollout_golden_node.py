"""Golden test: the Python evaluator against the seed's TypeScript logic run in Node.js.

tests/fixtures/flag_evaluator.js carries isEnabled/hashUser verbatim (types stripped; checked
below); node evaluates every flag x context x id and the Python side must agree bit for bit.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from vfanalytics.rollout import (
    FeatureFlag,
    bucket,
    evaluate,
    hash_user,
    is_enabled,
    java_string_hash,
    load_flags,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "flag_evaluator.js"
SHARED = Path(os.environ.get("VFA_SHARED", Path(__file__).resolve().parents[3] / "shared"))
SEED_TS = SHARED / "reference" / "vaporform" / "config" / "FeatureFlagManager.ts"
NODE = shutil.which("node") or shutil.which("nodejs")


def id_with_hash(target: int) -> str:
    """An ASCII id whose 32-bit hash is ``target`` mod 2**32 (7 base-31 digits offset by '0')."""
    offset = sum(48 * 31**j for j in range(7))
    d = (target - offset) % 2**32
    digits = []
    for _ in range(7):
        digits.append(d % 31)
        d //= 31
    return "".join(chr(48 + x) for x in reversed(digits))


def golden_ids() -> list[str | None]:
    rng = random.Random(20261203)
    ids: list[str | None] = []
    ids += [f"user-{i:05d}" for i in range(3000)]  # the demo's shape: sequential
    ids += [str(i) for i in range(1000)]
    ids += [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(2000)]
    names = ["alice", "bob", "chloé", "dmitri", "eve", "ødegaard", "x"]
    domains = ["example.com", "vaporform.dev", "mail.example.co.uk"]
    ids += [f"{rng.choice(names)}.{rng.randrange(10**6)}@{rng.choice(domains)}" for _ in range(1500)]
    bmp_ranges = [(0x20, 0x7E), (0xA0, 0x17F), (0x400, 0x4FF), (0x4E00, 0x9FFF), (0x300, 0x36F), (0xE000, 0xFFFF)]

    def bmp_char() -> str:
        lo, hi = rng.choice(bmp_ranges)
        return chr(rng.randint(lo, hi))

    ids += ["".join(bmp_char() for _ in range(rng.randint(1, 24))) for _ in range(1500)]
    astral = [(0x1F300, 0x1FAFF), (0x20000, 0x2A6DF), (0x10000, 0x1007F), (0x10FF00, 0x10FFFF)]

    def any_char() -> str:
        if rng.random() < 0.5:
            lo, hi = rng.choice(astral)
            return chr(rng.randint(lo, hi))
        return bmp_char()

    ids += ["".join(any_char() for _ in range(rng.randint(1, 16))) for _ in range(1500)]
    ids += ["👨‍👩‍👧‍👦", "🏳️‍🌈", "user-😀", "𝔘𝔰𝔢𝔯", "\U0010ffff", "a\x00", "\x00", "\x00\x00x"]
    ids += ["", None, "anonymous", " ", "\t", "\ud800", "x\udfff", "\udc00\ud800"]  # empty, missing, lone surrogates
    ids += ["z" * 700, "😀" * 300, "".join(chr(rng.randint(0x20, 0xFFFF)) for _ in range(500)).replace("\ud800", "a")]
    # extreme hashes: -2**31 (Math.abs -> 2147483648 -> bucket 48), 2**31-1, -1, 0
    ids += [id_with_hash(h) for h in (2**31, 2**31 - 1, 2**31 + 1, 2**32 - 1, 0, 1, 99, 100)]
    return ids


def golden_flags() -> list[FeatureFlag]:
    base = list(load_flags().values())
    claude, realtime, analytics, scaling = (load_flags()[k] for k in (
        "enable_claude_integration", "enable_realtime_collaboration",
        "enable_advanced_analytics", "enable_container_scaling"))

    def variant(f: FeatureFlag, suffix: str, **kw: object) -> FeatureFlag:
        fields = {**f.__dict__, "key": f"{f.key}@{suffix}", **kw}
        fields.pop("origin", None)
        return FeatureFlag(**fields)  # type: ignore[arg-type]

    return base + [
        variant(claude, "p0", rollout_percentage=0),
        variant(claude, "p1", rollout_percentage=1),
        variant(claude, "p30", rollout_percentage=30),
        variant(claude, "p48.5", rollout_percentage=48.5),
        variant(claude, "p99", rollout_percentage=99),
        variant(claude, "p99.9", rollout_percentage=99.9),
        variant(realtime, "p50", rollout_percentage=50),
        variant(analytics, "on", enabled=True),
        variant(scaling, "on10", enabled=True, rollout_percentage=10),
        variant(claude, "free75", user_segments=("free", "beta_testers"), rollout_percentage=75),
        variant(claude, "allfree", user_segments=("all", "free"), rollout_percentage=60),
        variant(claude, "noenv", environments=(), rollout_percentage=100),
    ]


def golden_contexts() -> list[dict[str, str]]:
    envs: list[str | None] = ["development", "staging", "production", "", None, "Production"]
    segs: list[str | None] = ["all", "premium", "enterprise", "free", "beta_testers", "", None]
    out = []
    for e in envs:
        for s in segs:
            ctx = {}
            if e is not None:
                ctx["environment"] = e
            if s is not None:
                ctx["userSegment"] = s
            out.append(ctx)
    return out


def _strip_types(ts: str) -> str:
    ts = ts.replace("private ", "").replace(": Promise<boolean>", "").replace(": FeatureFlagContext", "")
    ts = ts.replace("): number {", ") {").replace(": string", "")
    return " ".join(ts.split())


def _method(text: str, name: str, start_pattern: str) -> str:
    start = re.search(start_pattern, text)
    assert start, name
    depth, i = 0, text.index("{", start.start())
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[start.start(): j + 1]
    raise AssertionError(name)


@pytest.mark.skipif(not SEED_TS.exists(), reason=f"seed source not found at {SEED_TS}")
def test_fixture_is_verbatim_transcription_of_seed() -> None:
    ts = SEED_TS.read_text()
    js = FIXTURE.read_text()
    for name, pattern in (("isEnabled", r"async isEnabled\("), ("hashUser", r"(private )?hashUser\(")):
        ts_body = _strip_types(_method(ts, name, pattern))
        js_body = " ".join(_method(js, name, pattern).split())
        assert js_body == ts_body, f"{name} differs from the TypeScript"


@pytest.mark.skipif(not SEED_TS.exists(), reason=f"seed source not found at {SEED_TS}")
def test_data_flags_yml_equals_seed_default_flags() -> None:
    ts = SEED_TS.read_text()
    literal = ts[ts.index("const defaultFlags: FeatureFlag[] = [") + len("const defaultFlags: FeatureFlag[] = "):]
    literal = literal[: literal.index("];") + 1]
    as_json = re.sub(r"'([^']*)'", lambda m: json.dumps(m.group(1)), literal)
    as_json = re.sub(r"(\s)(\w+):", r'\1"\2":', as_json)
    as_json = re.sub(r",(\s*[\]}])", r"\1", as_json)
    seed = json.loads(as_json)
    assert [f.to_dict() for f in load_flags().values()] == seed


def test_known_hash_values_and_abs_of_int_min() -> None:
    # JS: 'abc'.hashCode-style = 96354; '' = 0; Math.abs(-2**31) = 2147483648 -> bucket 48
    worst = id_with_hash(2**31)
    assert java_string_hash(["abc", "", worst]).tolist() == [96354, 0, -(2**31)]
    assert hash_user([worst]).tolist() == [2147483648]
    assert bucket([worst]).tolist() == [48]
    # a missing or empty id is evaluated as 'anonymous'
    assert bucket([None, "", "anonymous"]).tolist() == [bucket("anonymous")[0]] * 3
    # astral characters count as two UTF-16 units: U+1F600 = D83D DE00
    assert java_string_hash("😀").tolist() == [(0xD83D * 31 + 0xDE00)]
    # lone surrogates (legal in JS strings) take the exact path and still agree with the formula
    assert java_string_hash("\ud800").tolist() == [0xD800]


@pytest.mark.integration
@pytest.mark.skipif(NODE is None, reason="node (Debian nodejs) is not installed")
def test_golden_against_node(tmp_path: Path) -> None:
    ids = golden_ids()
    assert len(ids) >= 10_000
    flags = golden_flags()
    contexts = golden_contexts()
    payload = {"flags": [f.to_dict() for f in flags], "ids": ids, "contexts": contexts}
    infile = tmp_path / "input.json"
    infile.write_text(json.dumps(payload, ensure_ascii=True))  # \ud800 escapes keep lone surrogates
    with infile.open("rb") as stdin:
        proc = subprocess.run([NODE, str(FIXTURE)], stdin=stdin, capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)

    js_hash = np.array([-1 if h is None else h for h in out["hashUser"]], dtype=np.int64)
    py_hash = np.abs(java_string_hash(ids).astype(np.int64))
    real = np.array([i is not None for i in ids])
    bad = np.flatnonzero(real & (js_hash != py_hash))
    assert bad.size == 0, [(ids[i], int(js_hash[i]), int(py_hash[i])) for i in bad[:5]]

    mismatches = 0
    first: list[tuple[str, dict[str, str], str | None]] = []
    comparisons = 0
    buckets = bucket(ids)
    for fi, flag in enumerate(flags):
        for ci, ctx in enumerate(contexts):
            expected = np.frombuffer(out["enabled"][fi][ci].encode(), dtype=np.uint8) == ord("1")
            # buckets computed once (checked above via hashUser); the first context recomputes them
            got = evaluate(flag, ids, ctx.get("userSegment"), ctx.get("environment"),
                           buckets=None if ci == 0 else buckets)
            diff = np.flatnonzero(expected != got)
            mismatches += diff.size
            comparisons += len(ids)
            first += [(flag.key, ctx, ids[i]) for i in diff[:3]]
    assert comparisons >= 10_000 * len(flags) * len(contexts)
    assert mismatches == 0, first[:10]

    # the scalar path too, on a deterministic sample of every flag x context
    rng = random.Random(5)
    for fi, flag in enumerate(flags):
        for ci, ctx in enumerate(contexts):
            for i in rng.sample(range(len(ids)), 15) + [len(ids) - 1]:
                context = dict(ctx)
                if ids[i] is not None:
                    context["userId"] = ids[i]  # type: ignore[assignment]
                assert is_enabled(flag, context) == (out["enabled"][fi][ci][i] == "1"), (flag.key, ctx, ids[i])
