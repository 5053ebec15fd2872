"""An API key never reaches responses.jsonl, DuckDB, logs or error messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import orjson

GOOD = "sk-good-SENTINEL-4f9a1c2e7b"
WRONG = "sk-wrong-SENTINEL-8d3b6a0f5e"


def _everything_written(ws: Path) -> str:
    """All files of the workspace plus every table of its database, as text."""
    parts = []
    for p in ws.rglob("*"):
        if p.is_file() and p.suffix != ".duckdb":
            parts.append(p.read_bytes().decode("utf-8", "replace"))
    db = ws / "datagen.duckdb"
    if db.exists():
        with duckdb.connect(str(db), read_only=True) as con:
            for (table,) in con.execute("SELECT table_name FROM information_schema.tables")\
                    .fetchall():
                parts.append(str(con.execute(f'SELECT * FROM "{table}"').fetchall()))
        parts.append(db.read_bytes().decode("latin-1"))
    return "\n".join(parts)


def _run(tmp_path: Path, url: str, key: str, cli_env: dict[str, str]):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(orjson.dumps({"prompt": f"q{i}"}).decode() + "\n"
                               for i in range(20)))
    env = {**cli_env, "OPENAI_API_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "datagen.cli", "--debug", "generate", "-g", f"openai:m@{url}",
         "-i", str(prompts), "--max-retries", "0"],
        env=env, capture_output=True, timeout=120,
    )


def test_wrong_key_stops_the_run_without_leaking_it(tmp_path, loopback, cli_env):
    srv = loopback("--api-key", GOOD)  # answers 401 and echoes the key it got
    r = _run(tmp_path, srv.url, WRONG, cli_env)
    out = (r.stdout + r.stderr).decode()
    assert r.returncode != 0
    assert "401" in out and "OPENAI_API_KEY" in out
    assert WRONG not in out
    assert WRONG not in _everything_written(Path(cli_env["DATAGEN_WORKSPACE"]))


def test_good_key_is_used_but_never_written(tmp_path, loopback, cli_env):
    srv = loopback("--api-key", GOOD)
    r = _run(tmp_path, srv.url, GOOD, cli_env)
    out = (r.stdout + r.stderr).decode()
    assert r.returncode == 0, out
    assert srv.stats()["answered"]  # the key worked
    assert GOOD not in out
    written = _everything_written(Path(cli_env["DATAGEN_WORKSPACE"]))
    assert "echo: q1" in written  # the check looks where answers are stored
    assert GOOD not in written


def test_missing_key_for_the_official_api_is_one_clear_line(tmp_path, cli_env):
    env = {k: v for k, v in cli_env.items() if k != "OPENAI_API_KEY"}
    r = subprocess.run([sys.executable, "-m", "datagen.cli", "generate", "-g",
                        "openai:gpt-4o-mini", "-n", "2"], env=env, capture_output=True, timeout=60)
    err = r.stderr.decode()
    assert r.returncode != 0
    assert "OPENAI_API_KEY" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
