"""The deterministic demo fleet: a Vaporform platform with users, projects, incidents and logs.

:func:`generate_demo` simulates the platform described by the seed
(``MetricsCollector.ts``, ``vaporform-alerts.yml``, ``StructuredLogger.ts``) and
writes it into a store in one transaction:

* users in tiers (free, premium, enterprise; enterprise accounts come in teams of
  consecutive ids) and segments (``beta_testers``), projects with tech stacks,
  templates and complexity; sessions with diurnal and weekly cycles; Claude calls
  with heavy-tailed token counts; builds;
* every metric of ``MetricsCollector.ts`` and every series a seed rule selects,
  scraped every ``step`` from targets with their own scrape offsets, with nightly
  deploys (counter resets, staleness markers for per-user series) and a few
  Prometheus restarts (scrape gaps);
* StructuredLogger JSON lines for the same events (:mod:`vfanalytics.demo_logs`),
  so that totals from logs and metrics agree;
* injected incidents with ground truth in ``incidents`` and near misses in
  ``near_misses`` (:mod:`vfanalytics.demo_incidents`).

The same :class:`DemoConfig` always gives the same content; :func:`content_hash`
checks it.

Example
-------
>>> from vfanalytics.store import Store
>>> cfg = DemoConfig(days=0.25, users=8, seed=1)
>>> with Store(":memory:") as st:
...     summary = generate_demo(st, cfg)
...     summary["samples"] > 10_000, summary["content_hash"] == content_hash(st)
(True, True)
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from vfanalytics.demo_series import SeriesSink
from vfanalytics.exceptions import UsageError
from vfanalytics.store import Store
from vfanalytics.timeutil import format_duration, parse_time

__all__ = ["DemoConfig", "PRESETS", "Fleet", "generate_demo", "content_hash"]

DEFAULT_START = "2026-11-02T00:00:00Z"  # a Monday; fixed so the content never depends on the clock

TIERS = np.array(["free", "premium", "enterprise"])
TECH_STACKS = np.array(["react", "nextjs", "vue", "python-fastapi", "node-express"])
TEMPLATES = np.array(["blank", "saas-starter", "ecommerce", "blog", "dashboard"])
COMPLEXITIES = np.array(["simple", "moderate", "complex"])
OPERATIONS = np.array(["code_generation", "chat", "code_review", "debugging"])
INTERACTION_OF_OPERATION = np.array(["code_suggestion", "message", "review", "debug_help"])
BACKEND_INSTANCES = 3


@dataclass(frozen=True)
class DemoConfig:
    """Parameters of a demo fleet; the same parameters always give the same content."""

    days: float = 14
    users: int = 250
    seed: int = 42
    step_ms: int = 15_000
    start_ms: int = parse_time(DEFAULT_START)

    def __post_init__(self) -> None:
        if not 0 < self.days <= 400:
            raise UsageError(f"--days must be in (0, 400], got {self.days}")
        if not 1 <= self.users <= 100_000:
            raise UsageError(f"--users must be in [1, 100000], got {self.users}")
        if not 1000 <= self.step_ms <= 3_600_000 or self.step_ms % 1000:
            raise UsageError(f"--step must be whole seconds between 1s and 1h, got {format_duration(self.step_ms)}")
        if self.seed < 0:
            raise UsageError(f"--seed must be >= 0, got {self.seed}")

    @property
    def n_ticks(self) -> int:
        return int(self.days * 86_400_000 // self.step_ms)

    @property
    def end_ms(self) -> int:
        return self.start_ms + (self.n_ticks - 1) * self.step_ms


PRESETS: dict[str, DemoConfig] = {
    "small": DemoConfig(days=2, users=30, seed=7, step_ms=60_000),
    "default": DemoConfig(days=14, users=250, seed=42),
}


class Fleet:
    """Users, projects and the event tables of one simulated fleet (all NumPy / Polars, no per-event loops)."""

    def __init__(self, cfg: DemoConfig) -> None:
        self.cfg = cfg
        self.seq = np.random.SeedSequence(cfg.seed)
        self.rng = self.child_rng("fleet")
        self.t0 = cfg.start_ms
        self.t_end = cfg.start_ms + cfg.n_ticks * cfg.step_ms - cfg.step_ms  # events strictly before the last tick
        self._users()
        self._projects()

    def child_rng(self, name: str) -> np.random.Generator:
        """An independent stream per component, so adding one never shifts another's numbers."""
        digest = hashlib.blake2b(f"{self.cfg.seed}:{name}".encode(), digest_size=8).digest()
        return np.random.default_rng(np.random.SeedSequence([self.cfg.seed, int.from_bytes(digest, "little")]))

    # -- entities --------------------------------------------------------------------
    def _users(self) -> None:
        n, rng = self.cfg.users, self.rng
        self.user_ids = np.array([f"user-{i:05d}" for i in range(1, n + 1)])
        tier = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
        # enterprise accounts arrive as teams of consecutive ids (one company's sign-ups)
        i = 0
        while i < n:
            if rng.random() < 0.04:
                size = int(rng.integers(4, 12))
                tier[i : i + size] = 2
                i += size
            else:
                i += 1
        self.user_tier = TIERS[tier]
        beta = rng.random(n) < 0.08
        self.user_segment = np.where(beta, "beta_testers", self.user_tier)
        env_draw = rng.random(n)
        self.user_env = np.where(env_draw < 0.03, "development", np.where(env_draw < 0.08, "staging", "production"))
        # heavy-tailed activity: a few power users dominate token usage
        self.user_activity = rng.lognormal(0.0, 0.9, size=n) * np.array([0.7, 1.2, 1.6])[tier]
        self.user_instance = (np.arange(n) * 7 + 3) % BACKEND_INSTANCES
        self.user_exposed = self._experiment_exposure()

    def _experiment_exposure(self) -> np.ndarray:
        """Who the demo's experiment flag reaches, with the platform's own (unsalted) bucketing."""
        from vfanalytics.demo_logs import EXPERIMENT_FLAG
        from vfanalytics.rollout import bucket

        flag = EXPERIMENT_FLAG
        in_env = np.isin(self.user_env, flag["environments"])
        return in_env & (bucket(list(self.user_ids)) < int(flag["rolloutPercentage"]))

    def _projects(self) -> None:
        rng = self.rng
        per_user = 1 + rng.poisson(0.8, size=self.cfg.users)
        self.proj_owner = np.repeat(np.arange(self.cfg.users), per_user)
        m = len(self.proj_owner)
        self.proj_ids = np.array([f"proj-{i:05d}" for i in range(1, m + 1)])
        self.proj_stack = TECH_STACKS[rng.choice(5, size=m, p=[0.3, 0.25, 0.15, 0.18, 0.12])]
        self.proj_template = TEMPLATES[rng.choice(5, size=m, p=[0.35, 0.25, 0.15, 0.1, 0.15])]
        self.proj_complexity = COMPLEXITIES[rng.choice(3, size=m, p=[0.45, 0.4, 0.15])]
        span = self.t_end - self.t0
        # the first project of each user exists before the window; later ones are created inside it
        first = np.concatenate([[True], self.proj_owner[1:] != self.proj_owner[:-1]])
        created = self.t0 + rng.random(m) * span * 0.9
        self.proj_created = np.where(first | (rng.random(m) < 0.6), self.t0 - 86_400_000, created).astype(np.int64)
        self.user_first_project = np.flatnonzero(first)
        self.user_n_projects = per_user

    # -- diurnal model -----------------------------------------------------------------
    def load_factor(self, t_ms: np.ndarray) -> np.ndarray:
        """Relative platform load at times ``t_ms``: daily peak at 15:00 UTC, quiet weekends."""
        hours = (t_ms / 3_600_000.0) % 24
        dow = ((t_ms // 86_400_000) + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
        daily = 0.25 + 0.75 * np.exp(-0.5 * ((hours - 15.0) / 3.5) ** 2)
        weekly = np.where(dow >= 5, 0.45, 1.0)
        return daily * weekly

    # -- events ----------------------------------------------------------------------
    def sessions(self) -> pl.DataFrame:
        """One row per user session: user, start, end (ms), tier, segment, environment, instance."""
        rng = self.child_rng("sessions")
        n_days = int(np.ceil(self.cfg.days))
        u = np.repeat(np.arange(self.cfg.users), n_days)
        day = np.tile(np.arange(n_days), self.cfg.users)
        day_start = self.t0 + day * 86_400_000
        weekend = ((day_start // 86_400_000 + 3) % 7) >= 5
        p_active = np.clip(0.55 * self.user_activity[u] ** 0.3, 0.05, 0.95) * np.where(weekend, 0.5, 1.0)
        active = rng.random(len(u)) < p_active
        n_sess = np.where(active, 1 + rng.poisson(1.2 * self.user_activity[u] ** 0.5), 0)
        su = np.repeat(u, n_sess)
        sday = np.repeat(day_start, n_sess)
        hour = (rng.normal(14.5, 3.2, size=len(su)) % 24) * 3_600_000
        start = (sday + hour).astype(np.int64)
        median_min = np.array([12.0, 25.0, 40.0])[_position(TIERS, self.user_tier[su])]
        dur = np.clip(rng.lognormal(np.log(median_min * 60_000), 0.85), 30_000, 8 * 3_600_000).astype(np.int64)
        keep = (start >= self.t0) & (start + 60_000 < self.t_end)
        su, start, dur = su[keep], start[keep], dur[keep]
        end = np.minimum(start + dur, self.t_end - 1)
        order = np.lexsort((su, start))
        su, start, end = su[order], start[order], end[order]
        return pl.DataFrame(
            {
                "session": np.arange(len(su)),
                "user": su,
                "start_ms": start,
                "end_ms": end,
                "instance": self.user_instance[su],
            }
        )

    def claude_calls(self, sessions: pl.DataFrame, incidents: Any) -> pl.DataFrame:
        """Claude API calls inside sessions: operation, project, tokens, duration, success."""
        rng = self.child_rng("claude")
        su = sessions["user"].to_numpy()
        s0 = sessions["start_ms"].to_numpy()
        s1 = sessions["end_ms"].to_numpy()
        minutes = (s1 - s0) / 60_000
        rate = 1.6 * self.user_activity[su] ** 0.8
        n = rng.poisson(minutes * rate)
        sess = np.repeat(np.arange(len(su)), n)
        u = su[sess]
        t = (s0[sess] + rng.random(len(sess)) * (s1[sess] - s0[sess])).astype(np.int64)
        op = rng.choice(4, size=len(sess), p=[0.35, 0.3, 0.2, 0.15])
        proj = self._project_for(u, t, rng)
        # the experiment's effect: smarter context costs ~15 % more tokens per call
        uplift = np.where(self.user_exposed[u], np.log(1.15), 0.0)
        tokens = np.round(rng.lognormal(np.log(900) + np.array([0.3, -0.3, 0.1, 0.0])[op] + uplift, 0.95)).astype(np.int64)
        dur_s = rng.lognormal(np.log(np.array([4.0, 1.5, 3.0, 3.5]))[op], 0.6)
        err_p = np.full(len(t), 0.015)
        err_p, dur_s = incidents.apply_claude(t, err_p, dur_s)
        success = rng.random(len(t)) >= err_p
        dur_s = np.where(success, dur_s, dur_s * 0.3)
        tokens = np.where(success, tokens, 0)
        order = np.argsort(t, kind="stable")
        return pl.DataFrame(
            {
                "ts_ms": t[order],
                "session": sess[order],
                "user": u[order],
                "project": proj[order],
                "operation": OPERATIONS[op[order]],
                "op_idx": op[order],
                "tokens": tokens[order],
                "duration_s": dur_s[order],
                "success": success[order],
                "instance": self.user_instance[u[order]],
            }
        )

    def _project_for(self, u: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        pick = self.user_first_project[u] + (rng.random(len(u)) * self.user_n_projects[u]).astype(np.int64)
        return np.where(self.proj_created[pick] <= t, pick, self.user_first_project[u])

    def builds(self, sessions: pl.DataFrame, incidents: Any) -> pl.DataFrame:
        """Project builds during sessions, with the injected build-time regression."""
        rng = self.child_rng("builds")
        su = sessions["user"].to_numpy()
        s0 = sessions["start_ms"].to_numpy()
        s1 = sessions["end_ms"].to_numpy()
        n = rng.binomial(3, 0.4, size=len(su))
        sess = np.repeat(np.arange(len(su)), n)
        u = su[sess]
        t = (s0[sess] + rng.random(len(sess)) * (s1[sess] - s0[sess])).astype(np.int64)
        proj = self._project_for(u, t, rng)
        base = np.array([20.0, 60.0, 180.0])[_position(COMPLEXITIES, self.proj_complexity[proj])]
        # per-stack speed, in TECH_STACKS order: react, nextjs, vue, python-fastapi, node-express
        factor = np.array([1.0, 1.4, 0.9, 0.7, 0.8])[_position(TECH_STACKS, self.proj_stack[proj])]
        dur = rng.lognormal(np.log(base * factor), 0.45) * incidents.build_factor(t, self.proj_stack[proj])
        order = np.argsort(t, kind="stable")
        return pl.DataFrame(
            {
                "ts_ms": t[order],
                "user": u[order],
                "project": proj[order],
                "duration_s": dur[order],
                "instance": self.user_instance[u[order]],
            }
        )

    def project_creations(self) -> pl.DataFrame:
        m = self.proj_created >= self.t0
        idx = np.flatnonzero(m)
        return pl.DataFrame(
            {
                "ts_ms": self.proj_created[idx],
                "user": self.proj_owner[idx],
                "project": idx,
                "instance": self.user_instance[self.proj_owner[idx]],
            }
        ).sort("ts_ms")

    def subscription_events(self) -> pl.DataFrame:
        rng = self.child_rng("subscriptions")
        n = max(4, int(rng.poisson(self.cfg.users * self.cfg.days * 0.03)))
        t = np.sort(self.t0 + (rng.random(n) * (self.t_end - self.t0)).astype(np.int64))
        u = rng.integers(0, self.cfg.users, size=n)
        kind = rng.choice(np.array(["upgrade", "downgrade", "cancel", "renew"]), size=n, p=[0.4, 0.1, 0.1, 0.4])
        plan = np.where(self.user_tier[u] == "free", "premium", self.user_tier[u])
        return pl.DataFrame({"ts_ms": t, "user": u, "event_type": kind, "plan": plan, "instance": self.user_instance[u]})


def _position(vocabulary: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each value in ``vocabulary`` (which need not be sorted)."""
    order = np.argsort(vocabulary)
    return order[np.searchsorted(vocabulary, values, sorter=order)]


def generate_demo(store: Store, cfg: DemoConfig, *, progress: Any = None) -> dict[str, Any]:
    """Generate the demo fleet into ``store`` (replacing its content) in one transaction.

    Samples are written batch by batch inside the transaction, so memory stays bounded
    and an interrupted generation leaves the store as it was. Returns a summary:
    counts, time range and the content hash.
    """
    from vfanalytics.demo_incidents import IncidentPlan
    from vfanalytics.demo_logs import render_logs
    from vfanalytics.demo_metrics import build_metrics

    advance = progress or (lambda n=1: None)
    fleet = Fleet(cfg)
    plan = IncidentPlan(fleet)
    sessions = fleet.sessions()
    calls = fleet.claude_calls(sessions, plan)
    builds = fleet.builds(sessions, plan)
    creations = fleet.project_creations()
    subscriptions = fleet.subscription_events()
    advance(1)
    sample_digest = SampleDigest()
    n_samples = 0
    with store.transaction():
        store.clear()

        def write(frame: pl.DataFrame) -> None:
            nonlocal n_samples
            sample_digest.update(frame)
            n_samples += store.insert_samples(frame)

        sink = SeriesSink(cfg.start_ms, cfg.step_ms, plan.prometheus_gaps(), write)
        build_metrics(sink, fleet, plan, sessions, calls, builds, creations, subscriptions)
        series = sink.series_frame()
        store.insert_series(series)
        advance(1)
        logs = render_logs(fleet, plan, sessions, calls, builds, creations)
        incidents, near = plan.frames()
        store.insert_logs(logs)
        store.replace_incidents(incidents)
        store.replace_incidents(near, table="near_misses")
        digest = _digest(series, sample_digest.hexdigest(), logs, incidents, near)
        store.set_meta("demo_config", _config_text(cfg))
        store.set_meta("content_hash", digest)
    advance(1)
    store.checkpoint()
    advance(1)
    return {
        "series": series.height,
        "samples": n_samples,
        "logs": logs.height,
        "incidents": incidents.height,
        "near_misses": near.height,
        "start_ms": cfg.start_ms,
        "end_ms": cfg.end_ms,
        "content_hash": digest,
    }


def _config_text(cfg: DemoConfig) -> str:
    return ",".join(f"{k}={v}" for k, v in asdict(cfg).items())


class SampleDigest:
    """Order-independent digest of (series_id, ts, value-bits) rows: a sum of mixed 64-bit row hashes.

    Batches may arrive in any order and the store returns rows in any order, so the
    digest adds per-row hashes (splitmix64 finaliser) instead of hashing a sorted stream.
    """

    _M1 = np.uint64(0xBF58476D1CE4E5B9)
    _M2 = np.uint64(0x94D049BB133111EB)

    def __init__(self) -> None:
        self.total = np.uint64(0)
        self.count = 0

    @classmethod
    def _mix(cls, x: np.ndarray) -> np.ndarray:
        x = x ^ (x >> np.uint64(30))
        x = x * cls._M1
        x = x ^ (x >> np.uint64(27))
        x = x * cls._M2
        return x ^ (x >> np.uint64(31))

    def update(self, frame: pl.DataFrame) -> None:
        with np.errstate(over="ignore"):
            sid = frame["series_id"].to_numpy().astype(np.uint64)
            ts = frame["ts"].to_numpy().astype(np.int64).view(np.uint64)
            bits = np.ascontiguousarray(frame["value"].to_numpy(), dtype=np.float64).view(np.uint64)
            h = self._mix(self._mix(self._mix(sid) ^ ts) ^ bits)
            self.total = np.uint64(self.total + h.sum(dtype=np.uint64))
        self.count += frame.height

    def hexdigest(self) -> str:
        return f"{int(self.total):016x}:{self.count}"


def _digest(series: pl.DataFrame, samples_digest: str, *frames: pl.DataFrame) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(samples_digest.encode())
    for frame in (series.sort("series_id"), *frames):
        h.update(",".join(frame.columns).encode())
        for col in frame.columns:
            s = frame[col]
            if s.dtype == pl.Float64:
                h.update(s.to_numpy().view(np.uint64).tobytes())  # bit-exact: NaN payloads count
            else:
                h.update(s.cast(pl.Utf8).fill_null("\x00").str.join("\x1f").item().encode())
    return h.hexdigest()


def content_hash(store: Store) -> str:
    """Recompute the content hash (series, samples, logs, incidents) from the store itself."""
    digest = SampleDigest()
    for batch in store.con.sql("SELECT series_id, ts, value FROM samples").to_arrow_reader(1_000_000):
        digest.update(pl.from_arrow(batch))  # type: ignore[arg-type]
    series = store.sql("SELECT series_id, metric, labels FROM series ORDER BY series_id")
    cols = ", ".join(store.log_columns())
    logs = store.sql(f"SELECT {cols} FROM logs ORDER BY ts_ns, stream, line")
    return _digest(series, digest.hexdigest(), logs, store.incidents(), store.incidents("near_misses"))
