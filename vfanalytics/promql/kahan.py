"""Compensated sums and means, in the exact order Prometheus computes them.

Prometheus sums with Neumaier's variant of Kahan summation
(``kahanSumInc``), averages with a direct Kahan mean that switches to an
incremental mean once the running sum would overflow, and computes variance
with Welford's method. Results differ from a plain ``numpy.sum`` exactly in
the cases the conformance tests probe (``1 + 1e100 + 1 - 1e100``), so these
reductions are sequential along the reduced axis — but vectorised across all
groups (or windows) and steps at once: the Python loop runs over the position
inside a group, never over samples or steps.

A *stream* is a sequence of ``(targets, x, present)``: ``targets`` indexes
the output rows that receive the values ``x`` (shape ``(len(targets), S)``)
where ``present``.

Example
-------
>>> import numpy as np
>>> xs = [np.array([[1.0]]), np.array([[1e100]]), np.array([[1.0]]), np.array([[-1e100]])]
>>> stream = [(np.array([0]), x, np.ones((1, 1), bool)) for x in xs]
>>> float(kahan_sum(stream, (1, 1))[0][0, 0]), float(kahan_mean(stream, (1, 1))[0][0, 0])
(2.0, 0.5)
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["kahan_inc", "kahan_sum", "kahan_mean", "plain_sum", "incremental_mean", "welford_variance", "Stream"]

Stream = Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]


def kahan_inc(inc: np.ndarray, s: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prometheus' ``kahanSumInc`` element-wise: returns ``(new_sum, new_c)``."""
    with np.errstate(invalid="ignore", over="ignore"):
        t = s + inc
        big = np.abs(s) >= np.abs(inc)
        c2 = np.where(big, c + ((s - t) + inc), c + ((inc - t) + s))
        return t, np.where(np.isinf(t), 0.0, c2)


def kahan_sum(stream: Stream, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Compensated sum per output cell: ``(sum, count)``; Inf sums are returned as they are."""
    s = np.zeros(shape)
    c = np.zeros(shape)
    n = np.zeros(shape, dtype=np.int64)
    for tgt, x, p in stream:
        ts, tc = kahan_inc(np.where(p, x, 0.0), s[tgt], c[tgt])
        s[tgt] = np.where(p, ts, s[tgt])
        c[tgt] = np.where(p, tc, c[tgt])
        n[tgt] += p
    with np.errstate(invalid="ignore"):
        return np.where(np.isinf(s), s, s + c), n


def kahan_mean(stream: Stream, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Prometheus' float mean (``avg`` and ``avg_over_time``): ``(mean, count)``."""
    s = np.zeros(shape)
    c = np.zeros(shape)
    mean = np.zeros(shape)
    n = np.zeros(shape, dtype=np.int64)
    incr = np.zeros(shape, dtype=bool)
    with np.errstate(all="ignore"):
        for tgt, x, p in stream:
            cnt_old = n[tgt]
            cnt = (cnt_old + p).astype(np.float64)
            first = p & (cnt_old == 0)
            later = p & (cnt_old > 0)
            s_t, c_t, m_t, inc_t = s[tgt], c[tgt], mean[tgt], incr[tgt]
            s_t = np.where(first, x, s_t)
            new_s, new_c = kahan_inc(x, s_t, c_t)
            direct = later & ~inc_t
            ok = direct & ~np.isinf(new_s)
            switch = direct & np.isinf(new_s)
            s_t = np.where(ok, new_s, s_t)
            c_t = np.where(ok, new_c, c_t)
            m_t = np.where(switch, s_t / (cnt - 1), m_t)
            c_t = np.where(switch, c_t / (cnt - 1), c_t)
            inc_t = inc_t | switch
            step = later & inc_t
            q = (cnt - 1) / cnt
            nm, nc = kahan_inc(x / cnt, q * m_t, q * c_t)
            m_t = np.where(step, nm, m_t)
            c_t = np.where(step, nc, c_t)
            s[tgt], c[tgt], mean[tgt], incr[tgt] = s_t, c_t, m_t, inc_t
            n[tgt] = cnt_old + p
        nf = np.maximum(n, 1).astype(np.float64)
        return np.where(incr, mean + c, s / nf + c / nf), n


def plain_sum(stream: Stream, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Uncompensated sum in stream order, as Prometheus 2.x's ``sum`` aggregation adds: ``(sum, count)``.

    Prometheus added Kahan compensation to ``sum``/``avg`` only in 3.x releases; 2.42
    gives ``sum(1e16, 1, 1) == 1e16``, and rule annotations rendering ``$value`` show it.
    """
    s = np.zeros(shape)
    n = np.zeros(shape, dtype=np.int64)
    with np.errstate(invalid="ignore", over="ignore"):
        for tgt, x, p in stream:
            s[tgt] = np.where(p, s[tgt] + x, s[tgt])
            n[tgt] += p
    return s, n


def incremental_mean(stream: Stream, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Prometheus 2.x's ``avg`` aggregation: ``mean += x/n - mean/n`` with its Inf rules: ``(mean, count)``."""
    mean = np.zeros(shape)
    n = np.zeros(shape, dtype=np.int64)
    with np.errstate(invalid="ignore", over="ignore"):
        for tgt, x, p in stream:
            cnt_old = n[tgt]
            m = mean[tgt]
            first = p & (cnt_old == 0)
            later = p & (cnt_old > 0)
            cnt = (cnt_old + 1).astype(np.float64)
            # an infinite mean stays as it is unless an opposite Inf or a NaN arrives (engine.go, AVG)
            same_inf = np.isinf(x) & ((m > 0) == (x > 0))
            finite = ~np.isinf(x) & ~np.isnan(x)
            keep = later & np.isinf(m) & (same_inf | finite)
            updated = m + (x / cnt - m / cnt)
            mean[tgt] = np.where(first, x, np.where(later & ~keep, updated, m))
            n[tgt] = cnt_old + p
    return mean, n


def welford_variance(stream: Stream, shape: tuple[int, int], *, kahan: bool) -> tuple[np.ndarray, np.ndarray]:
    """Population variance: ``(variance, count)``.

    ``kahan=False`` is the aggregation operator (plain Welford); ``kahan=True``
    is ``stdvar_over_time`` (Welford with compensated mean and sum of squares).
    """
    n = np.zeros(shape, dtype=np.int64)
    mean = np.zeros(shape)
    c_mean = np.zeros(shape)
    aux = np.zeros(shape)
    c_aux = np.zeros(shape)
    with np.errstate(all="ignore"):
        for tgt, x, p in stream:
            cnt = (n[tgt] + p).astype(np.float64)
            m_t, cm_t, a_t, ca_t = mean[tgt], c_mean[tgt], aux[tgt], c_aux[tgt]
            if kahan:
                delta = x - (m_t + cm_t)
                nm, ncm = kahan_inc(delta / cnt, m_t, cm_t)
                na, nca = kahan_inc(delta * (x - (nm + ncm)), a_t, ca_t)
            else:
                delta = x - m_t
                nm = m_t + delta / cnt
                ncm = cm_t
                na = a_t + delta * (x - nm)
                nca = ca_t
            mean[tgt] = np.where(p, nm, m_t)
            c_mean[tgt] = np.where(p, ncm, cm_t)
            aux[tgt] = np.where(p, na, a_t)
            c_aux[tgt] = np.where(p, nca, ca_t)
            n[tgt] += p
        return (aux + c_aux) / np.maximum(n, 1), n
