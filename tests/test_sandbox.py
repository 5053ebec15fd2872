"""The code sandbox: results, limits and isolation, each checked by running hostile code."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import uuid
from pathlib import Path

import pytest

from datagen.sandbox import (
    arun_python,
    assemble_program,
    check_program,
    run_python,
    sandbox_mechanisms,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux-only")
REPO = Path(__file__).resolve().parents[1]
ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def mechanisms() -> set[str]:
    return sandbox_mechanisms()


def _world_runnable(path: str) -> bool:
    real = Path(path).resolve()
    return real.is_file() and all(p.stat().st_mode & 0o001 for p in [real, *real.parents])


def _live_pids_of(uid: int) -> list[int]:
    psutil = pytest.importorskip("psutil")
    return [
        p.pid
        for p in psutil.process_iter(["uids", "status"])
        if p.info["uids"] and p.info["uids"].real == uid and p.info["status"] != "zombie"
    ]


def test_correct_solution_passes() -> None:
    result = check_program("def add(a, b):\n    return a + b", ["assert add(1, 2) == 3"])
    assert result.status == "passed" and result.passed and result.returncode == 0


def test_failing_assert_fails() -> None:
    result = check_program("def add(a, b):\n    return a - b", "assert add(1, 2) == 3")
    assert result.status == "failed"
    assert "AssertionError" in result.stderr


def test_humaneval_style_check_and_setup() -> None:
    tests = "def check(candidate):\n    assert candidate(4) == 2.0"
    program = assemble_program("def root(x):\n    return sqrt(x)", tests, "from math import sqrt",
                               "check(root)")
    assert program.index("from math") < program.index("def root") < program.index("check(root)")
    assert check_program("def root(x):\n    return sqrt(x)", tests, "from math import sqrt",
                         "check(root)").passed


def test_syntax_error_fails_with_message() -> None:
    result = run_python("def f(:\n    pass")
    assert result.status in ("failed", "error")
    assert "SyntaxError" in result.stderr


def test_stdin_is_passed() -> None:
    assert run_python("print(input() * 2)", stdin="ab\n").stdout == "abab\n"


def test_infinite_loop_times_out() -> None:
    result = run_python("while True:\n    pass", timeout_s=1)
    assert result.status == "timeout"
    assert 1 <= result.duration_s < 1 + 1.5


def test_background_child_does_not_outlive_the_run() -> None:
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('done')"
    result = run_python(code, timeout_s=5)
    assert result.status == "passed" and result.duration_s < 2


def test_fork_bomb_is_contained(mechanisms: set[str]) -> None:
    if ROOT and "uid" not in mechanisms:
        pytest.skip("as root without a uid drop RLIMIT_NPROC would not bind")
    code = (
        "import os, sys\n"
        "print(os.getuid(), flush=True)\n"
        "if os.getuid() == 0:\n"
        "    sys.exit('refusing to fork-bomb as root')\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        pass\n"
    )
    result = run_python(code, timeout_s=2, max_procs=16)
    assert result.status in ("timeout", "failed")
    assert result.duration_s < 2 + 2
    uid = int(result.stdout.split()[0])
    if ROOT:  # a per-run uid: every live process of it must be gone
        assert _live_pids_of(uid) == []


def test_large_allocation_hits_the_memory_limit() -> None:
    result = run_python("x = bytearray(4 * 1024**3)", memory_mb=256)
    assert result.status == "memory"


def test_no_writes_outside_the_sandbox(tmp_path: Path) -> None:
    outside = Path("/tmp") / f"outside-{uuid.uuid4().hex}"
    in_repo = REPO / f"sandbox-escape-{uuid.uuid4().hex}"
    code = (
        "import os\n"
        f"for path in [{str(outside)!r}, {str(in_repo)!r}]:\n"
        "    try:\n"
        "        with open(path, 'w') as f:\n"
        "            f.write('x')\n"
        "        print('wrote', path)\n"
        "    except OSError as e:\n"
        "        print('refused', path, type(e).__name__)\n"
    )
    try:
        result = run_python(code)
        assert result.status == "passed", result.stderr
        assert not outside.exists() and not in_repo.exists()
        if ROOT:
            # PermissionError (the dropped uid may not write there), or FileNotFoundError when
            # the checkout lives under /tmp, which the sandbox replaces with a private tmpfs
            assert re.search(rf"refused {re.escape(str(in_repo))} "
                             r"(PermissionError|FileNotFoundError)", result.stdout), result.stdout
    finally:
        for path in (outside, in_repo):
            path.unlink(missing_ok=True)


def test_fresh_private_cwd_and_home_are_removed() -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    code = (
        "import os\n"
        "assert os.getcwd() == os.environ['HOME'] == os.environ['TMPDIR']\n"
        "assert os.listdir('.') == ['main.py'], os.listdir('.')\n"
        f"open({marker!r}, 'w').write('x')\n"
        "print(os.getuid())\n"
    )
    result = run_python(code)
    assert result.status == "passed", result.stderr
    if ROOT:
        assert int(result.stdout) != 0
    leftovers = [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("datagen-sandbox-*/*")
                 if p.name == marker]
    assert leftovers == []


def test_no_network(mechanisms: set[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        code = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    print('connected')\n"
            "except OSError as e:\n"
            "    print('refused', type(e).__name__, e)\n"
        )
        result = run_python(code)
        assert result.status == "passed", result.stderr
        assert "refused" in result.stdout
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    if sys.platform == "linux" and ROOT:
        assert "netns" in mechanisms


def test_fallback_without_namespaces_still_blocks_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without a mount namespace the dropped uid needs a python it can reach (pyenv's is in /root).
    candidates = ["/usr/bin/python3", "/usr/local/bin/python3"] if ROOT else [sys.executable]
    python = next((os.path.realpath(c) for c in candidates if _world_runnable(c)), None)
    if python is None:
        pytest.skip("no python that the sandbox uid can run")
    monkeypatch.setenv("DATAGEN_SANDBOX_NO_NS", "1")
    monkeypatch.setenv("DATAGEN_SANDBOX_PYTHON", python)
    code = "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)"
    result = run_python(code)
    assert result.status == "failed"
    assert "PermissionError: socket.connect is not allowed" in result.stderr
    assert sandbox_mechanisms() >= {"audit-hook"}


def test_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    monkeypatch.setenv("DATAGEN_SOMETHING", "private")
    result = run_python("import os\nprint(sorted(os.environ.items()))")
    assert result.status == "passed"
    assert "OPENAI_API_KEY" not in result.stdout and "sk-very-secret" not in result.stdout
    assert "private" not in result.stdout


def test_output_is_truncated() -> None:
    result = run_python("print('x' * 1_000_000)\nprint('END')", max_output_bytes=1000)
    assert result.status == "passed"
    assert len(result.stdout) < 1100
    assert "truncated" in result.stdout and result.stdout.endswith("END\n")


async def test_concurrent_runs() -> None:
    results = await asyncio.gather(*(arun_python(f"print({i} * {i})", timeout_s=30)
                                     for i in range(20)))
    assert [r.status for r in results] == ["passed"] * 20
    assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(20)]
