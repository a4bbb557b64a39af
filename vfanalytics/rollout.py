"""The platform's feature-flag evaluator, reproduced bit-exactly and vectorised.

Vaporform's ``FeatureFlagManager`` (``config/FeatureFlagManager.ts``) decides whether a
user sees a flag with::

    hash = 0
    for each UTF-16 code unit c of userId:      # astral chars count as two units
        hash = ((hash << 5) - hash) + c         # JS: int32 << then float arithmetic
        hash = hash & hash                      # ToInt32, i.e. wrap mod 2**32
    bucket = Math.abs(hash) % 100               # Math.abs(-2**31) == 2147483648 -> 48
    enabled = environment listed, flag enabled, segment listed (unless [] / 'all'),
              and (rolloutPercentage >= 100 or bucket < rolloutPercentage)

with ``context.userId || 'anonymous'`` (so a missing *or empty* id hashes as
``'anonymous'``).  Because ``hash`` stays exact below 2**53 before every ``ToInt32``,
the loop is the polynomial ``sum(c_i * 31**(n-1-i)) mod 2**32``; this module evaluates
that polynomial over millions of ids at once with NumPy (one pass over the UTF-16 code
units, prefix sums in wrapping ``uint32`` arithmetic).

Example
-------
>>> from vfanalytics.rollout import bucket, java_string_hash
>>> java_string_hash(["", "a", "user-00042"]).tolist()
[0, 97, 439398444]
>>> bucket(["user-00042", None, ""]).tolist()
[44, 75, 75]
>>> flag = load_flags_text('[{"key":"f","name":"F","description":"","enabled":true,'
...     '"rolloutPercentage":50,"userSegments":["all"],"environments":["production"]}]')["f"]
>>> is_enabled(flag, {"userId": "user-00042", "environment": "production"})
True
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from vfanalytics.exceptions import FlagFileError, UsageError

__all__ = [
    "ANONYMOUS_ID",
    "FeatureFlag",
    "FlagSet",
    "java_string_hash",
    "hash_user",
    "bucket",
    "is_enabled",
    "evaluate",
    "load_flags",
    "load_flags_text",
    "default_flags_path",
    "parse_percentages",
]

#: the id ``FeatureFlagManager.isEnabled`` hashes when ``context.userId`` is falsy
ANONYMOUS_ID = "anonymous"

_U32 = np.uint32


# --------------------------------------------------------------------------- hashing


def _as_str_list(user_ids: Any) -> list[str | None]:
    """Normalise a scalar, sequence, NumPy, Polars or Arrow column of ids to a list."""
    if isinstance(user_ids, str) or user_ids is None:
        return [user_ids]
    if isinstance(user_ids, pa.ChunkedArray | pa.Array):
        return list(user_ids.to_pylist())
    to_list = getattr(user_ids, "to_list", None)  # polars / pandas Series
    if callable(to_list):
        return list(to_list())
    if isinstance(user_ids, np.ndarray):
        return [None if v is None else str(v) for v in user_ids.tolist()]
    return list(user_ids)


def _units(ids: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-16 code units of all ids, concatenated, and each id's offsets into them.

    One C-level UTF-32 encode of the joined ids gives code points (``surrogatepass`` keeps
    lone surrogates, which JS strings may hold, as the single unit JS sees); astral code
    points are then split into surrogate pairs with NumPy.
    """
    strs = ["" if s is None else s for s in ids]
    try:
        joined = "".join(strs)
    except TypeError:
        bad = next(s for s in strs if not isinstance(s, str))
        raise UsageError(f"user ids must be strings, got {type(bad).__name__} {bad!r}") from None
    cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint32)
    lengths = np.fromiter(map(len, strs), dtype=np.int64, count=len(strs))
    cp_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    astral = cps >= 0x10000
    if not astral.any():  # BMP only: code points are the code units
        return cps, cp_offsets
    width = 1 + astral.astype(np.int64)
    unit_pos = np.concatenate([[0], np.cumsum(width)])
    units = np.empty(int(unit_pos[-1]), dtype=np.uint32)
    first = unit_pos[:-1]
    v = cps - 0x10000
    units[first] = np.where(astral, 0xD800 | (v >> 10), cps)
    units[first[astral] + 1] = 0xDC00 | (v[astral] & 0x3FF)
    return units, unit_pos[cp_offsets].astype(np.int64)


