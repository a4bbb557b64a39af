"""Scheduled reports: run the notebooks with papermill, render offline HTML, write exports and an index.

A *run* executes one or more notebooks of ``notebooks/`` for one time window into
``OUT/<window end>/``::

    reports/
      index.html                      every run, newest first, linking each report
      20261104T000000Z/
        run.json                      window, parameters, per-report status and seconds
        token_usage.ipynb             the executed notebook (kept, partial, when a cell fails)
        token_usage.html              self-contained: code hidden, plotly.js inlined, no network
        token_usage/                  the report's exports (CSV, YAML, ...) and results.json

Idempotence: the run directory is named after the window end; re-running the same
window with the same parameters replaces that directory's reports (a different window
start or parameter set with the same end gets a ``-<digest>`` suffix), so a scheduler
that fires twice, or a retry, never duplicates a report. ``align`` floors ``start``
and ``end`` to a multiple of a duration, which makes ``now-1d``..``now`` windows
stable within the day.

Notebooks receive these parameters (their ``parameters`` cell declares them):
``store``, ``start``, ``end`` (RFC 3339), ``output_dir`` (the report's export folder)
and ``report_name``, plus any ``-p KEY VALUE`` given. Inside a notebook,
:class:`ReportContext` records key results (``results.json``, read back by tests and
by anything downstream) and writes exports.

A failing cell raises :class:`~vfanalytics.exceptions.ReportError` naming the notebook
and the cell (index, first line, exception), after the other reports ran; the partial
notebook stays in the run directory.

Example
-------
>>> import tempfile, json, pathlib
>>> ctx = ReportContext(tempfile.mkdtemp(), "demo")
>>> ctx.record("answer", 42)
>>> json.loads((pathlib.Path(ctx.output_dir) / "results.json").read_text())["answer"]
42
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vfanalytics.exceptions import ReportError, UsageError
from vfanalytics.timeutil import format_time, parse_duration, parse_time

__all__ = [
    "REPORTS",
    "ReportContext",
    "ReportOutcome",
    "RunSummary",
    "notebooks_dir",
    "resolve_window",
    "run_reports",
    "render_html",
    "write_index",
    "kernel_name",
    "open_report",
]

#: the report notebooks, in the order ``vfa report all`` runs them
REPORTS = ("getting_started", "token_usage", "session_durations", "build_times", "alert_tuning", "rollout")
KERNEL_NAME = "vfanalytics-python"
DEFAULT_CELL_TIMEOUT_S = 300


def notebooks_dir() -> Path:
    """Where the report notebooks live: ``$VFA_NOTEBOOKS``, else ``notebooks/`` of the checkout."""
    env = os.environ.get("VFA_NOTEBOOKS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "notebooks"


class ReportContext:
    """Results and exports of one report, written under ``output_dir`` (nothing is written when None).

    Parameters
    ----------
    output_dir:
        The report's export folder (papermill passes it), or None in an interactive session.
    report_name:
        Name used in messages.
    """

    def __init__(self, output_dir: str | os.PathLike[str] | None, report_name: str) -> None:
        self.output_dir = Path(output_dir) if output_dir else None
        self.report_name = report_name
        self.results: dict[str, Any] = {}
        self.exports: list[str] = []
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)

    def record(self, key: str, value: Any) -> None:
        """Keep a key result (JSON-serialisable; NaN becomes null) in ``results.json``."""
        self.results[key] = _jsonable(value)
        if self.output_dir is not None:
            path = self.output_dir / "results.json"
            path.write_text(json.dumps(self.results, indent=2, sort_keys=True, allow_nan=False) + "\n")

    def export_csv(self, frame: Any, filename: str) -> Path | None:
        """Write a Polars frame as CSV into the export folder."""
        if self.output_dir is None:
            return None
        path = self.output_dir / filename
        frame.write_csv(path)
        self.exports.append(filename)
        return path

    def export_text(self, text: str, filename: str) -> Path | None:
        """Write text (YAML, Markdown, ...) into the export folder."""
        if self.output_dir is None:
            return None
        path = self.output_dir / filename
        path.write_text(text)
        self.exports.append(filename)
        return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return value


def resolve_window(store_path: str | os.PathLike[str], start: str | int | None, end: str | int | None,
                   align: str | None = None) -> tuple[int, int]:
    """The run's ``[start, end]`` in ms: given edges, else the store's data extent rounded out to hours."""
    from vfanalytics.store import Store

    hour = 3_600_000
    if not start or not end:
        with Store(store_path, read_only=True) as st:
            info = st.info()
        lows = [v for v in (info["samples_start_ms"], info["logs_start_ns"] and info["logs_start_ns"] // 10**6)
                if v is not None]
        highs = [v for v in (info["samples_end_ms"], info["logs_end_ns"] and info["logs_end_ns"] // 10**6)
                 if v is not None]
        if not lows:
            raise UsageError(f"store {store_path} holds no data: give -p start ... -p end ...")
    start_ms = parse_time(start) if start else min(lows) - min(lows) % hour
    end_ms = parse_time(end) if end else max(highs) + (-max(highs)) % hour
    if align:
        step = parse_duration(align)
        start_ms -= start_ms % step
        end_ms -= end_ms % step
    if end_ms <= start_ms:
        raise UsageError(f"empty report window {format_time(start_ms)} .. {format_time(end_ms)}")
    return start_ms, end_ms


def open_report(store: str | os.PathLike[str], start: str | None, end: str | None,
                output_dir: str | os.PathLike[str] | None, report_name: str) -> tuple[Any, int, int, ReportContext]:
    """What a report notebook's first cell needs: ``(store opened read-only, start_ms, end_ms, context)``.

    A relative ``store`` that does not exist from the working directory is looked up
    from the checkout root (JupyterLab starts kernels in ``notebooks/``).
    """
    from vfanalytics.store import Store

    path = Path(store)
    if not path.is_absolute() and not path.exists():
        candidate = notebooks_dir().parent / path
        path = candidate if candidate.exists() else path
    if not path.exists():
        raise UsageError(f"store {path} does not exist (run `vfa demo generate` first)")
    start_ms, end_ms = resolve_window(path, start or None, end or None)
    return Store(path, read_only=True), start_ms, end_ms, ReportContext(output_dir, report_name)


def kernel_name() -> str:
    """Install (once per interpreter) a kernelspec for this Python and return its name.

    The spec lives in a per-interpreter folder put first on ``JUPYTER_PATH``, so papermill
    runs the notebooks with the interpreter running vfanalytics, whatever kernels the
    user has elsewhere.
    """
    digest = hashlib.sha1(sys.executable.encode()).hexdigest()[:10]
    root = Path(tempfile.gettempdir()) / f"vfanalytics-kernels-{os.getuid() if hasattr(os, 'getuid') else 0}-{digest}"
    spec_dir = root / "kernels" / KERNEL_NAME
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--log-level=CRITICAL"],
            "display_name": "vfanalytics (this Python)", "language": "python",
            "env": {"VFA_NO_PROGRESS": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}}
    spec_dir.mkdir(parents=True, exist_ok=True)
    target = spec_dir / "kernel.json"
    text = json.dumps(spec, indent=1)
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    paths = os.environ.get("JUPYTER_PATH", "")
    if str(root) not in paths.split(os.pathsep):
        os.environ["JUPYTER_PATH"] = os.pathsep.join([str(root), *([paths] if paths else [])])
    return KERNEL_NAME


@dataclass
class ReportOutcome:
    """One report of a run."""

    name: str
    status: str  # "ok" or "failed"
    seconds: float
    notebook: Path
    html: Path | None
    output_dir: Path
    error: str | None = None
    results: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunSummary:
    """A run: its directory, window and reports; ``index`` is the regenerated index.html."""

    run_dir: Path
    start_ms: int
    end_ms: int
    outcomes: list[ReportOutcome]
    index: Path

    @property
    def failed(self) -> list[ReportOutcome]:
        return [o for o in self.outcomes if o.status != "ok"]


def _compact(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y%m%dT%H%M%SZ")


def _run_dir(out_root: Path, start_ms: int, end_ms: int, params: Mapping[str, Any]) -> tuple[Path, str]:
    key = json.dumps({"start_ms": start_ms, "end_ms": end_ms, "params": dict(sorted(params.items()))},
                     sort_keys=True)
    base = out_root / _compact(end_ms)
    manifest = base / "run.json"
    if manifest.exists():
        try:
            if json.loads(manifest.read_text()).get("key") != key:
                base = out_root / f"{_compact(end_ms)}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
        except ValueError:
            pass
    return base, key


def _failing_cell(nb_path: Path, exc: BaseException) -> str:
    index = getattr(exc, "cell_index", None)
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    first_line = ""
    if index is None and nb_path.exists():
        import nbformat

        nb = nbformat.read(nb_path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                index, first_line = i, cell.source.splitlines()[0] if cell.source else ""
                break
    elif index is not None:
        source = getattr(exc, "source", "") or ""
        first_line = source.splitlines()[0] if source else ""
    where = f"cell {index}" if index is not None else "a cell"
    return f"{where} ({first_line.strip()[:80]!r}): {ename}: {str(evalue).strip()[:300]}"


_URL_USERINFO = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/@\s]+@")
_SECRET_NAMES = re.compile(r"token|password|passwd|secret|api[_-]?key|authorization", re.IGNORECASE)


def _refuse_secrets(params: Mapping[str, Any]) -> None:
    """Parameters are written into the executed notebook and its HTML: credentials must not be among them.

    The message names the parameter, never its value.
    """
    for key, value in params.items():
        if _SECRET_NAMES.search(key) or _URL_USERINFO.match(str(value).strip()):
            raise UsageError(
                f"parameter {key!r} would put credentials into the report; give them to the sources through "
                "the environment (VFA_PROMETHEUS_TOKEN, VFA_LOKI_TOKEN, ...) or a token file instead"
            )


def run_reports(names: Sequence[str], *, store: str | os.PathLike[str], out_root: str | os.PathLike[str] = "reports",
                params: Mapping[str, Any] | None = None, start: str | None = None, end: str | None = None,
                align: str | None = None, cell_timeout_s: int = DEFAULT_CELL_TIMEOUT_S,
                on_report_done: Callable[[ReportOutcome], None] | None = None) -> RunSummary:
    """Execute report notebooks for one window; raise :class:`ReportError` if any cell failed.

    Parameters
    ----------
    names:
        Report names (see :data:`REPORTS`).
    store:
        The DuckDB store the notebooks read (opened read-only).
    params:
        Extra notebook parameters (``-p KEY VALUE``); values are passed as strings
        unless they parse as JSON numbers / booleans.
    """
    import papermill as pm

    unknown = [n for n in names if n not in REPORTS]
    if unknown:
        raise UsageError(f"unknown report {unknown[0]!r}; reports: {', '.join(REPORTS)}, all")
    store_path = Path(store).resolve()
    if not store_path.exists():
        raise UsageError(f"store {store_path} does not exist (run `vfa demo generate` or `vfa pull` first)")
    extra = {k: v for k, v in (params or {}).items() if k not in ("start", "end", "store")}
    _refuse_secrets(extra)
    start = start if start is not None else (params or {}).get("start")
    end = end if end is not None else (params or {}).get("end")
    start_ms, end_ms = resolve_window(store_path, start, end, align)
    root = Path(out_root).resolve()
    run_dir, key = _run_dir(root, start_ms, end_ms, extra)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = run_dir / "run.json"
    manifest: dict[str, Any] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.update({"key": key, "start": format_time(start_ms), "end": format_time(end_ms),
                     "start_ms": start_ms, "end_ms": end_ms, "params": extra, "store": str(store_path)})
    manifest.setdefault("reports", {})
    kernel = kernel_name()
    logging.getLogger("papermill").setLevel(logging.ERROR)
    declared: dict[str, set[str]] = {}
    for name in names:
        source_nb = notebooks_dir() / f"{name}.ipynb"
        if not source_nb.exists():
            raise UsageError(f"notebook {source_nb} not found (set VFA_NOTEBOOKS to the notebooks folder)")
        declared[name] = set(pm.inspect_notebook(str(source_nb)))
    # with several reports a parameter goes to the notebooks that declare it; none declaring it is a typo
    known = set().union(*declared.values())
    unknown_params = sorted(set(extra) - known)
    if unknown_params:
        raise UsageError(f"no report among {', '.join(names)} has a parameter {unknown_params[0]!r}; "
                         f"parameters: {', '.join(sorted(known))}")
    outcomes: list[ReportOutcome] = []
    for name in names:
        source_nb = notebooks_dir() / f"{name}.ipynb"
        out_dir = run_dir / name
        # idempotent: a re-run of the window replaces the report's exports, never adds to them
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        nb_path = run_dir / f"{name}.ipynb"
        parameters = {"store": str(store_path), "start": format_time(start_ms), "end": format_time(end_ms),
                      "output_dir": str(out_dir), "report_name": name,
                      **{k: _param_value(v) for k, v in extra.items() if k in declared[name]}}
        for stale_output in (nb_path, run_dir / f"{name}.html"):
            stale_output.unlink(missing_ok=True)
        t0 = time.perf_counter()
        error: str | None = None
        try:
            pm.execute_notebook(str(source_nb), str(nb_path), parameters=parameters, kernel_name=kernel,
                                progress_bar=False, cwd=str(out_dir), execution_timeout=cell_timeout_s,
                                request_save_on_cell_execute=False, log_output=False)
        except Exception as exc:  # papermill's own errors and kernel deaths alike
            error = _failing_cell(nb_path, exc)
        seconds = time.perf_counter() - t0
        html_path: Path | None = None
        results: dict[str, Any] = {}
        if (out_dir / "results.json").exists():
            results = json.loads((out_dir / "results.json").read_text())
        if nb_path.exists():
            html_path = render_html(nb_path, run_dir / f"{name}.html", failed=error,
                                    title=f"{name.replace('_', ' ')} · {format_time(start_ms)} .. {format_time(end_ms)}")
        outcome = ReportOutcome(name, "failed" if error else "ok", seconds, nb_path, html_path, out_dir, error,
                                results)
        outcomes.append(outcome)
        manifest["reports"][name] = {"status": outcome.status, "seconds": round(seconds, 2), "error": error,
                                     "exports": sorted(p.name for p in out_dir.iterdir())}
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if on_report_done is not None:
            on_report_done(outcome)
    index = write_index(root)
    summary = RunSummary(run_dir, start_ms, end_ms, outcomes, index)
    if summary.failed:
        first = summary.failed[0]
        raise ReportError(f"report {first.name} failed in {first.notebook.name}, {first.error} "
                          f"(partial notebook kept: {first.notebook})")
    return summary


def _param_value(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, int | float | bool | list | dict) else value


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1,h2,h3{color:#1f3b5a} .vfa-table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.88em}
.vfa-table th,.vfa-table td{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:right;max-width:42em}
.vfa-table th:first-child,.vfa-table td:first-child{text-align:left} .vfa-table caption{text-align:left;
font-weight:600;padding-bottom:.3em} pre{background:#f6f8fa;padding:.6em;overflow-x:auto;font-size:.85em}
pre.error{background:#fdecea;color:#8a1f11} .banner{background:#fdecea;border:1px solid #e0a9a2;padding:.8em}
header.meta{color:#666;font-size:.85em;border-bottom:1px solid #ddd;margin-bottom:1em}
"""


