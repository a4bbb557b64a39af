"""The demo fleet's Prometheus series: MetricsCollector.ts metrics and the series the seed rules select.

Targets (job / instance): three ``vaporform-backend`` pods (the MetricsCollector
registry and the HTTP middleware), ``kube-state-metrics``, one cAdvisor per node,
``postgres`` and ``redis`` exporters. Histogram bucket boundaries are those of
MetricsCollector.ts; the HTTP latency histogram uses the middleware's buckets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from vfanalytics.demo_series import SeriesSink, Target, counter_from_counts, histogram_bucket_counts

if TYPE_CHECKING:
    from vfanalytics.demo import Fleet
    from vfanalytics.demo_incidents import IncidentPlan

__all__ = ["build_metrics", "HISTOGRAM_BUCKETS", "HTTP_ROUTES"]

#: bucket boundaries exactly as MetricsCollector.ts declares them
HISTOGRAM_BUCKETS: dict[str, list[float]] = {
    "vaporform_project_build_duration_seconds": [1, 5, 10, 30, 60, 120, 300, 600],
    "vaporform_claude_request_duration_seconds": [0.1, 0.5, 1, 2, 5, 10, 30],
    "vaporform_container_resource_usage": [0.1, 0.25, 0.5, 1, 2, 4, 8],
    "vaporform_user_session_duration_seconds": [60, 300, 900, 1800, 3600, 7200, 14400],
    "vaporform_http_request_duration_seconds": [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
}
HTTP_ROUTES = [("GET", "/api/projects", 6.0, 0.08), ("POST", "/api/chat", 3.0, 0.35),
               ("POST", "/api/auth/login", 1.0, 0.12), ("POST", "/api/builds", 1.5, 0.2)]
HTTP_STATUSES = ["200", "400", "500", "503"]
NAMESPACE = "vaporform-production"
# pod, container, node, memory limit (bytes), baseline fraction of the limit
PODS = [
    ("vaporform-backend-0", "backend", "node-1", 2 * 2**30, 0.52),
    ("vaporform-backend-1", "backend", "node-2", 2 * 2**30, 0.5),
    ("vaporform-backend-2", "backend", "node-3", 2 * 2**30, 0.55),
    ("vaporform-worker-0", "worker", "node-2", 4 * 2**30, 0.45),
    ("vaporform-worker-1", "worker", "node-4", 4 * 2**30, 0.47),
    ("vaporform-frontend-0", "frontend", "node-1", 512 * 2**20, 0.35),
    ("postgres-0", "postgres", "node-3", 8 * 2**30, 0.62),
    ("redis-0", "redis", "node-4", 4 * 2**30, 0.5),
]
NODES = ["node-1", "node-2", "node-3", "node-4"]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], scale: float, alpha: float = 0.02) -> np.ndarray:
    """Mean-reverting noise (an exponentially smoothed random walk) along the last axis."""
    from scipy.signal import lfilter

    white = rng.normal(0.0, scale, size=shape)
    return lfilter([alpha * 8], [1.0, -(1 - alpha)], white, axis=-1)


def build_metrics(
    sink: SeriesSink,
    fleet: Fleet,
    plan: IncidentPlan,
    sessions: pl.DataFrame,
    calls: pl.DataFrame,
    builds: pl.DataFrame,
    creations: pl.DataFrame,
    subscriptions: pl.DataFrame,
) -> None:
    """Add every demo series to ``sink``."""
    cfg = fleet.cfg
    n = cfg.n_ticks
    grid = cfg.start_ms + np.arange(n, dtype=np.int64) * cfg.step_ms
    load = fleet.load_factor(grid)
    backends = [
        Target("vaporform-backend", f"vaporform-backend-{i}:4000", 2345 + 4731 * i % cfg.step_ms, n,
               plan.deploy_ticks(i), plan.backend_down(i))
        for i in range(3)
    ]
    _backend_http(sink, fleet, plan, backends, load)
    _platform(sink, fleet, plan, backends, n, load)
    _events(sink, fleet, plan, backends, sessions, calls, builds, creations, subscriptions)


def _up(sink: SeriesSink, target: Target) -> None:
    up = target.up_mask().astype(np.float64)[None, :]
    sink.add_dense([{"__name__": "up", **target.labels}], up, target)


def _backend_http(sink: SeriesSink, fleet: Fleet, plan: IncidentPlan, backends: list[Target], load: np.ndarray) -> None:
    rng = fleet.child_rng("http")
    step_s = fleet.cfg.step_ms / 1000
    spike = plan.mask("http_5xx_spike")
    blip = plan.mask("http_5xx_blip", near=True)
    slow = plan.mask("latency_regression")
    bounds = HISTOGRAM_BUCKETS["vaporform_http_request_duration_seconds"]
    for target in backends:
        _up(sink, target)
        for method, route, rps, median in HTTP_ROUTES:
            total = rng.poisson(rps * load * step_s * rng.uniform(0.9, 1.1))
            p500 = np.where(spike & (route == "/api/projects"), 0.25, 0.001)
            p503 = np.where(blip & (route == "/api/chat"), 0.3, 0.0005)
            k500 = rng.binomial(total, p500)
            k503 = rng.binomial(total - k500, p503 / (1 - p500))
            k400 = rng.binomial(total - k500 - k503, 0.01)
            k200 = total - k500 - k503 - k400
            counts = np.stack([k200, k400, k500, k503])
            labels = [
                {"__name__": "vaporform_http_requests_total", **target.labels, "method": method, "route": route,
                 "status": s}
                for s in HTTP_STATUSES
            ]
            sink.add_dense(labels, counter_from_counts(counts, target), target)
            med = np.where(slow, median * 12, median) * (1 + 0.3 * load)
            cum, total_s = histogram_bucket_counts(total, bounds, med, 0.7, rng)
            base = {"__name__": "vaporform_http_request_duration_seconds_bucket", **target.labels, "route": route}
            les = [_le(b) for b in bounds] + ["+Inf"]
            hist_labels = [{**base, "le": le} for le in les]
            hist_labels += [{**base, "__name__": "vaporform_http_request_duration_seconds_sum"},
                            {**base, "__name__": "vaporform_http_request_duration_seconds_count"}]
            for ls in hist_labels[-2:]:
                ls.pop("le", None)
            mat = np.concatenate([cum, total_s[None, :], total[None, :]])
            sink.add_dense(hist_labels, counter_from_counts(mat, target), target)


def _le(bound: float) -> str:
    # Prometheus client libraries format le with Go's %g-like shortest form: 1 -> "1", 0.25 -> "0.25"
    return repr(float(bound)).removesuffix(".0")


def _platform(sink: SeriesSink, fleet: Fleet, plan: IncidentPlan, backends: list[Target], n: int,
              load: np.ndarray) -> None:
    rng = fleet.child_rng("platform")
    ksm = Target("kube-state-metrics", "kube-state-metrics:8080", 4300, n)
    _up(sink, ksm)
    not_ready = plan.mask("node_not_ready")
    for node in NODES:
        bad = not_ready if node == "node-3" else np.zeros(n, dtype=bool)
        vals = np.stack([~bad, bad, np.zeros(n, dtype=bool)]).astype(np.float64)
        labels = [{"__name__": "kube_node_status_condition", **ksm.labels, "node": node, "condition": "Ready",
                   "status": s} for s in ("true", "false", "unknown")]
        sink.add_dense(labels, vals, ksm)
    # container restarts: the crash loop restarts worker-1 every ~4 minutes; one planned restart of worker-0
    restarts = np.zeros((len(PODS), n))
    if w := plan.window("crash_loop"):
        every = max(1, int(240_000 // fleet.cfg.step_ms))
        restarts[4, w[0] : w[1] : every] = 1
    if w := plan.window("single_restart", near=True):
        restarts[3, w[0]] = 1
    labels = [{"__name__": "kube_pod_container_status_restarts_total", **ksm.labels, "namespace": NAMESPACE,
               "pod": p, "container": c} for p, c, *_ in PODS]
    sink.add_dense(labels, np.cumsum(restarts, axis=1), ksm)

    # cAdvisor: one target per node; usage and limit share their label sets so the seed's ratio matches 1:1
    frac = np.array([p[4] for p in PODS])[:, None] + 0.08 * load[None, :] + _smooth_noise(rng, (len(PODS), n), 0.004)
    if w := plan.window("memory_pressure"):
        a, b = w
        ramp = np.clip(np.arange(b - a) / max(1, (b - a) // 5), 0, 1)
        frac[2, a:b] = frac[2, a:b] + (0.93 - frac[2, a:b]) * ramp
    if w := plan.window("memory_spike", near=True):
        frac[0, w[0] : w[1]] = 0.84
    frac = np.clip(frac, 0.05, 0.99)
    for node in NODES:
        target = Target("kubernetes-cadvisor", node, 6100 + 977 * NODES.index(node), n)
        idx = [i for i, p in enumerate(PODS) if p[2] == node]
        base = [{**target.labels, "namespace": NAMESPACE, "pod": PODS[i][0], "container": PODS[i][1]} for i in idx]
        limits = np.array([PODS[i][3] for i in idx], dtype=np.float64)[:, None]
        usage = np.round(frac[idx] * limits / 4096) * 4096
        sink.add_dense([{"__name__": "container_memory_usage_bytes", **b} for b in base], usage, target)
        sink.add_dense([{"__name__": "container_spec_memory_limit_bytes", **b} for b in base],
                       np.repeat(limits, n, axis=1), target)

    pg = Target("postgres", "postgres-exporter:9187", 9100, n)
    _up(sink, pg)
    pg_down = plan.mask("postgres_down")
    sink.add_dense([{"__name__": "pg_up", **pg.labels}], (~pg_down).astype(np.float64)[None, :], pg)
    backends_n = 30 + 25 * load + _smooth_noise(rng, (n,), 0.4)
    if w := plan.window("postgres_connections"):
        backends_n[w[0] : w[1]] = 88 + rng.normal(0, 1.5, w[1] - w[0])
    nb = np.stack([np.round(np.clip(backends_n, 1, 100)), np.full(n, 2.0)])
    nb[:, pg_down] = np.nan
    sink.add_dense([{"__name__": "pg_stat_database_numbackends", **pg.labels, "datname": d}
                    for d in ("vaporform", "postgres")], nb, pg)
    maxc = np.where(pg_down, np.nan, 100.0)[None, :]
    sink.add_dense([{"__name__": "pg_settings_max_connections", **pg.labels}], maxc, pg)

    rd = Target("redis", "redis-exporter:9121", 13200, n)
    _up(sink, rd)
    rd_down = plan.mask("redis_down")
    sink.add_dense([{"__name__": "redis_up", **rd.labels}], (~rd_down).astype(np.float64)[None, :], rd)
    rmax = 2.0 * 2**30
    used = (0.55 + 0.1 * load + _smooth_noise(rng, (n,), 0.002)) * rmax
    if w := plan.window("redis_memory"):
        used[w[0] : w[1]] = 0.95 * rmax
    if w := plan.window("redis_memory_blip", near=True):
        used[w[0] : w[1]] = 0.88 * rmax
    used = np.where(rd_down, np.nan, np.round(used))
    sink.add_dense([{"__name__": "redis_memory_used_bytes", **rd.labels}], used[None, :], rd)
    sink.add_dense([{"__name__": "redis_memory_max_bytes", **rd.labels}],
                   np.where(rd_down, np.nan, rmax)[None, :], rd)


def _failover(plan: IncidentPlan, backends: list[Target], instance: np.ndarray, tick: np.ndarray) -> np.ndarray:
    """Requests reaching a down pod are served by the next one (the load balancer's retry)."""
    out = instance.copy()
    for i, target in enumerate(backends):
        down = ~target.up_mask()
        moved = (instance == i) & down[tick]
        out[moved] = (i + 1) % len(backends)
    return out


def _ticks(fleet: Fleet, t_ms: np.ndarray) -> np.ndarray:
    step = fleet.cfg.step_ms
    return np.minimum(-((fleet.cfg.start_ms - t_ms) // step), fleet.cfg.n_ticks - 1).astype(np.int64)


def _sparse(sink: SeriesSink, name: str, cols: dict[str, np.ndarray], instance: np.ndarray, tick: np.ndarray,
            amount: np.ndarray, backends: list[Target]) -> None:
    if len(instance) == 0:
        return
    frame = pl.DataFrame({**cols, "_instance": instance})
    keys = frame.unique(maintain_order=True).with_row_index("_key")
    key = frame.join(keys, on=list(frame.columns), how="left", maintain_order="left")["_key"].to_numpy()
    label_sets = []
    for row in keys.iter_rows(named=True):
        target = backends[row["_instance"]]
        label_sets.append({"__name__": name, **target.labels,
                           **{k: str(v) for k, v in row.items() if not k.startswith("_")}})
    sink.add_sparse(label_sets, key.astype(np.int64), tick, amount.astype(np.float64), backends,
                    keys["_instance"].to_numpy())


def _sparse_histogram(sink: SeriesSink, name: str, cols: dict[str, np.ndarray], instance: np.ndarray,
                      tick: np.ndarray, value: np.ndarray, backends: list[Target]) -> None:
    bounds = np.asarray(HISTOGRAM_BUCKETS[name], dtype=np.float64)
    les = np.array([_le(b) for b in bounds] + ["+Inf"])
    first = np.searchsorted(bounds, value, side="left")  # value <= le counts in bucket le
    # prom-client creates every bucket of a label set at its first observation, zeros included
    ev = np.repeat(np.arange(len(value)), len(les))
    le_idx = np.tile(np.arange(len(les)), len(value))
    bucket_cols = {k: v[ev] for k, v in cols.items()} | {"le": les[le_idx]}
    amount = (le_idx >= first[ev]).astype(np.float64)
    _sparse(sink, name + "_bucket", bucket_cols, instance[ev], tick[ev], amount, backends)
    _sparse(sink, name + "_sum", cols, instance, tick, value, backends)
    _sparse(sink, name + "_count", cols, instance, tick, np.ones(len(value)), backends)


def _events(sink: SeriesSink, fleet: Fleet, plan: IncidentPlan, backends: list[Target], sessions: pl.DataFrame,
            calls: pl.DataFrame, builds: pl.DataFrame, creations: pl.DataFrame,
            subscriptions: pl.DataFrame) -> None:
    rng = fleet.child_rng("events")
    n = fleet.cfg.n_ticks

    def inst(frame: pl.DataFrame, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tk = _ticks(fleet, t)
        return _failover(plan, backends, frame["instance"].to_numpy(), tk), tk

    # Claude calls
    t = calls["ts_ms"].to_numpy()
    ci, ct = inst(calls, t)
    users = fleet.user_ids[calls["user"].to_numpy()]
    projects = fleet.proj_ids[calls["project"].to_numpy()]
    ops = calls["operation"].to_numpy()
    _sparse(sink, "vaporform_claude_tokens_used_total",
            {"user_id": users, "project_id": projects, "operation_type": ops}, ci, ct, calls["tokens"].to_numpy(),
            backends)
    from vfanalytics.demo import INTERACTION_OF_OPERATION

    _sparse(sink, "vaporform_chat_interactions_total",
            {"user_id": users, "interaction_type": INTERACTION_OF_OPERATION[calls["op_idx"].to_numpy()]},
            ci, ct, np.ones(len(t)), backends)
    success = np.where(calls["success"].to_numpy(), "true", "false")
    _sparse_histogram(sink, "vaporform_claude_request_duration_seconds",
                      {"operation_type": ops, "success": success}, ci, ct, calls["duration_s"].to_numpy(), backends)

    # sessions end: duration histogram by tier; long sessions hit the container timeout
    s_end = sessions["end_ms"].to_numpy()
    si, st = inst(sessions, s_end)
    tiers = fleet.user_tier[sessions["user"].to_numpy()]
    dur_s = (s_end - sessions["start_ms"].to_numpy()) / 1000.0
    _sparse_histogram(sink, "vaporform_user_session_duration_seconds", {"user_tier": tiers}, si, st, dur_s, backends)

    # builds: build duration and container resource usage at build time; OOM / timeout restarts
    b_t = builds["ts_ms"].to_numpy()
    bi, bt = inst(builds, b_t)
    bproj = builds["project"].to_numpy()
    _sparse_histogram(sink, "vaporform_project_build_duration_seconds",
                      {"tech_stack": fleet.proj_stack[bproj], "complexity": fleet.proj_complexity[bproj]},
                      bi, bt, builds["duration_s"].to_numpy(), backends)
    cpu = rng.lognormal(np.log(0.4), 0.7, size=len(bproj))
    mem = rng.lognormal(np.log(0.6), 0.6, size=len(bproj))
    # resource monitoring is an enterprise feature: only enterprise containers are measured
    paid = fleet.user_tier[fleet.proj_owner[bproj]] == "enterprise"
    two = np.concatenate([np.full(int(paid.sum()), "cpu"), np.full(int(paid.sum()), "memory")])
    _sparse_histogram(sink, "vaporform_container_resource_usage",
                      {"resource_type": two, "project_id": np.tile(fleet.proj_ids[bproj[paid]], 2)},
                      np.tile(bi[paid], 2), np.tile(bt[paid], 2), np.concatenate([cpu[paid], mem[paid]]), backends)
    oom = mem > 2.5
    long_sess = (dur_s > 1800) & (rng.random(len(dur_s)) < 0.5)
    s_proj = fleet.user_first_project[sessions["user"].to_numpy()]
    r_proj = np.concatenate([fleet.proj_ids[bproj[oom]], fleet.proj_ids[s_proj[long_sess]]])
    r_reason = np.concatenate([np.full(int(oom.sum()), "oom"), np.full(int(long_sess.sum()), "timeout")])
    r_inst = np.concatenate([bi[oom], si[long_sess]])
    r_tick = np.concatenate([bt[oom], _ticks(fleet, sessions["start_ms"].to_numpy()[long_sess] + 1_800_000)])
    _sparse(sink, "vaporform_container_restarts_total", {"project_id": r_proj, "reason": r_reason},
            r_inst, np.minimum(r_tick, n - 1), np.ones(len(r_proj)), backends)

    # project creations and subscriptions
    c_t = creations["ts_ms"].to_numpy()
    cinst, ctk = inst(creations, c_t)
    cp = creations["project"].to_numpy()
    _sparse(sink, "vaporform_projects_created_total",
            {"user_tier": fleet.user_tier[creations["user"].to_numpy()], "tech_stack": fleet.proj_stack[cp],
             "template": fleet.proj_template[cp]}, cinst, ctk, np.ones(len(cp)), backends)
    sb_t = subscriptions["ts_ms"].to_numpy()
    sbi, sbt = inst(subscriptions, sb_t)
    _sparse(sink, "vaporform_subscription_events_total",
            {"event_type": subscriptions["event_type"].to_numpy(), "plan": subscriptions["plan"].to_numpy(),
             "user_tier": fleet.user_tier[subscriptions["user"].to_numpy()]}, sbi, sbt, np.ones(len(sb_t)), backends)

    # active projects gauge: projects with an open session (running) or a build in progress, per pod
    _active_projects(sink, fleet, backends, sessions, builds)


def _active_projects(sink: SeriesSink, fleet: Fleet, backends: list[Target], sessions: pl.DataFrame,
                     builds: pl.DataFrame) -> None:
    n = fleet.cfg.n_ticks
    stacks = list(fleet.proj_stack)
    stack_names = sorted(set(stacks))
    s_users = sessions["user"].to_numpy()
    s_stack = np.searchsorted(stack_names, fleet.proj_stack[fleet.user_first_project[s_users]])
    b_stack = np.searchsorted(stack_names, fleet.proj_stack[builds["project"].to_numpy()])
    owner_inst = fleet.user_instance[fleet.proj_owner]
    for i, target in enumerate(backends):
        def concurrent(start: np.ndarray, end: np.ndarray, stack: np.ndarray, sel: np.ndarray) -> np.ndarray:
            diff = np.zeros((len(stack_names), n + 1))
            np.add.at(diff, (stack[sel], _ticks(fleet, start[sel])), 1)
            np.add.at(diff, (stack[sel], _ticks(fleet, end[sel])), -1)
            return np.cumsum(diff, axis=1)[:, :n]

        s_sel = sessions["instance"].to_numpy() == i
        running = concurrent(sessions["start_ms"].to_numpy(), sessions["end_ms"].to_numpy(), s_stack, s_sel)
        b0 = builds["ts_ms"].to_numpy()
        b1 = b0 + (builds["duration_s"].to_numpy() * 1000).astype(np.int64)
        building = concurrent(b0, b1, b_stack, builds["instance"].to_numpy() == i)
        owned = np.array([np.sum((fleet.proj_stack == s) & (owner_inst == i)) for s in stack_names])[:, None]
        stopped = np.maximum(owned - running, 0)
        up = target.up_mask()
        labels, rows = [], []
        for status, mat in (("running", running), ("building", building), ("stopped", stopped)):
            for k, s in enumerate(stack_names):
                labels.append({"__name__": "vaporform_active_projects", **target.labels, "status": status,
                               "tech_stack": s})
                rows.append(np.where(up, mat[k], np.nan))
        sink.add_dense(labels, np.stack(rows), target)