def _hash_units(units: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``sum(c_i * 31**(n-1-i)) mod 2**32`` per segment, as int32 (the JS ``hash``)."""
    lengths = np.diff(offsets)
    max_len = int(lengths.max()) if len(lengths) else 0
    with np.errstate(over="ignore"):
        pow31 = np.cumprod(np.concatenate([[1], np.full(max(max_len - 1, 0), 31)]).astype(_U32), dtype=_U32)
        # position of each unit counted from the end of its own id
        from_end = np.repeat(offsets[1:] - 1, lengths) - np.arange(len(units))
        terms = units.astype(_U32) * pow31[from_end] if len(units) else np.zeros(0, _U32)
        prefix = np.concatenate([np.zeros(1, _U32), np.cumsum(terms, dtype=_U32)])
        sums = prefix[offsets[1:]] - prefix[offsets[:-1]]
    return sums.astype(_U32).view(np.int32)


def java_string_hash(user_ids: Any) -> np.ndarray:
    """Java/JS ``String.hashCode``-style 32-bit hash of each id, exactly as the loop computes it.

    Parameters
    ----------
    user_ids:
        A string, or any sequence / NumPy / Polars / Arrow column of strings. ``None``
        hashes as the empty string (no ``'anonymous'`` substitution here: see :func:`bucket`).

    Returns
    -------
    numpy.ndarray
        ``int32`` hashes (signed, as JavaScript holds them after ``hash & hash``).

    Example
    -------
    >>> java_string_hash(["abc", "\\U0001F600"]).tolist()
    [96354, 1772899]
    """
    ids = _as_str_list(user_ids)
    if not ids:
        return np.zeros(0, np.int32)
    units, offsets = _units(ids)
    return _hash_units(units, offsets)


def _with_anonymous(ids: list[str | None]) -> list[str | None]:
    # JS `context.userId || 'anonymous'`: undefined, null and '' are all falsy.
    return [s if s else ANONYMOUS_ID for s in ids]


def hash_user(user_ids: Any) -> np.ndarray:
    """``hashUser(userId || 'anonymous')``: ``Math.abs`` of the 32-bit hash, as ``int64``.

    Example
    -------
    >>> hash_user(["anonymous", ""]).tolist()
    [2095811475, 2095811475]
    """
    ids = _with_anonymous(_as_str_list(user_ids))
    return np.abs(java_string_hash(ids).astype(np.int64))


def bucket(user_ids: Any) -> np.ndarray:
    """Rollout bucket ``hashUser(userId || 'anonymous') % 100`` of each id (0–99, ``int64``).

    A user is inside a rollout of ``p`` % exactly when ``bucket < p``.

    Example
    -------
    >>> bucket(["user-00001", "user-00002", "user-00003"]).tolist()
    [19, 20, 21]
    """
    return hash_user(user_ids) % 100


# --------------------------------------------------------------------------- flags


@dataclass(frozen=True)
class FeatureFlag:
    """One flag with the seed's ``FeatureFlag`` fields (``createdAt``/``updatedAt`` kept as text).

    Example
    -------
    >>> f = FeatureFlag("k", "K", "", True, 30, ("all",), ("production",))
    >>> f.with_percentage(60).rollout_percentage
    60.0
    """

    key: str
    name: str
    description: str
    enabled: bool
    rollout_percentage: float
    user_segments: tuple[str, ...]
    environments: tuple[str, ...]
    created_at: str | None = None
    updated_at: str | None = None
    #: where the flag was defined (``file:line``), for messages
    origin: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rollout_percentage", float(self.rollout_percentage))
        _check_percentage(self.rollout_percentage, f"flag {self.key!r}: rolloutPercentage")

    def with_percentage(self, percentage: float) -> FeatureFlag:
        """The same flag at another rollout percentage (what a backtest replays)."""
        return FeatureFlag(
            self.key, self.name, self.description, self.enabled, float(percentage),
            self.user_segments, self.environments, self.created_at, self.updated_at, self.origin,
        )

    def to_dict(self) -> dict[str, Any]:
        """The flag in the platform's JSON shape (camelCase keys)."""
        out: dict[str, Any] = {
            "key": self.key, "name": self.name, "description": self.description, "enabled": self.enabled,
            "rolloutPercentage": _js_number(self.rollout_percentage),
            "userSegments": list(self.user_segments), "environments": list(self.environments),
        }
        if self.created_at is not None:
            out["createdAt"] = self.created_at
        if self.updated_at is not None:
            out["updatedAt"] = self.updated_at
        return out


def _js_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _check_percentage(value: float, what: str) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 100):
        raise UsageError(f"{what} must be a number from 0 to 100, got {value!r}")


