"""StructuredLogger JSON lines for the demo fleet's events.

Lines are written exactly as Vaporform's winston ``StructuredLogger`` prints them:
``timestamp`` (ISO 8601, milliseconds, ``Z``), ``level``, ``service``,
``correlationId``, ``message``, then the meta fields of the action type in the
order the logger spreads them (keys whose value is ``undefined`` are omitted, as
``JSON.stringify`` does). Each user-related line also carries ``userTier``,
``userSegment`` and ``environment``; session lines carry ``sessionId`` and, on
``session_start``, ``flagExposures`` for the demo experiment flag.

Lines are encoded column-wise with Polars (no per-line Python) and the typed
``logs`` columns are built from the same columns, so the store holds both the
raw line and its parsed fields; a test checks them against
:func:`vfanalytics.logs.parse_log_lines`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from vfanalytics.logs import LOG_SCHEMA
from vfanalytics.store import LOG_FIELDS

if TYPE_CHECKING:
    from vfanalytics.demo import Fleet
    from vfanalytics.demo_incidents import IncidentPlan

__all__ = ["render_logs", "EXPERIMENT_FLAG"]

#: the demo's experiment flag, evaluated with the platform's own bucketing
EXPERIMENT_FLAG: dict[str, Any] = {
    "key": "enable_smart_context",
    "name": "Smart Context",
    "description": "Send a smarter project context with each Claude request",
    "enabled": True,
    "rolloutPercentage": 30,
    "userSegments": ["all"],
    "environments": ["production", "staging"],
}

_COLUMN_OF = {key: col for key, (col, _) in LOG_FIELDS.items()}


def _uuid4(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64).astype(np.uint64)
    hexes = [f"{a:016x}{b:016x}" for a, b in raw]
    return np.array(
        [f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:32]}" for h in hexes], dtype=str
    )


def _encode(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Add ``line`` (the JSON object of ``keys``, in order) and the typed columns."""
    line = frame.select(pl.struct(keys).struct.json_encode().alias("line"))["line"]
    typed = {_COLUMN_OF[k]: frame[k] for k in keys if k in _COLUMN_OF}
    extra_keys = [k for k in keys if k not in _COLUMN_OF]
    extra = (
        frame.select(pl.struct(extra_keys).struct.json_encode().alias("e"))["e"]
        if extra_keys
        else pl.Series("e", [None] * frame.height, dtype=pl.Utf8)
    )
    out = pl.DataFrame(
        {
            "ts_ns": frame["ts_ns"],
            "stream": frame["stream"],
            "line": line,
            "parse_error": pl.Series([False] * frame.height),
            **typed,
            "extra": extra,
        }
    )
    for col, dtype in LOG_SCHEMA.items():
        if col not in out.columns:
            out = out.with_columns(pl.lit(None, dtype=dtype).alias(col))
    return out.with_columns(
        pl.col("log_time").cast(pl.Utf8).str.to_datetime(time_zone="UTC", time_unit="us").dt.replace_time_zone(None)
    ).select(list(LOG_SCHEMA))


def _base(fleet: Fleet, rng: np.random.Generator, t_ms: np.ndarray, users: np.ndarray, level: str,
          corr: np.ndarray) -> dict[str, object]:
    env = fleet.user_env[users] if len(users) else np.array([], dtype=str)
    stream = np.char.add(np.char.add('{"env":"', env), f'","level":"{level}","service":"backend"}}')
    ts = pl.Series(t_ms).cast(pl.Datetime("ms")).dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
    return {
        "ts_ns": t_ms * 1_000_000 + rng.integers(1, 1_000_000, size=len(t_ms)),
        "stream": stream,
        "timestamp": ts,
        "level": level,
        "service": "backend",
        "correlationId": corr,
    }


def _user_fields(fleet: Fleet, users: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "userTier": fleet.user_tier[users],
        "userSegment": fleet.user_segment[users],
        "environment": fleet.user_env[users],
    }


