"""The Loki test server must reproduce the real Loki 2.4.2 recordings before the client is tested against it."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.sources.loki_server import LOKI_DIR, LokiData, loki_server

RECORDINGS = sorted(p for p in (LOKI_DIR / "recordings").glob("*.json") if p.name != "index.json")
pytestmark = pytest.mark.skipif(not RECORDINGS, reason=f"no Loki recordings in {LOKI_DIR}")

# answered by evaluation (not replay): bare stream selectors, errors, metadata with a time range
EVALUATED = [
    p for p in RECORDINGS
    if p.name.startswith(("fwd_page", "bwd_page", "backend_all", "stuck_limit5", "error_"))
    or p.name in ("labels.json", "label_service_values.json", "series_backend.json")
]


def _get(url: str, path: str, params: dict[str, str]) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(params)}") as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw.decode()


def _comparable(body: object, path: str) -> object:
    if isinstance(body, dict):
        body = json.loads(json.dumps(body))
        body.get("data", {}).pop("stats", None) if isinstance(body.get("data"), dict) else None
        if path.endswith("/series"):  # Loki's order of the series list varies from call to call
            body["data"] = sorted(body["data"], key=lambda d: sorted(d.items()))
    return body


@pytest.fixture(scope="module")
def evaluating_server():
    with loki_server(LokiData(replay=False)) as (url, _):
        yield url


def test_most_recordings_are_evaluated_not_replayed():
    assert len(EVALUATED) >= 50
    assert len(RECORDINGS) == 64


@pytest.mark.parametrize("path", EVALUATED, ids=lambda p: p.stem)
def test_server_reproduces_recording(evaluating_server, path):
    rec = json.loads(path.read_text(encoding="utf-8"))
    status, body = _get(evaluating_server, rec["request"]["path"], rec["request"]["params"])
    assert status == rec["status"]
    # dict equality ignores key order inside label objects (it varies in Loki's answers too); lists keep order
    assert _comparable(body, rec["request"]["path"]) == _comparable(rec["body"], rec["request"]["path"])


def test_recorded_paging_needs_the_count_rule(evaluating_server):
    # the stored set, as one big page, equals the limit-5000 recording exactly
    rec = json.loads((LOKI_DIR / "recordings" / "backend_all_forward_limit5000.json").read_text(encoding="utf-8"))
    _, body = _get(evaluating_server, rec["request"]["path"], rec["request"]["params"])
    assert sum(len(s["values"]) for s in body["data"]["result"]) == 2166