class FlagSet(dict[str, FeatureFlag]):
    """Flags by key, remembering the file they came from; :meth:`require` names unknown keys.

    Example
    -------
    >>> flags = load_flags()
    >>> sorted(flags)[:2]
    ['enable_advanced_analytics', 'enable_claude_integration']
    >>> try:
    ...     flags.require("nope")
    ... except UsageError as exc:
    ...     print(str(exc)[:23])
    unknown flag key 'nope'
    """

    source: str | None = None

    def require(self, key: str) -> FeatureFlag:
        """The flag named ``key``, or a :class:`UsageError` listing the known keys."""
        if key not in self:
            where = f" in {self.source}" if self.source else ""
            raise UsageError(f"unknown flag key {key!r}{where} (known: {', '.join(sorted(self))})")
        return self[key]


_REQUIRED = ("key", "name", "description", "enabled", "rolloutPercentage", "userSegments", "environments")
_OPTIONAL = ("createdAt", "updatedAt")


def default_flags_path() -> Path:
    """``data/flags.yml`` of the checkout: the seed's four default flags."""
    return Path(__file__).resolve().parents[1] / "data" / "flags.yml"


def load_flags(path: str | Path | None = None) -> FlagSet:
    """Load and validate a flag file (YAML or JSON; ``None`` = the seed's defaults).

    The file holds a list of flags, or a mapping with a single ``flags`` list. Every
    flag must carry exactly the seed's fields; errors name ``file:line``.

    Raises
    ------
    FlagFileError
        Malformed YAML/JSON, unknown or missing fields, wrong types, percentages
        outside 0–100, duplicate keys.

    Example
    -------
    >>> load_flags()["enable_claude_integration"].rollout_percentage
    100.0
    """
    p = Path(path) if path is not None else default_flags_path()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlagFileError(f"cannot read flag file: {exc.strerror or exc}", str(p)) from exc
    except UnicodeDecodeError as exc:
        raise FlagFileError(f"not UTF-8 text ({exc.reason})", str(p)) from exc
    return load_flags_text(text, source=str(p), is_json=p.suffix.lower() == ".json")


