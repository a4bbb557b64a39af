"""What report notebooks display: plotly figures, escaped tables and text, incident bands.

Reports are read as static HTML (see :mod:`vfanalytics.reports`), so everything a
notebook shows goes through these helpers:

* :func:`show` displays a figure as plotly's own MIME bundle (JupyterLab renders it
  interactively) plus a ``<div>`` and a ``Plotly.newPlot`` call for the HTML report,
  which inlines plotly.js once. Figure ids are deterministic, so re-running a report
  gives the same notebook.
* :func:`table` and :func:`say` escape every value: a label such as
  ``<script>…</script>`` shows as text, never as markup.
* :func:`add_incidents` shades incident windows on a time axis with their titles on hover.

Example
-------
>>> import polars as pl
>>> "&lt;b&gt;" in table(pl.DataFrame({"user": ["<b>"]})).data
True
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import polars as pl

__all__ = ["auto_step", "show", "table", "say", "add_incidents", "ms_to_datetime", "style", "SEVERITY_COLOURS"]

SEVERITY_COLOURS = {"critical": "rgba(214, 39, 40, 0.15)", "warning": "rgba(255, 127, 14, 0.13)"}
_figure_ids = itertools.count(1)
_PLOTLY_MIME = "application/vnd.plotly.v1+json"


def auto_step(start_ms: int, end_ms: int, points: int = 300) -> str:
    """A PromQL step (whole minutes, at least 1m) giving about ``points`` points over the window."""
    minutes = max(1, round((end_ms - start_ms) / points / 60_000))
    return f"{minutes}m"


def ms_to_datetime(column: str | pl.Expr) -> pl.Expr:
    """A ms-since-epoch column as a UTC datetime (what plotly's time axis wants)."""
    expr = pl.col(column) if isinstance(column, str) else column
    return pl.from_epoch(expr, time_unit="ms").dt.replace_time_zone("UTC")


def style(fig: Any, title: str, *, x_title: str | None = None, y_title: str | None = None, height: int = 420) -> Any:
    """The house style: a title, axis titles (with units), a white template and a compact legend."""
    fig.update_layout(title={"text": html.escape(title)}, template="plotly_white", height=height,
                      margin={"l": 60, "r": 20, "t": 60, "b": 50}, legend={"orientation": "h", "y": -0.18})
    if x_title is not None:
        fig.update_xaxes(title_text=x_title)
    if y_title is not None:
        fig.update_yaxes(title_text=y_title)
    return fig


def add_incidents(fig: Any, incidents: pl.DataFrame, *, kinds: list[str] | None = None,
                  start_ms: int | None = None, end_ms: int | None = None) -> Any:
    """Shade each incident (``start_ms``..``end_ms``) on the figure's time axis, titled on hover.

    ``kinds`` keeps only incidents of those kinds; incidents outside
    ``[start_ms, end_ms]`` are skipped.
    """
    import plotly.graph_objects as go

    frame = incidents
    if kinds is not None and "kind" in frame.columns:
        frame = frame.filter(pl.col("kind").is_in(kinds))
    if start_ms is not None:
        frame = frame.filter(pl.col("end_ms") >= start_ms)
    if end_ms is not None:
        frame = frame.filter(pl.col("start_ms") <= end_ms)
    xs: list[Any] = []
    texts: list[str] = []
    for row in frame.iter_rows(named=True):  # a few dozen incidents at most
        x0 = pl.Series([row["start_ms"]]).cast(pl.Datetime("ms", "UTC"))[0]
        x1 = pl.Series([row["end_ms"]]).cast(pl.Datetime("ms", "UTC"))[0]
        colour = SEVERITY_COLOURS.get(str(row.get("severity")), "rgba(128, 128, 128, 0.12)")
        fig.add_vrect(x0=x0, x1=x1, fillcolor=colour, line_width=0, layer="below")
        xs.append(x0)
        texts.append(html.escape(f"{row['id']}: {row.get('title') or ''} ({row.get('severity') or ''})"))
    if xs:
        # markers at each incident start carry the hover text (shapes have none); they sit on a hidden
        # 0..1 axis over the plot so they neither add a category nor stretch the data axis
        fig.update_layout(yaxis9={"overlaying": "y", "range": [0, 1], "visible": False, "fixedrange": True})
        fig.add_trace(go.Scatter(x=xs, y=[0.02] * len(xs), mode="markers", name="incidents",
                                 marker={"symbol": "triangle-up", "size": 9, "color": "rgba(214,39,40,0.7)"},
                                 hovertext=texts, hoverinfo="text", yaxis="y9"))
    return fig


def show(fig: Any) -> None:
    """Display a plotly figure for both JupyterLab (plotly MIME) and the static HTML report."""
    from IPython.display import display

    div_id = f"vfa-fig-{next(_figure_ids)}"
    fragment = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                           config={"displaylogo": False, "responsive": True})
    bundle = {_PLOTLY_MIME: fig.to_plotly_json(), "text/html": f'<div class="vfa-figure">{fragment}</div>'}
    display(_json_safe(bundle), raw=True)


def _json_safe(bundle: Mapping[str, Any]) -> dict[str, Any]:
    import orjson
    import plotly.io as pio

    out = dict(bundle)
    out[_PLOTLY_MIME] = orjson.loads(pio.to_json(out[_PLOTLY_MIME], validate=False))
    return out


def _cell(value: Any, fmt: Mapping[str, str], column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return html.escape(value.strftime("%Y-%m-%d %H:%M:%S"))
    if column in fmt and isinstance(value, int | float):
        return html.escape(format(value, fmt[column]))
    if isinstance(value, float):
        return html.escape(f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return html.escape(str(value))


class HTMLTable:
    """An escaped HTML table with a ``_repr_html_`` (what :func:`table` returns)."""

    def __init__(self, data: str) -> None:
        self.data = data

    def _repr_html_(self) -> str:
        return self.data


def table(frame: pl.DataFrame, *, caption: str | None = None, max_rows: int = 25,
          formats: Mapping[str, str] | None = None) -> HTMLTable:
    """An HTML table of ``frame`` (every value escaped), at most ``max_rows`` rows."""
    fmt = dict(formats or {})
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(v, fmt, c)}</td>" for c, v in zip(frame.columns, row, strict=True)) + "</tr>"
        for row in frame.head(max_rows).iter_rows()
    )
    more = (f'<tr><td colspan="{frame.width}">… {frame.height - max_rows:,} more rows</td></tr>'
            if frame.height > max_rows else "")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return HTMLTable(f'<table class="vfa-table">{cap}<thead><tr>{head}</tr></thead><tbody>{body}{more}</tbody></table>')


def say(template: str, **values: Any) -> None:
    """Display a Markdown sentence with ``{name}`` fields filled by escaped values (numbers keep format specs)."""
    from IPython.display import display
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    # numbers keep their type so the template can format them ({share:.1%}); text is escaped
    safe = {k: v if isinstance(v, int | float) else html.escape(str(v)) for k, v in values.items()}
    text = template.format(**safe)
    display({"text/html": markdown2html_mistune(text), "text/markdown": text}, raw=True)
