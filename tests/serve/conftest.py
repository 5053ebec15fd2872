"""One workspace (tests/serve/workspace.py) and one ``datagen serve`` process over it, shared by
the web app's tests; the server runs as users run it, the CLI in a subprocess on a free port."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serve.workspace import Built, build


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str
    built: Built


def start_server(root: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """``datagen -w ROOT serve --port 0 ARGS``; returns the process and the url it printed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "datagen.cli", "-w", str(root), "serve",
                             "--port", "0", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=env)
    assert proc.stderr is not None
    deadline, seen = time.monotonic() + 60, ""
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            line = proc.stderr.readline()
            seen += line
            if " at http://" in line:
                return proc, line.split(" at ", 1)[1].split()[0]
    proc.kill()
    raise RuntimeError(f"datagen serve did not start: {seen}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    built = build(tmp_path_factory.mktemp("serve-ws"))
    proc, url = start_server(built.root)
    try:
        yield Server(proc, url, built)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
