"""Injected incidents and near misses of the demo fleet, with their ground truth.

Each incident is placed on a day chosen by its position in the window and at a
fixed hour, so the small two-day preset holds every kind as well as the default
two-week fleet. The ``alerts`` column names the seed alert rules that a good
rule set should fire for it; near misses are episodes a good rule should *not*
page on (short blips, a single restart, a brief scrape failure).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from vfanalytics.store import INCIDENT_COLUMNS

if TYPE_CHECKING:
    from vfanalytics.demo import Fleet

__all__ = ["Episode", "IncidentPlan", "INCIDENT_KINDS"]

HOUR = 3_600_000
MINUTE = 60_000
DAY = 24 * HOUR


@dataclass(frozen=True)
class Episode:
    id: str
    kind: str
    start_ms: int
    end_ms: int
    severity: str
    matchers: str
    title: str
    alerts: str


# kind, position in window (0..1), hour of day (UTC), minutes, severity, matchers, alerts, title
INCIDENT_KINDS = [
    ("service_down", 0.05, 1.05, 8, "critical", '{job="vaporform-backend",instance="vaporform-backend-1:4000"}',
     "VaporformServiceDown", "Backend pod 1 stopped answering"),
    ("http_5xx_spike", 0.12, 15.2, 20, "warning", '{job="vaporform-backend",route="/api/projects"}',
     "VaporformHighErrorRate", "5xx spike on /api/projects after a bad config push"),
    ("latency_regression", 0.2, 10.5, 40, "warning", '{job="vaporform-backend"}',
     "VaporformHighResponseTime", "Slow responses: database index dropped"),
    ("memory_pressure", 0.28, 13.1, 25, "warning", '{pod="vaporform-backend-2"}',
     "VaporformHighMemoryUsage", "Memory leak in backend pod 2"),
    ("crash_loop", 0.36, 17.3, 30, "warning", '{pod="vaporform-worker-1"}',
     "KubernetesPodCrashLooping", "Worker 1 crash-looping on a poisoned job"),
    ("postgres_down", 0.44, 6.4, 6, "critical", '{job="postgres"}',
     "PostgreSQLDown", "PostgreSQL primary failover"),
    ("postgres_connections", 0.52, 11.2, 20, "warning", '{job="postgres"}',
     "PostgreSQLHighConnections", "Connection pool exhaustion"),
    ("redis_down", 0.6, 20.3, 5, "critical", '{job="redis"}', "RedisDown", "Redis restarted after OOM"),
    ("redis_memory", 0.66, 12.4, 15, "warning", '{job="redis"}',
     "RedisHighMemoryUsage", "Redis cache filled by a runaway key pattern"),
    ("claude_api_errors", 0.74, 14.1, 20, "warning", '{job="vaporform-backend"}',
     "VaporformClaudeAPIErrors", "Claude API returning overloaded errors"),
    ("claude_latency", 0.82, 16.2, 25, "warning", '{job="vaporform-backend"}',
     "VaporformClaudeHighLatency", "Claude API slow responses"),
    ("node_not_ready", 0.9, 8.3, 10, "critical", '{node="node-3"}',
     "KubernetesNodeNotReady", "Kubelet on node-3 lost its API server connection"),
]

NEAR_MISS_KINDS = [
    ("http_5xx_blip", 0.1, 11.3, 1, "none", '{job="vaporform-backend",route="/api/chat"}',
     "VaporformHighErrorRate", "One-minute 5xx blip during a deploy"),
    ("memory_spike", 0.3, 9.2, 3, "none", '{pod="vaporform-backend-0"}',
     "VaporformHighMemoryUsage", "Short GC-driven memory spike to 84 %"),
    ("single_restart", 0.42, 21.1, 0, "none", '{pod="vaporform-worker-0"}',
     "KubernetesPodCrashLooping", "One planned container restart"),
    ("scrape_blip", 0.58, 18.2, 0.5, "none", '{job="vaporform-backend",instance="vaporform-backend-0:4000"}',
     "VaporformServiceDown", "Two failed scrapes during a network blip"),
    ("redis_memory_blip", 0.7, 19.1, 10, "none", '{job="redis"}',
     "RedisHighMemoryUsage", "Redis at 88 % of maxmemory during a batch job"),
    ("claude_latency_blip", 0.92, 15.4, 2, "none", '{job="vaporform-backend"}',
     "VaporformClaudeHighLatency", "Two slow minutes at the Claude API"),
]


class IncidentPlan:
    """Where the incidents and near misses fall in one fleet's window, and their effects."""

    def __init__(self, fleet: Fleet) -> None:
        cfg = fleet.cfg
        self.t0 = cfg.start_ms
        self.step = cfg.step_ms
        self.n_ticks = cfg.n_ticks
        self.days = cfg.days
        span_days = max(int(np.ceil(cfg.days)), 1)
        self.episodes: dict[str, Episode] = {}
        self.near: dict[str, Episode] = {}
        for table, kinds, prefix in ((self.episodes, INCIDENT_KINDS, "INC"), (self.near, NEAR_MISS_KINDS, "NM")):
            for i, (kind, pos, hour, minutes, sev, matchers, alerts, title) in enumerate(kinds, start=1):
                day = min(int(pos * span_days), span_days - 1)
                start = self._snap(self.t0 + day * DAY + int(hour * HOUR))
                end = start + int(minutes * MINUTE)
                if end >= self.t0 + (self.n_ticks - 1) * self.step:
                    continue  # a window shorter than the plan: this one does not happen
                table[kind] = Episode(f"{prefix}-{i:03d}", kind, start, end, sev, matchers, title, alerts)
        # the build-time regression is a lasting change, not an outage
        regress = self._snap(self.t0 + int(0.6 * cfg.days * DAY) + 9 * HOUR)
        self.build_regression_ms = regress
        end_ms = self.t0 + (self.n_ticks - 1) * self.step
        if regress < end_ms:
            self.episodes["build_regression"] = Episode(
                f"INC-{len(INCIDENT_KINDS) + 1:03d}", "build_regression", regress, end_ms, "warning",
                '{tech_stack="nextjs"}', "Next.js builds 1.8x slower after a bundler upgrade", "",
            )

    def _snap(self, t_ms: int) -> int:
        return self.t0 + ((t_ms - self.t0) // self.step) * self.step

    def tick(self, t_ms: int) -> int:
        return int((t_ms - self.t0) // self.step)

    def window(self, kind: str, near: bool = False) -> tuple[int, int] | None:
        """``[start_tick, end_tick)`` of an episode, or None when it is not in this window."""
        ep = (self.near if near else self.episodes).get(kind)
        if ep is None:
            return None
        return self.tick(ep.start_ms), max(self.tick(ep.end_ms), self.tick(ep.start_ms) + 1)

    def mask(self, kind: str, near: bool = False) -> np.ndarray:
        m = np.zeros(self.n_ticks, dtype=bool)
        w = self.window(kind, near)
        if w:
            m[w[0] : w[1]] = True
        return m

    def in_episode(self, t_ms: np.ndarray, kind: str, near: bool = False) -> np.ndarray:
        ep = (self.near if near else self.episodes).get(kind)
        if ep is None:
            return np.zeros(len(t_ms), dtype=bool)
        return (t_ms >= ep.start_ms) & (t_ms < ep.end_ms)

    # -- effects ------------------------------------------------------------------------
    def prometheus_gaps(self) -> np.ndarray:
        """Ticks lost while Prometheus itself restarted (no samples at all): one every ~5 days."""
        gaps = np.zeros(self.n_ticks, dtype=bool)
        per_day = int(86_400_000 // self.step)
        for k in range(max(1, int(self.days // 5))):
            at = int((0.52 + k) * 5 * per_day) if self.days >= 5 else int(0.52 * self.n_ticks)
            at = min(at, self.n_ticks - 10)
            gaps[at : at + 3] = True
        return gaps

    def apply_claude(self, t: np.ndarray, err_p: np.ndarray, dur_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        err_p = np.where(self.in_episode(t, "claude_api_errors"), 0.45, err_p)
        dur_s = np.where(self.in_episode(t, "claude_latency"), dur_s * 6.0, dur_s)
        dur_s = np.where(self.in_episode(t, "claude_latency_blip", near=True), dur_s * 4.0, dur_s)
        return err_p, dur_s

    def build_factor(self, t: np.ndarray, stacks: np.ndarray) -> np.ndarray:
        return np.where((stacks == "nextjs") & (t >= self.build_regression_ms), 1.8, 1.0)

    def backend_down(self, instance: int) -> list[tuple[int, int]]:
        out = []
        if instance == 1 and (w := self.window("service_down")):
            out.append(w)
        if instance == 0 and (ep := self.near.get("scrape_blip")):
            a = self.tick(ep.start_ms)
            out.append((a, a + 2))
        return out

    def deploy_ticks(self, instance: int) -> list[int]:
        """Rolling deploys every six hours (02:00, 08:00, 14:00, 20:00 UTC), two minutes between pods.

        Each deploy restarts the pod's process: counters reset and prom-client's
        per-user series vanish until they are incremented again.
        """
        every = 6 * HOUR // self.step
        first = self.tick(self.t0 + 2 * HOUR + instance * 2 * MINUTE)
        return [int(t) for t in range(first, self.n_ticks, int(every))]

    def frames(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        def frame(eps: dict[str, Episode]) -> pl.DataFrame:
            rows = [
                {"id": e.id, "start_ms": e.start_ms, "end_ms": e.end_ms, "severity": e.severity,
                 "matchers": e.matchers, "title": e.title, "kind": e.kind, "alerts": e.alerts}
                for e in eps.values()
            ]
            schema = {"id": pl.Utf8, "start_ms": pl.Int64, "end_ms": pl.Int64, "severity": pl.Utf8,
                      "matchers": pl.Utf8, "title": pl.Utf8, "kind": pl.Utf8, "alerts": pl.Utf8}
            return pl.DataFrame(rows, schema=schema).select(INCIDENT_COLUMNS).sort("start_ms", "id")

        return frame(self.episodes), frame(self.near)