def render_html(nb_path: str | os.PathLike[str], html_path: str | os.PathLike[str], *, title: str,
                failed: str | None = None) -> Path:
    """Render an executed notebook as one offline HTML page: outputs only, plotly.js inlined once.

    Markdown cells and rich outputs are kept; code, prompts and stderr are hidden;
    errors are shown escaped. Nothing on the page loads from the network.
    """
    import nbformat
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    from plotly.offline import get_plotlyjs

    nb = nbformat.read(str(nb_path), as_version=4)
    parts: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(f'<section class="md">{markdown2html_mistune(cell.source)}</section>')
            continue
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "stream":
                if out.get("name") == "stdout":
                    parts.append(f"<pre>{html.escape(_ANSI.sub('', out.get('text', '')))}</pre>")
            elif kind == "error":
                trace = _ANSI.sub("", "\n".join(out.get("traceback", [])))
                parts.append(f'<pre class="error">{html.escape(trace)}</pre>')
            elif kind in ("display_data", "execute_result"):
                data = out.get("data", {})
                if "text/html" in data:
                    parts.append(str(data["text/html"]))
                elif "image/png" in data:
                    parts.append(f'<img alt="figure" src="data:image/png;base64,{data["image/png"]}">')
                elif "text/markdown" in data:
                    parts.append(markdown2html_mistune(html.escape(str(data["text/markdown"]))))
                elif "text/plain" in data:
                    parts.append(f"<pre>{html.escape(str(data['text/plain']))}</pre>")
    banner = (f'<div class="banner"><strong>This report failed:</strong> {html.escape(failed)}</div>'
              if failed else "")
    generated = datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>"
        f'<header class="meta">{html.escape(title)} · generated {generated} by vfanalytics</header>'
        f"{banner}{''.join(parts)}</body></html>\n"
    )
    out = Path(html_path)
    out.write_text(page, encoding="utf-8")
    return out


