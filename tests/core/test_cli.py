"""The `vfa` command: help everywhere, one-line errors with exit code 2, store info."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

VFA = [sys.executable, "-m", "vfanalytics.cli"]


def vfa(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VFA, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "VFA_NO_PROGRESS": "1", **(env or {})})


def _commands() -> list[list[str]]:
    import typer.main

    from vfanalytics.cli import app

    root = typer.main.get_command(app)
    out: list[list[str]] = [[]]

    def walk(cmd, path):  # type: ignore[no-untyped-def]
        for name, sub in getattr(cmd, "commands", {}).items():
            out.append([*path, name])
            walk(sub, [*path, name])

    walk(root, [])
    return out


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``vfa`` in this process (one import for many calls)."""
    from vfanalytics.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_help_on_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _commands()
    assert ["store", "info"] in commands and ["demo", "generate"] in commands
    for cmd in commands:
        code, out, err = run_main(capsys, *cmd, "--help")
        assert code == 0, (cmd, err)
        assert "Usage" in out, cmd


@pytest.mark.parametrize("args", [
    ["nope"],
    ["store", "info", "--bogus"],
    ["demo", "generate", "--days", "-3"],
    ["demo", "generate", "--users", "many"],
    ["demo", "generate", "--step", "fast"],
    ["demo", "generate", "--preset", "huge"],
])
def test_bad_arguments_exit_2_with_one_line(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = ["--store", str(tmp_path / "x.duckdb")] if args[0] != "nope" else []
    code, _, err = run_main(capsys, *args, *extra)
    assert code == 2, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err


def test_a_subprocess_run_has_no_traceback(tmp_path: Path) -> None:
    r = vfa("demo", "generate", "--days", "-3", "--store", str(tmp_path / "x.duckdb"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_corrupt_and_missing_store_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.duckdb"
    bad.write_text("garbage" * 100)
    for path in (bad, tmp_path / "missing.duckdb"):
        r = vfa("store", "info", "--store", str(path))
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and str(path) in r.stderr


def test_locked_store_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", "import sys,time; from vfanalytics.store import Store; "
                               "s=Store(sys.argv[1]); print('ready', flush=True); time.sleep(60)", str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        r = vfa("demo", "generate", "--preset", "small", "--days", "0.1", "--store", str(path))
        assert r.returncode == 1 and "in use by another process" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()


def test_generate_then_info_via_env_store(tmp_path: Path) -> None:
    env = {"VFA_STORE": str(tmp_path / "env.duckdb")}
    r = vfa("demo", "generate", "--days", "0.25", "--users", "5", "--seed", "3", env=env)
    assert r.returncode == 0, r.stderr
    r = vfa("store", "info", "--json", env=env)
    info = orjson.loads(r.stdout)
    assert info["path"] == env["VFA_STORE"] and info["samples"] > 1000 and info["incidents"] >= 1
    assert "users=5" in info["meta"]["demo_config"]
    r = vfa("store", "info", env=env)
    assert "samples" in r.stdout and "incidents" in r.stdout
