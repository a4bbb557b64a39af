"""A small Loki 2.4 HTTP test server over the recorded dataset in ``shared/loki``.

Grafana Loki cannot be installed here, so this server implements what a log
client relies on, with the semantics the recordings of a real Loki 2.4.2 show:

* ``/loki/api/v1/query_range`` for stream selectors: ``start`` inclusive, ``end``
  exclusive, ``limit`` (default 100, at most 5000), ``direction`` (default backward);
  the first ``limit`` entries in time order (ties: stream labels, then push order;
  backward reverses all of it); the answer grouped by stream, streams sorted by labels;
* the ingester's dedup (an entry equal in timestamp and line to the entry pushed just
  before it in its stream is dropped);
* errors as Loki words them (400, plain text): limit over 5000, end not after start,
  a range over 721 h, an unterminated selector;
* ``/labels``, ``/label/<name>/values``, ``/series``;
* queries it does not evaluate (pipelines, metric queries) are answered from the
  recordings when the parameters match one exactly, else 400.

``tests/sources/test_loki_server.py`` first checks that this server reproduces every
recording; only then do the client tests trust it.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

LOKI_DIR = Path(__file__).resolve().parents[3] / "shared" / "loki"
if not LOKI_DIR.exists():  # pragma: no cover - other checkouts
    LOKI_DIR = Path("/work/shared/loki")

MAX_ENTRIES = 5000
MAX_QUERY_LENGTH_NS = 721 * 3600 * 10**9

_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|\})')


class NotEvaluated(Exception):
    """A query this server does not evaluate (answered from the recordings, if at all)."""


class LokiError(Exception):
    def __init__(self, message: str, content_type: str = "application/json; charset=UTF-8") -> None:
        super().__init__(message)
        self.content_type = content_type


def load_streams(push: dict[str, Any] | None = None) -> list[tuple[dict[str, str], list[tuple[int, str]]]]:
    """The dataset as Loki stores it: per stream, (ns, line) after the ingester's adjacent-duplicate drop."""
    if push is None:
        push = json.loads((LOKI_DIR / "dataset_push.json").read_text(encoding="utf-8"))
    out = []
    for s in push["streams"]:
        kept: list[tuple[int, str]] = []
        for ts, line in s["values"]:
            e = (int(ts), line)
            if kept and kept[-1] == e:
                continue
            kept.append(e)
        out.append((dict(s["stream"]), kept))
    return out


def parse_selector(query: str) -> list[tuple[str, str, str]] | None:
    """Matchers of a bare stream selector; None when the query has more (pipeline, metric)."""
    q = query.strip()
    if not q.startswith("{"):
        return None
    pos = 1
    matchers = []
    while True:
        m = _MATCHER.match(q, pos)
        if m is None:
            if q.rstrip().endswith("}") or "|" in q:
                return None
            # what Loki says about `{service="backend"`: the column after the last character
            raise LokiError(f"parse error at line 1, col {len(q) + 1}: syntax error: unexpected $end, expecting }} or ,")
        value = json.loads('"' + m.group(3) + '"')
        matchers.append((m.group(1), m.group(2), value))
        pos = m.end()
        if m.group(4) == "}":
            break
    if q[pos:].strip():
        return None
    return matchers


def _matches(labels: dict[str, str], matchers: list[tuple[str, str, str]]) -> bool:
    for name, op, value in matchers:
        have = labels.get(name, "")
        if op == "=" and have != value:
            return False
        if op == "!=" and have == value:
            return False
        if op == "=~" and not re.fullmatch(value, have):
            return False
        if op == "!~" and re.fullmatch(value, have):
            return False
    return True