def write_index(out_root: str | os.PathLike[str]) -> Path:
    """(Re)write ``OUT/index.html`` listing every run (newest window first) and its reports."""
    root = Path(out_root)
    root.mkdir(parents=True, exist_ok=True)
    runs = []
    for manifest in root.glob("*/run.json"):
        try:
            runs.append((manifest.parent, json.loads(manifest.read_text())))
        except ValueError:
            continue
    runs.sort(key=lambda r: (r[1].get("end_ms", 0), r[1].get("start_ms", 0), r[0].name), reverse=True)
    rows = []
    for run_dir, meta in runs:
        items = []
        for name in REPORTS:
            rep = meta.get("reports", {}).get(name)
            if rep is None:
                continue
            link = f"{run_dir.name}/{name}.html"
            status = "" if rep["status"] == "ok" else ' <strong class="failed">failed</strong>'
            exports = ", ".join(f'<a href="{html.escape(run_dir.name)}/{html.escape(name)}/{html.escape(e)}">'
                                f"{html.escape(e)}</a>" for e in rep.get("exports", []))
            items.append(f'<li><a href="{html.escape(link)}">{html.escape(name)}</a>{status} '
                         f'({rep["seconds"]:.1f} s; <a href="{html.escape(run_dir.name)}/{html.escape(name)}.ipynb">'
                         f"notebook</a>) <small>{exports}</small></li>")
        params = ", ".join(f"{html.escape(k)}={html.escape(str(v))}" for k, v in meta.get("params", {}).items())
        rows.append(f"<section><h2>{html.escape(str(meta.get('start')))} → {html.escape(str(meta.get('end')))}</h2>"
                    f"<p><small>{html.escape(run_dir.name)} · store {html.escape(str(meta.get('store')))}"
                    f"{' · ' + params if params else ''}</small></p><ul>{''.join(items)}</ul></section>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>vfanalytics reports</title>"
            f"<style>{_CSS} .failed{{color:#b00}}</style></head><body><h1>vfanalytics reports</h1>"
            f"{''.join(rows) or '<p>No runs yet.</p>'}</body></html>\n")
    index = root / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