def render_logs(
    fleet: Fleet,
    plan: IncidentPlan,
    sessions: pl.DataFrame,
    calls: pl.DataFrame,
    builds: pl.DataFrame,
    creations: pl.DataFrame,
) -> pl.DataFrame:
    """All demo log lines as the ``logs`` table's frame, ordered by (ts_ns, stream, line)."""
    rng = fleet.child_rng("logs")
    s_user = sessions["user"].to_numpy()
    n_sess = len(s_user)
    corr = _uuid4(rng, n_sess)
    sess_ids = np.array([f"sess-{i:07d}" for i in sessions["session"].to_list()], dtype=str)
    parts: list[pl.DataFrame] = []

    def user_action(t: np.ndarray, users: np.ndarray, c: np.ndarray, action: str, extra: dict[str, object],
                    project: np.ndarray | None = None) -> None:
        cols: dict[str, object] = _base(fleet, rng, t, users, "info", c)
        cols |= {"message": f"User action: {action}", "actionType": "user_action", "userId": fleet.user_ids[users]}
        keys = ["timestamp", "level", "service", "correlationId", "message", "actionType", "userId"]
        if project is not None:
            cols["projectId"] = fleet.proj_ids[project]
            keys.append("projectId")
        cols["action"] = action
        keys.append("action")
        cols |= extra
        cols |= _user_fields(fleet, users)
        keys += list(extra) + ["userTier", "userSegment", "environment"]
        parts.append(_encode(pl.DataFrame(cols), keys))

    # sessions: start (with the experiment flag exposure the platform logged) and end
    exposed = fleet.user_exposed[s_user]
    # the platform's exposure logging drops ~5 % of exposed sessions (a real-world SRM cause)
    logged = exposed & (rng.random(n_sess) >= 0.05) | ~exposed
    expo = pl.Series([{"enable_smart_context": bool(e)} for e in exposed])
    s0 = sessions["start_ms"].to_numpy()
    s1 = sessions["end_ms"].to_numpy()
    eligible = np.isin(fleet.user_env[s_user], EXPERIMENT_FLAG["environments"])
    with_flag = logged & eligible
    user_action(s0[with_flag], s_user[with_flag], corr[with_flag], "session_start",
                {"sessionId": sess_ids[with_flag], "flagExposures": expo.filter(pl.Series(with_flag))})
    user_action(s0[~with_flag], s_user[~with_flag], corr[~with_flag], "session_start",
                {"sessionId": sess_ids[~with_flag]})
    user_action(s1, s_user, corr, "session_end",
                {"sessionId": sess_ids, "sessionDuration": np.round((s1 - s0) / 1000.0, 3)})

    # Claude interactions (one line per call) and an error line for each failed call
    c_t = calls["ts_ms"].to_numpy()
    c_u = calls["user"].to_numpy()
    c_corr = corr[calls["session"].to_numpy()]
    cols = _base(fleet, rng, c_t, c_u, "info", c_corr)
    cols |= {
        "message": "Claude interaction: " + calls["operation"],
        "actionType": "claude_interaction",
        "operation": calls["operation"],
        "projectId": fleet.proj_ids[calls["project"].to_numpy()],
        "duration": np.round(calls["duration_s"].to_numpy() * 1000).astype(np.int64),
        "success": calls["success"],
        "tokens": calls["tokens"],
        "userId": fleet.user_ids[c_u],
    } | _user_fields(fleet, c_u)
    keys = ["timestamp", "level", "service", "correlationId", "message", "actionType", "operation", "projectId",
            "duration", "success", "tokens", "userId", "userTier", "userSegment", "environment"]
    frame = _encode(pl.DataFrame(cols), keys)
    parts.append(frame.with_columns(pl.col("duration").cast(pl.Float64)))
    failed = ~calls["success"].to_numpy()
    f_u = c_u[failed]
    ecols = _base(fleet, rng, c_t[failed] + 1, f_u, "error", c_corr[failed])
    ecols |= {"message": "Claude API request failed", "operation": calls["operation"].filter(pl.Series(failed)),
              "projectId": fleet.proj_ids[calls["project"].to_numpy()[failed]], "userId": fleet.user_ids[f_u],
              "errorCode": 529}
    parts.append(_encode(pl.DataFrame(ecols), ["timestamp", "level", "service", "correlationId", "message",
                                               "operation", "projectId", "userId", "errorCode"]))

    # builds (container events) and project creations
    b_t = builds["ts_ms"].to_numpy()
    b_u = builds["user"].to_numpy()
    b_p = builds["project"].to_numpy()
    b_end = b_t + np.round(builds["duration_s"].to_numpy() * 1000).astype(np.int64)
    bcols = _base(fleet, rng, b_end, b_u, "info", _uuid4(rng, len(b_t)))
    bcols |= {"message": "Container event: build_completed", "actionType": "container_event",
              "event": "build_completed", "containerId": np.char.add("ctr-", fleet.proj_ids[b_p]),
              "projectId": fleet.proj_ids[b_p], "techStack": fleet.proj_stack[b_p],
              "complexity": fleet.proj_complexity[b_p], "buildDuration": np.round(builds["duration_s"].to_numpy(), 3),
              "userId": fleet.user_ids[b_u]} | _user_fields(fleet, b_u)
    parts.append(_encode(pl.DataFrame(bcols), ["timestamp", "level", "service", "correlationId", "message",
                                               "actionType", "event", "containerId", "projectId", "techStack",
                                               "complexity", "buildDuration", "userId", "userTier", "userSegment",
                                               "environment"]))
    cr_u = creations["user"].to_numpy()
    cr_p = creations["project"].to_numpy()
    user_action(creations["ts_ms"].to_numpy(), cr_u, _uuid4(rng, len(cr_u)), "create_project",
                {"techStack": fleet.proj_stack[cr_p], "template": fleet.proj_template[cr_p]}, project=cr_p)

    # security events: failed logins, a few per day
    n_sec = rng.poisson(fleet.cfg.days * 6)
    sec_t = np.sort(fleet.t0 + (rng.random(n_sec) * (fleet.t_end - fleet.t0)).astype(np.int64))
    sec_u = rng.integers(0, fleet.cfg.users, size=n_sec)
    scols = _base(fleet, rng, sec_t, sec_u, "warn", _uuid4(rng, n_sec))
    scols |= {"message": "Security event: failed_login", "actionType": "security_event", "event": "failed_login",
              "userId": fleet.user_ids[sec_u], "severity": rng.choice(np.array(["low", "medium", "high"]), n_sec,
                                                                      p=[0.6, 0.3, 0.1])}
    parts.append(_encode(pl.DataFrame(scols), ["timestamp", "level", "service", "correlationId", "message",
                                               "actionType", "event", "userId", "severity"]))

    # performance metrics: event-loop lag every 15 minutes (worker service stream)
    pm_t = np.arange(fleet.t0, fleet.t_end, 900_000, dtype=np.int64)
    lag = np.round(rng.lognormal(np.log(4.0), 0.4, size=len(pm_t)) * (1 + 4 * plan.in_episode(pm_t, "latency_regression")), 2)
    pcols = {
        "ts_ns": pm_t * 1_000_000 + rng.integers(1, 1_000_000, size=len(pm_t)),
        "stream": '{"env":"production","level":"info","service":"worker"}',
        "timestamp": pl.Series(pm_t).cast(pl.Datetime("ms")).dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"),
        "level": "info", "service": "worker", "correlationId": _uuid4(rng, len(pm_t)),
        "message": "Performance metric: event_loop_lag", "actionType": "performance_metric",
        "metric": "event_loop_lag", "value": lag, "unit": "ms",
    }
    parts.append(_encode(pl.DataFrame(pcols), ["timestamp", "level", "service", "correlationId", "message",
                                               "actionType", "metric", "value", "unit"]))
    return pl.concat(parts, how="vertical_relaxed").sort("ts_ns", "stream", "line")
