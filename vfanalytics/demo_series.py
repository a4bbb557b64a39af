"""Vectorised builders that turn the demo fleet's events into Prometheus series.

Two shapes of series are produced, both as long ``(series, tick, value)`` rows:

* **dense** series (one value per scrape, e.g. ``up``, memory gauges, HTTP
  counters) come from ``(n_series, n_ticks)`` matrices where NaN means "no sample";
* **sparse counters** (prom-client counters and histograms labelled by user or
  project) come from event lists: a series exists from its first increment after
  a process start until the process stops, exactly as prom-client's registry
  behaves, and disappears with a staleness marker at the next scrape.

A *target* is one scraped endpoint. It has a scrape offset inside the interval
(as Prometheus spreads scrapes), and *epochs*: process lifetimes separated by
restarts (counters reset) and down periods (no samples, staleness markers at the
first failed scrape).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from vfanalytics.series import SAMPLE_SCHEMA, SERIES_SCHEMA, STALE_NAN, canonical_labels, series_id

__all__ = ["Target", "SeriesSink", "counter_from_counts", "histogram_bucket_counts"]


@dataclass
class Target:
    """One scraped endpoint: its labels, scrape offset, restarts and down periods (in ticks)."""

    job: str
    instance: str
    offset_ms: int
    n_ticks: int
    restarts: list[int] = field(default_factory=list)
    down: list[tuple[int, int]] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        return {"job": self.job, "instance": self.instance}

    def up_mask(self) -> np.ndarray:
        """True at ticks where the target answered its scrape."""
        up = np.ones(self.n_ticks, dtype=bool)
        for a, b in self.down:
            up[a:b] = False
        return up

    def epochs(self) -> np.ndarray:
        """``(k, 3)`` int array of process lifetimes: start, end (exclusive), end_is_stale (0/1)."""
        bounds: list[tuple[int, int]] = [(r, 0) for r in self.restarts] + [(a, 1) for a, _ in self.down]
        bounds.sort()
        rows = []
        cur = 0
        downs = dict(self.down)
        for tick, kind in bounds:
            if tick <= cur and kind == 0:
                continue
            rows.append((cur, tick, 1))
            cur = downs[tick] if kind == 1 else tick
        rows.append((cur, self.n_ticks, 0))
        return np.array([r for r in rows if r[1] > r[0]], dtype=np.int64).reshape(-1, 3)

    def reset_ticks(self) -> np.ndarray:
        """Ticks at which a new process starts (counters restart from zero)."""
        return np.array(sorted(set(self.restarts) | {b for _, b in self.down if b < self.n_ticks}), dtype=np.int64)


def counter_from_counts(counts: np.ndarray, target: Target) -> np.ndarray:
    """Cumulative counter matrix from per-tick increments, reset at the target's restarts, NaN while down."""
    cs = np.cumsum(counts, axis=1, dtype=np.float64)
    n = counts.shape[1]
    reset = np.zeros(n, dtype=np.int64)
    r = target.reset_ticks()
    reset[r] = r
    last = np.maximum.accumulate(reset)
    base = np.where(last > 0, cs[:, np.maximum(last - 1, 0)], 0.0)
    out = cs - base
    out[:, ~target.up_mask()] = np.nan
    return out


