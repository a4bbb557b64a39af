"""The values an expression evaluates to, over a grid of evaluation times.

Every expression is evaluated at all steps at once, so values are dense arrays
with one column per step:

* :class:`Vector` — an instant vector: ``N`` series, ``values``/``present``
  arrays of shape ``(N, S)`` (NaN is a legal sample value, so presence is a
  separate mask), the per-series ``drop_name`` flag of delayed ``__name__``
  removal, and for plain selectors the timestamps of the samples picked
  (``timestamp()`` reports those).
* :class:`Scalar` — one float per step.
* :class:`String` — a string literal.
* :class:`Matrix` — a range vector: the samples of ``N`` series (long arrays
  sorted by series then time) and, per step, the right edge of its window.

Example
-------
>>> import numpy as np
>>> v = Vector([{"__name__": "up"}], np.array([[1.0, 0.0]]), np.array([[True, False]]))
>>> v.n_series, v.n_steps
(1, 2)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vfanalytics.exceptions import QueryError
from vfanalytics.series import canonical_labels

__all__ = ["Vector", "Scalar", "String", "Matrix", "Value", "label_key", "drop_name_now", "merge_duplicates"]


def label_key(labels: dict[str, str]) -> str:
    """The identity of a label set (canonical JSON)."""
    return canonical_labels(labels)


@dataclass
class Vector:
    """An instant vector over ``S`` steps."""

    labels: list[dict[str, str]]
    values: np.ndarray
    present: np.ndarray
    drop_name: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    sample_ts: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.drop_name) != len(self.labels):
            self.drop_name = np.zeros(len(self.labels), dtype=bool)

    @property
    def n_series(self) -> int:
        return len(self.labels)

    @property
    def n_steps(self) -> int:
        return int(self.values.shape[1])

    @classmethod
    def empty(cls, n_steps: int) -> Vector:
        return cls([], np.zeros((0, n_steps)), np.zeros((0, n_steps), dtype=bool))

    def take(self, rows: np.ndarray | list[int]) -> Vector:
        """The sub-vector of the given series rows."""
        idx = np.asarray(rows, dtype=np.int64)
        return Vector(
            [self.labels[i] for i in idx],
            self.values[idx],
            self.present[idx],
            self.drop_name[idx],
            None if self.sample_ts is None else self.sample_ts[idx],
        )

    def compact(self) -> Vector:
        """Drop series that are absent at every step."""
        keep = np.flatnonzero(self.present.any(axis=1))
        return self if len(keep) == self.n_series else self.take(keep)


@dataclass
class Scalar:
    """A scalar per step."""

    values: np.ndarray


@dataclass
class String:
    """A string literal."""

    value: str


@dataclass
class Matrix:
    """A range vector: samples of each series plus the window right edge per step.

    ``sid``/``ts``/``val`` are long arrays sorted by ``(sid, ts)``; ``sid``
    indexes ``labels``. The window at step ``j`` is ``(end[j] - range_ms, end[j]]``
    (3.x) or ``[end[j] - range_ms, end[j]]`` (2.x, ``closed_left``).
    """

    labels: list[dict[str, str]]
    sid: np.ndarray
    ts: np.ndarray
    val: np.ndarray
    end: np.ndarray
    range_ms: int
    closed_left: bool
    drop_name: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: the selector's offset (extrapolatedRate needs the range edges of the window)
    offset_ms: int = 0
    #: the outer evaluation time per step (``predict_linear`` intercepts there, even under ``@``)
    eval_ts: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.drop_name) != len(self.labels):
            self.drop_name = np.zeros(len(self.labels), dtype=bool)

    @property
    def n_series(self) -> int:
        return len(self.labels)

    def windows(self, first: int = 0, last: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)`` sample index bounds of series ``first..last-1``, each ``(rows, S)``.

        Samples ``lo <= i < hi`` are in the window of that series and step.
        """
        last = self.n_series if last is None else last
        if last <= first:
            z = np.zeros((0, len(self.end)), dtype=np.int64)
            return z, z
        from vfanalytics.promql.vector_selectors import series_searchsorted

        right = self.end[None, :]
        steps = np.diff(self.end)
        if not self.closed_left and len(steps) and steps[0] > 0 and (steps == steps[0]).all() and self.range_ms % steps[0] == 0:
            # left-open windows on a regular grid: the left edge of step j is the right edge of
            # step j - range/step, so one search serves both ends
            k = int(self.range_ms // steps[0])
            ext = np.concatenate([self.end[0] - steps[0] * np.arange(k, 0, -1), self.end])[None, :]
            both = series_searchsorted(self.sid, self.ts, self.n_series, ext, side="right", rows=(first, last))
            return both[:, : both.shape[1] - k], both[:, k:]
        hi = series_searchsorted(self.sid, self.ts, self.n_series, right, side="right", rows=(first, last))
        lo = series_searchsorted(
            self.sid, self.ts, self.n_series, right - self.range_ms,
            side="left" if self.closed_left else "right", rows=(first, last),
        )
        return lo, hi

    def prefix(self, name: str, make: Callable[[Matrix], Any]) -> Any:
        """A per-sample prefix array, computed once per matrix (shared by all series batches)."""
        cache = self.__dict__.setdefault("_prefix_cache", {})
        if name not in cache:
            cache[name] = make(self)
        return cache[name]


Value = Vector | Scalar | String | Matrix


def drop_name_now(labels: list[dict[str, str]]) -> list[dict[str, str]]:
    """Copies of the label sets without ``__name__``."""
    return [{k: v for k, v in ls.items() if k != "__name__"} if "__name__" in ls else ls for ls in labels]


def merge_duplicates(vec: Vector, *, what: str = "vector") -> Vector:
    """Merge series with identical label sets; overlapping samples are Prometheus' duplicate error."""
    keys = [label_key(ls) + ("\x00d" if d else "") for ls, d in zip(vec.labels, vec.drop_name, strict=True)]
    if len(set(keys)) == len(keys):
        return vec
    order: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        order.setdefault(k, []).append(i)
    rows = []
    values = []
    present = []
    sts = []
    for idx in order.values():
        rows.append(idx[0])
        if len(idx) == 1:
            values.append(vec.values[idx[0]])
            present.append(vec.present[idx[0]])
            if vec.sample_ts is not None:
                sts.append(vec.sample_ts[idx[0]])
            continue
        p = vec.present[idx]
        if (p.sum(axis=0) > 1).any():
            raise QueryError(f"{what} cannot contain metrics with the same labelset")
        pick = np.argmax(p, axis=0)
        values.append(np.take_along_axis(vec.values[idx], pick[None, :], axis=0)[0])
        present.append(p.any(axis=0))
        if vec.sample_ts is not None:
            sts.append(np.take_along_axis(vec.sample_ts[idx], pick[None, :], axis=0)[0])
    return Vector(
        [vec.labels[i] for i in rows],
        np.array(values).reshape(len(rows), vec.n_steps),
        np.array(present, dtype=bool).reshape(len(rows), vec.n_steps),
        vec.drop_name[rows],
        np.array(sts).reshape(len(rows), vec.n_steps) if vec.sample_ts is not None else None,
    )