def _labels_key(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


class LokiData:
    """The stored dataset plus the recordings (for replay)."""

    def __init__(
        self, streams: list[tuple[dict[str, str], list[tuple[int, str]]]] | None = None, *, replay: bool = True
    ) -> None:
        self.streams = streams if streams is not None else load_streams()
        self.recordings: list[dict[str, Any]] = []
        rec_dir = LOKI_DIR / "recordings"
        if replay and rec_dir.exists():
            for f in sorted(rec_dir.glob("*.json")):
                if f.name != "index.json":
                    self.recordings.append(json.loads(f.read_text(encoding="utf-8")))

    def replay(self, path: str, params: dict[str, str]) -> tuple[int, str, Any] | None:
        for r in self.recordings:
            if r["request"]["path"] == path and r["request"]["params"] == params:
                return r["status"], r["content_type"], r["body"]
        return None

    def query_range(self, params: dict[str, str]) -> dict[str, Any]:
        query = params.get("query", "")
        limit = int(params.get("limit", "100"))
        start = int(params["start"])
        end = int(params["end"])
        direction = params.get("direction", "backward").lower()
        if end <= start:
            raise LokiError("end timestamp must not be before or equal to start time")
        matchers = parse_selector(query)
        if matchers is None:
            raise NotEvaluated(query)
        if limit > MAX_ENTRIES:
            raise LokiError(f"max entries limit per query exceeded, limit > max_entries_limit ({limit} > {MAX_ENTRIES})")
        if end - start > MAX_QUERY_LENGTH_NS:
            raise LokiError(
                f"the query time range exceeds the limit (query length: {_go_duration(end - start)}, limit: 721h0m0s)\n",
                "text/plain; charset=utf-8",
            )
        picked = []
        for labels, values in self.streams:
            if not _matches(labels, matchers):
                continue
            key = _labels_key(labels)
            for i, (ts, line) in enumerate(values):
                if start <= ts < end:
                    picked.append((ts, key, i, labels, line))
        picked.sort(key=lambda e: (e[0], e[1], e[2]), reverse=direction == "backward")
        page = picked[:limit]
        grouped: dict[str, tuple[dict[str, str], list[list[str]]]] = {}
        for ts, key, _, labels, line in page:
            grouped.setdefault(key, (labels, []))[1].append([str(ts), line])
        result = [{"stream": grouped[k][0], "values": grouped[k][1]} for k in sorted(grouped)]
        return {"status": "success", "data": {"resultType": "streams", "result": result, "stats": {}}}

    def labels(self) -> dict[str, Any]:
        names = {"__name__"} | {k for labels, _ in self.streams for k in labels}
        return {"status": "success", "data": sorted(names)}

    def label_values(self, name: str) -> dict[str, Any]:
        return {"status": "success", "data": sorted({lb[name] for lb, _ in self.streams if name in lb})}

    def series(self, match: str) -> dict[str, Any]:
        matchers = parse_selector(match) or []
        return {"status": "success", "data": [lb for lb, _ in self.streams if _matches(lb, matchers)]}


def _go_duration(ns: int) -> str:
    secs = ns // 10**9
    return f"{secs // 3600}h{secs % 3600 // 60}m{secs % 60}s"


class _Handler(BaseHTTPRequestHandler):
    data: LokiData
    log: list[tuple[str, dict[str, str]]]
    protocol_version = "HTTP/1.1"
    # one write per answer and no Nagle: otherwise delayed ACKs add 40 ms to every page
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, content_type: str, body: Any) -> None:
        raw = body.encode() if isinstance(body, str) else json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.log.append((parts.path, params))
        try:
            self._route(parts.path, params)
        except LokiError as exc:
            self._send(400, exc.content_type, str(exc))

    def _route(self, path: str, params: dict[str, str]) -> None:
        if path == "/loki/api/v1/query_range" and "step" not in params:
            try:
                self._send(200, "application/json", self.data.query_range(params))
            except NotEvaluated:
                replayed = self.data.replay(path, params)
                if replayed is None:
                    raise LokiError("the test server evaluates stream selectors only", "text/plain; charset=utf-8") from None
                self._send(*replayed)
            return
        if path == "/loki/api/v1/labels" and "start" in params:
            self._send(200, "application/json", self.data.labels())
            return
        m = re.fullmatch(r"/loki/api/v1/label/([^/]+)/values", path)
        if m and "start" in params:
            self._send(200, "text/plain; charset=utf-8", self.data.label_values(m.group(1)))
            return
        if path == "/loki/api/v1/series":
            self._send(200, "application/json", self.data.series(params.get("match[]", "")))
            return
        replayed = self.data.replay(path, params)
        if replayed is None:
            raise LokiError(f"the test server cannot answer {path} with these parameters", "text/plain; charset=utf-8")
        self._send(*replayed)


@contextlib.contextmanager
def loki_server(data: LokiData | None = None) -> Iterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """Run the server on 127.0.0.1:<free port>; yield (base URL, request log)."""
    log: list[tuple[str, dict[str, str]]] = []
    handler = type("Handler", (_Handler,), {"data": data or LokiData(), "log": log})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
