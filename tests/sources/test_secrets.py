"""Credentials never leave the process except in the request: a canary-token scan over everything written."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from tests.sources.faultproxy import ECHO_AUTH, Schedule, fault_proxy
from tests.sources.loki_server import LOKI_DIR, loki_server
from tests.sources.srcdata import ALL, T0
from vfanalytics.sources.http import HttpClient
from vfanalytics.sources.prometheus import PrometheusSource
from vfanalytics.store import Store

pytestmark = pytest.mark.integration

TOKEN = "canary-tok-7f3a9c21e5d4"
PASSWORD = "canary-pw-b81e66f0/+=&"
URL_PASSWORD = "canary-url-44aa91"
LOKI_TOKEN = "canary-loki-0c9d2e7b"
CANARIES = [TOKEN, PASSWORD, URL_PASSWORD, LOKI_TOKEN]


def _cli(capsys, *args: str) -> tuple[int, str]:
    from vfanalytics.cli import main

    with pytest.raises(SystemExit) as done:
        main(list(args))
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out + captured.err


def _scan(texts: list[str], root: Path) -> list[str]:
    found = []
    for i, text in enumerate(texts):
        found += [f"text #{i} holds {c}" for c in CANARIES if c in text]
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for c in CANARIES:
                for form in (c.encode(), base64.b64encode(c.encode())):
                    if form in data:
                        found.append(f"{path} holds {c}")
    return found


def test_canary_tokens_appear_nowhere(prom_url, tmp_path, capsys, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("VFA_NO_PROGRESS", "1")
    monkeypatch.setenv("VFA_PROMETHEUS_TOKEN", TOKEN)
    monkeypatch.setenv("VFA_LOKI_TOKEN", LOKI_TOKEN)
    pw_file = tmp_path / "secrets" / "pw"
    pw_file.parent.mkdir()
    pw_file.write_text(PASSWORD + "\n")
    store = str(tmp_path / "out" / "s.duckdb")
    rng = ["--start", str(T0 / 1000), "--end", str((T0 + 3600_000) / 1000), "--store", store, "--retries", "3",
           "--backoff", "0.001", "--max-backoff", "0.01", "--timeout", "0.5"]
    outputs = []
    with fault_proxy(prom_url, Schedule(seed=4, rate=0.5, stall=0.8)) as (url, stats):
        # token from the environment, through faults: it is sent, and the pull succeeds
        code, out = _cli(capsys, "pull", "series", "--url", url, "--match", ALL, *rng)
        outputs.append(out)
        assert code == 0, out
        assert {h.get("Authorization") for h in stats.headers_seen} == {f"Bearer {TOKEN}"}
        # basic auth from a file, and a password inside the URL
        code, out = _cli(capsys, "pull", "prometheus", "--url", url, "--user", "alice", "--password-file", str(pw_file),
                         "--query", "vfa_test_gauge", "--step", "1m", *rng)
        outputs.append(out)
        assert code == 0, out
        monkeypatch.delenv("VFA_PROMETHEUS_TOKEN")
        userinfo_url = url.replace("http://", f"http://bob:{URL_PASSWORD}@")
        code, out = _cli(capsys, "pull", "prometheus", "--url", userinfo_url, "--query", "up", "--step", "1m", *rng)
        outputs.append(out)
        assert code == 0, out
        sent = {h.get("Authorization") for h in stats.headers_seen}
        assert "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode() in sent
        assert "Basic " + base64.b64encode(f"bob:{URL_PASSWORD}".encode()).decode() in sent
    # a server that echoes the Authorization header in its error body, and one that keeps failing
    monkeypatch.setenv("VFA_PROMETHEUS_TOKEN", TOKEN)
    for sched in (Schedule(always=ECHO_AUTH), Schedule(always="503")):
        with fault_proxy(prom_url, sched) as (url, _):
            code, out = _cli(capsys, "pull", "series", "--url", url, "--match", "vfa_test_gauge", *rng)
            outputs.append(out)
            assert code == 1 and "error:" in out
    assert "***" in outputs[-2]  # the echoed token was redacted, not just absent
    if (LOKI_DIR / "dataset_push.json").exists():
        with loki_server() as (lurl, _):
            code, out = _cli(capsys, "pull", "loki", "--url", lurl, "--query", '{service="backend"', *rng)
            outputs.append(out)
            assert code == 1 and "parse error" in out
            code, out = _cli(capsys, "pull", "loki", "--url", lurl, "--query", '{service="backend"}', "--start",
                             "1793527200", "--end", "1793530800", "--store", store)
            outputs.append(out)
            assert code == 0, out
    with Store(store, read_only=True) as st:
        pulls = st.pulls()
        assert pulls.height > 0
        # DuckDB may compress strings on disk, so read every table back as text too
        for table in ("pulls", "series", "logs", "meta"):
            outputs.append(str(st.sql(f"SELECT * FROM {table}").to_dicts()))
        assert not any("@" in s for s in pulls["source"].to_list())
    outputs.append(caplog.text)
    outputs.append(repr(PrometheusSource(f"http://u:{URL_PASSWORD}@127.0.0.1:1", token=TOKEN)))
    assert _scan(outputs, tmp_path / "out") == []


def test_redact_covers_quoted_forms():
    client = HttpClient("http://127.0.0.1:1", username="u", password=PASSWORD)
    text = f"x {PASSWORD} y {PASSWORD.replace('/', '%2F').replace('+', '%2B').replace('=', '%3D').replace('&', '%26')}"
    assert PASSWORD not in client.redact(text) and "%2F" not in client.redact(text)


def test_from_environment_takes_the_token_from_the_environment(monkeypatch):
    from vfanalytics.sources.prometheus import PrometheusSource

    monkeypatch.setenv("VFA_PROMETHEUS_TOKEN", "CANARY-env-7c1")
    src = PrometheusSource.from_environment("http://127.0.0.1:9")
    # the client knows the token as a secret: it is redacted from anything it reports
    assert src.http.redact("Bearer CANARY-env-7c1") == "Bearer ***"
    monkeypatch.delenv("VFA_PROMETHEUS_TOKEN")
    assert PrometheusSource.from_environment("http://127.0.0.1:9").http.redact("Bearer CANARY-env-7c1") \
        == "Bearer CANARY-env-7c1"
