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


def test_a_gateway_that_echoes_headers_leaves_no_key_in_the_database(tmp_path, loopback,
                                                                     cli_env):
    srv = loopback("--api-key", GOOD, "--echo-headers")
    r = _run(tmp_path, srv.url, GOOD, cli_env)
    assert r.returncode == 0, r.stderr.decode()
    ws = Path(cli_env["DATAGEN_WORKSPACE"])
    with duckdb.connect(str(ws / "datagen.duckdb"), read_only=True) as con:
        raws = [row[0] for row in con.execute("SELECT raw FROM requests").fetchall()]
    assert len(raws) == 20 and all("request_headers" in raw for raw in raws)  # echoed, stored
    assert all("Bearer [REDACTED]" in raw for raw in raws)
    assert GOOD not in _everything_written(ws)
    # a second run of other prompts with the same server reuses nothing, a third reuses all
    again = _run(tmp_path, srv.url, GOOD, cli_env)
    assert again.returncode == 0 and GOOD not in _everything_written(ws)


def test_keys_datagen_never_read_are_masked_by_shape(tmp_path):
    """An answer that carries someone else's key (an upstream key a proxy echoes, or a key of an
    earlier run stored before redaction existed) is masked in the log and the database alike."""
    from datagen_core.records import GenResponse
    from generators.response_log import ResponseLog, load_answers
    from metrics.store import Store

    foreign = "sk-proj-FOREIGNsentinel0123456789"
    raw = {"echo": {"Authorization": f"Bearer {foreign}", "x-api-key": "abcdEFGH1234ijkl"},
           "url": "https://bob:hunter2hunter2@gw.example/v1?api_key=QQQQQQQQQQ"}
    resp = GenResponse(key="k1", index=0, text=f"your key is {foreign}", raw=raw)
    log_path = tmp_path / "responses.jsonl"
    with ResponseLog(log_path) as log:
        log.write(resp)
    store = Store(tmp_path / "datagen.duckdb")
    store.ingest_responses("r1", [resp])
    logged = log_path.read_text()
    with duckdb.connect(str(tmp_path / "datagen.duckdb"), read_only=True) as con:
        stored = str(con.execute("SELECT text, raw FROM requests").fetchall())
    for text in (logged, stored):
        for secret in (foreign, "abcdEFGH1234ijkl", "hunter2hunter2", "QQQQQQQQQQ"):
            assert secret not in text
        assert "[REDACTED]" in text
    assert load_answers(log_path)["k1"].raw["echo"]["x-api-key"] == "[REDACTED]"  # valid JSON
    assert store.get_many(["k1"])["k1"].raw["url"].startswith("https://[REDACTED]@gw.example")


def test_credentials_in_a_base_url_are_never_stored_or_printed(tmp_path, loopback, cli_env):
    srv = loopback()
    url = srv.url.replace("http://", "http://alice:pw-URLSECRET-123@") + "?api_key=QSECRET-4567"
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    env = {**cli_env, "OPENAI_API_KEY": GOOD}
    r = subprocess.run([sys.executable, "-m", "datagen.cli", "generate", "-g", f"openai:m@{url}",
                        "-i", str(prompts)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    listed = subprocess.run([sys.executable, "-m", "datagen.cli", "runs"], env=env,
                            capture_output=True, text=True, timeout=60)
    ws = Path(cli_env["DATAGEN_WORKSPACE"])
    manifest = next(ws.glob("runs/*/run.json")).read_text()
    assert f"127.0.0.1:{srv.port}/v1" in manifest  # the server is recorded, without credentials
    for secret in ("URLSECRET", "QSECRET", "alice"):
        assert secret not in r.stdout + r.stderr + listed.stdout + listed.stderr
        assert secret not in _everything_written(ws)