def load_flags_text(text: str, source: str = "<flags>", is_json: bool | None = None) -> FlagSet:
    """Like :func:`load_flags` for text already in memory (``is_json`` guessed from ``[``/``{``)."""
    if is_json is None:
        is_json = text.lstrip()[:1] in ("[", "{")
    if is_json:
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise FlagFileError(f"malformed JSON: {exc.msg} (column {exc.colno})", source, exc.lineno) from exc
    yaml = YAML(typ="rt")
    try:
        doc = yaml.load(io.StringIO(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise FlagFileError(f"malformed {'JSON' if is_json else 'YAML'}: {exc.problem or exc.context}", source, line) from exc
    except YAMLError as exc:
        raise FlagFileError(f"malformed {'JSON' if is_json else 'YAML'}: {exc}", source) from exc
    items = doc
    if isinstance(doc, Mapping):
        extra = [k for k in doc if k != "flags"]
        if extra or "flags" not in doc:
            raise FlagFileError(
                f"top level must be a list of flags or a mapping with only 'flags', found keys {list(doc)!r}",
                source, _line_of(doc, extra[0] if extra else None),
            )
        items = doc["flags"]
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise FlagFileError("expected a list of flags", source, _line_of(doc, None))
    flags = FlagSet()
    flags.source = source
    for index, item in enumerate(items):
        flag = _parse_flag(item, source, _item_line(items, index))
        if flag.key in flags:
            raise FlagFileError(f"duplicate flag key {flag.key!r} (first at {flags[flag.key].origin})",
                                source, _item_line(items, index))
        flags[flag.key] = flag
    return flags


def _line_of(node: Any, key: Any) -> int | None:
    lc = getattr(node, "lc", None)
    if lc is None:
        return None
    try:
        return int(lc.key(key)[0]) + 1 if key is not None else int(lc.line) + 1
    except (KeyError, TypeError, AttributeError):
        return int(lc.line) + 1


def _item_line(items: Any, index: int) -> int | None:
    lc = getattr(items, "lc", None)
    try:
        return int(lc.item(index)[0]) + 1 if lc is not None else None
    except (KeyError, TypeError, AttributeError):
        return None


def _parse_flag(item: Any, source: str, line: int | None) -> FeatureFlag:
    if not isinstance(item, Mapping):
        raise FlagFileError(f"a flag must be a mapping, got {type(item).__name__}", source, line)
    for k in item:
        if k not in _REQUIRED and k not in _OPTIONAL:
            raise FlagFileError(f"unknown flag field {k!r} (allowed: {', '.join(_REQUIRED + _OPTIONAL)})",
                                source, _line_of(item, k))
    missing = [k for k in _REQUIRED if k not in item]
    if missing:
        raise FlagFileError(f"flag is missing field(s) {', '.join(missing)}", source, line)

    def bad(k: str, want: str) -> FlagFileError:
        return FlagFileError(f"field {k!r} must be {want}, got {item[k]!r}", source, _line_of(item, k))

    for k in ("key", "name", "description"):
        if not isinstance(item[k], str):
            raise bad(k, "a string")
    if not item["key"]:
        raise bad("key", "a non-empty string")
    if not isinstance(item["enabled"], bool):
        raise bad("enabled", "true or false")
    pct = item["rolloutPercentage"]
    if isinstance(pct, bool) or not isinstance(pct, int | float) or not math.isfinite(pct) or not 0 <= pct <= 100:
        raise bad("rolloutPercentage", "a number from 0 to 100")
    for k in ("userSegments", "environments"):
        v = item[k]
        if isinstance(v, str) or not isinstance(v, Sequence) or not all(isinstance(s, str) for s in v):
            raise bad(k, "a list of strings")
    stamps = {}
    for k in _OPTIONAL:
        if k in item and item[k] is not None:
            stamps[k] = str(item[k])
    return FeatureFlag(
        key=item["key"], name=item["name"], description=item["description"], enabled=item["enabled"],
        rollout_percentage=float(pct), user_segments=tuple(item["userSegments"]),
        environments=tuple(item["environments"]), created_at=stamps.get("createdAt"),
        updated_at=stamps.get("updatedAt"), origin=f"{source}:{line}" if line else source,
    )


# --------------------------------------------------------------------------- evaluation


def is_enabled(flag: FeatureFlag | None, context: Mapping[str, Any]) -> bool:
    """``FeatureFlagManager.isEnabled`` for one context (keys ``userId``, ``userSegment``, ``environment``).

    ``flag=None`` (an unknown key) is ``False``, as the platform answers.

    Example
    -------
    >>> f = load_flags()["enable_realtime_collaboration"]
    >>> is_enabled(f, {"userId": "u1", "userSegment": "premium", "environment": "production"})
    True
    >>> is_enabled(f, {"userId": "u1", "userSegment": "free", "environment": "production"})
    False
    """
    if flag is None:
        return False
    if context.get("environment") not in flag.environments:
        return False
    if not flag.enabled:
        return False
    if flag.user_segments and "all" not in flag.user_segments:
        segment = context.get("userSegment")
        if not segment or segment not in flag.user_segments:
            return False
    if flag.rollout_percentage < 100:
        return bool(bucket(context.get("userId"))[0] < flag.rollout_percentage)
    return True


def _member(values: Any, n: int, allowed: Sequence[str], what: str, *, truthy: bool) -> np.ndarray:
    """Per id: a string listed in ``allowed`` (and non-empty if ``truthy``, as JS ``!x`` tests).

    ``values`` is one value for all ids or one per id; ``None`` (undefined) is never listed.
    """
    if values is None or isinstance(values, str):
        return np.full(n, (bool(values) or not truthy) and values in allowed)
    import polars as pl

    col = pl.Series(what, _as_str_list(values), dtype=pl.String)
    if len(col) != n:
        raise UsageError(f"{what}: {len(col)} values for {n} user ids")
    listed = col.is_in(list(allowed)).fill_null(False)
    if truthy:
        listed &= col.fill_null("") != ""
    return listed.to_numpy().astype(bool)


def evaluate(
    flag: FeatureFlag,
    user_ids: Any,
    segments: Any = None,
    environments: Any = "production",
    *,
    buckets: np.ndarray | None = None,
) -> np.ndarray:
    """Vectorised :func:`is_enabled` over many contexts.

    Parameters
    ----------
    flag:
        The flag to evaluate.
    user_ids:
        Ids (``None``/empty hash as ``'anonymous'``).
    segments, environments:
        One value for all ids, or one per id (``None`` = missing).
    buckets:
        Precomputed :func:`bucket` of ``user_ids`` (reused across percentages).

    Returns
    -------
    numpy.ndarray
        ``bool`` per id.

    Example
    -------
    >>> f = load_flags()["enable_claude_integration"].with_percentage(20)
    >>> evaluate(f, ["user-00001", "user-00002", "user-00042"], "free", "production").tolist()
    [True, False, False]
    """
    ids = _as_str_list(user_ids)
    n = len(ids)
    ok = _member(environments, n, flag.environments, "environments", truthy=False)
    if not flag.enabled:
        return np.zeros(n, dtype=bool)
    if flag.user_segments and "all" not in flag.user_segments:
        ok &= _member(segments, n, flag.user_segments, "segments", truthy=True)
    if flag.rollout_percentage < 100:
        b = bucket(ids) if buckets is None else np.asarray(buckets)
        ok &= b < flag.rollout_percentage
    return ok


def parse_percentages(spec: str) -> list[float]:
    """``'0:100:5'`` (start:stop:step, stop included) or ``'10,25,50'`` to a sorted list.

    Example
    -------
    >>> parse_percentages("0:20:5"), parse_percentages("50,10")
    ([0.0, 5.0, 10.0, 15.0, 20.0], [10.0, 50.0])
    """
    text = spec.strip()
    try:
        if ":" in text:
            parts = [float(x) for x in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop = parts[0], parts[1]
            step = parts[2] if len(parts) == 3 else 1.0
            if step <= 0 or stop < start:
                raise UsageError(f"percentages {spec!r}: need start <= stop and a positive step")
            count = int(math.floor((stop - start) / step + 1e-9)) + 1
            values = [round(start + i * step, 9) for i in range(count)]
        else:
            values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"percentages {spec!r}: expected START:STOP[:STEP] or a comma list") from None
    if not values:
        raise UsageError(f"percentages {spec!r}: empty")
    for v in values:
        _check_percentage(v, f"percentages {spec!r}: each rollout percentage")
    return sorted(set(values))


def flags_to_yaml(flags: Iterable[FeatureFlag]) -> str:
    """Serialise flags in the file format :func:`load_flags` reads."""
    out = io.StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump({"flags": [f.to_dict() for f in flags]}, out)
    return out.getvalue()
