"""How fair the platform's rollout bucketing is, and what an experiment on it can conclude.

The platform hashes the bare user id (no flag key, no salt) with a Java-style string
hash. Consecutive ids (``user-00041``, ``user-00042``) therefore land in consecutive
buckets, one company's block of accounts is exposed or not as a whole, and every flag at
``p`` % reaches the same users. This module measures that:

* :func:`bucketing_quality`: chi-square uniformity over the 100 buckets, lag-1
  correlation of buckets over ordered ids, dispersion of exposure across windows of
  consecutive ids (e.g. one team), and the special ids (``anonymous``: every request
  without a user id shares one bucket);
* :func:`overlap_matrix`: share of flag A's users that flag B also reaches;
* the same figures for the recommended alternative, a salted mixing hash
  (:func:`salted_bucket`: murmur3 of ``flagKey:userId``, as Unleash does);
* :func:`srm_test` and :func:`impact`: sample-ratio mismatch on observed exposure
  (``flagExposures`` of ``session_start`` lines) and per-user metric differences between
  exposed and unexposed users, with Welch and bootstrap confidence intervals, and a
  warning when the assignment is not random.

Example
-------
>>> ids = [f"user-{i:05d}" for i in range(1, 1001)]
>>> q = bucketing_quality(ids, percentage=30, window=10)
>>> q["lag1_correlation"] > 0.5, q["dispersion_index"] > 3, q["not_random"]
(True, True, True)
>>> s = bucketing_quality(ids, percentage=30, window=10, salt_key="enable_smart_context")
>>> abs(s["lag1_correlation"]) < 0.1, s["chi2_pvalue"] > 1e-3, s["not_random"]
(True, True, False)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import mmh3
import numpy as np
import polars as pl
from scipy import stats

from vfanalytics.exceptions import UsageError
from vfanalytics.rollout import ANONYMOUS_ID, FeatureFlag, bucket, evaluate

__all__ = [
    "salted_bucket",
    "bucketing_quality",
    "overlap_matrix",
    "observed_exposure",
    "srm_test",
    "impact",
    "NOT_RANDOM_ALPHA",
]

#: bucketing is reported as not random when the lag-1 correlation or the window dispersion
#: is this improbable under independent assignment (normal approximation / chi-square)
NOT_RANDOM_ALPHA = 0.001
#: SRM is declared below this p-value (the usual experimentation-platform threshold)
SRM_ALPHA = 0.001


def salted_bucket(flag_key: str, user_ids: Any) -> np.ndarray:
    """Salted bucket ``murmur3_32("flagKey:userId", seed 0) % 100`` (Unleash's scheme, 0-based).

    Missing or empty ids are taken as ``'anonymous'`` like the platform does.

    Example
    -------
    >>> salted_bucket("f", ["user-00001", "user-00002"]).tolist()
    [69, 10]
    """
    from vfanalytics.rollout import _as_str_list  # the shared id normaliser

    ids = [s if s else ANONYMOUS_ID for s in _as_str_list(user_ids)]
    # mmh3 has no array API; it is C per call, ~0.2 µs an id
    return np.fromiter((mmh3.hash(f"{flag_key}:{s}", 0, signed=False) % 100 for s in ids),
                       dtype=np.int64, count=len(ids))


def _buckets(ids: Sequence[str | None], salt_key: str | None) -> np.ndarray:
    return bucket(ids) if salt_key is None else salted_bucket(salt_key, ids)


def _natural_key(s: str) -> tuple[int, str]:
    return (len(s), s)  # zero-padded or plain numeric ids sort by value


def bucketing_quality(
    user_ids: Sequence[str | None],
    *,
    percentage: float = 30.0,
    window: int = 10,
    salt_key: str | None = None,
) -> dict[str, Any]:
    """Bucketing-quality figures for a population of ids.

    Parameters
    ----------
    user_ids:
        The population (duplicates removed; order does not matter: ids are ordered
        naturally, shorter first, to measure what neighbouring sign-ups get).
    percentage:
        Rollout percentage used for the window dispersion.
    window:
        Size of a block of consecutive ids (a team's accounts).
    salt_key:
        ``None`` for the platform's hash; a flag key for the salted murmur3 alternative.

    Returns
    -------
    dict
        ``method, n, chi2, chi2_pvalue, lag1_correlation, window, windows,
        dispersion_index, share_windows_all_or_none, expected_all_or_none,
        anonymous_bucket, not_random`` (and a ``note`` when n is small for chi-square).
    """
    if not 0 <= percentage <= 100:
        raise UsageError(f"percentage must be from 0 to 100, got {percentage!r}")
    if window < 2:
        raise UsageError(f"window must be at least 2 ids, got {window}")
    ids = sorted({s for s in user_ids if s}, key=_natural_key)
    n = len(ids)
    if n < 2:
        raise UsageError(f"need at least 2 distinct user ids, got {n}")
    b = _buckets(ids, salt_key)
    counts = np.bincount(b, minlength=100)
    chi = stats.chisquare(counts)
    lag1 = float(np.corrcoef(b[:-1], b[1:])[0, 1]) if np.std(b) > 0 else float("nan")
    p = percentage / 100.0
    exposed = (b < percentage).astype(np.float64)
    n_win = n // window
    out: dict[str, Any] = {
        "method": "platform (unsalted Java hash)" if salt_key is None else f"salted murmur3 ({salt_key}:userId)",
        "n": n,
        "chi2": float(chi.statistic),
        "chi2_pvalue": float(chi.pvalue),
        "lag1_correlation": lag1,
        "percentage": percentage,
        "window": window,
        "windows": n_win,
    }
    if n_win >= 2 and 0 < p < 1:
        shares = exposed[: n_win * window].reshape(n_win, window).mean(axis=1)
        out["dispersion_index"] = float(shares.var(ddof=1) / (p * (1 - p) / window))
        # (windows - 1) * index ~ chi-square(windows - 1) when assignment is independent
        out["dispersion_pvalue"] = float(stats.chi2.sf((n_win - 1) * out["dispersion_index"], n_win - 1))
        out["share_windows_all_or_none"] = float(np.mean((shares == 0) | (shares == 1)))
        out["expected_all_or_none"] = float(p**window + (1 - p) ** window)
    else:
        out["dispersion_index"] = float("nan")
        out["dispersion_pvalue"] = float("nan")
        out["share_windows_all_or_none"] = float("nan")
        out["expected_all_or_none"] = float("nan")
    anon = _buckets([ANONYMOUS_ID], salt_key)
    out["anonymous_bucket"] = int(anon[0])
    out["anonymous_exposed_at_percentage"] = bool(anon[0] < percentage)
    # ids a caller produces by accident ('' and a missing id become 'anonymous'; String(undefined),
    # String(null), 0): each is one bucket, so all its traffic is in or out together
    special = ["", "undefined", "null", "0"]
    out["special_ids"] = dict(zip(special, (int(x) for x in _buckets(special, salt_key)), strict=True))
    if n < 500:
        out["note"] = f"chi-square over 100 buckets needs ~500+ ids; {n} ids give expected counts of {n / 100:.1f}"
    # lag-1 correlation of independent values is ~ N(0, 1/n)
    out["lag1_pvalue"] = float(2 * stats.norm.sf(abs(lag1) * math.sqrt(n))) if not math.isnan(lag1) else float("nan")
    out["not_random"] = bool(out["lag1_pvalue"] < NOT_RANDOM_ALPHA or out["dispersion_pvalue"] < NOT_RANDOM_ALPHA)
    return out


def overlap_matrix(
    flags: Mapping[str, float] | Sequence[FeatureFlag],
    user_ids: Sequence[str | None],
    *,
    salted: bool = False,
) -> pl.DataFrame:
    """Share of flag A's users that flag B reaches too, for rollout percentages alone.

    Parameters
    ----------
    flags:
        ``{key: percentage}`` or flags (their ``rollout_percentage``; segment and
        environment rules are left out: this isolates the bucketing).
    salted:
        Use :func:`salted_bucket` per flag key instead of the platform's hash.

    Returns
    -------
    polars.DataFrame
        ``flag_a, flag_b, users_a, users_both, overlap, independent`` where ``overlap``
        = P(B | A) and ``independent`` = B's percentage / 100 (what a salted hash gives).

    Example
    -------
    >>> m = overlap_matrix({"a": 20, "b": 50}, [f"u{i}" for i in range(5000)])
    >>> m.filter((pl.col("flag_a") == "a") & (pl.col("flag_b") == "b"))["overlap"].item()
    1.0
    """
    pcts = dict(flags) if isinstance(flags, Mapping) else {f.key: f.rollout_percentage for f in flags}
    ids = [s for s in user_ids]
    shared = bucket(ids)
    exposed = {k: np.asarray((salted_bucket(k, ids) if salted else shared) < p) for k, p in pcts.items()}
    rows = []
    for a, ea in exposed.items():
        for b_key, eb in exposed.items():
            n_a = int(ea.sum())
            both = int((ea & eb).sum())
            rows.append({"flag_a": a, "flag_b": b_key, "users_a": n_a, "users_both": both,
                         "overlap": both / n_a if n_a else float("nan"), "independent": pcts[b_key] / 100.0})
    return pl.DataFrame(rows)


def observed_exposure(sessions: pl.DataFrame, flag_key: str) -> pl.DataFrame:
    """Per session, the exposure the platform logged for ``flag_key`` (``None`` when not logged).

    ``sessions`` is :attr:`vfanalytics.exposure.Activity.sessions` (``exposures`` JSON column).
    """
    path = "$." + flag_key if flag_key.isidentifier() else f'$["{flag_key}"]'
    return sessions.with_columns(
        pl.col("exposures").str.json_path_match(path).replace_strict(
            {"true": True, "false": False}, default=None, return_dtype=pl.Boolean).alias("exposed")
    )


def srm_test(exposed: int, unexposed: int, expected_share: float) -> dict[str, Any]:
    """Sample-ratio-mismatch chi-square test of observed counts against an expected share.

    Example
    -------
    >>> r = srm_test(2600, 7400, 0.30)
    >>> r["srm"], round(r["observed_share"], 2)
    (True, 0.26)
    """
    if not 0 <= expected_share <= 1:
        raise UsageError(f"expected share must be from 0 to 1, got {expected_share!r}")
    total = exposed + unexposed
    out: dict[str, Any] = {"exposed": exposed, "unexposed": unexposed, "expected_share": expected_share,
                           "observed_share": exposed / total if total else float("nan")}
    if total == 0 or expected_share in (0.0, 1.0):
        out.update(chi2=float("nan"), pvalue=float("nan"), srm=False)
        return out
    res = stats.chisquare([exposed, unexposed], [total * expected_share, total * (1 - expected_share)])
    out.update(chi2=float(res.statistic), pvalue=float(res.pvalue), srm=bool(res.pvalue < SRM_ALPHA))
    return out


def _diff_means(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray(np.mean(x, axis=axis) - np.mean(y, axis=axis))


def _share(flags: pl.Series) -> float:
    return float(np.mean(flags.to_numpy())) if len(flags) else 0.0


def _compare(a: np.ndarray, b: np.ndarray, n_resamples: int, seed: int) -> dict[str, float]:
    out = {"mean_exposed": float(np.mean(a)) if len(a) else float("nan"),
           "mean_unexposed": float(np.mean(b)) if len(b) else float("nan")}
    out["difference"] = out["mean_exposed"] - out["mean_unexposed"]
    nan = float("nan")
    if len(a) < 2 or len(b) < 2 or (np.var(a) == 0 and np.var(b) == 0):
        out.update(welch_t=nan, welch_pvalue=nan, welch_ci_low=nan, welch_ci_high=nan,
                   bootstrap_ci_low=nan, bootstrap_ci_high=nan)
        return out
    t = stats.ttest_ind(a, b, equal_var=False)
    ci = t.confidence_interval(0.95)
    boot = stats.bootstrap((a, b), _diff_means, n_resamples=n_resamples, vectorized=True,
                           method="percentile", rng=np.random.default_rng(seed))
    out.update(welch_t=float(t.statistic), welch_pvalue=float(t.pvalue), welch_ci_low=float(ci.low),
               welch_ci_high=float(ci.high), bootstrap_ci_low=float(boot.confidence_interval.low),
               bootstrap_ci_high=float(boot.confidence_interval.high))
    return out


def impact(
    activity: Any,
    flag: FeatureFlag,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """SRM and per-user metric differences for a flag whose exposure the platform logged.

    Parameters
    ----------
    activity:
        :class:`vfanalytics.exposure.Activity` (sessions carry ``flagExposures``).
    flag:
        The flag as it was configured during the experiment.

    Returns
    -------
    dict
        ``srm_users`` and ``srm_sessions`` (:func:`srm_test`; expected shares from the
        evaluator itself, so a mismatch is a logging problem, not bucketing luck),
        ``srm_nominal`` (users against ``rolloutPercentage``), ``prediction_mismatches``
        (users whose logged exposure disagrees with :func:`~vfanalytics.rollout.evaluate`),
        ``balance`` (tier mix of the two groups, chi-square), ``metrics`` (a frame: metric,
        mean_exposed, mean_unexposed, difference, Welch t / p / 95 % CI, bootstrap 95 % CI)
        and ``warnings``.
    """
    sessions = observed_exposure(activity.sessions, flag.key)
    eligible_env = sessions.filter(pl.col("environment").is_in(list(flag.environments)))
    predicted = evaluate(flag, eligible_env["user_id"], eligible_env["segment"], eligible_env["environment"])
    eligible_env = eligible_env.with_columns(pl.Series("predicted", predicted))
    logged = eligible_env.filter(pl.col("exposed").is_not_null())
    if logged.is_empty():
        raise UsageError(f"no logged exposure for flag {flag.key!r} (no session_start flagExposures)")
    n_exp = int(logged["exposed"].sum())
    expected_sessions = _share(eligible_env["predicted"])
    users = logged.sort("ts").group_by("user_id").agg(
        pl.col("exposed").any(), pl.col("predicted").any(), pl.col("tier").last(), pl.col("segment").last()
    ).sort("user_id")
    pred_users = eligible_env.group_by("user_id").agg(pl.col("predicted").any())
    result: dict[str, Any] = {
        "flag": flag.key,
        "srm_sessions": srm_test(n_exp, logged.height - n_exp, expected_sessions),
        "srm_users": srm_test(int(users["exposed"].sum()), int((~users["exposed"]).sum()),
                              _share(pred_users["predicted"])),
        "srm_nominal": srm_test(int(users["exposed"].sum()), int((~users["exposed"]).sum()),
                                flag.rollout_percentage / 100.0),
        "prediction_mismatches": int((users["exposed"] != users["predicted"]).sum()),
        "sessions_without_logged_exposure": int(eligible_env.height - logged.height),
    }
    tiers = users.group_by("tier", "exposed").len().pivot(on="exposed", index="tier", values="len").fill_null(0)
    tiers = tiers.select("tier", *[c for c in ("true", "false") if c in tiers.columns]).sort("tier", nulls_last=True)
    table = tiers.select([c for c in ("true", "false") if c in tiers.columns]).to_numpy()
    if table.shape[1] == 2 and table.shape[0] >= 2 and (table.sum(axis=0) > 0).all() and (table.sum(axis=1) > 0).all():
        ct = stats.chi2_contingency(table)
        result["balance"] = {"tiers": tiers.to_dicts(), "chi2": float(ct.statistic), "pvalue": float(ct.pvalue)}
    else:
        result["balance"] = {"tiers": tiers.to_dicts(), "chi2": float("nan"), "pvalue": float("nan")}

    req = activity.requests.group_by("user_id").agg(
        pl.len().alias("requests"), pl.col("tokens").sum().alias("tokens"),
        pl.col("tokens").filter(pl.col("success")).mean().alias("tokens_per_request"),
        (1 - pl.col("success").cast(pl.Float64).mean()).alias("error_rate"))
    ses = sessions.group_by("user_id").agg(pl.col("duration_s").mean().alias("session_duration_s"))
    # sorted: the bootstrap's resamples depend on row order, which group_by does not fix
    per_user = users.join(req, on="user_id", how="left").join(ses, on="user_id", how="left").sort("user_id")
    rows = []
    for metric in ("tokens_per_request", "tokens", "requests", "error_rate", "session_duration_s"):
        col = per_user.select("exposed", metric).drop_nulls()
        a = col.filter(pl.col("exposed"))[metric].to_numpy().astype(np.float64)
        b = col.filter(~pl.col("exposed"))[metric].to_numpy().astype(np.float64)
        rows.append({"metric": metric, "n_exposed": len(a), "n_unexposed": len(b),
                     **_compare(a, b, n_resamples, seed)})
    result["metrics"] = pl.DataFrame(rows)
    quality = bucketing_quality(users["user_id"].to_list(), percentage=flag.rollout_percentage) \
        if users.height >= 2 else {"not_random": False}
    result["quality"] = quality
    warnings = []
    if quality.get("not_random"):
        warnings.append(
            "bucketing is not random (unsalted sequential hash: neighbouring ids share exposure, "
            f"lag-1 correlation {quality['lag1_correlation']:.2f}); exposed and unexposed users may differ "
            "in more than the flag: treat differences as associations, not effects")
    if result["balance"]["pvalue"] < 0.05:
        warnings.append(f"groups are unbalanced by tier (chi-square p = {result['balance']['pvalue']:.3g})")
    for key in ("srm_sessions", "srm_users"):
        if result[key]["srm"]:
            warnings.append(f"sample ratio mismatch in {key[4:]} (p = {result[key]['pvalue']:.2g}): "
                            "logged exposure is missing or biased")
    if result["prediction_mismatches"]:
        warnings.append(f"{result['prediction_mismatches']} users' logged exposure disagrees with the evaluator")
    result["warnings"] = warnings
    return result
