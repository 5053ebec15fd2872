"""Shared fixtures: every test gets its own workspace; a loopback server factory."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

# The shared offline assets live beside the checkout (../shared/assets), in CI too.
ASSETS = Path(os.environ.get("DATAGEN_ASSETS", Path(__file__).resolve().parents[2] / "shared"
                             / "assets"))


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One converted-model cache per test session (converting SmolLM2 takes ~35 s)."""
    return tmp_path_factory.mktemp("datagen-cache")


@pytest.fixture(autouse=True)
def _isolated_workspace(tmp_path: Path, model_cache: Path,
                        monkeypatch: pytest.MonkeyPatch) -> Path:
    ws = tmp_path / "ws"
    monkeypatch.setenv("DATAGEN_WORKSPACE", str(ws))
    monkeypatch.setenv("DATAGEN_CACHE", str(model_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DATAGEN_EVAL_DIR", str(ASSETS))
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return ws


@dataclass
class Loopback:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as r:
            return orjson.loads(r.read())

    def reset(self) -> None:
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).close()


def start_loopback(*args: str) -> Loopback:
    proc = subprocess.Popen(
        [sys.executable, "-m", "generators.testing.loopback", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    line = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.startswith(b"READY"):
                return Loopback(proc, int(line.split()[1]))
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"loopback server did not start: {line!r}")


@pytest.fixture
def loopback() -> Iterator[Callable[..., Loopback]]:
    """Factory: ``loopback("--latency", "0.01")`` starts a server; all are stopped at teardown."""
    started: list[Loopback] = []

    def factory(*args: str) -> Loopback:
        srv = start_loopback(*args)
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        srv.proc.kill()
        srv.proc.wait(timeout=10)


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running ``datagen`` in a subprocess with the test's workspace."""
    env = dict(os.environ)
    env["DATAGEN_WORKSPACE"] = str(tmp_path / "ws")
    env["COLUMNS"] = "200"
    return env