def histogram_bucket_counts(
    n: np.ndarray, bounds: list[float], median: np.ndarray, sigma: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split per-tick observation counts ``n`` into lognormal bucket counts, vectorised.

    Returns ``(cumulative_le_counts[b, ...], sum_of_values)`` where ``b`` runs over
    ``bounds`` plus +Inf. Conditional binomials replace a multinomial per cell.
    """
    from scipy.stats import norm

    edges = np.asarray(bounds, dtype=np.float64)
    z = (np.log(edges)[:, None] - np.log(median).reshape(1, -1)) / sigma
    cdf = norm.cdf(z).reshape((len(edges),) + n.shape)
    probs = np.diff(np.concatenate([np.zeros((1,) + n.shape), cdf, np.ones((1,) + n.shape)]), axis=0)
    remaining = n.astype(np.int64)
    left = np.ones(n.shape)
    per_bucket = []
    for p in probs[:-1]:
        q = np.clip(np.divide(p, left, out=np.zeros_like(p), where=left > 1e-12), 0.0, 1.0)
        k = rng.binomial(remaining, q)
        per_bucket.append(k)
        remaining = remaining - k
        left = left - p
    per_bucket.append(remaining)
    stacked = np.stack(per_bucket)
    cumulative = np.cumsum(stacked, axis=0)
    mean = median * np.exp(sigma**2 / 2)
    total = n * mean.reshape(n.shape) * rng.normal(1.0, 0.05, size=n.shape).clip(0.5, 1.5)
    return cumulative, total


class SeriesSink:
    """Collects series label sets and their long sample rows.

    Parameters
    ----------
    start_ms, step_ms:
        The scrape grid: tick ``k`` is at ``start_ms + k * step_ms`` (+ the target's offset).
    gaps:
        Boolean mask over ticks where Prometheus itself was down: no samples at all.
    on_samples:
        Receives each batch of long sample rows as it is built (so memory stays bounded).
    """

    def __init__(self, start_ms: int, step_ms: int, gaps: np.ndarray,
                 on_samples: Callable[[pl.DataFrame], None]) -> None:
        self.start_ms = start_ms
        self.step_ms = step_ms
        self.keep_tick = ~gaps
        self.on_samples = on_samples
        self._series: dict[int, tuple[str, str]] = {}

    def _register(self, label_sets: list[dict[str, str]]) -> np.ndarray:
        ids = []
        for ls in label_sets:
            sid = series_id(ls)
            self._series[sid] = (ls["__name__"], canonical_labels(ls))
            ids.append(sid)
        return np.array(ids, dtype=np.uint64)

    def add_dense(self, label_sets: list[dict[str, str]], values: np.ndarray, target: Target) -> None:
        """Add dense series: ``values[i, k]`` is series ``i`` at tick ``k`` (NaN: no sample).

        Where a series that had a sample at the previous scrape has none (its target is
        down, or the exporter stopped exposing it), Prometheus writes a staleness marker.
        """
        ids = self._register(label_sets)
        values = np.array(values, dtype=np.float64, copy=True)
        present = ~np.isnan(values)
        vanished = np.zeros_like(present)
        vanished[:, 1:] = present[:, :-1] & ~present[:, 1:]
        values[vanished] = STALE_NAN
        keep = (present | vanished) & self.keep_tick[None, :]
        rows, ticks = np.nonzero(keep)
        self._append(ids[rows], ticks, values[rows, ticks], target.offset_ms)

    def add_sparse(
        self,
        label_sets: list[dict[str, str]],
        key: np.ndarray,
        tick: np.ndarray,
        amount: np.ndarray,
        targets: list[Target],
        target_of_key: np.ndarray,
    ) -> None:
        """Add sparse counters from events: series ``key[e]`` increases by ``amount[e]`` at ``tick[e]``.

        A series is created by its first event in an epoch of its target and lives until the
        epoch ends; it then gets a staleness marker (unless it is re-created at that very tick).
        """
        ids = self._register(label_sets)
        if len(key) == 0:
            return
        n_ticks = targets[0].n_ticks
        for t_idx, target in enumerate(targets):
            sel = target_of_key[key] == t_idx
            if not sel.any():
                continue
            k, tk, am = key[sel], tick[sel], amount[sel]
            # a restarting process is not ready at its first scrape: what it serves then is
            # counted at the next one, so every restart shows as a staleness marker first
            tk = np.where(np.isin(tk, target.reset_ticks()), np.minimum(tk + 1, n_ticks - 1), tk)
            ep = target.epochs()
            ep_idx = np.searchsorted(ep[:, 0], tk, side="right") - 1
            inside = (ep_idx >= 0) & (tk < ep[np.maximum(ep_idx, 0), 1])
            k, tk, am, ep_idx = k[inside], tk[inside], am[inside], ep_idx[inside]
            if len(k) == 0:
                continue
            # one segment per (series, epoch): from its first event to the epoch's end
            seg_key = k.astype(np.int64) * (len(ep) + 1) + ep_idx
            useg, inv = np.unique(seg_key, return_inverse=True)
            first = np.full(len(useg), n_ticks, dtype=np.int64)
            np.minimum.at(first, inv, tk)
            seg_series = useg // (len(ep) + 1)
            seg_ep = useg % (len(ep) + 1)
            seg_end = ep[seg_ep, 1]
            lengths = seg_end - first
            offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            total = int(lengths.sum())
            inc = np.zeros(total, dtype=np.float64)
            np.add.at(inc, offsets[inv] + (tk - first[inv]), am)
            cs = np.cumsum(inc)
            seg_base = np.concatenate([[0.0], cs[np.cumsum(lengths)[:-1] - 1]]) if len(lengths) > 1 else np.zeros(1)
            values = cs - np.repeat(seg_base, lengths)
            ticks = np.arange(total) - np.repeat(offsets, lengths) + np.repeat(first, lengths)
            series_idx = np.repeat(seg_series, lengths)
            # staleness markers where an epoch ends in a stop or restart
            stale_seg = (ep[seg_ep, 2] == 1) & (seg_end < n_ticks)
            st_series, st_tick = seg_series[stale_seg], seg_end[stale_seg]
            # a series re-created at that very tick starts a new segment there: no marker then
            restarted = np.isin(st_series * n_ticks + st_tick, seg_series * n_ticks + first)
            st_series, st_tick = st_series[~restarted], st_tick[~restarted]
            # markers go in place (the rows stay in (series, tick) order, as a TSDB appends them),
            # so readers find each series as one time-ordered run
            st_order = np.lexsort((st_tick, st_series))
            st_series, st_tick = st_series[st_order], st_tick[st_order]
            at = np.searchsorted(series_idx.astype(np.int64) * n_ticks + ticks, st_series.astype(np.int64) * n_ticks + st_tick)
            series_idx = np.insert(series_idx, at, st_series)
            ticks = np.insert(ticks, at, st_tick)
            values = np.insert(values, at, STALE_NAN)
            keep = self.keep_tick[ticks]
            self._append(ids[series_idx[keep]], ticks[keep], values[keep], target.offset_ms)

    def _append(self, ids: np.ndarray, ticks: np.ndarray, values: np.ndarray, offset_ms: int) -> None:
        ts = self.start_ms + ticks.astype(np.int64) * self.step_ms + offset_ms
        self.on_samples(
            pl.DataFrame(
                {"series_id": ids, "ts": ts, "value": values},
                schema=SAMPLE_SCHEMA,
            )
        )

    def series_frame(self) -> pl.DataFrame:
        items = sorted(self._series.items())
        return pl.DataFrame(
            {
                "series_id": np.array([k for k, _ in items], dtype=np.uint64),
                "metric": [m for _, (m, _) in items],
                "labels": [lab for _, (_, lab) in items],
            },
            schema=SERIES_SCHEMA,
        )
